"""An n-up preview of several results in one small image, each cell labelled with its number.

Layouts: 1 image is itself scaled, 2 sit side by side, 3-4 make 2x2, 5-6 3x2, 7-9 3x3, and 10 either 4x3 or
5x2, whichever gives the squarer picture (more than 10: a near-square grid). Cells share the images' typical
aspect ratio and letterbox anything else. The grid is encoded once: JPEG, or lossy WebP with alpha when
some image is transparent, and at the default 1024 px edge it weighs a few hundred KiB.

The work splits into per-image `render_cell` (decode and shrink: the expensive part) and one
`compose_grid` (paste, label, encode), so `bot.imaging.pool.ImageWorkers` can decode the images in
parallel; `make_grid` does all of it in the calling thread. Cells come out of `Image.thumbnail`, which
lets a JPEG decode at 1/2, 1/4 or 1/8 scale and shrinks by integer steps before resampling;
`cell_from_picture` cuts a cell from pixels a worker already decoded to re-encode the file.
"""

from __future__ import annotations

import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from bot.api.types import GeneratedImage
from bot.imaging.fit import fit_one

BACKGROUND = (30, 31, 34)
"""Letterbox and gap colour of an opaque grid: close to Discord's dark theme, so bars blend in."""
GRID_MAX_BYTES = 8 * 1024 * 1024
"""A grid larger than this (only possible with a large `max_edge`) is re-fitted below it."""
_QUALITY = 85
_PLACEHOLDER = (90, 90, 96)
_REDUCING_GAP = 1.0
"""Shrink by whole factors (a box filter, and JPEG's scaled decode) as far as possible before resampling:
half the time of a full Lanczos pass, and in a preview cell the difference does not show."""
_ROTATED = (5, 6, 7, 8)
"""EXIF orientations that swap width and height."""


@dataclass(frozen=True, slots=True)
class GridPlan:
    """Columns and rows, the size of each cell and the gap between cells, in pixels."""

    columns: int
    rows: int
    cell_width: int
    cell_height: int
    gap: int

    @property
    def width(self) -> int:
        return self.columns * self.cell_width + (self.columns - 1) * self.gap

    @property
    def height(self) -> int:
        return self.rows * self.cell_height + (self.rows - 1) * self.gap

    def origin(self, slot: int) -> tuple[int, int]:
        """Top-left corner of cell `slot` (0-based, row by row)."""
        row, column = divmod(slot, self.columns)
        return column * (self.cell_width + self.gap), row * (self.cell_height + self.gap)


@dataclass(frozen=True, slots=True)
class Cell:
    """One image shrunk to fit its cell: raw RGB or RGBA pixels, cheap to pass between processes."""

    mode: str
    width: int
    height: int
    pixels: bytes

    def __repr__(self) -> str:
        return f"Cell({self.mode}, {self.width}x{self.height})"

    def image(self) -> Image.Image:
        return Image.frombytes(self.mode, (self.width, self.height), self.pixels)


def grid_shape(count: int, aspect: float = 1.0) -> tuple[int, int]:
    """Columns and rows for `count` images whose width/height ratio is `aspect`."""
    if count < 1:
        raise ValueError("a grid needs at least one image")
    fixed = {1: (1, 1), 2: (2, 1), 3: (2, 2), 4: (2, 2), 5: (3, 2), 6: (3, 2), 7: (3, 3), 8: (3, 3), 9: (3, 3)}
    if count in fixed:
        return fixed[count]
    columns = math.ceil(math.sqrt(count))
    options = [(columns, math.ceil(count / columns))]
    if count == 10:
        options.append((5, 2))
    # The squarest canvas wins: log distance from 1:1 treats 2:1 and 1:2 alike.
    return min(options, key=lambda shape: abs(math.log(shape[0] * aspect / shape[1])))


