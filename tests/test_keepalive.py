"""The kept-alive poster (`bot.keepalive`) against a scripted server on 127.0.0.1 that answers byte for byte.

Each test's server reads whole requests (headers and a Content-Length body) and answers with the bytes the
test wrote for it, so the poster meets well-formed answers, Discord's 204s and error bodies, and the awkward
ones (chunked bodies, `Connection: close`, informational responses, garbage, extra answers, a server that
closes or never answers), over plain TCP and over TLS (trustme's test CA).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import trustme

from bot import keepalive
from bot.keepalive import Answer, KeepAlivePoster, Origin, PostError

NO_CONTENT = b"HTTP/1.1 204 No Content\r\nDate: Sun, 06 Dec 2026 03:00:00 GMT\r\n\r\n"


@dataclass
class Received:
    """One request as the server read it, and which of its connections (numbered from 0) it came on."""

    connection: int
    head: str
    body: bytes


@dataclass
class Script:
    """A server: it answers the nth request with `answers[n]` (or a 204 past the end), after `delay` s;
    None as an answer closes the connection without one."""

    answers: list[bytes | None] = field(default_factory=list)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    closed: int = 0
    """Connections the client closed (the server read the end of its stream)."""
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number, self.connections = self.connections, self.connections + 1
        self.writers.append(writer)
        try:
            while True:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                except asyncio.IncompleteReadError:
                    self.closed += 1
                    return
                length = next(
                    (
                        int(line.split(":", 1)[1])
                        for line in head.split("\r\n")
                        if line.lower().startswith("content-length:")
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                index = len(self.received)
                self.received.append(Received(number, head, body))
                if self.delay:
                    await asyncio.sleep(self.delay)
                answer = self.answers[index] if index < len(self.answers) else NO_CONTENT
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(script: Script, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """The script's server on a free port; its base URL (with an API-like path)."""
    server = await asyncio.start_server(script.serve, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}/api/v10"
    finally:
        server.close()
        for writer in script.writers:
            writer.close()
        await server.wait_closed()


async def eventually(check: Callable[[], bool]) -> None:
    """Wait (5 s at most) until `check()` is true: for what the server sees after the poster has moved on."""
    async with asyncio.timeout(5.0):
        while not check():  # noqa: ASYNC110  # polling another party's state; no event to wait on
            await asyncio.sleep(0.01)


async def test_posts_on_one_kept_alive_connection() -> None:
    script = Script()
    async with serving(script) as base:
        poster = KeepAlivePoster(base, headers={"User-Agent": "DiscordBot (easel, 1)"})
        first = await poster.post("/interactions/1/abc/callback", b'{"type":5}')
        second = await poster.post("/interactions/2/def/callback", b'{"type":5}')
        poster.close()

    assert first == second == Answer(204, b"")
    assert [r.connection for r in script.received] == [0, 0]
    assert poster.opened == 1
    head = script.received[0].head
    assert head.startswith("POST /api/v10/interactions/1/abc/callback HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{base.split(':')[2].split('/')[0]}\r\n" in head
    assert "User-Agent: DiscordBot (easel, 1)\r\n" in head
    assert "Content-Type: application/json\r\n" in head
    assert "Content-Length: 10\r\n" in head
    assert script.received[0].body == b'{"type":5}'


async def test_an_error_answer_gives_its_status_and_body_and_keeps_the_connection() -> None:
    error = b'{"message": "Interaction has already been acknowledged.", "code": 40060}'
    answer = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(error),
        error,
    )
    script = Script(answers=[answer])
    async with serving(script) as base:
        poster = KeepAlivePoster(base)
        assert await poster.post("/x", b"{}") == Answer(400, error)
        assert await poster.post("/y", b"{}") == Answer(204)
        poster.close()

    assert poster.opened == 1


