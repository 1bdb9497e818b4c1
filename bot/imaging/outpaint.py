"""Zoom out and pan: the image on a larger transparent canvas, with the mask of the new border to paint.

`zoom_out` surrounds the image with a border (1.5x and 2x are the buttons; any factor in (1, 4] works);
`pan` extends the canvas by half the image's width or height in one direction, the original keeping its
pixels on the opposite side. Both return an `OutpaintPlan` ready for the edit endpoint: the canvas, a mask
whose transparent pixels are exactly the border, and a size the model accepts.

Geometry first, pixels second: `plan_geometry` works on sizes alone, so it is cheap to test and to ask
before decoding anything. The ideal canvas (the image plus the border asked for) is snapped to a size the
model accepts: for a model with a `size_rule`, the ideal rounded up to its grid when the rule allows that,
else the rule's nearest size; for a model with fixed sizes, the listed size closest in shape, then in area.
The whole composition is scaled uniformly to fit inside that canvas, so the zoom or pan keeps its
proportions, except that an enlargement of 3% or less is skipped to keep the original's own pixels; any
room left over joins the transparent border. The original is centred for a zoom and pushed to the far
edge for a pan (centred across it). Its size is rounded down, so its aspect is kept to within a pixel
and it never exceeds the canvas.

The mask's opaque area covers exactly the pasted original, with no inset: a model that keeps unmasked
pixels keeps all of the original, and blending the seam is left to the model.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from bot.catalogue import ModelSpec, parse_size
from bot.errors import InvalidOption
from bot.imaging.masks import open_image

Direction = Literal["left", "right", "up", "down"]
DIRECTIONS: tuple[Direction, ...] = ("left", "right", "up", "down")
ZOOM_FACTORS = (1.5, 2.0)
"""The zoom-out factors offered as buttons."""
MAX_ZOOM = 4.0
PAN_EXTENT = 0.5
"""How far a pan extends the canvas, as a share of the image's size in that direction."""
_KEEP_PIXELS = 1.03


@dataclass(frozen=True, slots=True)
class Geometry:
    """Where things go: the canvas's (width, height) and the original's (left, top, width, height) on it."""

    canvas: tuple[int, int]
    placement: tuple[int, int, int, int]

    @property
    def size(self) -> str:
        """The canvas as the API's "WxH"."""
        return f"{self.canvas[0]}x{self.canvas[1]}"


@dataclass(frozen=True, slots=True)
class OutpaintPlan:
    """What to send to the edit endpoint.

    `image` is an RGBA PNG canvas with the original placed and a transparent border; `mask` is an RGBA PNG
    of the same size, alpha 0 on the border and 255 over the original; `size` is the canvas as "WxH", an
    allowed size for the model; `placement` is (left, top, width, height) of the original on the canvas.
    """

    image: bytes
    mask: bytes
    size: str
    placement: tuple[int, int, int, int]

    def __repr__(self) -> str:
        return f"OutpaintPlan({self.size}, placement={self.placement}, {len(self.image)}+{len(self.mask)} bytes)"


def check_model(spec: ModelSpec) -> None:
    """InvalidOption (param "model") unless `spec` can edit with a mask, which outpainting needs."""
    if not spec.supports("edit") or spec.edit is None:
        raise InvalidOption(f"{spec.label} cannot extend images: it has no edit endpoint.", param="model")
    if not spec.edit.mask:
        raise InvalidOption(f"{spec.label} cannot extend images: its edits take no mask.", param="model")


def _candidates(spec: ModelSpec) -> list[tuple[int, int]]:
    sizes = [parsed for size in spec.sizes if (parsed := parse_size(size)) is not None]
    if spec.edit is not None and spec.edit.square_only:
        sizes = [(w, h) for w, h in sizes if w == h]
    return sizes


def _canvas(spec: ModelSpec, ideal_w: float, ideal_h: float) -> tuple[int, int]:
    """The size the model accepts that best fits an ideal canvas of `ideal_w` x `ideal_h`."""
    square_only = spec.edit is not None and spec.edit.square_only
    rule = spec.size_rule
    if rule is not None and not square_only:
        # The ideal rounded up to the grid, when allowed, holds the original at its own size: no resampling,
        # and the few extra pixels join the border. Otherwise the rule's nearest size, and the original scales.
        step = rule.multiple_of
        covering = (math.ceil(ideal_w / step - 1e-9) * step, math.ceil(ideal_h / step - 1e-9) * step)
        if not rule.problems(*covering):
            return covering
        return rule.nearest(max(1, round(ideal_w)), max(1, round(ideal_h)))
    candidates = _candidates(spec)
    if not candidates:
        raise InvalidOption(f"{spec.label} cannot extend images: it lists no fixed sizes to edit at.", param="model")
    aspect = math.log(ideal_w / ideal_h)
    area = math.log(ideal_w * ideal_h)

    def fit(size: tuple[int, int]) -> tuple[float, float, int]:
        w, h = size
        # Closest shape first (rounded so float noise cannot split ties), then closest area, then the larger.
        return round(abs(math.log(w / h) - aspect), 9), abs(math.log(w * h) - area), -w * h

    return min(candidates, key=fit)


