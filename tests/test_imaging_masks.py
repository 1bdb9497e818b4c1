"""Masks without a drawing tool: typed regions, uploaded masks, the image's own transparency, and the preview."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.errors import BadImage, InvalidOption
from bot.imaging import inputs
from bot.imaging.masks import (
    AREA_NAMES,
    PIXEL_CAP,
    Region,
    mask_from_alpha,
    mask_from_region,
    mask_from_upload,
    open_image,
    parse_region,
    preview,
    transparent_fraction,
)
from tests import images
from tests.test_imaging_inputs import heic_bytes


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _alpha(data: bytes) -> Image.Image:
    image = _open(data)
    assert image.mode == "RGBA"
    return image.getchannel("A")


def _save(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _rgba_with_hole(size: tuple[int, int], hole: tuple[int, int, int, int], alpha: int = 0) -> bytes:
    """An opaque RGBA PNG with the box `hole` at `alpha`."""
    image = Image.new("RGBA", size, (40, 90, 160, 255))
    image.paste((0, 0, 0, alpha), hole)
    return _save(image)


# -- parse_region -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x=10 y=20 w=50 h=40", Region("rect", 10, 20, 50, 40)),
        ("h=40 w=50 y=20 x=10", Region("rect", 10, 20, 50, 40)),
        ("x=10%, y=20%, w=50%, h=40%", Region("rect", 10, 20, 50, 40)),
        ("X: 10 ; Y: 20 ; W: 50 ; H: 40", Region("rect", 10, 20, 50, 40)),
        ("ellipse x=10 y=20 w=50 h=40", Region("ellipse", 10, 20, 50, 40)),
        ("x=10 y=20 w=50 h=40 ellipse", Region("ellipse", 10, 20, 50, 40)),
        ("rect x = 0 y = 0 w = 100 h = 100", Region("rect", 0, 0, 100, 100)),
        ("oval x=12.5 y=.5 width=25 height=99.5", Region("ellipse", 12.5, 0.5, 25, 99.5)),
    ],
)
def test_parse_region_reads_boxes(text: str, expected: Region) -> None:
    """Keys in any order, `=` or `:`, commas or spaces, percent signs and a shape word all read the same box."""
    assert parse_region(text) == expected


@pytest.mark.parametrize(
    ("text", "box"),
    [
        ("top", (0, 0, 100, 50)),
        ("bottom", (0, 50, 100, 50)),
        ("left", (0, 0, 50, 100)),
        ("Right", (50, 0, 50, 100)),
        ("center", (25, 25, 50, 50)),
        ("centre", (25, 25, 50, 50)),
        ("top-left", (0, 0, 50, 50)),
        ("top right", (50, 0, 50, 50)),
        ("bottom_left", (0, 50, 50, 50)),
        ("bottomright", (50, 50, 50, 50)),
    ],
)
def test_parse_region_reads_named_areas(text: str, box: tuple[float, float, float, float]) -> None:
    """Halves, the centre and the four corners have names."""
    assert parse_region(text) == Region("rect", *box)


def test_every_advertised_area_name_parses() -> None:
    """The names shown to users in messages are all understood."""
    for name in AREA_NAMES:
        parse_region(name)


def test_a_named_area_takes_a_shape_word() -> None:
    """`ellipse center` is the ellipse inside the centre box."""
    assert parse_region("ellipse center") == Region("ellipse", 25, 25, 50, 50)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("x=10 y=20 w=50", "missing h"),
        ("x=10 y=20 w=50 h=40 z=3", "unknown key 'z'"),
        ("x=10 x=20 y=20 w=50 h=40", "gives x twice"),
        ("x=10 y=20 w=50 h=40 please", "'please'"),
        ("x=ten y=20 w=50 h=40", "'x=ten'"),
        ("x=-5 y=20 w=50 h=40", "x is -5"),
        ("x=10 y=20 w=0 h=40", "w is 0"),
        ("x=10 y=20 w=50 h=0", "h is 0"),
        ("x=60 y=20 w=50 h=40", "right edge (x + w = 110)"),
        ("x=10 y=70 w=50 h=40", "bottom edge (y + h = 110)"),
        ("x=10 y=20 w=150 h=40", "right edge"),
        ("ellipse rect x=10 y=20 w=50 h=40", "more than one shape"),
        ("ellipse", "no area"),
    ],
)
def test_parse_region_refuses_bad_boxes(text: str, fragment: str) -> None:
    """Nothing is clamped or guessed: each mistake gets one sentence naming it and showing the expected form."""
    with pytest.raises(InvalidOption) as caught:
        parse_region(text)
    assert caught.value.param == "region"
    assert fragment in caught.value.message
    assert "x=10 y=20 w=50 h=40" in caught.value.message
    assert caught.value.message.endswith(".")


def test_an_unknown_area_name_lists_the_names() -> None:
    """`background` would need segmentation, so it is an unknown name like any other; the message lists the names."""
    with pytest.raises(InvalidOption) as caught:
        parse_region("background")
    assert caught.value.param == "region"
    assert "'background'" in caught.value.message
    for name in AREA_NAMES:
        assert name in caught.value.message


def test_a_region_built_in_code_is_checked_too() -> None:
    """The range rules live on Region itself, not only in the parser."""
    with pytest.raises(InvalidOption):
        Region("rect", 0, 0, 101, 10)
    with pytest.raises(InvalidOption):
        Region("rect", float("nan"), 0, 10, 10)
    with pytest.raises(InvalidOption):
        Region("circle", 0, 0, 10, 10)  # type: ignore[arg-type]


percent = st.floats(min_value=0, max_value=100, allow_nan=False).map(lambda v: round(v, 2))


@st.composite
def regions(draw: st.DrawFn) -> Region:
    x, y = draw(percent.filter(lambda v: v < 100)), draw(percent.filter(lambda v: v < 100))
    w = draw(st.floats(min_value=0.01, max_value=100 - x).map(lambda v: round(v, 2)).filter(lambda v: 0 < v <= 100 - x))
    h = draw(st.floats(min_value=0.01, max_value=100 - y).map(lambda v: round(v, 2)).filter(lambda v: 0 < v <= 100 - y))
    return Region(draw(st.sampled_from(["rect", "ellipse"])), x, y, w, h)


@given(regions(), st.booleans())
def test_a_region_written_out_parses_back(region: Region, percent_signs: bool) -> None:
    """Any valid region, written the documented way, reads back unchanged."""
    sign = "%" if percent_signs else ""
    text = f"{region.shape} x={region.x}{sign} y={region.y}{sign} w={region.w}{sign} h={region.h}{sign}"
    assert parse_region(text) == region


# -- mask_from_region -------------------------------------------------------------------------------


def test_rectangle_mask_is_transparent_exactly_inside() -> None:
    """x=10 y=20 w=50 h=40 on 100x50 covers pixels 10..59 across and 10..29 down."""
    mask = mask_from_region(100, 50, parse_region("x=10 y=20 w=50 h=40"))
    image = _open(mask)
    assert (image.mode, image.size) == ("RGBA", (100, 50))
    alpha = image.getchannel("A")
    for inside in [(10, 10), (59, 10), (10, 29), (59, 29), (35, 20)]:
        assert alpha.getpixel(inside) == 0, inside
    for outside in [(9, 10), (60, 10), (10, 9), (10, 30), (0, 0), (99, 49)]:
        assert alpha.getpixel(outside) == 255, outside
    assert alpha.histogram()[0] == 50 * 20
    assert alpha.histogram()[0] + alpha.histogram()[255] == 100 * 50


def test_ellipse_mask_is_transparent_at_the_centre_not_the_corners() -> None:
    """An ellipse fills its box's middle but leaves the box's corners opaque."""
    alpha = _alpha(mask_from_region(200, 100, Region("ellipse", 10, 20, 50, 40)))
    assert alpha.getpixel((70, 40)) == 0  # centre of the box (20..119, 20..59)
    assert alpha.getpixel((20, 40)) == 0  # left end of the long axis
    for corner in [(20, 20), (119, 20), (20, 59), (119, 59)]:
        assert alpha.getpixel(corner) == 255, corner
    assert alpha.getpixel((5, 5)) == 255


def test_a_tiny_region_still_marks_one_pixel() -> None:
    """Percentages that round to nothing still leave one transparent pixel, so the mask is never empty."""
    for shape in ("rect", "ellipse"):
        mask = mask_from_region(10, 10, Region(shape, 99.99, 99.99, 0.01, 0.01))
        assert transparent_fraction(mask) == pytest.approx(0.01)


def test_the_whole_image_can_be_the_region() -> None:
    """x=0 y=0 w=100 h=100 repaints everything."""
    assert transparent_fraction(mask_from_region(64, 48, parse_region("x=0 y=0 w=100 h=100"))) == 1.0


def test_named_halves_split_the_image() -> None:
    """`top` and `bottom` each cover half, and together all of it."""
    top, bottom = (_alpha(mask_from_region(30, 21, parse_region(name))) for name in ("top", "bottom"))
    assert top.getpixel((0, 0)) == 0
    assert top.getpixel((0, 20)) == 255
    assert bottom.getpixel((0, 0)) == 255
    assert bottom.getpixel((0, 20)) == 0


@settings(max_examples=60, deadline=None)
@given(regions(), st.integers(1, 300), st.integers(1, 300))
def test_region_masks_have_the_image_size_and_roughly_the_region_area(region: Region, width: int, height: int) -> None:
    """Any region on any size: the mask has that size, is binary, marks something, and a rectangle's share is w*h."""
    mask = mask_from_region(width, height, region)
    alpha = _alpha(mask)
    assert alpha.size == (width, height)
    histogram = alpha.histogram()
    assert histogram[0] >= 1
    assert histogram[0] + histogram[255] == width * height
    if region.shape == "rect":
        expected_w = max(1, round((region.x + region.w) * width / 100) - round(region.x * width / 100))
        expected_h = max(1, round((region.y + region.h) * height / 100) - round(region.y * height / 100))
        assert histogram[0] <= expected_w * expected_h
        assert histogram[0] >= min(expected_w, width) * min(expected_h, height) - (width + height)


