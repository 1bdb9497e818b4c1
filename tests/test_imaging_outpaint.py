"""Zoom out and pan: canvas sizes the model accepts, where the original lands, the border mask, and its pixels."""

from __future__ import annotations

import dataclasses
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.catalogue import Catalogue, EditLimits, ModelSpec, parse_size
from bot.errors import BadImage, InvalidOption
from bot.imaging.outpaint import (
    DIRECTIONS,
    ZOOM_FACTORS,
    Direction,
    Geometry,
    OutpaintPlan,
    pan,
    plan_geometry,
    zoom_out,
)

CATALOGUE = Catalogue.load()
MODELS = ["gpt-image-2", "gpt-image-1", "dall-e-2"]
SHAPES = {"square": (96, 96), "landscape": (160, 90), "portrait": (90, 160)}
MOVES: list[tuple[str, float | None, Direction | None]] = [
    *((f"zoom-{f:g}", f, None) for f in ZOOM_FACTORS),
    *((f"pan-{d}", None, d) for d in DIRECTIONS),
]
QUADRANTS = {(0, 0): (220, 30, 30), (1, 0): (30, 200, 40), (0, 1): (40, 60, 230), (1, 1): (240, 220, 20)}


def spec(name: str) -> ModelSpec:
    return CATALOGUE.get(name)


def _geometry(width: int, height: int, model: ModelSpec, factor: float | None, direction: Direction | None) -> Geometry:
    return plan_geometry(width, height, model, factor=factor, direction=direction)


