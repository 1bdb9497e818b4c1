"""The n-up preview: layouts, letterboxing, number badges, transparency and size."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from bot.api.decode import describe
from bot.api.types import GeneratedImage
from bot.imaging.grid import BACKGROUND, GridPlan, grid_shape, make_grid, plan_grid
from tests import images as samples

COLOURS = [(220, 40, 40), (40, 200, 60), (40, 80, 220), (230, 200, 40)]


def solid(colour: tuple[int, int, int], width: int = 512, height: int = 512, fmt: str = "PNG") -> GeneratedImage:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, fmt)
    return describe(out.getvalue())


def noisy(width: int, height: int, seed: int) -> GeneratedImage:
    """Uniform colour noise: the worst case for the grid's size."""
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3)).save(
        out, "PNG", compress_level=0
    )
    return describe(out.getvalue())


def pixels(grid: GeneratedImage) -> Image.Image:
    image = Image.open(io.BytesIO(grid.data))
    image.load()
    return image


def close(actual: object, expected: tuple[int, ...], tolerance: int = 12) -> bool:
    assert isinstance(actual, tuple)
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=False))


def marked(picture: Image.Image, plan: GridPlan, slot: int, colour: tuple[int, int, int]) -> int:
    """How many pixels in the top-left fifth of cell `slot` are clearly not `colour`: the badge.

    The outer 4 px are left out: JPEG smears the gap's colour into them.
    """
    x, y = plan.origin(slot)
    corner = picture.crop((x + 4, y + 4, x + plan.cell_width // 5, y + plan.cell_height // 5)).get_flattened_data()
    return sum(not close(p, colour, tolerance=40) for p in corner)


@pytest.mark.parametrize(
    ("count", "shape"),
    [(1, (1, 1)), (2, (2, 1)), (3, (2, 2)), (4, (2, 2)), (5, (3, 2)), (6, (3, 2)), (7, (3, 3)), (9, (3, 3))],
)
def test_layouts(count: int, shape: tuple[int, int]) -> None:
    assert grid_shape(count, 1.5) == shape


@pytest.mark.parametrize(("aspect", "shape"), [(1.0, (4, 3)), (1.5, (4, 3)), (0.3, (5, 2))])
def test_ten_images_take_the_squarer_of_4x3_and_5x2(aspect: float, shape: tuple[int, int]) -> None:
    assert grid_shape(10, aspect) == shape


def test_an_empty_grid_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        grid_shape(0)
    with pytest.raises(ValueError, match="at least one"):
        plan_grid([])


def test_four_images_make_a_labelled_2x2() -> None:
    """Each image lands in its cell in order, and its corner carries a badge that differs from the image."""
    images = [solid(c) for c in COLOURS]
    grid = make_grid(images)
    plan = plan_grid(images)
    assert (plan.columns, plan.rows) == (2, 2)
    assert (grid.mime, grid.width, grid.height) == ("image/jpeg", plan.width, plan.height)
    assert max(grid.width, grid.height) <= 1024
    picture = pixels(grid)
    plain = pixels(make_grid(images, labels=False))
    for slot, colour in enumerate(COLOURS):
        x, y = plan.origin(slot)
        assert close(picture.getpixel((x + plan.cell_width // 2, y + plan.cell_height // 2)), colour)
        assert marked(picture, plan, slot, colour) > 500
        assert marked(plain, plan, slot, colour) == 0


def test_labels_count_from_one_like_the_filenames() -> None:
    """Badge 10 is wider than badge 1: the tenth cell carries two digits."""
    images = [solid(COLOURS[i % 4], 300, 200) for i in range(10)]
    plan = plan_grid(images)
    picture = pixels(make_grid(images))
    assert marked(picture, plan, 9, COLOURS[1]) > marked(picture, plan, 0, COLOURS[0]) > 100


def test_a_grid_of_large_noisy_images_is_small() -> None:
    """Four 1024² images of pure noise (the worst case for compression) give a grid under 1 MiB."""
    images = [noisy(1024, 1024, seed) for seed in range(4)]
    grid = make_grid(images)
    assert (grid.width, grid.height) == (1024, 1024)
    assert len(grid.data) < 1024 * 1024


def test_other_shapes_are_letterboxed() -> None:
    """A portrait image among landscapes is centred in its cell with background bars either side."""
    images = [solid(COLOURS[0], 600, 400), solid(COLOURS[1], 200, 400)]
    plan = plan_grid(images)
    picture = pixels(make_grid(images, labels=False))
    x, y = plan.origin(1)
    assert close(picture.getpixel((x + plan.cell_width // 2, y + plan.cell_height // 2)), COLOURS[1])
    assert close(picture.getpixel((x + 2, y + plan.cell_height // 2)), BACKGROUND)


def test_transparency_is_kept_as_webp() -> None:
    clear = io.BytesIO()
    Image.new("RGBA", (256, 256), (0, 0, 0, 0)).save(clear, "PNG")
    images = [describe(clear.getvalue()), solid(COLOURS[0], 256, 256)]
    grid = make_grid(images)
    assert grid.mime == "image/webp"
    picture = pixels(grid)
    assert picture.mode == "RGBA"
    corner = picture.getpixel((128, 200))
    assert isinstance(corner, tuple)
    assert corner[3] == 0


def test_one_image_is_itself_scaled_without_a_badge() -> None:
    image = solid(COLOURS[2], 1536, 1024)
    grid = make_grid([image], max_edge=600)
    assert (grid.width, grid.height) == (600, 400)
    assert close(pixels(grid).getpixel((10, 10)), COLOURS[2])


def test_small_images_are_not_blown_up() -> None:
    images = [solid(c, 64, 64) for c in COLOURS]
    grid = make_grid(images)
    assert grid.width <= 2 * 64 + 8


def test_jpeg_sources_are_decoded_at_reduced_scale() -> None:
    """Large JPEGs go through the draft path and still land in their cells."""
    images = [solid(c, 2048, 2048, fmt="JPEG") for c in COLOURS]
    plan = plan_grid(images, max_edge=512)
    picture = pixels(make_grid(images, max_edge=512))
    x, y = plan.origin(3)
    assert close(picture.getpixel((x + plan.cell_width // 2, y + plan.cell_height // 2)), COLOURS[3])


def test_an_unreadable_image_becomes_a_placeholder() -> None:
    """An SVG (the mock provider can send one) cannot be rasterised here; the grid still comes out."""
    svg = describe(b'<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512"></svg>')
    grid = make_grid([svg, solid(COLOURS[0])])
    assert grid.mime == "image/jpeg"


def test_palette_images_are_resampled_in_colour() -> None:
    grid = make_grid([describe(samples.gif(64, 64)), solid(COLOURS[0], 64, 64)])
    assert pixels(grid).mode == "RGB"
