"""bot.api.decode: image bytes and base64 text to GeneratedImage values, and garbage to ProviderUnavailable."""

from __future__ import annotations

import struct
import zlib

import pytest

from bot.api import decode
from bot.api.types import GeneratedImage
from bot.errors import ProviderUnavailable
from tests import images


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only a header claiming `width` x `height` (no real pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "mime", "size"),
    [
        (images.png(64, 48), "image/png", (64, 48)),
        (images.png(5, 7, (1, 2, 3), mode="RGB"), "image/png", (5, 7)),
        (images.jpeg(32, 16), "image/jpeg", (32, 16)),
        (images.webp(20, 30), "image/webp", (20, 30)),
        (images.gif(12, 10, frames=3), "image/gif", (12, 10)),
    ],
    ids=["png-rgba", "png-rgb", "jpeg", "webp", "gif"],
)
def test_describe_raster_formats(data: bytes, mime: str, size: tuple[int, int]) -> None:
    """PNG, JPEG, WEBP and (animated) GIF bytes report their mime type and pixel size and keep the bytes."""
    image = decode.describe(data)
    assert image == GeneratedImage(data=data, mime=mime, width=size[0], height=size[1])


@pytest.mark.parametrize(
    "svg",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="200"><rect/></svg>',
        b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="300px" height="200px">'
        b"<rect/></svg>",
        b'  \n<svg\n  xmlns="http://www.w3.org/2000/svg"\n  width="300"\n  height="200"\n'
        b'  viewBox="0 0 300 200"></svg>',
        b'<svg xmlns="http://www.w3.org/2000/svg" height="200" width="300"><rect/></svg>',
        b"<svg xmlns='http://www.w3.org/2000/svg' width='300' height='200'><rect/></svg>",
    ],
    ids=["plain", "xml-prolog-px", "multiline", "height-first", "single-quotes"],
)
def test_describe_svg_with_size(svg: bytes) -> None:
    """SVG output is recognised by its text and its width/height attributes give the size, in any order or quoting."""
    image = decode.describe(svg)
    assert (image.mime, image.width, image.height) == ("image/svg+xml", 300, 200)
    assert image.data == svg


def test_describe_svg_without_size() -> None:
    """An SVG with no width/height attributes is still an SVG, of unknown (0x0) size."""
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><circle r="4"/></svg>'
    image = decode.describe(svg)
    assert (image.mime, image.width, image.height) == ("image/svg+xml", 0, 0)


def test_describe_svg_size_comes_from_the_svg_tag_only() -> None:
    """Width/height attributes of an inner element are not taken for the picture's size."""
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect width="3" height="4"/></svg>'
    image = decode.describe(svg)
    assert (image.width, image.height) == (0, 0)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"error": {"message": "oops"}}',
        images.png(16, 16)[:10],
        b"\x00" * 64,
    ],
    ids=["empty", "text", "html", "json", "truncated-png", "zeros"],
)
def test_describe_garbage_is_provider_unavailable(data: bytes) -> None:
    """Bytes that are not an image raise ProviderUnavailable with a friendly message, not a Pillow error."""
    with pytest.raises(ProviderUnavailable) as caught:
        decode.describe(data)
    assert "not an image" in caught.value.message


def test_describe_absurd_header_is_provider_unavailable() -> None:
    """A PNG header claiming 100000x100000 pixels (a decompression bomb) is refused as ProviderUnavailable."""
    with pytest.raises(ProviderUnavailable):
        decode.describe(_png_header(100_000, 100_000))


def test_decode_b64_round_trip() -> None:
    """Valid base64 text decodes to the original bytes."""
    data = images.png(3, 3)
    assert decode.decode_b64(images.b64(data)) == data


@pytest.mark.parametrize(
    "payload",
    ["not base64!!", "abc", "aGVsbG8=\x00", "é" * 8, "data:image/png;base64,!!!"],
    ids=["punctuation", "bad-padding", "nul", "non-ascii", "bad-data-url"],
)
def test_decode_b64_bad_input_is_provider_unavailable(payload: str) -> None:
    """Text that is not strict base64 raises ProviderUnavailable."""
    with pytest.raises(ProviderUnavailable) as caught:
        decode.decode_b64(payload)
    assert "could not be decoded" in caught.value.message


def test_decode_b64_accepts_data_urls_and_wrapped_lines() -> None:
    """Some compatible servers send data: URLs or base64 wrapped at 76 columns."""
    data = images.png(40, 40)
    text = images.b64(data)
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert decode.decode_b64(f"data:image/png;base64,{text}") == data
    assert decode.decode_b64(wrapped) == data


def test_decode_all_describes_each_payload_in_order() -> None:
    """decode_all turns several base64 payloads into GeneratedImages, keeping their order."""
    first, second = images.png(4, 6), images.jpeg(10, 2)
    result = decode.decode_all([images.b64(first), images.b64(second)])
    assert [(i.mime, i.width, i.height, i.data) for i in result] == [
        ("image/png", 4, 6, first),
        ("image/jpeg", 10, 2, second),
    ]


def test_decode_all_fails_on_any_bad_payload() -> None:
    """One undecodable payload among good ones fails the whole batch."""
    with pytest.raises(ProviderUnavailable):
        decode.decode_all([images.b64(images.png()), images.b64(b"garbage")])


def test_describe_all_describes_raw_blobs() -> None:
    """describe_all works on raw bytes (downloaded images)."""
    result = decode.describe_all([images.webp(9, 9), images.gif(3, 4)])
    assert [(i.mime, i.width, i.height) for i in result] == [("image/webp", 9, 9), ("image/gif", 3, 4)]


def test_generated_image_repr_hides_bytes() -> None:
    """A GeneratedImage's repr names type, size and length, never the raw bytes."""
    image = decode.describe(images.png(2, 2))
    assert repr(image) == f"GeneratedImage(image/png, 2x2, {len(image.data)} bytes)"
