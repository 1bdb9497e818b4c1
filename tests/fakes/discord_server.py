"""A loopback fake of Discord's REST API and gateway, for running the real bot process against it.

`FakeDiscord` is an aiohttp server on 127.0.0.1 (a free port) in the test's own event loop. Point the bot at
it with DISCORD_API_BASE=`api_base` and DISCORD_GATEWAY_URL=`gateway_url`. It answers what discord.py asks
for while starting and while answering an interaction, with payloads shaped like Discord's:

    GET   /api/v10/users/@me                                  -> the bot user (401 when the token is wrong)
    GET   /api/v10/oauth2/applications/@me                    -> the application
    GET   /api/v10/gateway, /gateway/bot                      -> the gateway URL
    PUT   /api/v10/applications/{app}/commands                -> the commands, with ids (names recorded)
    PUT   /api/v10/applications/{app}/guilds/{g}/commands     -> the same, for a test server
    PUT   /api/v10/channels/{c}/messages/{m}/reactions/{e}/@me -> 204 (the bot reacting to its message)
    DELETE the same                                            -> 204 (the bot taking its reaction back)
    POST  /api/v10/interactions/{id}/{token}/callback         -> the callback response (with_response), else 204
    GET   /api/v10/webhooks/{app}/{token}/messages/@original  -> the reply so far
    PATCH /api/v10/webhooks/{app}/{token}/messages/@original  -> the edited reply (JSON or multipart)
    POST  /api/v10/webhooks/{app}/{token}                     -> a followup message
    WS    /gateway                                            -> HELLO, IDENTIFY, READY, heartbeats

Interactions come from `slash_command`, in a DM or in a server's text channel (a server the gateway never
announced, so discord.py keeps none of it in its cache, like a server whose GUILD_CREATE has not arrived).
`dispatched` notes when each INTERACTION_CREATE was sent, on the same clock as `Call.at`.

`upload_delay_s` slows the answer to edits that carry files, to stop the bot in the middle of one.
`failing_callbacks` answers that many of the next interaction callbacks with a 500: Discord having a bad moment;
`callback_delay_s` answers each callback that much later.
`hold_text_edits` keeps every edit without files unanswered until `release_edits()`: a slow Discord. With
`keep_uploads=False` the fake counts uploaded bytes (`uploaded_bytes`) but keeps none of them (benchmarks).
`routes` adds aiohttp routes of the caller's own (a benchmark's control endpoints).
As Discord does, the gateway tells the bot about its own messages, where the intents it identified with ask
for them: MESSAGE_CREATE for a reply (a deferred one's "thinking…" placeholder included) and a followup,
MESSAGE_UPDATE for each edit of the reply, MESSAGE_DELETE, and MESSAGE_REACTION_ADD / _REMOVE for its own
reactions; private (ephemeral) messages send none. `message_events=False` sends none of these.
Every call is recorded in `requests`; one the fake has no route for is answered 404 (Discord's "Unknown")
and recorded in `unhandled` too, so a test can refuse it. The REST routes want `Authorization: Bot <token>`,
except the interaction and webhook ones, authorized by the token in their path as on Discord. The gateway
sends plain JSON text frames: discord.py asks for a compressed stream but only decompresses binary frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import BodyPartReader, WSMsgType, web

API = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

GUILD_MESSAGES = 1 << 9
GUILD_MESSAGE_REACTIONS = 1 << 10
DIRECT_MESSAGES = 1 << 12
DIRECT_MESSAGE_REACTIONS = 1 << 13
EPHEMERAL = 1 << 6
LOADING = 1 << 7


def snowflake(counter: itertools.count[int], when: dt.datetime | None = None) -> int:
    """A Discord id made at `when` (now by default), unique through `counter`."""
    moment = when or dt.datetime.now(dt.UTC)
    return (int(moment.timestamp() * 1000) - DISCORD_EPOCH_MS) << 22 | (next(counter) & 0x3FFFFF)


def _json(data: Any, status: int = 200) -> web.Response:
    """A JSON answer with Discord's bare content type: discord.py parses only exactly `application/json`."""
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@dataclass(frozen=True)
class Upload:
    """One file of a multipart request."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass(frozen=True)
class Call:
    """One REST request the fake received."""

    method: str
    path: str
    """Without the /api/v10 prefix."""
    query: dict[str, str]
    json: Any
    """The JSON body, or a multipart request's payload_json; None without one."""
    files: tuple[Upload, ...] = ()
    at: float = 0.0
    """When it arrived: the fake's `time.monotonic()` (its loop's time)."""
    user_agent: str = ""


