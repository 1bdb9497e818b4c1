"""Masks for edits without a drawing tool, and a preview of the area they mark.

The convention is OpenAI's: a mask is a PNG of the image's size whose fully transparent pixels (alpha 0)
mark the area to repaint; opaque pixels are kept. A mask comes from one of three places, easiest first:

- a region typed as text (`parse_region`, `mask_from_region`): a rectangle or ellipse in percent of the
  image, or a named area such as `top` or `bottom-left`;
- an uploaded mask image (`mask_from_upload`), fitted to the image when only its scale differs;
- the image's own transparency (`mask_from_alpha`).

`preview` tints the area on a small copy of the image so the user can check it before paying, and
`transparent_fraction` says how much of the image will be repainted. Every function is synchronous and
pure (bytes in, bytes out), meant for `asyncio.to_thread`.
"""

from __future__ import annotations

import io
import math
import re
import struct
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

from bot.errors import BadImage, InvalidOption, quoted
from bot.imaging.inputs import open_formats

Shape = Literal["rect", "ellipse"]

PIXEL_CAP = 40_000_000
"""The most pixels an image or mask may have before Easel refuses to decode it."""

PREVIEW_MIME = "image/jpeg"
"""What `preview` returns."""

_EXAMPLE = "x=10 y=20 w=50 h=40"
_SHAPES: dict[str, Shape] = {
    "rect": "rect",
    "rectangle": "rect",
    "box": "rect",
    "ellipse": "ellipse",
    "oval": "ellipse",
}
# Named areas as (x, y, w, h) in percent. Keys have spaces, dashes and underscores removed.
_AREAS: dict[str, tuple[float, float, float, float]] = {
    "top": (0, 0, 100, 50),
    "bottom": (0, 50, 100, 50),
    "left": (0, 0, 50, 100),
    "right": (50, 0, 50, 100),
    "center": (25, 25, 50, 50),
    "centre": (25, 25, 50, 50),
    "middle": (25, 25, 50, 50),
    "topleft": (0, 0, 50, 50),
    "topright": (50, 0, 50, 50),
    "bottomleft": (0, 50, 50, 50),
    "bottomright": (50, 50, 50, 50),
}
AREA_NAMES = ("top", "bottom", "left", "right", "center", "top-left", "top-right", "bottom-left", "bottom-right")
"""The named areas `parse_region` understands, as shown to users."""

_KEYS = {"x": "x", "y": "y", "w": "w", "h": "h", "width": "w", "height": "h"}
_PAIR = re.compile(r"([a-z]+)\s*[=:]\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*%?")
_EPSILON = 1e-9
_ASPECT_TOLERANCE = 0.01

# Lookup tables for Image.point: fully transparent → 255 (selected), anything else → 0; and the soft band a
# box blur leaves around a selection's edge → 255.
_SELECT_TRANSPARENT = [255] + [0] * 255
_EDGE_BAND = [0] + [255] * 254 + [0]
_BINARISE = [0] * 128 + [255] * 128

_TINT = (255, 0, 255)
_TINT_OPACITY = 0.3
_OUTLINE = (255, 255, 255)


def _forms() -> str:
    return f"give it as {_EXAMPLE} (percent of the image, optionally with 'ellipse') or name an area: " + ", ".join(
        AREA_NAMES
    )


