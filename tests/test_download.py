"""bot.api.download: fetching result images only from allowed hosts, only images, never too big, never redirected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from bot.api.download import fetch_image, fetch_images, host_allowed
from bot.errors import ProviderUnavailable
from tests import images
from tests.tracking import TrackingTransport

HOST = "files.example.test"
URL = f"https://{HOST}/out/1.png"
PNG = images.png(20, 10)


class Counting(httpx.AsyncByteStream):
    """An endless-ish body of `chunks` x `size` bytes, counting how many chunks were pulled and whether closed."""

    def __init__(self, chunks: int, size: int = 1024) -> None:
        self.chunks = chunks
        self.size = size
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.sent += 1
            yield b"\x00" * self.size

    async def aclose(self) -> None:
        self.closed = True


def png_response(data: bytes = PNG, **headers: str) -> httpx.Response:
    return httpx.Response(200, content=data, headers={"content-type": "image/png", **headers})


# -- allowed fetches -----------------------------------------------------------------------------------------


async def test_fetch_allowed_host(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """An image on an allowed host is fetched whole, with a GET and no credentials."""
    route = respx_mock.get(URL).mock(return_value=png_response())
    assert await fetch_image(client, URL, allowed_hosts=[HOST]) == PNG
    request = route.calls.last.request
    assert request.method == "GET"
    assert "authorization" not in request.headers
    assert "api-key" not in request.headers


async def test_fetch_keeps_query_string(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """Signed URLs keep their query string (the signature)."""
    route = respx_mock.get(URL, params={"sig": "a/b+c=", "se": "2026"}).mock(return_value=png_response())
    await fetch_image(client, f"{URL}?sig=a%2Fb%2Bc%3D&se=2026", allowed_hosts=[HOST])
    assert route.called


async def test_fetch_streamed_body_without_length(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """A body sent in chunks without content-length is assembled in order."""
    data = images.jpeg(64, 64)
    pieces = [data[i : i + 100] for i in range(0, len(data), 100)]

    class Pieces(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

    respx_mock.get(URL).mock(return_value=httpx.Response(200, stream=Pieces(), headers={"content-type": "image/jpeg"}))
    assert await fetch_image(client, URL, allowed_hosts=[HOST]) == data


@pytest.mark.parametrize("content_type", ["image/png", "IMAGE/PNG", "image/webp; charset=binary", " image/gif "])
async def test_fetch_accepts_any_image_type(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, content_type: str
) -> None:
    """Any image/* content type is accepted, whatever its case or parameters."""
    respx_mock.get(URL).mock(return_value=httpx.Response(200, content=PNG, headers={"content-type": content_type}))
    assert await fetch_image(client, URL, allowed_hosts=[HOST]) == PNG


async def test_fetch_body_exactly_at_cap(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """A body of exactly max_bytes is allowed."""
    respx_mock.get(URL).mock(return_value=png_response(b"\x89" * 4096))
    assert len(await fetch_image(client, URL, allowed_hosts=[HOST], max_bytes=4096)) == 4096


async def test_fetch_plain_http_allowed(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """http:// is allowed (local compatible servers rarely have TLS)."""
    respx_mock.get("http://localhost:8080/generated/1.png").mock(return_value=png_response())
    assert await fetch_image(client, "http://localhost:8080/generated/1.png", allowed_hosts=["localhost"]) == PNG


async def test_fetch_subdomain_entry(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """An allow-list entry starting with '.' admits subdomains at any depth and the bare domain."""
    for url in [
        "https://a.blob.example.net/x.png",
        "https://deep.er.blob.example.net/x.png",
        "https://blob.example.net/x.png",
    ]:
        respx_mock.get(url).mock(return_value=png_response())
        assert await fetch_image(client, url, allowed_hosts=[".blob.example.net"]) == PNG


# -- refusals ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.org/x.png",
        f"https://{HOST}.evil.org/x.png",
        f"https://not{HOST}/x.png",
        f"https://sub.{HOST}/x.png",
    ],
    ids=["other-domain", "suffix-trick", "prefix-trick", "subdomain-of-exact-entry"],
)
async def test_fetch_refuses_foreign_host(respx_mock: respx.MockRouter, client: httpx.AsyncClient, url: str) -> None:
    """A host not on the list (or only looking like it) is refused without any request."""
    route = respx_mock.get(url).mock(return_value=png_response())
    with pytest.raises(ProviderUnavailable) as caught:
        await fetch_image(client, url, allowed_hosts=[HOST])
    assert not route.called
    assert "EASEL_DOWNLOAD_HOSTS" in caught.value.message


async def test_fetch_refuses_with_empty_allow_list(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """With no allowed hosts (or only blank entries) nothing is fetched."""
    route = respx_mock.get(URL).mock(return_value=png_response())
    for allowed in ([], ["", "  "]):
        with pytest.raises(ProviderUnavailable):
            await fetch_image(client, URL, allowed_hosts=allowed)
    assert not route.called


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://{HOST}/x.png",
        "file:///etc/passwd",
        f"gopher://{HOST}/x",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "/relative/path.png",
        "not a url",
        "",
        "https:///no-host.png",
    ],
)
async def test_fetch_refuses_non_http_urls(client: httpx.AsyncClient, url: str) -> None:
    """Only absolute http(s) URLs with a host are fetched; anything else is refused before any request."""
    with pytest.raises(ProviderUnavailable):
        await fetch_image(client, url, allowed_hosts=[HOST, ""])


@pytest.mark.parametrize("content_type", ["text/html", "application/json", "application/octet-stream", None])
async def test_fetch_refuses_non_image_content(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, content_type: str | None
) -> None:
    """A response that does not say it is an image is refused, and its body is not read to the end."""
    body = Counting(1000)
    headers = {"content-type": content_type} if content_type else {}
    respx_mock.get(URL).mock(return_value=httpx.Response(200, stream=body, headers=headers))
    with pytest.raises(ProviderUnavailable) as caught:
        await fetch_image(client, URL, allowed_hosts=[HOST])
    assert "did not point to an image" in caught.value.message
    assert body.sent <= 1
    assert body.closed


async def test_fetch_refuses_streamed_body_over_cap(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """A body with no content-length that grows past the cap is cut off as soon as it passes it."""
    body = Counting(chunks=10_000, size=1024)
    respx_mock.get(URL).mock(return_value=httpx.Response(200, stream=body, headers={"content-type": "image/png"}))
    with pytest.raises(ProviderUnavailable) as caught:
        await fetch_image(client, URL, allowed_hosts=[HOST], max_bytes=8 * 1024)
    assert "download cap" in caught.value.message
    assert body.sent == 9
    assert body.closed


async def test_fetch_refuses_declared_length_over_cap(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """A content-length above the cap is refused before the body is read."""
    body = Counting(chunks=100, size=1024)
    respx_mock.get(URL).mock(
        return_value=httpx.Response(
            200, stream=body, headers={"content-type": "image/png", "content-length": str(100 * 1024)}
        )
    )
    with pytest.raises(ProviderUnavailable) as caught:
        await fetch_image(client, URL, allowed_hosts=[HOST], max_bytes=1024)
    assert "download cap" in caught.value.message
    assert body.sent == 0


async def test_fetch_understated_length_still_capped(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """A content-length that lies (smaller than the body) does not get past the byte count."""
    body = Counting(chunks=64, size=1024)
    respx_mock.get(URL).mock(
        return_value=httpx.Response(200, stream=body, headers={"content-type": "image/png", "content-length": "10"})
    )
    with pytest.raises(ProviderUnavailable):
        await fetch_image(client, URL, allowed_hosts=[HOST], max_bytes=4096)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_fetch_refuses_redirects(respx_mock: respx.MockRouter, status: int) -> None:
    """A redirect is not followed (even on a client that follows them), so it cannot lead off the allow-list."""
    target = respx_mock.get("https://evil.example.org/x.png").mock(return_value=png_response())
    respx_mock.get(URL).mock(
        return_value=httpx.Response(status, headers={"location": "https://evil.example.org/x.png"})
    )
    transport = TrackingTransport()
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as http:
        with pytest.raises(ProviderUnavailable) as caught:
            await fetch_image(http, URL, allowed_hosts=[HOST, "evil.example.org"])
    assert f"HTTP {status}" in caught.value.message
    assert not target.called
    assert transport.open == 0


@pytest.mark.parametrize("status", [204, 206, 403, 404, 500])
async def test_fetch_refuses_other_statuses(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, status: int
) -> None:
    """Anything but 200 is a failed download."""
    respx_mock.get(URL).mock(return_value=httpx.Response(status, content=PNG, headers={"content-type": "image/png"}))
    with pytest.raises(ProviderUnavailable) as caught:
        await fetch_image(client, URL, allowed_hosts=[HOST])
    assert f"HTTP {status}" in caught.value.message


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (httpx.ConnectError, "ConnectError"),
        (httpx.ReadTimeout, "timed out"),
        (httpx.ConnectTimeout, "timed out"),
        (httpx.RemoteProtocolError, "RemoteProtocolError"),
    ],
)
async def test_fetch_transport_errors(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, error: type[Exception], words: str
) -> None:
    """Network failures while downloading become ProviderUnavailable, never raw httpx errors."""
    respx_mock.get(URL).mock(side_effect=error)
    with pytest.raises(ProviderUnavailable) as caught:
        await fetch_image(client, URL, allowed_hosts=[HOST])
    assert words in caught.value.message


async def test_fetch_body_breaking_midway(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """A download whose body breaks off is ProviderUnavailable and the response is closed."""

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield PNG[:10]
            raise httpx.ReadError("reset")

    respx_mock.get(URL).mock(return_value=httpx.Response(200, stream=Broken(), headers={"content-type": "image/png"}))
    with pytest.raises(ProviderUnavailable) as caught:
        await fetch_image(client, URL, allowed_hosts=[HOST])
    assert "ReadError" in caught.value.message


async def test_fetch_uses_its_own_read_timeout(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """The download's read_timeout is applied to the request."""
    route = respx_mock.get(URL).mock(return_value=png_response())
    await fetch_image(client, URL, allowed_hosts=[HOST], read_timeout=7.5)
    assert route.calls.last.request.extensions["timeout"]["read"] == 7.5


# -- host_allowed -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("files.example.test", ["files.example.test"], True),
        ("FILES.Example.TEST", ["files.example.test"], True),
        ("files.example.test", ["  FILES.EXAMPLE.TEST  "], True),
        ("files.example.test.", ["files.example.test"], True),
        ("a.files.example.test", ["files.example.test"], False),
        ("a.example.net", [".example.net"], True),
        ("a.b.c.example.net", [".example.net"], True),
        ("example.net", [".example.net"], True),
        ("badexample.net", [".example.net"], False),
        ("example.net.evil.org", [".example.net"], False),
        ("net", [".example.net"], False),
        ("127.0.0.1", ["127.0.0.1"], True),
        ("127.0.0.2", ["127.0.0.1"], False),
        ("x.example.org", ["", "other.org", ".example.org"], True),
        ("anything.org", [], False),
        ("anything.org", [""], False),
    ],
)
def test_host_allowed(host: str, allowed: list[str], expected: bool) -> None:
    """Exact entries match one host; '.'-entries match the domain and all its subdomains; case is ignored."""
    assert host_allowed(host, allowed) is expected


async def test_fetch_images_cancels_the_rest_when_one_fails(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    """One failed download stops the others instead of leaving them running."""
    started = asyncio.Event()
    finished: list[str] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.sleep(5)
        finished.append(str(request.url))
        return png_response()

    async def failing(request: httpx.Request) -> httpx.Response:
        await started.wait()
        return httpx.Response(500)

    respx_mock.get(f"https://{HOST}/slow.png").mock(side_effect=slow)
    respx_mock.get(f"https://{HOST}/bad.png").mock(side_effect=failing)
    urls = [f"https://{HOST}/slow.png", f"https://{HOST}/bad.png"]
    with pytest.raises(ProviderUnavailable, match="HTTP 500"):
        await asyncio.wait_for(fetch_images(client, urls, allowed_hosts=[HOST]), timeout=2)
    assert finished == []


async def test_fetch_images_keeps_order(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """Results come back in the order of the URLs."""
    other = images.png(3, 3)
    respx_mock.get(f"https://{HOST}/a.png").mock(return_value=png_response())
    respx_mock.get(f"https://{HOST}/b.png").mock(return_value=png_response(other))
    got = await fetch_images(client, [f"https://{HOST}/a.png", f"https://{HOST}/b.png"], allowed_hosts=[HOST])
    assert got == [PNG, other]