def plan_grid(images: Sequence[GeneratedImage], *, max_edge: int = 1024) -> GridPlan:
    """The layout for `images`, from their header sizes only: the longer canvas edge is at most `max_edge`."""
    if not images:
        raise ValueError("a grid needs at least one image")
    sizes = [(image.width, image.height) for image in images if image.width > 0 and image.height > 0] or [(1, 1)]
    aspect = statistics.median(w / h for w, h in sizes)
    columns, rows = grid_shape(len(images), aspect)
    gap = 0 if len(images) == 1 else max(2, max_edge // 256)
    width = min((max_edge - (columns - 1) * gap) / columns, (max_edge - (rows - 1) * gap) / rows * aspect)
    # Never blow small images up: a cell is at most as large as the largest source.
    width = min(width, max(w for w, _ in sizes), max(h for _, h in sizes) * aspect)
    cell_width = max(1, math.floor(width))
    cell_height = max(1, math.floor(width / aspect))
    return GridPlan(columns, rows, cell_width, cell_height, gap)


def render_cell(image: GeneratedImage, width: int, height: int) -> Cell:
    """`image` decoded at the smallest scale that still fills a `width` x `height` cell, then shrunk into it.

    An image Pillow cannot read (an SVG placeholder, say) becomes a flat grey cell rather than failing the grid.
    """
    try:
        opened: Image.Image = Image.open(io.BytesIO(image.data))
        if opened.mode not in ("RGB", "RGBA", "L", "LA", "CMYK"):
            # Palette and high-bit-depth images would be resized with nearest-neighbour or not at all.
            opened = opened.convert("RGBA" if _may_have_alpha(opened) else "RGB")
        rotated = opened.getexif().get(0x0112, 1) in _ROTATED
        opened.thumbnail((height, width) if rotated else (width, height), Image.Resampling.LANCZOS, _REDUCING_GAP)
        ImageOps.exif_transpose(opened, in_place=True)
        picture = _normalise(opened)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        picture = Image.new("RGB", (width, height), _PLACEHOLDER)
    return Cell(picture.mode, picture.width, picture.height, picture.tobytes())


def cell_from_picture(picture: Image.Image, width: int, height: int) -> Cell:
    """A cell from pixels already decoded (for re-encoding, say), so the image is not decoded twice."""
    scale = min(width / picture.width, height / picture.height, 1.0)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    shrunk = (
        picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP) if size != picture.size else picture
    )
    shrunk = _normalise(shrunk)
    return Cell(shrunk.mode, shrunk.width, shrunk.height, shrunk.tobytes())


def compose_grid(plan: GridPlan, cells: Sequence[Cell], *, labels: bool = True) -> GeneratedImage:
    """Paste `cells` into `plan`'s slots (centred), add number badges, and encode the grid once."""
    alpha = any(cell.mode == "RGBA" for cell in cells)
    canvas = (
        Image.new("RGBA", (plan.width, plan.height), (0, 0, 0, 0))
        if alpha
        else Image.new("RGB", (plan.width, plan.height), BACKGROUND)
    )
    show_labels = labels and len(cells) > 1
    for slot, cell in enumerate(cells):
        x, y = plan.origin(slot)
        x += (plan.cell_width - cell.width) // 2
        y += (plan.cell_height - cell.height) // 2
        canvas.paste(cell.image(), (x, y))
        if show_labels:
            badge = _badge(str(slot + 1), _label_size(plan))
            corner = (x + badge.height // 4, y + badge.height // 4)
            if alpha:
                canvas.alpha_composite(badge, corner)
            else:
                canvas.paste(badge, corner, badge)
    out = io.BytesIO()
    if alpha:
        canvas.save(out, "WEBP", quality=_QUALITY, method=2)
        mime = "image/webp"
    else:
        canvas.save(out, "JPEG", quality=_QUALITY)
        mime = "image/jpeg"
    grid = GeneratedImage(data=out.getvalue(), mime=mime, width=plan.width, height=plan.height)
    if len(grid.data) > GRID_MAX_BYTES:
        fitted, _ = fit_one(grid, max_bytes=GRID_MAX_BYTES)
        grid = GeneratedImage(data=fitted.data, mime=fitted.mime, width=fitted.width, height=fitted.height)
    return grid


def make_grid(images: Sequence[GeneratedImage], *, max_edge: int = 1024, labels: bool = True) -> GeneratedImage:
    """All `images` in one labelled preview whose longer edge is at most `max_edge`, in the calling thread."""
    plan = plan_grid(images, max_edge=max_edge)
    cells = [render_cell(image, plan.cell_width, plan.cell_height) for image in images]
    return compose_grid(plan, cells, labels=labels)


def _may_have_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _normalise(image: Image.Image) -> Image.Image:
    """RGB, or RGBA when some pixel is not fully opaque."""
    if not _may_have_alpha(image):
        return image if image.mode == "RGB" else image.convert("RGB")
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    lowest = rgba.getchannel("A").getextrema()[0]
    return rgba if isinstance(lowest, (int, float)) and lowest < 255 else rgba.convert("RGB")


def _label_size(plan: GridPlan) -> int:
    return max(12, min(48, round(min(plan.cell_width, plan.cell_height) * 0.1)))


@lru_cache(maxsize=64)
def _badge(text: str, size: int) -> Image.Image:
    """A dark rounded badge with white `text`, as an RGBA patch to composite onto a cell's corner."""
    font = _font(size)
    left, top, right, bottom = (math.floor(v) for v in font.getbbox(text))
    pad = max(3, size // 3)
    width = max(right - left, bottom - top) + 2 * pad
    height = bottom - top + 2 * pad
    badge = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(badge)
    draw.rounded_rectangle(
        (0, 0, width - 1, height - 1), radius=height // 3, fill=(12, 12, 14, 200), outline=(255, 255, 255, 90)
    )
    draw.text(((width - (right - left)) / 2 - left, pad - top), text, font=font, fill=(255, 255, 255, 255))
    return badge


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)