@dataclass(frozen=True, slots=True)
class Region:
    """A rectangle or an ellipse (drawn inside its box), in percent of the image: `x`, `y` top-left, `w`, `h` size.

    Out-of-range values raise InvalidOption (param "region") rather than being clamped, so the user
    learns the region they typed is not the one they meant.
    """

    shape: Shape
    x: float
    y: float
    w: float
    h: float

    def __post_init__(self) -> None:
        if self.shape not in ("rect", "ellipse"):
            raise InvalidOption(f"The region's shape must be rect or ellipse, not {self.shape!r}.", param="region")
        for key in ("x", "y", "w", "h"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise InvalidOption(
                    f"The region's {key} is {value:g}, but positions and sizes are percentages from 0 to 100: "
                    f"for example {_EXAMPLE}.",
                    param="region",
                )
        for key in ("w", "h"):
            if getattr(self, key) <= 0:
                raise InvalidOption(
                    f"The region's {key} is 0, so it would cover nothing: give a width and height above 0, "
                    f"for example {_EXAMPLE}.",
                    param="region",
                )
        if self.x + self.w > 100 + _EPSILON:
            raise InvalidOption(
                f"The region runs off the right edge (x + w = {self.x + self.w:g}): keep x + w and y + h at most 100, "
                f"for example {_EXAMPLE}.",
                param="region",
            )
        if self.y + self.h > 100 + _EPSILON:
            raise InvalidOption(
                f"The region runs off the bottom edge (y + h = {self.y + self.h:g}): keep x + w and y + h at most "
                f"100, for example {_EXAMPLE}.",
                param="region",
            )


def parse_region(text: str) -> Region:
    """Read a region typed by a user.

    Accepted: `x=10 y=20 w=50 h=40` (keys in any order, `=` or `:`, spaces or commas between, optional `%`,
    `width`/`height` for `w`/`h`), optionally with a shape word (`rect`, `ellipse`); or a named area
    (`top`, `bottom`, `left`, `right` are halves, `center` the middle 50% by 50%, `top-left` and the other
    corners are quarters), also with an optional shape word (`ellipse center`). Anything else raises
    InvalidOption with param "region".
    """
    normal = re.sub(r"[,;]", " ", text.strip().lower())
    if not normal:
        raise InvalidOption(f"The region is empty: {_forms()}.", param="region")
    values: dict[str, float] = {}
    for key, number in _PAIR.findall(normal):
        if key not in _KEYS:
            raise InvalidOption(f"The region has an unknown key {key!r}: {_forms()}.", param="region")
        name = _KEYS[key]
        if name in values:
            raise InvalidOption(f"The region gives {name} twice: {_forms()}.", param="region")
        values[name] = float(number)
    words = _PAIR.sub(" ", normal).replace("%", " ").split()
    shape: Shape = "rect"
    shapes = [word for word in words if word in _SHAPES]
    if len(shapes) > 1:
        raise InvalidOption(f"The region names more than one shape ({', '.join(shapes)}): {_forms()}.", param="region")
    if shapes:
        shape = _SHAPES[shapes[0]]
    rest = [word for word in words if word not in _SHAPES]
    if values:
        if rest:
            word = quoted(rest[0])
            raise InvalidOption(f"The region has a word Easel cannot read ({word}): {_forms()}.", param="region")
        missing = [key for key in ("x", "y", "w", "h") if key not in values]
        if missing:
            raise InvalidOption(
                f"The region needs x, y, w and h (missing {', '.join(missing)}): for example {_EXAMPLE}, "
                "in percent of the image.",
                param="region",
            )
        return Region(shape, values["x"], values["y"], values["w"], values["h"])
    if not rest:
        raise InvalidOption(f"The region names a shape but no area: {_forms()}.", param="region")
    area = re.sub(r"[\s_-]", "", "".join(rest))
    if area not in _AREAS:
        raise InvalidOption(
            f"There is no area called {' '.join(rest)!r}: use one of {', '.join(AREA_NAMES)}, "
            f"or give a box as {_EXAMPLE} in percent.",
            param="region",
        )
    return Region(shape, *_AREAS[area])


def open_image(
    data: bytes, *, what: str = "image", pixel_cap: int = PIXEL_CAP, draft_edge: int | None = None
) -> Image.Image:
    """Decode `data` safely: refuse empty, unreadable, damaged or oversized files with BadImage, then apply the
    EXIF orientation. `what` names the file in messages ("image", "mask").

    The pixel cap is checked from the header, before any pixel is decoded. `draft_edge` lets JPEG decoding
    shrink by a power of two while its longer side stays at least that large, for previews.
    """
    if not data:
        raise BadImage(f"The {what} is empty.")
    try:
        image = Image.open(io.BytesIO(data), formats=open_formats(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"The {what} has far too many pixels to open safely.") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error):
        raise BadImage(f"The {what} is not an image Easel can read: send a PNG, JPEG or WEBP.") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise BadImage(f"The {what} has no pixels.")
    if width * height > pixel_cap:
        raise BadImage(
            f"The {what} is {width}x{height}, more than {pixel_cap:,} pixels: send a smaller one.",
        )
    try:
        if draft_edge is not None and image.format in ("JPEG", "MPO") and max(width, height) > draft_edge:
            scale = draft_edge / max(width, height)
            image.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return image
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError):
        raise BadImage(f"The {what} is damaged or cut short: send the file again.") from None