async def test_a_chunked_body_is_read_whole() -> None:
    chunked = (
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    script = Script(answers=[chunked])
    async with serving(script) as base:
        poster = KeepAlivePoster(base)
        assert await poster.post("/x", b"{}") == Answer(500, b"hello world")
        assert await poster.post("/y", b"{}") == Answer(204)
        poster.close()

    assert poster.opened == 1


async def test_an_informational_answer_is_skipped() -> None:
    script = Script(answers=[b"HTTP/1.1 100 Continue\r\n\r\n" + NO_CONTENT])
    async with serving(script) as base:
        poster = KeepAlivePoster(base)
        assert await poster.post("/x", b"{}") == Answer(204)
        poster.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        b"HTTP/1.0 204 No Content\r\n\r\n",
        NO_CONTENT + NO_CONTENT,  # two answers to one request: the connection is out of step
        NO_CONTENT + b"HTTP/1.1 404 Not",  # the start of a second answer, in the same bytes
    ],
    ids=["connection-close", "http-1.0", "two-answers", "two-answers-partial"],
)
async def test_an_answer_that_ends_its_connection_is_kept_but_the_connection_is_not(answer: bytes) -> None:
    script = Script(answers=[answer])
    async with serving(script) as base, asyncio.timeout(5.0):  # a reused out-of-step connection would hang
        poster = KeepAlivePoster(base)
        assert await poster.post("/x", b"{}") == Answer(204)
        assert await poster.post("/y", b"{}") == Answer(204)
        poster.close()

    assert [r.connection for r in script.received] == [0, 1]


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    script = Script()
    async with serving(script) as base:
        poster = KeepAlivePoster(base)
        await poster.post("/x", b"{}")
        for writer in script.writers:
            writer.close()
        await eventually(lambda: not poster._idle[0].open)
        assert await poster.post("/y", b"{}") == Answer(204)
        poster.close()

    assert poster.opened == 2


async def test_a_connection_idle_too_long_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script()
    async with serving(script) as base:
        poster = KeepAlivePoster(base)
        await poster.post("/x", b"{}")
        monkeypatch.setattr(keepalive, "IDLE_SECONDS", 0.0)
        await poster.post("/y", b"{}")
        poster.close()

    assert [r.connection for r in script.received] == [0, 1]
    await eventually(lambda: script.closed == 2)


async def test_a_server_that_closes_before_answering_is_a_post_error_and_the_poster_goes_on() -> None:
    script = Script(answers=[None])
    async with serving(script) as base:
        poster = KeepAlivePoster(base)
        with pytest.raises(PostError):
            await poster.post("/x", b"{}")
        assert await poster.post("/y", b"{}") == Answer(204)
        poster.close()

    assert poster.opened == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP is not HTTP\r\n\r\n",
        b"HTTP/1.1 2x4 Nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ],
    ids=["not-http", "bad-status", "bad-length", "upgrade"],
)
async def test_a_malformed_answer_is_a_post_error_and_costs_the_connection(
    answer: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(answers=[answer])
    async with serving(script) as base:
        poster = KeepAlivePoster(base)
        with pytest.raises(PostError, match="not an HTTP answer"):
            await poster.post("/x", b"{}")
        assert await poster.post("/y", b"{}") == Answer(204)
        poster.close()

    assert [r.connection for r in script.received] == [0, 1]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "nothing escaped to the loop's handler"


async def test_an_interrupted_request_closes_its_connection_so_a_late_answer_is_never_read_as_the_next() -> None:
    late = b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nlate"
    script = Script(answers=[late], delay=0.3)
    async with serving(script) as base:
        poster = KeepAlivePoster(base)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await poster.post("/x", b"{}")
        script.delay = 0.0
        assert await poster.post("/y", b"{}") == Answer(204)
        poster.close()

    assert [r.connection for r in script.received] == [0, 1]
    await eventually(lambda: script.closed >= 1)


async def test_a_long_body_is_cut_and_the_connection_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keepalive, "MAX_BODY", 8)
    script = Script(answers=[b"HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\n\r\n0123456789ab"])
    async with serving(script) as base:
        poster = KeepAlivePoster(base)
        assert await poster.post("/x", b"{}") == Answer(400, b"")
        assert await poster.post("/y", b"{}") == Answer(204)
        poster.close()

    assert [r.connection for r in script.received] == [0, 1]


async def test_requests_at_once_each_get_a_connection_and_at_most_max_idle_stay() -> None:
    script = Script(delay=0.05)
    async with serving(script) as base:
        poster = KeepAlivePoster(base, max_idle=2)
        answers = await asyncio.gather(*(poster.post(f"/{n}", b"{}") for n in range(5)))
        assert answers == [Answer(204)] * 5
        assert poster.opened == 5
        assert len(poster._idle) == 2
        await eventually(lambda: script.closed == 3)
        poster.close()
        await eventually(lambda: script.closed == 5)


async def test_a_closed_poster_refuses_and_closes_its_idle_connections() -> None:
    script = Script()
    async with serving(script) as base:
        poster = KeepAlivePoster(base)
        await poster.post("/x", b"{}")
        poster.close()
        await eventually(lambda: script.closed == 1)
        with pytest.raises(PostError, match="closed"):
            await poster.post("/y", b"{}")


async def test_no_connection_is_an_os_error() -> None:
    script = Script()
    async with serving(script) as base:
        pass  # the port is free again
    poster = KeepAlivePoster(base)
    with pytest.raises(ConnectionRefusedError):
        await poster.post("/x", b"{}")


