"""Small POSTs to one origin over kept-alive HTTP/1.1 connections: the lean path for interaction callbacks.

When two hundred members press Enter together, the bot owes Discord two hundred type-5 callbacks, each a
ten-byte POST answered by a bodiless 204, and the last of them waits for the loop to have sent all the
others. aiohttp spends ~110-175 µs of the loop's CPU on each (its request and response objects, URL
handling, header multidicts, timers, traces, the connector's bookkeeping); writing the request's bytes
ourselves and reading the answer with httptools (llhttp, the parser uvicorn and Node.js use) spends
~40-60 µs (bench/README.md, "Callbacks without aiohttp"). h11, already here through httpx, was measured
too: ~100 µs, no better than aiohttp.

`KeepAlivePoster` keeps a few connections to one origin (http or https; TLS is the standard library's,
through asyncio) and sends one request at a time on each. It does only what a callback needs, and
anything out of the ordinary costs it the connection:

- the answer is the response's status and body (a body past `MAX_BODY` is cut); llhttp reads the framing
  (Content-Length, chunked, informational responses, keep-alive), and a response it refuses, an upgrade,
  a second answer to one request, bytes arriving between requests, `Connection: close` or a connection
  closed early end that connection (as with any HTTP/1.1 client, a server's second answer that arrives
  only after the next request was written cannot be told from that request's own);
- an interrupted request (a timeout, a cancellation, a broken connection) closes its connection, so a
  late answer can never be read as the next request's;
- no proxies, redirects, cookies, compression or retries: the caller uses its usual client where those
  matter (`cogs.first` sends through discord.py's session when a proxy is set, and a callback that fails
  here is deferred again the usual way, where Discord's "already acknowledged" counts as done).

A host's addresses are raced as aiohttp races them (happy eyeballs, through aio-libs' aiohappyeyeballs,
which aiohttp itself uses). An idle connection is reused for `IDLE_SECONDS` at most (servers close idle
ones: aiohttp's own client gives up on them after 15 s) and at most `max_idle` are kept.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohappyeyeballs
import httptools

IDLE_SECONDS = 10.0
"""Seconds an idle connection is trusted to still be open."""
DNS_SECONDS = 10.0
"""Seconds a host name's addresses are kept (aiohttp's own default)."""
HAPPY_EYEBALLS_DELAY = 0.25
"""Seconds before the next of a host's addresses is tried beside one that has not answered (aiohttp's delay)."""
MAX_BODY = 1024 * 1024
"""Bytes of a response's body that are read; a longer one ends its connection."""


AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]
"""One of `getaddrinfo`'s answers."""


class PostError(Exception):
    """The request got no complete answer: a connection lost early, or a response not read (failing to connect
    is the OSError it was)."""


@dataclass(frozen=True)
class Answer:
    """A response: its status code and body (empty when it had none, or one that was not read)."""

    status: int
    body: bytes = b""


@dataclass(frozen=True)
class Origin:
    """Where requests go: scheme, host and port, and the path every request's path is appended to."""

    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Origin:
        """The origin of an http(s) URL such as Discord's API base; ValueError for anything else."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an http or https URL with a host is needed")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("a URL with credentials, a query or a fragment is not a base")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        """The Host header's value: the port only when it is not the scheme's own."""
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


class _Connection(asyncio.Protocol):
    """One connection: a request written, its response read by httptools (llhttp) as the bytes come."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.reusable = True
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._body = bytearray()
        self._waiter: asyncio.Future[Answer] | None = None

    # -- asyncio's side --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream connection's is a Transport
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(PostError(f"the connection closed before the answer ({exc!r})"))

    def eof_received(self) -> bool | None:
        self._fail(PostError("the server closed the connection before the answer"))
        return None  # close the transport

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for (a late answer, a server's "408 idle"): the connection is out of step.
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.close()
            self._fail(PostError(f"not an HTTP answer we read ({type(exc).__name__})"))

    # -- the parser's side -----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.reusable = False  # a second answer to one request (in the same bytes): out of step

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) <= MAX_BODY:
            self._body += body
        else:
            self.reusable = False  # the body is cut; nothing we post expects one this long

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # an informational response: the real one follows
            self._body.clear()
            return
        if not self._parser.should_keep_alive():
            self.reusable = False
        waiter, body = self._waiter, bytes(self._body)
        self._body.clear()
        if waiter is None or waiter.done():
            self.close()  # a second answer to one request
            return
        waiter.set_result(Answer(status, body))

    # -- the poster's side -----------------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        """Write one request; the future ends with its answer (or PostError)."""
        if self.transport is None or self._waiter is not None:
            raise PostError("the connection is not ready for a request")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def done_with(self) -> None:
        """The request is over (answered or not): only a cleanly answered one leaves the connection reusable."""
        waiter, self._waiter = self._waiter, None
        if waiter is None or not waiter.done() or waiter.cancelled() or waiter.exception() is not None:
            self.reusable = False

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: PostError) -> None:
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)