def _alpha(image: Image.Image) -> Image.Image | None:
    """The alpha channel as an L image, or None when the image has no transparency at all."""
    if "A" in image.getbands():
        return image.getchannel("A") if image.mode in ("RGBA", "LA") else image.convert("RGBA").getchannel("A")
    if "transparency" in image.info:
        return image.convert("RGBA").getchannel("A")
    return None


def _encode_mask(alpha: Image.Image) -> bytes:
    """A black RGBA PNG carrying `alpha`: only the alpha matters to the API, and black compresses best."""
    mask = Image.new("RGBA", alpha.size, (0, 0, 0, 255))
    mask.putalpha(alpha)
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


def _has_transparent(alpha: Image.Image) -> bool:
    low, _ = alpha.getextrema()
    return low == 0


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(a[0] * b[1] - a[1] * b[0]) <= _ASPECT_TOLERANCE * a[1] * b[0]


def _fit_alpha(alpha: Image.Image, width: int, height: int) -> Image.Image:
    """`alpha` at `width`x`height`: as is when the size matches, resized when only the scale differs."""
    if alpha.size == (width, height):
        return alpha
    if not _same_aspect(alpha.size, (width, height)):
        mw, mh = alpha.size
        raise BadImage(f"The mask is {mw}x{mh} but the image is {width}x{height}: they must have the same shape.")
    # Smooth resampling then a threshold keeps edges clean and the alpha binary, which NEAREST would
    # only do at the cost of jagged edges when scaling down.
    return alpha.resize((width, height), Image.Resampling.BILINEAR).point(_BINARISE)


