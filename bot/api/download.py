"""Fetch result images from URLs some providers answer with, safely.

Only https/http URLs on an allowed host are fetched (the provider's own host or the admin's allow-list),
no redirects are followed, the body is capped in bytes, and it must say it is an image.
No credentials are sent: result URLs are meant to be fetched anonymously.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import httpx

from bot.errors import ProviderUnavailable

DEFAULT_MAX_DOWNLOAD = 50 * 1024 * 1024


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """True when `host` is one of `allowed` or a subdomain of an entry starting with a dot."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().strip()
        if not entry:
            continue
        if entry.startswith("."):
            if host.endswith(entry) or host == entry[1:]:
                return True
        elif host == entry:
            return True
    return False


async def fetch_images(
    http: httpx.AsyncClient,
    urls: Iterable[str],
    *,
    allowed_hosts: Iterable[str],
    max_bytes: int = DEFAULT_MAX_DOWNLOAD,
) -> list[bytes]:
    """Every image in `urls`, fetched in parallel; the first failure cancels the rest and is raised."""
    hosts = tuple(allowed_hosts)
    tasks = [asyncio.ensure_future(fetch_image(http, url, allowed_hosts=hosts, max_bytes=max_bytes)) for url in urls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        # Let the cancelled downloads close their connections before we return or raise.
        await asyncio.gather(*tasks, return_exceptions=True)


async def fetch_image(
    http: httpx.AsyncClient,
    url: str,
    *,
    allowed_hosts: Iterable[str],
    max_bytes: int = DEFAULT_MAX_DOWNLOAD,
    read_timeout: float = 60.0,
) -> bytes:
    """The image at `url`, or ProviderUnavailable saying why it was not fetched."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise ProviderUnavailable("The image service sent an image link that is not a URL.") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise ProviderUnavailable("The image service sent an image link that is not an http(s) URL.")
    if not host_allowed(parsed.host, allowed_hosts):
        raise ProviderUnavailable(
            f"The image service linked to {parsed.host}, which is not an allowed download host (EASEL_DOWNLOAD_HOSTS)."
        )
    try:
        async with http.stream("GET", parsed, timeout=read_timeout, follow_redirects=False) as response:
            if response.status_code != 200:
                raise ProviderUnavailable(f"Downloading a result image failed (HTTP {response.status_code}).")
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if not kind.startswith("image/"):
                raise ProviderUnavailable(f"A result link did not point to an image (content type {kind or 'none'}).")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise ProviderUnavailable(
                    f"A result image is larger than the {max_bytes // 1_048_576} MB download cap."
                )
            chunks: list[bytes] = []
            total = 0
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise ProviderUnavailable(
                        f"A result image is larger than the {max_bytes // 1_048_576} MB download cap."
                    )
                chunks.append(chunk)
    except httpx.TimeoutException:
        raise ProviderUnavailable("Downloading a result image timed out.") from None
    except httpx.TransportError as exc:
        raise ProviderUnavailable(f"Downloading a result image failed ({type(exc).__name__}).") from None
    return b"".join(chunks)
