"""Turn provider payloads (base64 or raw bytes) into GeneratedImage values.

Pillow reads only each image's header here; run these functions with `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Iterable

from PIL import Image, UnidentifiedImageError

from bot.api.types import GeneratedImage
from bot.errors import ProviderUnavailable

_MIMES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_SVG_TAG = re.compile(rb"<svg\b[^>]*>", re.S)
# XML attributes come in any order and either quote style.
_SVG_EDGE = re.compile(rb"""\s(width|height)\s*=\s*["'](\d+)(?:px)?["']""")


def describe(data: bytes) -> GeneratedImage:
    """Type and pixel size of image bytes; ProviderUnavailable when they are not an image."""
    head = data[:512].lstrip()
    if head.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096]:
        tag = _SVG_TAG.search(data[:4096])
        edges = {name: int(value) for name, value in _SVG_EDGE.findall(tag.group(0))} if tag else {}
        width, height = edges.get(b"width", 0), edges.get(b"height", 0)
        return GeneratedImage(data=data, mime="image/svg+xml", width=width, height=height)
    try:
        with Image.open(io.BytesIO(data)) as image:
            mime = _MIMES.get(image.format or "", f"image/{(image.format or 'octet-stream').lower()}")
            width, height = image.size
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError, ValueError):
        # DecompressionBombError: a header claiming an absurd pixel count is not an image we can use either.
        raise ProviderUnavailable("The image service sent back something that is not an image.") from None
    return GeneratedImage(data=data, mime=mime, width=width, height=height)


def decode_b64(payload: str) -> bytes:
    """Base64 text to bytes; ProviderUnavailable when it is not base64."""
    if payload.startswith("data:"):
        payload = payload.partition(",")[2]
    # Some compatible servers wrap base64 at 76 columns; whitespace is not data.
    payload = "".join(payload.split())
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProviderUnavailable("The image service sent back an image that could not be decoded.") from None


def describe_all(blobs: Iterable[bytes]) -> tuple[GeneratedImage, ...]:
    return tuple(describe(blob) for blob in blobs)


def decode_all(payloads: Iterable[str]) -> tuple[GeneratedImage, ...]:
    return tuple(describe(decode_b64(p)) for p in payloads)