def plan_geometry(
    width: int,
    height: int,
    spec: ModelSpec,
    *,
    factor: float | None = None,
    direction: Direction | None = None,
) -> Geometry:
    """Where an image of `width`x`height` goes when zoomed out by `factor` or panned towards `direction`.

    Give exactly one of `factor` (in (1, 4]) and `direction`. Raises InvalidOption for a model that
    cannot outpaint (param "model") or a factor out of range (param "zoom").
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be at least 1x1, got {width}x{height}")
    if (factor is None) == (direction is None):
        raise ValueError("give exactly one of factor and direction")
    check_model(spec)
    # Anchors in halves of the free room: 0 puts the original at the near (left/top) edge, 1 centres it, 2 at the far.
    if factor is not None:
        if not (math.isfinite(factor) and 1 < factor <= MAX_ZOOM):
            raise InvalidOption(
                f"Zoom out by more than 1x and at most {MAX_ZOOM:g}x, for example 1.5 or 2.", param="zoom"
            )
        ideal_w, ideal_h = width * factor, height * factor
        anchor_x = anchor_y = 1
    elif direction in ("left", "right"):
        ideal_w, ideal_h = width * (1 + PAN_EXTENT), float(height)
        anchor_x, anchor_y = (2 if direction == "left" else 0), 1
    elif direction in ("up", "down"):
        ideal_w, ideal_h = float(width), height * (1 + PAN_EXTENT)
        anchor_x, anchor_y = 1, (2 if direction == "up" else 0)
    else:
        raise ValueError(f"unknown direction {direction!r}; expected one of {', '.join(DIRECTIONS)}")
    canvas_w, canvas_h = _canvas(spec, ideal_w, ideal_h)
    scale = min(canvas_w / ideal_w, canvas_h / ideal_h)
    if 1 <= scale <= _KEEP_PIXELS:
        # Enlarging the original by a few percent would only blur it: keep its pixels, the slack joins the border.
        scale = 1.0
    # A hair of slack so a product like 1023.9999999 still floors to 1024.
    placed_w = min(canvas_w, max(1, math.floor(width * scale + 1e-6)))
    placed_h = min(canvas_h, max(1, math.floor(height * scale + 1e-6)))
    if (placed_w, placed_h) == (canvas_w, canvas_h):
        raise InvalidOption("That zoom is too small to leave any border: try 1.5 or 2.", param="zoom")
    left = (canvas_w - placed_w) * anchor_x // 2
    top = (canvas_h - placed_h) * anchor_y // 2
    return Geometry((canvas_w, canvas_h), (left, top, placed_w, placed_h))


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _compose(image: Image.Image, geometry: Geometry) -> OutpaintPlan:
    left, top, placed_w, placed_h = geometry.placement
    original = image if image.mode == "RGBA" else image.convert("RGBA")
    if original.size != (placed_w, placed_h):
        original = original.resize((placed_w, placed_h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("RGBA", geometry.canvas, (0, 0, 0, 0))
    canvas.paste(original, (left, top))
    mask = Image.new("RGBA", geometry.canvas, (0, 0, 0, 0))
    mask.paste((0, 0, 0, 255), (left, top, left + placed_w, top + placed_h))
    return OutpaintPlan(_png(canvas), _png(mask), geometry.size, geometry.placement)


def zoom_out(image_data: bytes, spec: ModelSpec, factor: float = 2.0) -> OutpaintPlan:
    """The image shrunk into the middle of a canvas `factor` times its size (snapped to the model's sizes),
    with the surrounding border to paint. BadImage for an unusable image; InvalidOption as `plan_geometry`.
    """
    check_model(spec)
    image = open_image(image_data)
    return _compose(image, plan_geometry(image.width, image.height, spec, factor=factor))


def pan(image_data: bytes, spec: ModelSpec, direction: Direction) -> OutpaintPlan:
    """The canvas extended by half the image towards `direction`, the original kept on the opposite side,
    with the new strip (and any padding the model's sizes need) to paint.
    """
    check_model(spec)
    image = open_image(image_data)
    return _compose(image, plan_geometry(image.width, image.height, spec, direction=direction))