def _check_geometry(geometry: Geometry, width: int, height: int, model: ModelSpec, direction: Direction | None) -> None:
    """Everything a plan must satisfy, for any input size."""
    canvas_w, canvas_h = geometry.canvas
    left, top, placed_w, placed_h = geometry.placement
    assert model.size_allowed(geometry.size)
    assert parse_size(geometry.size) == geometry.canvas
    # Inside the canvas, with a border left to paint.
    assert left >= 0
    assert top >= 0
    assert placed_w >= 1
    assert placed_h >= 1
    assert left + placed_w <= canvas_w
    assert top + placed_h <= canvas_h
    assert placed_w * placed_h < canvas_w * canvas_h
    # The original's aspect, to within a pixel's rounding on each side.
    assert abs(placed_w * height - placed_h * width) < max(width, height)
    # Centred for a zoom; on the side opposite the pan, centred across it.
    free_x, free_y = canvas_w - placed_w, canvas_h - placed_h
    expected_x = {"left": free_x, "right": 0}.get(direction or "", free_x // 2)
    expected_y = {"up": free_y, "down": 0}.get(direction or "", free_y // 2)
    assert (left, top) == (expected_x, expected_y)
    if direction is not None:
        # The pan's own side always gets new canvas.
        assert {"left": left, "right": free_x, "up": top, "down": free_y}[direction] > 0


# -- geometry on sizes alone ------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("move", "factor", "direction"), MOVES, ids=[m[0] for m in MOVES])
def test_geometry_for_each_model_shape_and_move(
    model: str, shape: str, move: str, factor: float | None, direction: Direction | None
) -> None:
    """Every button on every outpainting model, for square, landscape and portrait inputs, at phone-photo size."""
    for scale in (1, 12):
        width, height = (side * scale for side in SHAPES[shape])
        geometry = _geometry(width, height, spec(model), factor, direction)
        _check_geometry(geometry, width, height, spec(model), direction)


def test_a_zoom_on_gpt_image_2_keeps_the_original_pixel_for_pixel() -> None:
    """When the ideal canvas, rounded up to the 16-pixel grid, is allowed, the original is not resampled."""
    geometry = plan_geometry(1600, 900, spec("gpt-image-2"), factor=2)
    assert geometry.canvas == (3200, 1808)
    assert geometry.placement == (800, 454, 1600, 900)
    geometry = plan_geometry(1000, 1000, spec("gpt-image-2"), direction="left")
    assert geometry.canvas == (1504, 1008)
    assert geometry.placement == (504, 4, 1000, 1000)


def test_a_huge_image_is_scaled_into_gpt_image_2_limits() -> None:
    """4000x4000 zoomed 2x would be 64 MP; the canvas is the largest allowed square and the original halves."""
    geometry = plan_geometry(4000, 4000, spec("gpt-image-2"), factor=2)
    assert geometry.canvas == (2880, 2880)
    assert geometry.placement == (720, 720, 1440, 1440)


def test_fixed_sizes_pick_the_closest_shape() -> None:
    """gpt-image-1: a square panned sideways becomes 1536x1024 exactly; a 16:9 zoom lands on 1536x1024."""
    model = spec("gpt-image-1")
    assert plan_geometry(1024, 1024, model, direction="right") == Geometry((1536, 1024), (0, 0, 1024, 1024))
    assert plan_geometry(1024, 1024, model, direction="up") == Geometry((1024, 1536), (0, 512, 1024, 1024))
    assert plan_geometry(1600, 900, model, factor=2) == Geometry((1536, 1024), (384, 296, 768, 432))


def test_dall_e_2_squares_hold_the_pan_with_padding_across() -> None:
    """Only squares: a square panned left fills the width, the extra height becomes border above and below."""
    geometry = plan_geometry(1024, 1024, spec("dall-e-2"), direction="left")
    assert geometry == Geometry((1024, 1024), (342, 171, 682, 682))


def test_dall_e_2_picks_the_square_closest_in_area() -> None:
    """A small image is not blown up to 1024: 64x64 zoomed 2x is 128 wide, closest to 256x256."""
    assert plan_geometry(64, 64, spec("dall-e-2"), factor=2).canvas == (256, 256)
    assert plan_geometry(300, 300, spec("dall-e-2"), factor=2).canvas == (512, 512)
    assert plan_geometry(1000, 1000, spec("dall-e-2"), factor=2).canvas == (1024, 1024)


@pytest.mark.parametrize("factor", [1.0, 0.5, 4.01, float("nan"), float("inf"), 1 + 1e-12])
def test_zoom_factors_out_of_range_are_refused(factor: float) -> None:
    """Zooming must add a border and stay within 4x; a factor so close to 1 that no border is left counts too."""
    with pytest.raises(InvalidOption) as caught:
        plan_geometry(1024, 1024, spec("gpt-image-2"), factor=factor)
    assert caught.value.param == "zoom"


def test_zoom_factors_up_to_four_work() -> None:
    for factor in (1.1, 3, 4):
        geometry = plan_geometry(1024, 768, spec("gpt-image-2"), factor=factor)
        _check_geometry(geometry, 1024, 768, spec("gpt-image-2"), None)


def test_models_that_cannot_edit_with_a_mask_are_refused() -> None:
    """No edit endpoint (dall-e-3), or edits without masks: InvalidOption on the model."""
    with pytest.raises(InvalidOption) as caught:
        plan_geometry(512, 512, spec("dall-e-3"), factor=2)
    assert caught.value.param == "model"
    assert "DALL·E 3" in caught.value.message
    maskless = dataclasses.replace(spec("gpt-image-2"), edit=EditLimits(square_only=False, mask=False))
    with pytest.raises(InvalidOption) as caught:
        pan(_quadrants(32, 32), maskless, "left")
    assert caught.value.param == "model"


def test_exactly_one_move_is_required() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        plan_geometry(10, 10, spec("gpt-image-2"))
    with pytest.raises(ValueError, match="exactly one"):
        plan_geometry(10, 10, spec("gpt-image-2"), factor=2, direction="left")
    with pytest.raises(ValueError, match="unknown direction"):
        plan_geometry(10, 10, spec("gpt-image-2"), direction="sideways")  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    st.integers(16, 4000),
    st.integers(16, 4000),
    st.sampled_from(MODELS),
    st.sampled_from([m[1:] for m in MOVES]) | st.tuples(st.floats(1.05, 4.0), st.none()),
)
def test_geometry_holds_for_any_size(
    width: int, height: int, model: str, move: tuple[float | None, Direction | None]
) -> None:
    """Any input from 16 to 4000 pixels a side, any move: an allowed size, the placement inside the canvas with
    the input's aspect, the original where the move puts it, and a non-empty border."""
    factor, direction = move
    geometry = _geometry(width, height, spec(model), factor, direction)
    _check_geometry(geometry, width, height, spec(model), direction)


# -- real images ------------------------------------------------------------------------------------


def _quadrants(width: int, height: int, *, fmt: str = "PNG", **options: object) -> bytes:
    """An image of four solid quadrants, so sample points can tell where each part of the original went."""
    image = Image.new("RGB", (width, height))
    for (qx, qy), colour in QUADRANTS.items():
        half_w, half_h = width // 2, height // 2
        box = (qx * half_w, qy * half_h, width if qx else half_w, height if qy else half_h)
        image.paste(colour, box)
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    assert image.mode == "RGBA"
    return image


def _check_plan(plan: OutpaintPlan) -> tuple[Image.Image, Image.Image]:
    """The canvas and mask agree with the plan's size and placement; the mask is opaque exactly over the original."""
    canvas, mask = _decode(plan.image), _decode(plan.mask)
    assert canvas.size == mask.size == parse_size(plan.size)
    left, top, placed_w, placed_h = plan.placement
    alpha = mask.getchannel("A")
    histogram = alpha.histogram()
    assert histogram[255] == placed_w * placed_h
    assert histogram[0] == canvas.width * canvas.height - placed_w * placed_h > 0
    assert alpha.getbbox() == (left, top, left + placed_w, top + placed_h)
    # The canvas is transparent exactly where the mask is.
    assert canvas.getchannel("A").histogram() == histogram
    return canvas, mask


def _check_quadrants(canvas: Image.Image, placement: tuple[int, int, int, int]) -> None:
    left, top, placed_w, placed_h = placement
    for (qx, qy), colour in QUADRANTS.items():
        point = (left + placed_w * (1 + 2 * qx) // 4, top + placed_h * (1 + 2 * qy) // 4)
        pixel = canvas.getpixel(point)
        assert isinstance(pixel, tuple)
        assert all(abs(a - b) <= 2 for a, b in zip(pixel, (*colour, 255), strict=True)), (point, pixel, colour)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("move", "factor", "direction"), MOVES, ids=[m[0] for m in MOVES])
def test_plans_for_each_model_shape_and_move(
    model: str, shape: str, move: str, factor: float | None, direction: Direction | None
) -> None:
    """The real composite: allowed size, canvas and mask of that size, the original where the geometry says,
    the mask opaque exactly over it and transparent on the border, and its pixels (sampled) intact."""
    width, height = SHAPES[shape]
    data = _quadrants(width, height)
    plan = zoom_out(data, spec(model), factor) if factor is not None else pan(data, spec(model), direction or "left")
    assert spec(model).size_allowed(plan.size)
    geometry = _geometry(width, height, spec(model), factor, direction)
    assert (plan.size, plan.placement) == (geometry.size, geometry.placement)
    _check_geometry(geometry, width, height, spec(model), direction)
    canvas, mask = _check_plan(plan)
    left, top, placed_w, placed_h = plan.placement
    assert mask.getpixel((left, top))[3] == 255  # type: ignore[index]
    assert mask.getpixel((left + placed_w - 1, top + placed_h - 1))[3] == 255  # type: ignore[index]
    if left > 0:
        assert mask.getpixel((left - 1, top))[3] == 0  # type: ignore[index]
    if top + placed_h < canvas.height:
        assert mask.getpixel((left, top + placed_h))[3] == 0  # type: ignore[index]
    _check_quadrants(canvas, plan.placement)


def test_an_original_at_its_own_size_keeps_every_pixel() -> None:
    """On gpt-image-2 a 2x zoom of 1000x1000 needs no resampling: the pasted original is byte-for-byte the input."""
    data = _quadrants(1000, 1000)
    plan = zoom_out(data, spec("gpt-image-2"), 2)
    assert plan.placement == (500, 500, 1000, 1000)
    canvas, _ = _check_plan(plan)
    original = Image.open(io.BytesIO(data)).convert("RGBA")
    assert canvas.crop((500, 500, 1500, 1500)).tobytes() == original.tobytes()


def test_a_sideways_phone_photo_is_placed_upright() -> None:
    """EXIF orientation is applied before planning, so a portrait photo stored landscape stays portrait."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _quadrants(160, 90, fmt="JPEG", exif=exif, quality=95)
    plan = pan(data, spec("gpt-image-2"), "down")
    _left, _top, placed_w, placed_h = plan.placement
    assert placed_h > placed_w
    _check_plan(plan)


def test_the_originals_own_transparency_is_kept_but_not_masked() -> None:
    """A transparent hole in the original stays transparent on the canvas; the mask still protects it."""
    image = Image.new("RGBA", (64, 64), (10, 200, 10, 255))
    image.paste((0, 0, 0, 0), (0, 0, 16, 16))
    out = io.BytesIO()
    image.save(out, format="PNG")
    plan = zoom_out(out.getvalue(), spec("dall-e-2"), 2)
    left, top, placed_w, placed_h = plan.placement
    canvas, mask = _decode(plan.image), _decode(plan.mask)
    assert canvas.getpixel((left + 2, top + 2))[3] == 0  # type: ignore[index]
    assert mask.getpixel((left + 2, top + 2))[3] == 255  # type: ignore[index]
    assert canvas.getpixel((left + placed_w - 2, top + placed_h - 2)) == (10, 200, 10, 255)


def test_unusable_images_are_refused() -> None:
    with pytest.raises(BadImage):
        zoom_out(b"", spec("gpt-image-2"))
    with pytest.raises(BadImage):
        pan(b"not an image", spec("gpt-image-2"), "up")