def test_mask_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1x1"):
        mask_from_region(0, 10, Region("rect", 0, 0, 10, 10))


# -- mask_from_upload -------------------------------------------------------------------------------


def test_an_upload_of_the_same_size_is_used_as_is() -> None:
    """Alpha values survive unchanged, soft edges included."""
    upload = Image.new("RGBA", (40, 20), (255, 255, 255, 255))
    upload.paste((0, 0, 0, 0), (0, 0, 10, 20))
    upload.paste((9, 9, 9, 100), (10, 0, 12, 20))
    alpha = _alpha(mask_from_upload(_save(upload), 40, 20))
    assert alpha.size == (40, 20)
    assert alpha.getpixel((5, 5)) == 0
    assert alpha.getpixel((10, 5)) == 100
    assert alpha.getpixel((30, 5)) == 255


def test_an_upload_at_another_scale_is_resized_with_binary_alpha() -> None:
    """A half-size mask of the same shape is scaled up; its alpha stays 0 or 255."""
    upload = images.mask(64, 32)  # left half transparent
    alpha = _alpha(mask_from_upload(upload, 128, 64))
    assert alpha.size == (128, 64)
    assert alpha.getpixel((10, 10)) == 0
    assert alpha.getpixel((60, 40)) == 0
    assert alpha.getpixel((70, 10)) == 255
    assert alpha.getpixel((127, 63)) == 255
    assert {value for value, count in enumerate(alpha.histogram()) if count} == {0, 255}