@dataclass
class Gateway:
    """What happened on the gateway, for assertions."""

    connections: int = 0
    identify: dict[str, Any] | None = None
    query: dict[str, str] = field(default_factory=dict)
    heartbeats: int = 0
    close_code: int | None = None
    """The close code of the bot's last connection once it closed it."""
    unknown: list[dict[str, Any]] = field(default_factory=list)
    """Frames with an opcode the fake does not handle (presence updates and the like)."""


class FakeDiscord:
    """The fake; use as `async with FakeDiscord(token=...) as discord:`."""

    def __init__(
        self,
        *,
        token: str,
        refuse_token: bool = False,
        heartbeat_interval_ms: int = 1000,
        bot_name: str = "Easel",
        upload_delay_s: float = 0.0,
        keep_uploads: bool = True,
        hold_text_edits: bool = False,
        message_events: bool = True,
        routes: Sequence[web.AbstractRouteDef] = (),
    ) -> None:
        self.token = token
        self.message_events = message_events
        """Whether the gateway tells the bot about its own messages and reactions, as Discord does."""
        self._emitting: set[asyncio.Task[None]] = set()
        self._edits_held = hold_text_edits
        self._edits_released = asyncio.Event()
        self.keep_uploads = keep_uploads
        self.uploaded_bytes = 0
        """The bytes of every file the bot sent (kept in `requests` only with `keep_uploads`)."""
        self._extra_routes = tuple(routes)
        self.refuse_token = refuse_token
        self.failing_callbacks = 0
        """How many of the next interaction callbacks to answer 500 (Discord having a bad moment)."""
        self.callback_delay_s = 0.0
        """How long each interaction callback waits before its answer."""
        self.upload_delay_s = upload_delay_s
        """How long an edit carrying files waits before its answer (a slow upload)."""
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self._ids = itertools.count(1)
        self.application_id = snowflake(self._ids)
        self.bot_user: dict[str, Any] = {
            "id": str(self.application_id),
            "username": bot_name,
            "discriminator": "0000",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "flags": 0,
            "public_flags": 0,
        }
        self.owner: dict[str, Any] = self.user(snowflake(self._ids), "owner")
        self.requests: list[Call] = []
        self.unhandled: list[Call] = []
        """The calls the fake has no route for (answered 404)."""
        self.commands: dict[str, dict[str, Any]] = {}
        """The synced commands by name, as the fake stored them (with ids)."""
        self.gateway = Gateway()
        self._messages: dict[str, dict[str, Any]] = {}
        """Each interaction token's original reply."""
        self._channels: dict[str, str] = {}
        """Each interaction token's channel id."""
        self._guilds: dict[str, str] = {}
        """Each server channel's server id (channels not in here are DMs)."""
        self.dispatched: dict[str, float] = {}
        """Each interaction id → when its INTERACTION_CREATE was sent (`time.monotonic()`)."""
        self._ws: web.WebSocketResponse | None = None
        self._sequence = 0
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- life -----------------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API + "/{tail:.*}", self._rest)
        app.add_routes(self._extra_routes)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- payloads -------------------------------------------------------------------------------------

    def new_id(self) -> int:
        return snowflake(self._ids)

    @staticmethod
    def user(user_id: int, name: str) -> dict[str, Any]:
        return {
            "id": str(user_id),
            "username": name,
            "discriminator": "0",
            "global_name": name.title(),
            "avatar": None,
            "flags": 0,
            "public_flags": 0,
        }

    def application(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot_user["username"],
            "description": "",
            "icon": None,
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.owner,
            "team": None,
            "verify_key": "0" * 64,
            "flags": 0,
            "summary": "",
        }

    def message(self, channel_id: str, body: Any, files: tuple[Upload, ...] = ()) -> dict[str, Any]:
        """A message the way Discord returns one, built from what the bot sent."""
        sent: dict[str, Any] = body if isinstance(body, dict) else {}
        attachments = [
            {
                "id": str(self.new_id()),
                "filename": upload.filename or "file",
                "size": len(upload.data),
                "url": f"http://127.0.0.1:{self.port}/attachments/{upload.filename}",
                "proxy_url": f"http://127.0.0.1:{self.port}/attachments/{upload.filename}",
                "content_type": upload.content_type,
            }
            for upload in files
        ]
        return {
            "id": str(self.new_id()),
            "channel_id": channel_id,
            "type": 20,
            "author": self.bot_user,
            "content": sent.get("content") or "",
            "timestamp": _stamp(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": sent.get("embeds") or [],
            "components": sent.get("components") or [],
            "pinned": False,
            "flags": sent.get("flags") or 0,
            "webhook_id": str(self.application_id),
            "application_id": str(self.application_id),
        }

    # -- REST -----------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body, files = await self._read_body(request)
        self.uploaded_bytes += sum(len(upload.data) for upload in files)
        if not self.keep_uploads:
            files = tuple(Upload(u.field, u.filename, u.content_type, b"") for u in files)
        call = Call(
            request.method,
            path,
            dict(request.query),
            body,
            files,
            asyncio.get_running_loop().time(),
            request.headers.get("User-Agent", ""),
        )
        self.requests.append(call)
        self._notify()
        if path.startswith("/interactions/"):
            if self.callback_delay_s:
                await asyncio.sleep(self.callback_delay_s)
            return self._interaction_callback(call)
        if path.startswith("/webhooks/"):
            return await self._webhook(call)
        if request.headers.get("Authorization") != f"Bot {self.token}" or self.refuse_token:
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        handler = self._route(call)
        if handler is None:
            self.unhandled.append(call)
            return _json({"message": "Unknown", "code": 0}, status=404)
        return handler()

    def _route(self, call: Call) -> Callable[[], web.StreamResponse] | None:
        gateway = {"url": self.gateway_url}
        bot_gateway = {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
        }
        routes: dict[tuple[str, str], Callable[[], web.StreamResponse]] = {
            ("GET", "/users/@me"): lambda: _json(self.bot_user),
            ("GET", "/oauth2/applications/@me"): lambda: _json(self.application()),
            ("GET", "/gateway"): lambda: _json(gateway),
            ("GET", "/gateway/bot"): lambda: _json(bot_gateway),
        }
        found = routes.get((call.method, call.path))
        if found is not None:
            return found
        commands = rf"/applications/{self.application_id}(/guilds/\d+)?/commands"
        if call.method == "PUT" and re.fullmatch(commands, call.path):
            return lambda: _json(self._store_commands(call.json))
        reaction = re.fullmatch(r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me", call.path)
        if call.method in ("PUT", "DELETE") and reaction is not None:
            channel_id, message_id, emoji = reaction.groups()
            name, _, custom_id = urllib.parse.unquote(emoji).partition(":")
            event = "MESSAGE_REACTION_ADD" if call.method == "PUT" else "MESSAGE_REACTION_REMOVE"
            data = {
                "user_id": str(self.application_id),
                "channel_id": channel_id,
                "message_id": message_id,
                "emoji": {"id": custom_id or None, "name": name},
                "type": 0,
                "burst": False,
            }
            if call.method == "PUT":
                data |= {"burst_colors": [], "message_author_id": str(self.application_id)}
            self._emit(event, data, reaction=True)
            return lambda: web.Response(status=204)
        return None

    def _store_commands(self, definitions: Any) -> list[dict[str, Any]]:
        stored = []
        for definition in definitions or []:
            command = {
                "type": 1,
                "description": "",
                "default_member_permissions": None,
                "dm_permission": True,
                "nsfw": False,
                "options": [],
                **definition,
                "id": str(self.new_id()),
                "application_id": str(self.application_id),
                "version": str(self.new_id()),
            }
            self.commands[command["name"]] = command
            stored.append(command)
        return stored

    def _interaction_callback(self, call: Call) -> web.StreamResponse:
        match = re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", call.path)
        if match is None or call.method != "POST" or not isinstance(call.json, dict):
            return _json({"message": "Unknown interaction", "code": 10062}, status=404)
        interaction_id, token = match.groups()
        if self.failing_callbacks > 0:
            self.failing_callbacks -= 1
            return _json({"message": "500: Internal Server Error", "code": 0}, status=500)
        kind = call.json.get("type")
        data = call.json.get("data") or {}
        flags = int(data.get("flags") or 0)
        channel_id = self._channels.get(token, "0")
        message = self.message(channel_id, data, call.files)
        if kind == 5:
            message["flags"] |= LOADING
        self._messages[token] = message
        if kind in (4, 5):
            self._emit("MESSAGE_CREATE", message)
        if call.query.get("with_response", "").lower() not in ("1", "true"):
            return web.Response(status=204)  # Discord answers the callback itself only when asked to
        answer: dict[str, Any] = {
            "interaction": {
                "id": interaction_id,
                "type": 2,
                "response_message_id": message["id"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(flags & 64),
            },
            "resource": {"type": kind, "message": message} if kind in (4, 5, 7) else None,
        }
        return _json(answer)

    async def _webhook(self, call: Call) -> web.StreamResponse:
        match = re.fullmatch(r"/webhooks/(\d+)/([^/]+)(/messages/(@original|\d+))?", call.path)
        if match is None or match.group(1) != str(self.application_id):
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        token = match.group(2)
        original = self._messages.get(token)
        if original is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        if match.group(3) is None and call.method == "POST":
            followup = self.message(original["channel_id"], call.json, call.files)
            self._emit("MESSAGE_CREATE", followup)
            return _json(followup)
        if call.method == "GET":
            return _json(original)
        if call.method == "PATCH":
            if call.files and self.upload_delay_s:
                await asyncio.sleep(self.upload_delay_s)
            if not call.files and self._edits_held:
                await self._edits_released.wait()
            edited = self.message(original["channel_id"], call.json, call.files)
            edited["id"] = original["id"]
            edited["edited_timestamp"] = _stamp()
            edited["flags"] = original["flags"] & ~LOADING | edited["flags"]
            self._messages[token] = edited
            self._emit("MESSAGE_UPDATE", edited)
            return _json(edited)
        if call.method == "DELETE":
            if not original["flags"] & EPHEMERAL:
                self._emit("MESSAGE_DELETE", {"id": original["id"], "channel_id": original["channel_id"]})
            return web.Response(status=204)
        return _json({"message": "405: Method Not Allowed", "code": 0}, status=405)

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, tuple[Upload, ...]]:
        if not request.can_read_body:
            return None, ()
        if request.content_type.startswith("multipart/"):
            payload: Any = None
            files: list[Upload] = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):  # nested multipart: discord.py never sends one
                    continue
                data = await part.read()
                name = part.name or ""
                if name == "payload_json":
                    payload = json.loads(data)
                else:
                    files.append(Upload(name, part.filename, part.headers.get("Content-Type"), bytes(data)))
            return payload, tuple(files)
        text = await request.text()
        return (json.loads(text) if text else None), ()

    # -- the gateway ----------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._ws = ws
        self.gateway.connections += 1
        self.gateway.query = dict(request.query)
        await ws.send_str(json.dumps({"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}))
        async for frame in ws:
            if frame.type is not WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            op = message.get("op")
            if op == OP_IDENTIFY:
                self.gateway.identify = message.get("d")
                await self._send_ready()
            elif op == OP_HEARTBEAT:
                self.gateway.heartbeats += 1
                await ws.send_str(json.dumps({"op": OP_HEARTBEAT_ACK}))
            else:
                self.gateway.unknown.append(message)
            self._notify()
        self.gateway.close_code = ws.close_code
        self._notify()
        return ws

    async def _send_ready(self) -> None:
        await self.dispatch(
            "READY",
            {
                "v": 10,
                "user": {**self.bot_user, "verified": True, "mfa_enabled": False},
                "guilds": [],
                "session_id": "fake-session",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
                "shard": [0, 1],
            },
        )

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send the bot a gateway event (op 0)."""
        if self._ws is None or self._ws.closed:
            raise RuntimeError("the bot is not connected to the fake gateway")
        self._sequence += 1
        await self._ws.send_str(json.dumps({"op": OP_DISPATCH, "t": event, "s": self._sequence, "d": data}))

    def _emit(self, event: str, data: dict[str, Any], *, reaction: bool = False) -> None:
        """Tell the bot about its own message (or reaction) just after the REST answer, if Discord would."""
        if not self.message_events or self._ws is None or self._ws.closed:
            return
        if not reaction and data.get("flags", 0) & EPHEMERAL:
            return  # private replies are the member's alone
        guild_id = self._guilds.get(str(data["channel_id"]))
        if guild_id is not None:
            wanted = GUILD_MESSAGE_REACTIONS if reaction else GUILD_MESSAGES
        else:
            wanted = DIRECT_MESSAGE_REACTIONS if reaction else DIRECT_MESSAGES
        if not int((self.gateway.identify or {}).get("intents") or 0) & wanted:
            return
        if guild_id is not None:
            data = {**data, "guild_id": guild_id}
        task = asyncio.create_task(self._send_event(event, data))
        self._emitting.add(task)
        task.add_done_callback(self._emitting.discard)

    async def _send_event(self, event: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):  # the bot went away meanwhile
            await self.dispatch(event, data)

    # -- interactions ---------------------------------------------------------------------------------

    async def slash_command_in_dm(self, name: str, options: dict[str, Any], *, user_id: int | None = None) -> str:
        """Dispatch /`name` with string/int/bool `options`, typed by a member in a DM; returns its token."""
        _, token = await self.slash_command(name, options, user_id=user_id)
        return token

    async def slash_command(
        self,
        name: str,
        options: dict[str, Any],
        *,
        user_id: int | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        app_permissions: int = (1 << 51) - 1,
    ) -> tuple[str, str]:
        """Dispatch /`name` with string/int/bool `options`; returns the interaction's id and token.

        Typed in a DM, or with `guild_id` in that server's text channel `channel_id` by a member with every
        permission, where the bot has `app_permissions` (every one by default). Without `user_id` (or
        `channel_id`) each call makes up a new one.
        """
        command = self.commands.get(name)
        kinds = {str: 3, int: 4, bool: 5}
        data = {
            "id": command["id"] if command else str(self.new_id()),
            "name": name,
            "type": 1,
            "options": [{"name": key, "type": kinds[type(value)], "value": value} for key, value in options.items()],
        }
        return await self._interact(
            2, data, user_id=user_id, guild_id=guild_id, channel_id=channel_id, app_permissions=app_permissions
        )

    async def click(
        self,
        token: str,
        custom_id: str,
        *,
        user_id: int | None = None,
        guild_id: int | None = None,
        app_permissions: int = (1 << 51) - 1,
    ) -> tuple[str, str]:
        """Dispatch a click on the button `custom_id` under the original reply of interaction `token`, in its
        channel; returns the click's interaction id and token."""
        message = self.original(token)
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(
            3,
            data,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=int(self._channels[token]),
            app_permissions=app_permissions,
            message=message,
        )

    async def _interact(
        self,
        kind: int,
        data: dict[str, Any],
        *,
        user_id: int | None,
        guild_id: int | None,
        channel_id: int | None,
        app_permissions: int,
        message: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        member = self.user(user_id or self.new_id(), "member")
        channel = str(channel_id or self.new_id())
        interaction_id = str(self.new_id())
        token = f"interaction-token-{self.new_id()}"
        self._channels[token] = channel
        if guild_id is not None:
            self._guilds[channel] = str(guild_id)
        where: dict[str, Any]
        if guild_id is None:
            where = {
                "channel": {"id": channel, "type": 1, "recipients": [member], "last_message_id": None, "flags": 0},
                "user": member,
                "authorizing_integration_owners": {"0": member["id"]},
                "context": 1,
            }
        else:
            where = {
                "guild_id": str(guild_id),
                "guild": {"id": str(guild_id), "locale": "en-US", "features": []},
                "channel": {
                    "id": channel,
                    "type": 0,
                    "guild_id": str(guild_id),
                    "name": "art",
                    "position": 0,
                    "permission_overwrites": [],
                    "nsfw": False,
                    "parent_id": None,
                    "topic": None,
                    "last_message_id": None,
                    "rate_limit_per_user": 0,
                    "flags": 0,
                },
                "member": {
                    "user": member,
                    "roles": [],
                    "joined_at": _stamp(),
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                    "pending": False,
                    "nick": None,
                    "avatar": None,
                    "permissions": str((1 << 51) - 1),
                },
                "authorizing_integration_owners": {"0": str(guild_id)},
                "context": 0,
            }
        payload = {
            "id": interaction_id,
            "application_id": str(self.application_id),
            "type": kind,
            "token": token,
            "version": 1,
            "channel_id": channel,
            **where,
            "locale": "en-US",
            "app_permissions": str(app_permissions),
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
            "data": data,
        }
        if message is not None:
            payload["message"] = message
        self.dispatched[interaction_id] = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction_id, token

    def release_edits(self) -> None:
        """Answer the edits `hold_text_edits` is holding, and every later one at once."""
        self._edits_released.set()

    def original(self, token: str) -> dict[str, Any]:
        """The original reply of the interaction `token`, as last edited."""
        return self._messages[token]

    # -- waiting --------------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, check: Callable[[], Any], seconds: float) -> Any:
        """Wait until `check()` returns something truthy, and return it; TimeoutError after `seconds`."""
        async with asyncio.timeout(seconds):
            while not (found := check()):
                await self._changed.wait()
            return found

    def calls(self, method: str, pattern: str) -> list[Call]:
        """The recorded calls of `method` whose path matches the regular expression `pattern` in full."""
        return [c for c in self.requests if c.method == method and re.fullmatch(pattern, c.path)]