def mask_from_region(width: int, height: int, region: Region) -> bytes:
    """A PNG mask of `width`x`height`: alpha 0 inside `region` (an ellipse is drawn inside its box), 255 outside.

    The region always covers at least one pixel, however small the percentages.
    """
    if width < 1 or height < 1:
        raise ValueError(f"mask size must be at least 1x1, got {width}x{height}")
    left = min(round(region.x * width / 100), width - 1)
    top = min(round(region.y * height / 100), height - 1)
    right = max(round((region.x + region.w) * width / 100), left + 1)
    bottom = max(round((region.y + region.h) * height / 100), top + 1)
    alpha = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(alpha)
    box = (left, top, right - 1, bottom - 1)
    if region.shape == "ellipse":
        draw.ellipse(box, fill=0)
    else:
        draw.rectangle(box, fill=0)
    if not _has_transparent(alpha):
        alpha.putpixel(((left + right - 1) // 2, (top + bottom - 1) // 2), 0)
    return _encode_mask(alpha)


def mask_from_upload(mask_data: bytes, width: int, height: int) -> bytes:
    """An uploaded mask made ready for an image of `width`x`height` (after its EXIF orientation).

    Same size: used as is. Same shape (aspect within 1%) at another scale: resized, with the alpha made
    binary. Another shape, no transparency at all, or no fully transparent pixel: BadImage.
    Returns an RGBA PNG.
    """
    image = open_image(mask_data, what="mask")
    alpha = _alpha(image)
    if alpha is None:
        raise BadImage(
            "The mask has no transparent area: it has no transparency at all, so erase the part to change "
            "and save it as a PNG."
        )
    fitted = _fit_alpha(alpha, width, height)
    if not _has_transparent(fitted):
        raise BadImage("The mask has no transparent area: erase the part to change so it is fully transparent.")
    return _encode_mask(fitted)


def mask_from_alpha(image_data: bytes) -> bytes | None:
    """The image's own transparency as a mask, or None when no pixel is fully transparent.

    The mask is binary: alpha 0 where the image is fully transparent, 255 everywhere else, since only
    fully transparent pixels mark the area to repaint.
    """
    alpha = _alpha(open_image(image_data))
    if alpha is None or not _has_transparent(alpha):
        return None
    return _encode_mask(ImageOps.invert(alpha.point(_SELECT_TRANSPARENT)))


def transparent_fraction(mask_png: bytes) -> float:
    """The share of the mask (0 to 1) that is fully transparent, i.e. what the model will repaint."""
    image = open_image(mask_png, what="mask")
    alpha = _alpha(image)
    if alpha is None:
        return 0.0
    return alpha.histogram()[0] / (alpha.width * alpha.height)


def _checkerboard(size: tuple[int, int], tile: int = 16) -> Image.Image:
    """A grey checkerboard of `size`, the usual backdrop for transparent pixels."""
    cols, rows = -(-size[0] // tile), -(-size[1] // tile)
    stripes_x = Image.new("L", (cols, 1))
    stripes_x.putdata([255 * (i % 2) for i in range(cols)])
    stripes_y = Image.new("L", (1, rows))
    stripes_y.putdata([255 * (j % 2) for j in range(rows)])
    grid = ImageChops.difference(
        stripes_x.resize((cols, rows), Image.Resampling.NEAREST),
        stripes_y.resize((cols, rows), Image.Resampling.NEAREST),
    )
    light = grid.point([150 + i * 50 // 255 for i in range(256)])
    board = light.resize((cols * tile, rows * tile), Image.Resampling.NEAREST).crop((0, 0, *size))
    return board.convert("RGB")


def preview(image_data: bytes, mask_png: bytes, *, max_edge: int = 1024) -> bytes:
    """The image, at most `max_edge` on its longer side, with the area the mask marks for repainting tinted
    magenta and outlined, as JPEG bytes (`PREVIEW_MIME`) well under Discord's attachment limit.

    Transparent parts of the image show over a checkerboard. The mask must have the image's shape.
    """
    if max_edge < 16:
        raise ValueError("max_edge must be at least 16")
    image = open_image(image_data, draft_edge=max_edge)
    mask_alpha = _alpha(open_image(mask_png, what="mask"))
    if mask_alpha is not None and not _same_aspect(mask_alpha.size, image.size):
        mw, mh = mask_alpha.size
        raise BadImage(
            f"The mask is {mw}x{mh} but the image is {image.width}x{image.height}: they must have the same shape."
        )
    if max(image.size) > max_edge:
        scale = max_edge / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    if _alpha(image) is not None:
        rgba = image.convert("RGBA")
        base = _checkerboard(rgba.size)
        base.paste(rgba, (0, 0), rgba)
    else:
        base = image.convert("RGB")
    if mask_alpha is None:
        selected = Image.new("L", base.size, 0)
    else:
        selected = mask_alpha.point(_SELECT_TRANSPARENT)
        if selected.size != base.size:
            selected = selected.resize(base.size, Image.Resampling.NEAREST)
    tint = Image.new("RGB", base.size, _TINT)
    shown = Image.composite(Image.blend(base, tint, _TINT_OPACITY), base, selected)
    # A box blur of the selection is neither 0 nor 255 only within `radius` of its edge: that band is the outline.
    radius = max(2, max(base.size) // 300)
    outline = selected.filter(ImageFilter.BoxBlur(radius)).point(_EDGE_BAND)
    shown = Image.composite(Image.new("RGB", base.size, _OUTLINE), shown, outline)
    out = io.BytesIO()
    shown.save(out, format="JPEG", quality=85, optimize=True, subsampling=0)
    return out.getvalue()