def _failed(lookup: asyncio.Future[Any]) -> bool:
    return lookup.done() and (lookup.cancelled() or lookup.exception() is not None)


class KeepAlivePoster:
    """POSTs to one origin, each on a kept-alive connection of its own while it runs; see the module's doc."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_idle: int = 16,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url
        self.origin = Origin.parse(base_url)
        self.max_idle = max_idle
        self._ssl: ssl.SSLContext | None = None
        if self.origin.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        fixed = {"Host": self.origin.host_header, **(headers or {})}
        for name, value in fixed.items():
            if any(c in f"{name}{value}" for c in "\r\n\0"):
                raise ValueError(f"header {name!r} holds a line break")
        self._head = "".join(f"{name}: {value}\r\n" for name, value in fixed.items()).encode("latin-1")
        self._idle: collections.deque[_Connection] = collections.deque()
        self._closed = False
        self._resolved: tuple[float, asyncio.Future[Any]] | None = None
        """When the host's name was last looked up, and the lookup."""
        self.opened = 0
        """Connections opened so far (for the tests and the bench)."""

    async def post(self, path: str, body: bytes, content_type: str = "application/json") -> Answer:
        """POST `body` to the base path + `path`; the answer, or PostError (OSError while connecting)."""
        if self._closed:
            raise PostError("the poster is closed")
        target = self.origin.base_path + path
        if not target.startswith("/") or not target.isascii() or any(c <= " " or c in "\x7f?#" for c in target):
            raise ValueError("a request path must be printable ASCII without spaces, '?' or '#'")
        request = (
            f"POST {target} HTTP/1.1\r\n".encode("ascii")
            + self._head
            + f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode("latin-1")
            + body
        )
        connection = self._take() or await self._connect()
        try:
            answer = await connection.send(request)
        finally:
            connection.done_with()
            self._give_back(connection)
        return answer

    def _take(self) -> _Connection | None:
        """An idle connection still worth trusting, or None."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the likeliest to be open
            if connection.open and connection.reusable and now - connection.idle_since < IDLE_SECONDS:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        origin = self.origin
        addresses = await self._addresses(loop)
        # The addresses are raced, a new one every quarter second, as aiohttp does: tried one after another,
        # an address that drops connections (a broken IPv6 route listed first) would hold up every callback
        # past Discord's 3 s. uvloop's create_connection has no happy_eyeballs_delay of its own.
        sock = await aiohappyeyeballs.start_connection(
            addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, interleave=1
        )
        try:
            _, connection = await loop.create_connection(
                _Connection,
                sock=sock,
                ssl=self._ssl,
                server_hostname=origin.host if self._ssl is not None else None,
            )
        except BaseException:
            sock.close()
            raise
        self.opened += 1
        return connection

    async def _addresses(self, loop: asyncio.AbstractEventLoop) -> Sequence[AddressInfo]:
        """The host's addresses: an IP literal as it is, a name resolved at most every `DNS_SECONDS` (a burst
        opens its connections together; each resolving on its own would be a thread hop each)."""
        origin = self.origin
        try:
            ip = ipaddress.ip_address(origin.host)
        except ValueError:
            pass
        else:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (origin.host, origin.port))]
        now = time.monotonic()
        entry = self._resolved
        if entry is None or now - entry[0] >= DNS_SECONDS or _failed(entry[1]):
            # One lookup, shared by every connection opened meanwhile (a burst opens a dozen at once).
            lookup: asyncio.Future[Any] = asyncio.ensure_future(
                loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
            )
            entry = self._resolved = (now, lookup)
        addresses: list[AddressInfo] = await asyncio.shield(entry[1])  # one caller's cancel is its own
        if not addresses:
            raise OSError(f"no address for {origin.host}")
        return addresses

    def _give_back(self, connection: _Connection) -> None:
        if self._closed or not (connection.open and connection.reusable) or len(self._idle) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    def close(self) -> None:
        """Close the idle connections; requests still running close theirs as they end."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()
