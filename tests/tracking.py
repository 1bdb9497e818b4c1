"""An httpx transport for tests that counts responses handed out but not closed, to catch leaks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx


class _TrackedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, owner: TrackingTransport) -> None:
        self._inner = inner
        self._owner = owner
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._owner.open -= 1
        await self._inner.aclose()


class TrackingTransport(httpx.AsyncBaseTransport):
    """Wraps a real AsyncHTTPTransport and counts responses handed out but not closed yet."""

    def __init__(self, inner: httpx.AsyncHTTPTransport | None = None) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.open = 0
        self.opened = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        self.open += 1
        self.opened += 1
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_TrackedStream(response.stream, self),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()