async def test_over_tls() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    script = Script()
    async with serving(script, server_context) as base:
        poster = KeepAlivePoster(base, ssl_context=client_context)
        assert await poster.post("/x", b"{}") == Answer(204)
        assert await poster.post("/y", b"{}") == Answer(204)
        poster.close()

        untrusted = KeepAlivePoster(base)  # the system's CAs do not know trustme's
        with pytest.raises(ssl.SSLCertVerificationError):
            await untrusted.post("/x", b"{}")

    assert [r.connection for r in script.received] == [0, 0]
    assert poster.origin.host_header == base.removeprefix("https://").removesuffix("/api/v10")


async def test_a_host_address_that_drops_connections_is_raced_past(monkeypatch: pytest.MonkeyPatch) -> None:
    """Happy eyeballs: the first address never answers (a full accept queue drops the SYNs, as a broken
    IPv6 route listed first would); the next one is tried beside it after a quarter second."""
    script = Script()
    async with serving(script) as base:
        port = int(base.split(":")[2].split("/")[0])
        with socket.socket() as hole:
            hole.bind(("127.0.0.2", port))
            hole.listen(0)
            fillers = [socket.socket() for _ in range(3)]
            try:
                for filler in fillers:
                    filler.setblocking(False)
                    filler.connect_ex(("127.0.0.2", port))
                await asyncio.sleep(0.1)
                loop = asyncio.get_running_loop()

                async def two_addresses(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
                    assert host == "discord.example"
                    return [
                        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port)),
                        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
                    ]

                monkeypatch.setattr(loop, "getaddrinfo", two_addresses)
                poster = KeepAlivePoster(f"http://discord.example:{port}/api/v10")
                # Tried one after another, the first address would hold the request for the kernel's SYN
                # retries (a second, then three more, ...): far past this bound.
                async with asyncio.timeout(2.0):
                    assert await poster.post("/x", b"{}") == Answer(204)
                poster.close()
            finally:
                for filler in fillers:
                    filler.close()

    assert "Host: discord.example:" in script.received[0].head


async def test_a_host_name_is_looked_up_once_for_the_connections_opened_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = Script(delay=0.05)
    lookups: list[str] = []
    failing = [True]

    async def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        lookups.append(host)
        await asyncio.sleep(0.01)
        if failing[0]:
            failing[0] = False
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    async with serving(script) as base:
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
        poster = KeepAlivePoster(base.replace("127.0.0.1", "discord.example"))
        with pytest.raises(socket.gaierror):  # an OSError: the caller falls back as for any failed connection
            await poster.post("/x", b"{}")
        # The failed lookup is not kept: the next connections look again, once for all five.
        assert await asyncio.gather(*(poster.post(f"/{n}", b"{}") for n in range(5))) == [Answer(204)] * 5
        assert (poster.opened, len(lookups)) == (5, 2)
        monkeypatch.setattr(keepalive, "IDLE_SECONDS", 0.0)
        await poster.post("/again", b"{}")
        assert len(lookups) == 2, "within DNS_SECONDS, a new connection uses the addresses found"
        monkeypatch.setattr(keepalive, "DNS_SECONDS", 0.0)
        await poster.post("/later", b"{}")
        assert len(lookups) == 3
        poster.close()

    assert lookups == ["discord.example"] * 3


async def test_an_ip_address_is_not_looked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*_: object, **__: object) -> None:
        raise AssertionError("looked up")

    script = Script()
    async with serving(script) as base:
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", refuse)
        poster = KeepAlivePoster(base)
        assert await poster.post("/x", b"{}") == Answer(204)
        poster.close()


def test_origin_and_host_header() -> None:
    assert Origin.parse("https://discord.com/api/v10/") == Origin("https", "discord.com", 443, "/api/v10")
    assert Origin.parse("https://discord.com/api/v10").host_header == "discord.com"
    assert Origin.parse("http://proxy.internal:8080").host_header == "proxy.internal:8080"
    assert Origin.parse("http://[::1]:81/api").host_header == "[::1]:81"
    assert Origin.parse("http://localhost").port == 80
    for bad in ("ftp://discord.com", "https://", "https://user:pw@discord.com", "https://discord.com/api?x=1"):
        with pytest.raises(ValueError, match="URL"):
            Origin.parse(bad)


async def test_line_breaks_in_headers_or_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        KeepAlivePoster("http://127.0.0.1:9", headers={"User-Agent": "easel\r\nX-Injected: 1"})
    poster = KeepAlivePoster("http://127.0.0.1:9")
    for path in ("/a b", "/a\r\nX: 1", "/é", "/a\tb", "/a\x7fb", "/a?b", "/a#b"):
        with pytest.raises(ValueError, match="printable ASCII"):
            await poster.post(path, b"{}")
