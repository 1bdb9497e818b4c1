"""Small real images for tests, made with Pillow: PNG, JPEG, WEBP and GIF bytes, and their base64 text."""

from __future__ import annotations

import base64
import io

from PIL import Image

Colour = tuple[int, int, int] | tuple[int, int, int, int]


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def png(width: int = 8, height: int = 8, colour: Colour = (200, 30, 30, 255), *, mode: str = "RGBA") -> bytes:
    """A solid PNG of `width` x `height`."""
    return _save(Image.new(mode, (width, height), colour), "PNG")


def jpeg(width: int = 8, height: int = 8, colour: Colour = (30, 200, 30)) -> bytes:
    """A solid JPEG of `width` x `height`."""
    return _save(Image.new("RGB", (width, height), colour[:3]), "JPEG", quality=80)


def webp(width: int = 8, height: int = 8, colour: Colour = (30, 30, 200)) -> bytes:
    """A solid WEBP of `width` x `height`."""
    return _save(Image.new("RGB", (width, height), colour[:3]), "WEBP")


def gif(width: int = 8, height: int = 8, frames: int = 2) -> bytes:
    """An animated GIF of `frames` solid frames."""
    images = [Image.new("P", (width, height), i * 40) for i in range(max(frames, 1))]
    return _save(images[0], "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)


def mask(width: int = 8, height: int = 8) -> bytes:
    """A PNG mask whose left half is fully transparent (the area to edit)."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    for x in range(width // 2):
        for y in range(height):
            image.putpixel((x, y), (0, 0, 0, 0))
    return _save(image, "PNG")


def b64(data: bytes) -> str:
    """`data` as the base64 text providers send in `b64_json`."""
    return base64.b64encode(data).decode("ascii")