def test_an_upload_within_one_percent_of_the_shape_is_resized() -> None:
    """Phones and editors round sizes: 1000x500 against 1006x500 is the same shape."""
    alpha = _alpha(mask_from_upload(images.mask(1000, 500), 1006, 500))
    assert alpha.size == (1006, 500)


def test_an_upload_of_another_shape_is_refused() -> None:
    """A different aspect cannot be fitted without guessing, so it is an error that names both sizes."""
    with pytest.raises(BadImage) as caught:
        mask_from_upload(images.mask(512, 256), 1024, 1024)
    assert caught.value.message == "The mask is 512x256 but the image is 1024x1024: they must have the same shape."


@pytest.mark.parametrize(
    "upload",
    [
        images.jpeg(16, 16),
        images.png(16, 16, (0, 0, 0), mode="RGB"),
        _save(Image.new("L", (16, 16), 0)),
    ],
    ids=["jpeg", "rgb-png", "grey-png"],
)
def test_a_mask_without_transparency_is_refused(upload: bytes) -> None:
    """No alpha channel at all: nothing marks the area to change."""
    with pytest.raises(BadImage, match=r"(?i)the mask has no transparent area"):
        mask_from_upload(upload, 16, 16)


def test_a_mask_with_alpha_but_no_fully_transparent_pixel_is_refused() -> None:
    """Half-transparent pixels do not count: the API edits only fully transparent ones."""
    upload = _rgba_with_hole((16, 16), (0, 0, 8, 8), alpha=1)
    with pytest.raises(BadImage) as caught:
        mask_from_upload(upload, 16, 16)
    assert caught.value.message == (
        "The mask has no transparent area: erase the part to change so it is fully transparent."
    )


