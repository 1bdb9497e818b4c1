"""Turn what a user uploaded into what an edit, a variation or an outpaint sends.

Pure synchronous functions (callers run them with `asyncio.to_thread`): each input is prepared for the
model (`inputs.prepare`), the mask comes from, in order, a region, an uploaded mask image, or the first
image's own transparency, and is made to match the prepared image's size. Everything done to the
pictures is reported in `notes`, as plain sentences for the user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.api.types import InputImage
from bot.catalogue import ModelSpec
from bot.errors import BadImage
from bot.imaging import masks, outpaint
from bot.imaging.inputs import InputRules, SquareMode, prepare


@dataclass(frozen=True, slots=True)
class PreparedEdit:
    """Inputs ready for the edit endpoint; `size` is set when the edit must ask for a particular size."""

    images: tuple[InputImage, ...]
    mask: InputImage | None
    notes: tuple[str, ...] = ()
    size: str | None = None


def _mask_input(data: bytes) -> InputImage:
    return InputImage(data, filename="mask.png", mime="image/png")


def prepare_edit(
    images: Sequence[bytes],
    spec: ModelSpec,
    *,
    mask: bytes | None = None,
    region: masks.Region | None = None,
    square: SquareMode = "pad",
) -> PreparedEdit:
    """The uploads made acceptable to `spec`, with a mask from `region`, `mask`, or the image's transparency."""
    if not images:
        raise BadImage("An edit needs an image: attach the picture to change.")
    rules = InputRules.from_spec(spec)
    prepared = [prepare(data, rules, square=square) for data in images]
    first = prepared[0]
    notes = [note for image in prepared for note in image.notes]
    mask_png: bytes | None
    if region is not None:
        mask_png = masks.mask_from_region(first.width, first.height, region)
    elif mask is not None:
        mask_png = masks.mask_from_upload(mask, first.width, first.height)
    else:
        # With no mask, the transparent pixels of the image itself mark where to paint.
        mask_png = masks.mask_from_alpha(first.data) if first.has_alpha else None
        if mask_png is not None:
            notes.append("The image's transparent area will be repainted.")
    return PreparedEdit(
        images=tuple(image.as_input(f"image{i + 1}") for i, image in enumerate(prepared)),
        mask=_mask_input(mask_png) if mask_png is not None else None,
        notes=tuple(dict.fromkeys(notes)),
    )


def prepare_vary(image: bytes, spec: ModelSpec, *, square: SquareMode = "pad") -> tuple[InputImage, tuple[str, ...]]:
    """The image to vary, made acceptable to `spec`, and the notes about what was done to it."""
    prepared = prepare(image, InputRules.from_spec(spec), square=square)
    return prepared.as_input("image"), prepared.notes


def prepare_outpaint(
    image: bytes,
    spec: ModelSpec,
    *,
    factor: float | None = None,
    direction: outpaint.Direction | None = None,
) -> PreparedEdit:
    """The image on a larger canvas (zoom out by `factor`, or pan in `direction`) with the border's mask."""
    outpaint.check_model(spec)
    rules = InputRules.from_spec(spec)
    # Prepare first so EXIF rotation, odd modes and oversized uploads are handled before the canvas is built.
    source = prepare(image, InputRules(formats=("png",), max_bytes=rules.max_bytes, max_edge=rules.max_edge))
    if direction is not None:
        plan = outpaint.pan(source.data, spec, direction)
        note = f"The canvas was extended {direction}; the new area will be painted."
    else:
        plan = outpaint.zoom_out(source.data, spec, factor or 2.0)
        note = f"The image was zoomed out {factor or 2.0:g}x; the new border will be painted."
    return PreparedEdit(
        images=(InputImage(plan.image, filename="canvas.png", mime="image/png"),),
        mask=_mask_input(plan.mask),
        notes=(*source.notes, note),
        size=plan.size,
    )
