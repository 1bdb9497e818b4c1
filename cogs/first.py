"""Answer first: acknowledge a command straight from its gateway frame, before discord.py builds anything.

Discord gives a bot 3 s to acknowledge an interaction. discord.py acknowledges one only after it has built
the `Interaction` (its user, member, channel, permissions), looked up the command, transformed its options,
run the checks and entered the callback, and then through its webhook adapter, which asks for the callback's
resource and parses the answer into a `Message`. That is ~0.4 ms of the loop per interaction; when two
hundred members press Enter together, the last of them waits for all the others' (bench/bot.py's burst).

`FirstAnswers` takes over the gateway's INTERACTION_CREATE parser. For a slash command or menu whose
`extras` carry `ACK_FIRST` (its first step is the defer: /imagine, "Vary image"), and that the guard admits
(`cogs.guard.admits_frame`, from the raw payload), it sends the type-5 ("thinking…") callback at once,
without asking for the resource, on kept-alive connections of the bot's own (`bot.keepalive`: ~50 µs of the
loop against aiohttp's ~120; discord.py's aiohttp session when a proxy is set, which that client does not
speak), and builds the `Interaction` only once no acknowledgement is on its way (`Pacer.defers`): a burst's
acknowledgements all go out first. The built interaction is marked as deferred, so the command's
`Renderer.defer` finds it answered (`taken`) and goes on.

Everything else goes to discord.py's parser untouched: suggestions, buttons, forms, commands whose first
answer may be a refusal or a form (/edit and /vary check the upload first; "Edit image" opens a form),
and frames the guard would refuse, whose refusal must be the first answer. When the early acknowledgement
fails, the command defers the usual way (and a Discord that says "already acknowledged" counts as done).
Under a test harness that answers for discord.py's webhook adapter (simcord) every frame goes to discord.py:
the harness models discord.py's own path, and there answering first cost more than it saved (simcord
tracks every task a handler starts; bench/bot.py on simcord, two interleaved rounds: 100 × 2 s in
2.99–3.14 s against 2.75–2.78 s, burst lag 67–126 against 31–51 ms). tests/test_first_answers.py runs
this path against the loopback fake, over real HTTP.

Nothing here may raise into the gateway: an exception there ends discord.py's connection, so any failure
of ours hands the frame to discord.py's own parser.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord.http import Route
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

from bot.keepalive import KeepAlivePoster, PostError
from bot.pacing import Pacer
from cogs.guard import admits_frame, frame_private

if TYPE_CHECKING:
    from bot.app import EaselBot

log = logging.getLogger(__name__)

ACK_FIRST = "easel_ack_first"
"""A command's `extras` key: true when its first step is `Renderer.defer` (it may be answered from its frame)."""
EPHEMERAL = 64
"""Discord's message flag for a reply only its member sees."""
ALREADY_ACKNOWLEDGED = 40060
"""Discord's error code for a second answer to one interaction."""
ACK_TIMEOUT = 2.5
"""Seconds an early acknowledgement may take before the command tries the usual defer (Discord allows 3)."""
CLOSE_GRACE = 5.0
"""Seconds a stop waits for the interactions answered first to be built (and told the bot is stopping)."""

_THINKING = discord.InteractionResponseType.deferred_channel_message
_BODIES = {0: b'{"type":5}', EPHEMERAL: b'{"type":5,"data":{"flags":64}}'}
_JSON = {"Content-Type": "application/json"}

Parser = Callable[[Any], None]


@dataclass(frozen=True)
class Acknowledgement:
    """An early type-5 answer on its way: `sent` ends True once Discord took it; the flags it carries."""

    sent: asyncio.Task[bool]
    flags: int