def test_a_transparent_area_lost_in_downscaling_is_refused() -> None:
    """A one-pixel hole that vanishes when the mask shrinks leaves nothing to edit."""
    upload = Image.new("RGBA", (400, 400), (0, 0, 0, 255))
    upload.putpixel((200, 200), (0, 0, 0, 0))
    with pytest.raises(BadImage, match="no transparent area"):
        mask_from_upload(_save(upload), 100, 100)


def test_a_palette_mask_with_a_transparent_colour_works() -> None:
    """Palette PNGs carry transparency in tRNS; that counts as alpha."""
    upload = Image.new("P", (20, 20), 1)
    upload.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    upload.paste(0, (0, 0, 10, 20))
    alpha = _alpha(mask_from_upload(_save(upload, transparency=0), 20, 20))
    assert alpha.getpixel((2, 2)) == 0
    assert alpha.getpixel((15, 2)) == 255


def _png_with_header(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header claims `width`x`height` (the pixels would never decode)."""
    data = bytearray(images.png(1, 1))
    ihdr = 8 + 8  # signature, then length and type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    body = bytes(data[ihdr - 4 : ihdr + 13])
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(body))
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "is empty"),
        (b"this is not an image at all", "not an image"),
        (images.png(64, 64)[:60], "damaged"),
        (_png_with_header(10_000, 5_000), "10000x5000, more than 40,000,000 pixels"),
    ],
    ids=["empty", "text", "truncated", "bomb"],
)
def test_unusable_mask_files_are_refused(data: bytes, fragment: str) -> None:
    """Empty, foreign, cut-short and enormous files are BadImage, the last before any pixel is decoded."""
    with pytest.raises(BadImage) as caught:
        mask_from_upload(data, 64, 64)
    assert fragment in caught.value.message
    assert "mask" in caught.value.message


def test_the_pixel_cap_is_the_documented_one() -> None:
    assert PIXEL_CAP == 40_000_000
    with pytest.raises(BadImage) as at_cap:
        open_image(_png_with_header(8000, 5000))
    assert "damaged" in at_cap.value.message  # the header passed; the missing pixels did not
    with pytest.raises(BadImage) as over:
        open_image(_png_with_header(8000, 5001))
    assert "more than 40,000,000 pixels" in over.value.message


def test_open_image_applies_the_exif_orientation() -> None:
    """A phone photo stored sideways with orientation 6 opens upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _save(Image.new("RGB", (40, 20), (10, 20, 30)), "JPEG", exif=exif)
    assert open_image(data).size == (20, 40)


# -- mask_from_alpha --------------------------------------------------------------------------------


def test_the_images_own_transparency_becomes_the_mask() -> None:
    """Fully transparent pixels are the area; half-transparent ones are kept."""
    image = Image.new("RGBA", (30, 20), (200, 10, 10, 255))
    image.paste((0, 0, 0, 0), (0, 0, 10, 20))
    image.paste((0, 0, 0, 128), (10, 0, 20, 20))
    mask = mask_from_alpha(_save(image))
    assert mask is not None
    alpha = _alpha(mask)
    assert alpha.size == (30, 20)
    assert alpha.getpixel((5, 5)) == 0
    assert alpha.getpixel((15, 5)) == 255
    assert alpha.getpixel((25, 5)) == 255
    assert transparent_fraction(mask) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "data",
    [images.jpeg(16, 16), images.png(16, 16), _rgba_with_hole((16, 16), (0, 0, 4, 4), alpha=10)],
    ids=["jpeg", "opaque-rgba", "nearly-transparent"],
)
def test_an_image_without_fully_transparent_pixels_gives_no_mask(data: bytes) -> None:
    assert mask_from_alpha(data) is None


# -- transparent_fraction ---------------------------------------------------------------------------


def test_transparent_fraction_counts_only_fully_transparent_pixels() -> None:
    assert transparent_fraction(images.mask(10, 10)) == 0.5
    assert transparent_fraction(images.png(10, 10)) == 0.0
    assert transparent_fraction(images.jpeg(10, 10)) == 0.0
    assert transparent_fraction(_rgba_with_hole((10, 10), (0, 0, 10, 5), alpha=1)) == 0.0


