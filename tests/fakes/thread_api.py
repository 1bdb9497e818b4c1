"""A loopback fake of the thread/entry image API (app.ai-client.com), answering as its documentation shows.

`ThreadApi` is a real HTTP/1.1 server on 127.0.0.1 (a free port) running in a background thread:

    POST /api/v1/threads                    form ai_version_code       -> {"data": thread}
    POST /api/v1/threads/{guid}/entry       form type, n, size, prompt -> {"data": request entry}
    GET  /api/v1/threads/{guid}/entries                                -> {"data": [entries]}
    GET  /storage/{ai_version_code}/{uuid}.png                         -> PNG bytes of the asked size

The `/api/v1` routes want `Authorization: Bearer <token>` and otherwise answer 401
`{"message": "Unauthenticated."}`; storage files are public. The entries listing shows only the request
entry, still waiting, for the first `pending_polls` polls, then the request (done) and the response entry.
As in the documentation, "no error" is written both as the string "None" and as null.

Failure knobs: `entry_error` (what the response entry's `error` holds), `entry_error_code`,
`never_answer` (the response never comes) and `image_host` (image URLs on another host). When
`image_host` is a loopback address other than 127.0.0.1 (say 127.0.0.2) the fake listens there too, so
the foreign host really serves the images and only the provider's allow-list can refuse them.
Every request is recorded in `requests` for assertions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import ipaddress
import json
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from PIL import Image

TITLES = {"dalle2_text2img": "New thread with DALL·E 2 Image Generation"}

_THREADS = re.compile(r"^/api/v1/threads/?$")
_ENTRY = re.compile(r"^/api/v1/threads/(?P<guid>[0-9a-f-]{36})/entry/?$")
_ENTRIES = re.compile(r"^/api/v1/threads/(?P<guid>[0-9a-f-]{36})/entries/?$")
_STORAGE = re.compile(r"^/storage/(?P<code>[a-z0-9_]+)/(?P<file>[0-9a-f-]{36})\.png(?P<thumb>\.thumbnail\.jpg)?$")
_SIZE = re.compile(r"^(\d{1,4})x(\d{1,4})$")


def _loopback_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stamp() -> str:
    """A timestamp as the API writes them: 2023-06-11T15:52:52.000000Z."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def _png(width: int, height: int, index: int) -> bytes:
    image = Image.new("RGB", (width, height), ((40 * index) % 256, 120, 200))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _jpeg(width: int, height: int) -> bytes:
    image = Image.new("RGB", (max(width // 4, 1), max(height // 4, 1)), (120, 120, 120))
    out = io.BytesIO()
    image.save(out, format="JPEG")
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request the fake received: headers with lower-case names, the form body parsed."""

    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass(slots=True)
class _Thread:
    thread: dict[str, Any]
    entries: list[dict[str, Any]] = field(default_factory=list)
    response: dict[str, Any] | None = None
    polls: int = 0


class _Server(ThreadingHTTPServer):
    """Joins its handler threads on close, and can cut keep-alive connections so they end."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, api: ThreadApi, host: str) -> None:
        self.api = api
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__((host, 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        with self.sockets_lock:
            self.open_sockets.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (e.g. a download over the byte cap) is not a failure.
        self.api.handler_errors += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `ThreadApi.requests` instead."""

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: object) -> None:
        self._answer(status, json.dumps(payload).encode(), "application/json")

    def _handle(self) -> None:
        api = self.server.api
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        form: dict[str, str] = {}
        if "application/x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
            form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        path = urlsplit(self.path).path
        headers = {name.lower(): value for name, value in self.headers.items()}
        api.record(Recorded(self.command, path, headers, form))

        if path.startswith("/storage/"):
            self._storage(path)
            return
        if not path.startswith("/api/v1/"):
            self._json(404, {"message": "Not Found"})
            return
        if headers.get("authorization") != f"Bearer {api.token}":
            self._json(401, {"message": "Unauthenticated."})
            return
        status, payload = api.route(self.command, path, form)
        self._json(status, payload)

    def _storage(self, path: str) -> None:
        match = _STORAGE.match(path)
        blob = self.server.api.file(match.group("file"), thumbnail=bool(match.group("thumb"))) if match else None
        if blob is None:
            self._json(404, {"message": "Not Found"})
            return
        data, kind = blob
        self._answer(200, data, kind)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()


class ThreadApi:
    """The fake service; use as a context manager (or `start()` / `close()`)."""

    def __init__(
        self,
        *,
        token: str = "test-thread-token",  # noqa: S107 - a fake's own test token
        pending_polls: int = 1,
        credits: int = 14,
        entry_error: object = None,
        entry_error_code: str | None = None,
        never_answer: bool = False,
        image_host: str | None = None,
    ) -> None:
        self.token = token
        self.pending_polls = pending_polls
        self.credits = credits
        self.entry_error = entry_error
        self.entry_error_code = entry_error_code
        self.never_answer = never_answer
        self.image_host = image_host
        self.requests: list[Recorded] = []
        self.handler_errors = 0
        self._threads: dict[str, _Thread] = {}
        self._files: dict[str, tuple[int, int, int]] = {}
        self._lock = threading.Lock()
        self._servers: list[tuple[_Server, threading.Thread]] = []

    # -- lifetime ---------------------------------------------------------------------------------------

    def start(self) -> ThreadApi:
        """Listen on 127.0.0.1 (and on `image_host` when it is another loopback address)."""
        hosts = ["127.0.0.1"]
        if self.image_host and self.image_host != "127.0.0.1" and _loopback_address(self.image_host):
            hosts.append(self.image_host)
        try:
            for host in hosts:
                server = _Server(self, host)
                thread = threading.Thread(
                    target=server.serve_forever, args=(0.02,), name=f"fake-thread-api-{host}", daemon=True
                )
                self._servers.append((server, thread))
                thread.start()
        except OSError:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop serving, end open connections and join every thread the servers started."""
        servers, self._servers = self._servers, []
        for server, thread in servers:
            if thread.is_alive():
                server.shutdown()
            server.cut_connections()
            server.server_close()
            thread.join(timeout=5)

    def __enter__(self) -> ThreadApi:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # -- addresses ----------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The API's port on 127.0.0.1."""
        assert self._servers, "the fake is not running"
        return int(self._servers[0][0].server_address[1])

    @property
    def image_origin(self) -> str:
        """Scheme, host and port of the result image URLs."""
        if self.image_host is None:
            return self.origin
        port = self._servers[-1][0].server_address[1] if len(self._servers) > 1 else self.port
        return f"http://{self.image_host}:{port}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass as the provider's base_url."""
        return f"{self.origin}/api/v1"

    # -- what happened ------------------------------------------------------------------------------------

    def record(self, recorded: Recorded) -> None:
        with self._lock:
            self.requests.append(recorded)

    def calls(self, method: str, pattern: str) -> list[Recorded]:
        """Recorded requests of `method` whose path matches the regular expression `pattern`."""
        with self._lock:
            return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    @property
    def polls(self) -> int:
        """How many times the entries were listed, over every thread."""
        return len(self.calls("GET", r"/entries$"))

    # -- the API ------------------------------------------------------------------------------------------

    def route(self, method: str, path: str, form: dict[str, str]) -> tuple[int, object]:
        with self._lock:
            if method == "POST" and _THREADS.match(path):
                return self._create_thread(form)
            if method == "POST" and (match := _ENTRY.match(path)):
                return self._create_entry(match.group("guid"), form)
            if method == "GET" and (match := _ENTRIES.match(path)):
                return self._list_entries(match.group("guid"))
        return 404, {"message": "Not Found"}

    def _create_thread(self, form: dict[str, str]) -> tuple[int, object]:
        code = form.get("ai_version_code", "")
        if code not in TITLES:
            return 422, {
                "message": "The selected ai version code is invalid.",
                "errors": {"ai_version_code": ["The selected ai version code is invalid."]},
            }
        now = _stamp()
        thread = {
            "guid": str(uuid.uuid4()),
            "ai_code": code.split("_")[0],
            "ai_version_code": code,
            "title": TITLES[code],
            "created_at": now,
            "updated_at": now,
        }
        self._threads[thread["guid"]] = _Thread(thread=thread)
        return 201, {"data": thread}

    def _create_entry(self, guid: str, form: dict[str, str]) -> tuple[int, object]:
        state = self._threads.get(guid)
        if state is None:
            return 404, {"message": "Not Found"}
        size = _SIZE.match(form.get("size", ""))
        if form.get("type") != "request" or not form.get("prompt") or not form.get("n", "").isdigit() or not size:
            return 422, {"message": "The given data was invalid."}
        content = {"n": int(form["n"]), "size": form["size"], "prompt": form["prompt"]}
        entry = {
            "guid": str(uuid.uuid4()),
            "thread_guid": guid,
            "type": "request",
            "error": "None",
            "content": content,
            "waiting_response": True,
            "credits": 0,
            "created_at": _stamp(),
        }
        state.entries.append(entry)
        return 201, {"data": dict(entry)}

    def _respond(self, state: _Thread, request: dict[str, Any]) -> dict[str, Any]:
        code = state.thread["ai_version_code"]
        width, height = (int(v) for v in request["content"]["size"].split("x"))
        failed = self.entry_error is not None
        content: list[dict[str, Any]] = []
        if not failed:
            for index in range(request["content"]["n"]):
                name = str(uuid.uuid4())
                self._files[name] = (width, height, index)
                url = f"{self.image_origin}/storage/{code}/{name}.png"
                content.append(
                    {
                        "url": url,
                        "thumbnail_url": f"{url}.thumbnail.jpg",
                        "dimensions": f"{width}x{height}",
                        "filesize": len(_png(width, height, index)),
                    }
                )
        response: dict[str, Any] = {
            "guid": str(uuid.uuid4()),
            "thread_guid": state.thread["guid"],
            "type": "response",
            "error": self.entry_error if failed else "None",
            "content": content,
            "waiting_response": False,
            "credits": 0 if failed else self.credits,
            "created_at": _stamp(),
        }
        if self.entry_error_code is not None:
            response["error_code"] = self.entry_error_code
        return response

    def _list_entries(self, guid: str) -> tuple[int, object]:
        state = self._threads.get(guid)
        if state is None:
            return 404, {"message": "Not Found"}
        state.polls += 1
        listed: list[dict[str, Any]] = []
        for entry in state.entries:
            shown = dict(entry)
            # The listing writes "no error" as null (the documentation's printed dicts show None).
            shown["error"] = None
            listed.append(shown)
        ready = not self.never_answer and state.polls > self.pending_polls
        if ready and state.entries:
            if state.response is None:
                state.response = self._respond(state, state.entries[0])
                state.entries[0]["waiting_response"] = False
                listed[0]["waiting_response"] = False
            listed.append(dict(state.response))
        return 200, {"data": listed}

    def file(self, name: str, *, thumbnail: bool = False) -> tuple[bytes, str] | None:
        """A stored image's bytes and content type, made to the size it was asked at."""
        with self._lock:
            made = self._files.get(name)
        if made is None:
            return None
        width, height, index = made
        if thumbnail:
            return _jpeg(width, height), "image/jpeg"
        return _png(width, height, index), "image/png"