class FirstAnswers:
    """The bot's INTERACTION_CREATE parser while installed: acknowledges marked commands before building them."""

    def __init__(self, bot: EaselBot, pacer: Pacer) -> None:
        self._bot = bot
        self._pacer = pacer
        self.keepalive = True
        """Send the callbacks on our own kept-alive connections (`bot.keepalive`) unless a proxy is set."""
        self._callbacks_poster: KeepAlivePoster | None = None
        self._original: Parser | None = None
        self._builds: collections.deque[tuple[Any, Acknowledgement]] = collections.deque()
        """Frames acknowledged and not yet built, each with its acknowledgement."""
        self._builder: asyncio.Task[None] | None = None
        self.answered = 0
        """Interactions acknowledged from their frame (for the tests, the bench and the logs)."""
        self.fell_back = 0
        """Early acknowledgements that failed, leaving the command to defer the usual way."""

    # -- the parser ------------------------------------------------------------------------------------

    def install(self) -> None:
        """Take over the gateway's INTERACTION_CREATE parser (discord.py's gateway reads it from this dict), with
        the lean client made now: its TLS context takes ~20 ms to build, not to be spent on a first interaction."""
        if self._original is not None:
            return
        self._poster(self._bot.http)
        parsers = self._bot._connection.parsers
        self._original = parsers["INTERACTION_CREATE"]
        parsers["INTERACTION_CREATE"] = self.parse

    def uninstall(self) -> None:
        """Give discord.py its parser back."""
        if self._original is not None:
            self._bot._connection.parsers["INTERACTION_CREATE"] = self._original
            self._original = None

    def parse(self, data: Any) -> None:
        """The gateway's parser for INTERACTION_CREATE: acknowledge now and build later, or pass it on."""
        original = self._original or self._bot._connection.parse_interaction_create
        if type(async_context.get()) is not AsyncWebhookAdapter:
            original(data)  # a test harness answers for discord.py's adapter: it models discord.py's own path
            return
        try:
            flags = self.flags_for(data)
            if flags is not None:
                interaction_id = int(data["id"])
                ack = self._ack(interaction_id, str(data["token"]), flags)
                task = self._pacer.defers.spawn(ack, name=f"easel-ack-{interaction_id}")
                self._builds.append((data, Acknowledgement(task, flags)))
                if self._builder is None or self._builder.done():
                    loop = asyncio.get_running_loop()
                    self._builder = loop.create_task(self._build_all(), name="easel-first-answers")
                return
        except Exception:
            log.exception("could not answer an interaction from its frame; leaving it to discord.py")
        original(data)

    def flags_for(self, data: Mapping[str, Any]) -> int | None:
        """The flags of the type-5 answer to send for this raw interaction now, or None to leave it be."""
        if data.get("type") != discord.InteractionType.application_command.value:
            return None
        command_data: Mapping[str, Any] = data.get("data") or {}
        try:
            kind = discord.AppCommandType(command_data.get("type", 1))
        except ValueError:
            return None
        command = self._bot.tree.get_command(str(command_data.get("name")), type=kind)
        if command is None or not command.extras.get(ACK_FIRST):
            return None
        private = frame_private(data)
        if not admits_frame(data, self._bot.settings, closing=self._bot.in_flight.closing, private=private):
            return None
        return EPHEMERAL if private else 0

    # -- acknowledging ---------------------------------------------------------------------------------

    async def _ack(self, interaction_id: int, token: str, flags: int) -> bool:
        """Send the type-5 callback; True once Discord has taken it."""
        async with self._pacer.callbacks.slot():
            await self._pacer.turn(urgent=True)
            try:
                async with asyncio.timeout(ACK_TIMEOUT):
                    await self._send(interaction_id, token, flags)
            except Exception as exc:
                self.fell_back += 1
                # aiohttp's errors quote the URL, and its path holds the interaction's token.
                reason = repr(exc).replace(urllib.parse.quote(token, safe=""), "<token>").replace(token, "<token>")
                log.warning(
                    "interaction %s: the early acknowledgement failed (%s); deferring as usual", interaction_id, reason
                )
                return False
        self.answered += 1
        return True

    async def _send(self, interaction_id: int, token: str, flags: int) -> None:
        # Without `with_response`, Discord answers 204 and there is no message to parse.
        path = f"/interactions/{interaction_id}/{urllib.parse.quote(token, safe='')}/callback"  # as discord.py's Route
        http = self._bot.http
        poster = self._poster(http)
        if poster is not None:
            answer = await poster.post(path, _BODIES[flags])
            if answer.status >= 300:
                raise PostError(f"Discord answered {answer.status}: {answer.body[:200].decode(errors='replace')}")
            return
        session = http._HTTPClient__session  # type: ignore[attr-defined]  # discord.py's Interaction does the same
        url = f"{Route.BASE}{path}"
        async with session.post(
            url, data=_BODIES[flags], headers=_JSON, proxy=http.proxy, proxy_auth=http.proxy_auth
        ) as response:
            if response.status >= 300:
                raise discord.HTTPException(response, await response.text())

    @property
    def connections_opened(self) -> int:
        """Connections the lean client has opened for callbacks (for the tests and the bench)."""
        return 0 if self._callbacks_poster is None else self._callbacks_poster.opened

    def _poster(self, http: discord.http.HTTPClient) -> KeepAlivePoster | None:
        """The lean client for callbacks, or None where discord.py's own session goes (a proxy, or switched off)."""
        if not self.keepalive or http.proxy is not None:
            return None
        poster = self._callbacks_poster
        if poster is None or poster.base_url != Route.BASE:
            if poster is not None:
                poster.close()
            poster = self._callbacks_poster = KeepAlivePoster(
                Route.BASE, headers={"User-Agent": http.user_agent}, max_idle=self._pacer.callbacks.size
            )
        return poster

    async def taken(self, interaction: discord.Interaction[Any], *, ephemeral: bool) -> bool:
        """True if `interaction` was acknowledged from its frame (waiting for that to finish if need be)."""
        ack = interaction.extras.pop(ACK_FIRST, None)
        if not isinstance(ack, Acknowledgement):
            return False
        if bool(ack.flags & EPHEMERAL) != ephemeral:
            log.warning(
                "interaction %s: answered first with flags %d, not as its command asks", interaction.id, ack.flags
            )
        if await ack.sent:
            return True
        interaction.response._response_type = None
        return False

    # -- building --------------------------------------------------------------------------------------

    async def _build_all(self) -> None:
        """Hand the acknowledged frames to discord.py's command tree, once no acknowledgement is on its way."""
        while self._builds:
            await self._pacer.defers.quiet()
            await self._pacer.turn()
            data, ack = self._builds.popleft()
            try:
                self._build(data, ack)
            except Exception:
                log.exception("interaction %s: answered, but could not be built", data.get("id"))

    def _build(self, data: Any, ack: Acknowledgement) -> None:
        """What discord.py's `parse_interaction_create` does for a slash command, with the answer noted."""
        state = self._bot._connection
        interaction: discord.Interaction[Any] = discord.Interaction(data=data, state=state)
        interaction.extras[ACK_FIRST] = ack
        mark_deferred(interaction)
        self._bot.tree._from_interaction(interaction)
        state.dispatch("interaction", interaction)

    async def close(self) -> None:
        """Stop answering first, and let the frames already answered be built (within `CLOSE_GRACE`)."""
        self.uninstall()
        builder = self._builder
        try:
            if builder is not None and not builder.done():
                # The builder first waits for the acknowledgements on their way: the lean client stays open for them.
                try:
                    async with asyncio.timeout(CLOSE_GRACE):
                        await asyncio.shield(builder)
                except TimeoutError:
                    builder.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await builder
        finally:
            if self._callbacks_poster is not None:
                self._callbacks_poster.close()


def mark_deferred(interaction: discord.Interaction[Any]) -> None:
    """Note on `interaction` that Discord has its type-5 answer (discord.py keeps this in a private field)."""
    interaction.response._response_type = _THINKING