# -- preview ----------------------------------------------------------------------------------------

GREY = (128, 128, 128)


def _close(colour: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 8) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


def test_preview_tints_only_the_region() -> None:
    """Inside the area the grey turns magenta; well outside it stays grey; the edge is outlined."""
    image = images.png(200, 100, GREY, mode="RGB")
    mask = mask_from_region(200, 100, parse_region("left"))
    shown = _open(preview(image, mask)).convert("RGB")
    assert shown.size == (200, 100)
    inside, outside = shown.getpixel((50, 50)), shown.getpixel((150, 50))
    assert isinstance(inside, tuple)
    assert isinstance(outside, tuple)
    red, green, blue = inside
    assert red > green + 60
    assert blue > green + 60
    assert _close(outside, GREY)
    edge = shown.getpixel((100, 50))
    assert isinstance(edge, tuple)
    assert _close(edge, (255, 255, 255), tolerance=40)


def test_preview_of_an_ellipse_leaves_the_box_corners_alone() -> None:
    image = images.png(200, 200, GREY, mode="RGB")
    shown = _open(preview(image, mask_from_region(200, 200, parse_region("ellipse center")))).convert("RGB")
    assert not _close(shown.getpixel((100, 100)), GREY)  # type: ignore[arg-type]
    assert _close(shown.getpixel((55, 55)), GREY)  # type: ignore[arg-type]


def test_preview_is_small_and_downscaled() -> None:
    """A big noisy photo previews at max_edge on the longer side, in a few hundred kilobytes of JPEG."""
    photo = Image.effect_noise((2400, 1600), 40).convert("RGB")
    data = _save(photo, "JPEG", quality=90)
    mask = mask_from_region(2400, 1600, parse_region("x=10 y=10 w=30 h=30"))
    out = preview(data, mask)
    shown = _open(out)
    assert shown.format == "JPEG"
    assert shown.size == (1024, 683)
    assert len(out) < 1_000_000
    assert max(_open(preview(data, mask, max_edge=256)).size) == 256


def test_preview_shows_transparency_over_a_checkerboard_and_tints_it() -> None:
    """An image whose own transparency is the mask: the hole shows a tinted checkerboard."""
    data = _rgba_with_hole((64, 64), (0, 0, 32, 32))
    mask = mask_from_alpha(data)
    assert mask is not None
    shown = _open(preview(data, mask)).convert("RGB")
    hole = {shown.getpixel((x, y)) for x in (4, 20) for y in (4, 20)}
    assert len(hole) > 1  # light and dark squares
    assert _close(shown.getpixel((48, 48)), (40, 90, 160))  # type: ignore[arg-type]


def test_preview_accepts_a_mask_at_another_scale_but_not_another_shape() -> None:
    image = images.png(200, 100, GREY, mode="RGB")
    shown = _open(preview(image, images.mask(100, 50))).convert("RGB")
    assert not _close(shown.getpixel((20, 50)), GREY)  # type: ignore[arg-type]
    assert _close(shown.getpixel((180, 50)), GREY)  # type: ignore[arg-type]
    with pytest.raises(BadImage, match="same shape"):
        preview(image, images.mask(100, 100))


def test_preview_with_an_opaque_mask_tints_nothing() -> None:
    image = images.png(50, 50, GREY, mode="RGB")
    shown = _open(preview(image, images.png(50, 50))).convert("RGB")
    assert _close(shown.getpixel((25, 25)), GREY)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["TGA", "PCX", "SGI", "PPM", "ICO"])
def test_previews_and_masks_open_only_the_formats_uploads_may_be(fmt: str) -> None:
    """The preview and a mask are decoded with the same short list of formats as every other upload, so an
    exotic decoder (EPS runs Ghostscript) never sees a member's file."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, fmt)
    with pytest.raises(BadImage, match="not an image Easel can read"):
        open_image(buffer.getvalue())


def test_a_heic_preview_works_before_any_other_heic_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    """The HEIC opener is registered on first need here too, not only by the upload path."""
    data = heic_bytes(Image.new("RGB", (32, 24), (10, 120, 200)))
    # As in a fresh process: pillow-heif's opener not registered yet.
    monkeypatch.setattr(inputs, "_heif_available", None)
    monkeypatch.setattr(Image, "ID", [name for name in Image.ID if name != "HEIF"])
    monkeypatch.delitem(Image.OPEN, "HEIF", raising=False)
    assert open_image(data).size == (32, 24)
