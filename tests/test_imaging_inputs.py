"""Uploads for edit and vary: every format and mode in, the model's rules out, and every refusal.

Every image is made here with Pillow; none is a committed binary.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, JpegImagePlugin

from bot.api.validate import RequestChecker
from bot.catalogue import Catalogue, ModelSpec
from bot.errors import BadImage, ConfigError
from bot.imaging import inputs
from bot.imaging.inputs import (
    DEFAULT_PIXEL_CAP,
    DEFAULT_UPLOAD_CAP,
    InputRules,
    PreparedImage,
    image_info,
    load,
    prepare,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GPT = InputRules()
PNG_ONLY = InputRules(formats=("png",), max_bytes=4 * 1024 * 1024, square_only=True, max_edge=1024, rgba=True)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def noise(width: int, height: int) -> Image.Image:
    """An RGB image that barely compresses."""
    return Image.merge("RGB", [Image.effect_noise((width, height), 128) for _ in range(3)])


def halves(
    width: int, height: int, left: tuple[int, int, int] = RED, right: tuple[int, int, int] = BLUE
) -> Image.Image:
    """Left half `left`, right half `right`."""
    image = Image.new("RGB", (width, height), right)
    image.paste(left, (0, 0, width // 2, height))
    return image


def px(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    """The pixel at `xy` of a multi-band image."""
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def close(actual: object, expected: tuple[int, ...], tolerance: int = 12) -> bool:
    assert isinstance(actual, tuple)
    return len(actual) == len(expected) and all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The formats of every `Image.save` from here on: the encodes `prepare` does."""
    calls: list[str] = []
    real = Image.Image.save

    def counting(self: Image.Image, fp: Any, format: str | None = None, **params: Any) -> None:
        calls.append(str(format))
        real(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", counting)
    return calls


@pytest.fixture
def no_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if any image's pixels are decoded."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.fixture(scope="module")
def specs(catalogue: Catalogue) -> dict[str, ModelSpec]:
    return {name: catalogue.get(name) for name in ("dall-e-2", "gpt-image-2")}


# --- rules from the catalogue ------------------------------------------------------------------------------


def test_rules_from_dall_e_2(catalogue: Catalogue) -> None:
    """DALL·E 2 takes square RGBA PNGs under 4 MB, and nothing larger than its 1024 outputs is worth sending."""
    rules = InputRules.from_spec(catalogue.get("dall-e-2"))
    assert rules == InputRules(
        formats=("png",), max_bytes=4 * 1024 * 1024, square_only=True, max_edge=1024, max_pixels=None, rgba=True
    )


def test_rules_from_gpt_image_2(catalogue: Catalogue) -> None:
    rules = InputRules.from_spec(catalogue.get("gpt-image-2"))
    assert rules == InputRules(formats=("png", "jpeg", "webp"), max_bytes=50 * 1024 * 1024, square_only=False)


def test_rules_for_a_model_without_edit_limits_are_permissive(catalogue: Catalogue) -> None:
    assert InputRules.from_spec(catalogue.get("dall-e-3")) == InputRules()


def test_rules_normalise_format_names_and_refuse_nonsense() -> None:
    assert InputRules(formats=("PNG", "jpg")).formats == ("png", "jpeg")
    with pytest.raises(ValueError, match="none of png, jpeg or webp"):
        InputRules(formats=("gif",))
    with pytest.raises(ValueError, match="max_edge"):
        InputRules(max_edge=0)


def test_catalogue_reads_max_edge_and_max_pixels(tmp_path: Any) -> None:
    """An admin's catalogue may set the input limits; nonsense is a ConfigError."""
    good = tmp_path / "good.toml"
    good.write_text('[models."gpt-image-2"]\nedit = { formats = ["png"], max_edge = 2048, max_pixels = 4000000 }\n')
    edit = Catalogue.load(good).get("gpt-image-2").edit
    assert edit is not None
    assert (edit.max_edge, edit.max_pixels) == (2048, 4_000_000)
    bad = tmp_path / "bad.toml"
    bad.write_text('[models."gpt-image-2"]\nedit = { max_edge = 0 }\n')
    with pytest.raises(ConfigError, match="max_edge"):
        Catalogue.load(bad)


# --- formats -----------------------------------------------------------------------------------------------


FORMATS = {
    "png": lambda: encode(halves(40, 30), "PNG"),
    "jpeg": lambda: encode(halves(40, 30), "JPEG", quality=95),
    "webp": lambda: encode(halves(40, 30), "WEBP", lossless=True),
    "gif": lambda: encode(halves(40, 30).convert("P"), "GIF"),
    "bmp": lambda: encode(halves(40, 30), "BMP"),
    "tiff": lambda: encode(halves(40, 30), "TIFF"),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_loads_as_rgb(fmt: str) -> None:
    image, info = load(FORMATS[fmt]())
    assert (info.format, info.width, info.height, image.size, image.mode) == (fmt, 40, 30, (40, 30), "RGB")
    assert close(image.getpixel((5, 15)), RED)
    assert close(image.getpixel((35, 15)), BLUE)
    assert info.notes == ()
    assert image_info(FORMATS[fmt]()) == (fmt, 40, 30)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_is_prepared_for_both_models(fmt: str, specs: dict[str, ModelSpec], catalogue: Catalogue) -> None:
    """Whatever comes in, what comes out passes the network-side check of either model."""
    checker = RequestChecker(catalogue)
    for spec in specs.values():
        prepared = prepare(FORMATS[fmt](), InputRules.from_spec(spec))
        assert checker.input_image(spec, prepared.as_input()) == prepared.format
        assert prepared.original_format == fmt


def heic_bytes(image: Image.Image) -> bytes:
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is not installed")
    if not pillow_heif.libheif_info().get("HEIF"):
        pytest.skip("this pillow-heif build has no HEIC encoder to make a test image with")
    out = io.BytesIO()
    pillow_heif.from_pillow(image).save(out, quality=95)
    return out.getvalue()


def test_heic_loads_and_becomes_an_accepted_format(specs: dict[str, ModelSpec]) -> None:
    data = heic_bytes(halves(64, 48))
    image, info = load(data)
    assert (info.format, image.size, image.mode) == ("heic", (64, 48), "RGB")
    assert close(image.getpixel((5, 24)), RED, tolerance=30)
    assert close(image.getpixel((58, 24)), BLUE, tolerance=30)
    prepared = prepare(data, InputRules.from_spec(specs["gpt-image-2"]))
    assert (prepared.format, prepared.original_format, prepared.width, prepared.height) == ("jpeg", "heic", 64, 48)


def test_heic_without_pillow_heif_is_refused_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    heic = heic_bytes(Image.new("RGB", (16, 16), RED))
    monkeypatch.setattr(inputs, "_heif_available", False)
    with pytest.raises(BadImage, match=r"HEIC images need the pillow-heif package; upload a PNG or JPEG instead\."):
        load(heic)


def test_animated_gif_uses_its_first_frame_and_says_so() -> None:
    frames = [Image.new("RGB", (20, 10), colour).convert("P") for colour in (RED, BLUE, (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    image, info = load(data)
    assert info.animated
    assert close(image.getpixel((3, 3)), RED)
    assert info.notes == ("The GIF is animated; its first frame was used.",)
    prepared = prepare(data, GPT)
    assert "The GIF is animated; its first frame was used." in prepared.notes


def test_animated_png_and_webp_say_so_too() -> None:
    frames = [Image.new("RGBA", (12, 12), (*colour, 255)) for colour in (RED, BLUE)]
    for fmt in ("PNG", "WEBP"):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
        image, info = load(data)
        assert info.notes == (f"The {fmt} is animated; its first frame was used.",)
        assert close(px(image, (6, 6))[:3], RED, tolerance=20)
        assert prepare(data, GPT).data != data


def test_multipage_tiff_uses_the_first_page() -> None:
    pages = [Image.new("RGB", (10, 10), colour) for colour in (RED, BLUE, BLUE)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    image, info = load(data)
    assert info.notes == ("The TIFF has 3 pages; the first page was used as the image.",)
    assert image.getpixel((5, 5)) == RED


def test_a_still_gif_says_nothing() -> None:
    assert load(encode(Image.new("P", (5, 5), 3), "GIF"))[1].notes == ()


# --- orientation and modes ---------------------------------------------------------------------------------


def oriented_jpeg(orientation: int) -> bytes:
    """A 40x20 JPEG, red left and blue right as stored, with an EXIF orientation."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(halves(40, 20), "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_6_turns_a_landscape_jpeg_portrait() -> None:
    """Orientation 6 means "rotate 90° clockwise to view": the stored left edge becomes the top."""
    data = oriented_jpeg(6)
    image, info = load(data)
    assert (info.width, info.height, image.size) == (20, 40, (20, 40))
    assert close(image.getpixel((10, 5)), RED)
    assert close(image.getpixel((10, 35)), BLUE)
    assert image_info(data) == ("jpeg", 20, 40)
    prepared = prepare(data, GPT)
    assert (prepared.width, prepared.height) == (20, 40)
    assert opened(prepared.data).size == (20, 40)
    assert "exif" not in opened(prepared.data).info or opened(prepared.data).getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize(
    ("orientation", "size", "red_at"),
    [(1, (40, 20), (5, 10)), (3, (40, 20), (35, 10)), (8, (20, 40), (10, 35)), (2, (40, 20), (35, 10))],
)
def test_other_orientations(orientation: int, size: tuple[int, int], red_at: tuple[int, int]) -> None:
    image, _ = load(oriented_jpeg(orientation))
    assert image.size == size
    assert close(image.getpixel(red_at), RED)


def test_cmyk_jpeg_and_tiff_become_rgb() -> None:
    red_cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    for data in (encode(red_cmyk, "JPEG", quality=95), encode(red_cmyk, "TIFF")):
        image, info = load(data)
        assert (info.mode, image.mode) == ("CMYK", "RGB")
        assert close(image.getpixel((4, 4)), RED)


def test_palette_with_transparency_keeps_its_alpha() -> None:
    image = Image.new("P", (4, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.putpixel((2, 0), 1)
    image.putpixel((3, 0), 0)
    image.info["transparency"] = 1
    loaded, info = load(encode(image, "PNG", transparency=1))
    assert (info.mode, loaded.mode) == ("P", "RGBA")
    assert loaded.getpixel((0, 0)) == (255, 0, 0, 255)
    assert px(loaded, (1, 0))[3] == 0
    prepared = prepare(encode(image, "PNG", transparency=1), GPT)
    assert prepared.has_alpha
    assert prepared.format == "png"


def test_palette_without_transparency_is_rgb() -> None:
    image, _ = load(encode(Image.new("RGB", (4, 4), BLUE).convert("P"), "PNG"))
    assert image.mode == "RGB"


def test_greyscale_with_alpha_becomes_rgba() -> None:
    image, info = load(encode(Image.new("LA", (4, 4), (100, 50)), "PNG"))
    assert (info.mode, image.mode, image.getpixel((1, 1))) == ("LA", "RGBA", (100, 100, 100, 50))


def test_rgb_png_with_a_transparent_colour_becomes_rgba() -> None:
    image = Image.new("RGB", (2, 1), RED)
    image.putpixel((1, 0), BLUE)
    loaded, _ = load(encode(image, "PNG", transparency=BLUE))
    assert loaded.mode == "RGBA"
    assert loaded.getpixel((0, 0)) == (*RED, 255)
    assert px(loaded, (1, 0))[3] == 0


def test_16_bit_greyscale_keeps_its_gradient() -> None:
    """A 16-bit gradient becomes an 8-bit gradient, not a white image (Pillow's own I;16 -> L clips)."""
    gradient = Image.new("I;16", (256, 1))
    for x in range(256):
        gradient.putpixel((x, 0), x * 257)
    for data in (encode(gradient, "PNG"), encode(gradient, "TIFF")):
        image, info = load(data)
        assert info.mode.startswith("I;16")
        assert image.mode == "RGB"
        values = [image.getpixel((x, 0)) for x in range(256)]
        assert values == [(x, x, x) for x in range(256)]


def test_32_bit_and_float_greyscale_are_scaled_to_8_bit() -> None:
    wide = Image.new("I", (3, 1))
    for x, value in enumerate((0, 32896, 65535)):
        wide.putpixel((x, 0), value)
    image, _ = load(encode(wide, "TIFF"))
    assert [image.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]
    floats = Image.new("F", (3, 1))
    for x, fraction in enumerate((0.0, 0.5, 1.0)):
        floats.putpixel((x, 0), fraction)
    scaled, _ = load(encode(floats, "TIFF"))
    assert [px(scaled, (x, 0))[0] for x in range(3)] == [0, 127, 255]


def test_bilevel_becomes_rgb() -> None:
    image = Image.new("1", (2, 1), 0)
    image.putpixel((1, 0), 1)
    loaded, _ = load(encode(image, "PNG"))
    assert (loaded.mode, loaded.getpixel((0, 0)), loaded.getpixel((1, 0))) == ("RGB", (0, 0, 0), (255, 255, 255))


def test_premultiplied_alpha_tiff_is_unpremultiplied() -> None:
    """A TIFF with associated (premultiplied) alpha comes out as straight RGBA."""
    data = bytearray(encode(Image.new("RGBA", (4, 4), (100, 50, 25, 128)), "TIFF"))
    ifd = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        at = ifd + 2 + 12 * entry
        if struct.unpack("<H", data[at : at + 2])[0] == 338:  # ExtraSamples: 2 unassociated -> 1 associated
            data[at + 8 : at + 10] = struct.pack("<H", 1)
    image, _ = load(bytes(data))
    assert image.mode == "RGBA"
    assert close(image.getpixel((0, 0)), (199, 99, 50, 128), tolerance=2)


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("RGBa", (100, 50, 25, 128), (199, 99, 50, 128)),
        ("La", (50, 128), (99, 99, 99, 128)),
        ("PA", (0, 128), (0, 0, 0, 128)),
        ("YCbCr", (76, 85, 255), RED),
        ("HSV", (0, 255, 255), RED),
        ("RGBX", (*RED, 0), RED),
    ],
)
def test_modes_no_upload_carries_are_normalised_too(
    mode: str, colour: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    image = inputs._normalise(Image.new(mode, (2, 2), colour))
    assert image.mode == ("RGBA" if len(expected) == 4 else "RGB")
    assert close(image.getpixel((0, 0)), expected, tolerance=3)


def test_loading_never_accepts_truncated_images() -> None:
    """Pillow's global switch for half-decoded images must stay off: truncation is a refusal."""
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- refusals ----------------------------------------------------------------------------------------------


def test_zero_bytes_is_refused() -> None:
    with pytest.raises(BadImage, match=r"^The image is empty \(0 bytes\): upload the image file again\.$"):
        load(b"")
    with pytest.raises(BadImage, match="The mask is empty"):
        prepare(b"", GPT, what="mask")


def test_text_is_not_an_image() -> None:
    with pytest.raises(
        BadImage, match=r"not an image Easel can read: upload a PNG, JPEG, WEBP, GIF, BMP, TIFF or HEIC"
    ):
        load(b"hello, this is a text file and not a picture\n" * 10)


def test_formats_easel_does_not_open_are_refused() -> None:
    """ICO (and EPS, PSD, ...) are readable by Pillow but never opened from an upload."""
    with pytest.raises(BadImage, match="not an image Easel can read"):
        load(encode(Image.new("RGB", (16, 16), RED), "ICO"))


def test_over_the_upload_cap_is_refused_unopened(no_decode: None) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(2000)
    with pytest.raises(BadImage, match=r"^The image is 2 KB, over the 1 KB upload limit: upload a smaller file\.$"):
        load(data, upload_cap=1024)
    assert DEFAULT_UPLOAD_CAP == 25 * 1024 * 1024
    big = b"\x89PNG\r\n\x1a\n" + bytes(DEFAULT_UPLOAD_CAP)
    with pytest.raises(BadImage, match=r"^The image is 25.1 MB, over the 25 MB upload limit"):
        prepare(big, GPT)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "TIFF"])
def test_truncated_images_are_refused(fmt: str) -> None:
    image = noise(96, 64)
    data = encode(image.convert("P") if fmt == "GIF" else image, fmt)
    with pytest.raises(BadImage, match=r"(damaged|incomplete|not an image)"):
        load(truncated(data))


def test_a_truncated_jpeg_is_refused_even_when_it_would_pass_through(specs: dict[str, ModelSpec]) -> None:
    """The untouched path still reads the whole file (at 1/8 scale) to find damage."""
    data = truncated(encode(noise(640, 480), "JPEG", quality=90))
    with pytest.raises(BadImage, match=r"damaged or incomplete and cannot be read: upload the original file again\."):
        prepare(data, InputRules.from_spec(specs["gpt-image-2"]))


def test_a_corrupt_png_is_refused() -> None:
    data = bytearray(encode(noise(64, 64), "PNG"))
    start = data.find(b"IDAT") + 30
    data[start : start + 30] = bytes(b ^ 0xFF for b in data[start : start + 30])
    with pytest.raises(BadImage, match="damaged"):
        load(bytes(data))


def png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header (with a correct CRC) claims `width` x `height`."""
    data = bytearray(encode(Image.new("1", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        # Over our cap, under Pillow's warning: our own check before decoding.
        (8000, 6000, r"^The image is 8000x6000, more than the 40,000,000 pixels Easel will open: upload a smaller"),
        # Over Pillow's warning threshold (an error under pytest's filterwarnings) and over its hard limit.
        (10_000, 10_000, r"more than 40,000,000 pixels"),
        (50_000, 50_000, r"more than 40,000,000 pixels, too many to open safely: upload a smaller image\.$"),
    ],
)
def test_decompression_bombs_are_refused_before_decoding(
    width: int, height: int, message: str, no_decode: None
) -> None:
    data = png_claiming(width, height)
    assert len(data) < 100
    with pytest.raises(BadImage, match=message):
        load(data)
    with pytest.raises(BadImage, match=message):
        prepare(data, PNG_ONLY)
    with pytest.raises(BadImage, match=message):
        image_info(data)


def test_the_pixel_cap_holds_where_pillow_only_warns() -> None:
    """Outside pytest Pillow's bomb warning is only a warning; Easel's own header check still refuses."""
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(BadImage, match="10000x10000, more than"):
        load(png_claiming(10_000, 10_000))


def test_the_pixel_cap_can_be_set() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    assert DEFAULT_PIXEL_CAP == 40_000_000
    assert load(data, pixel_cap=10_000)[0].size == (100, 100)
    with pytest.raises(BadImage, match="100x100, more than the 9,999 pixels"):
        load(data, pixel_cap=9_999)


def test_a_real_large_1_bit_png_is_refused_from_its_header(no_decode: None) -> None:
    """A tiny file with a huge canvas: a genuine bomb, not only a forged header."""
    image = Image.new("1", (7000, 6000))
    data = encode(image, "PNG", optimize=True)
    assert len(data) < 100_000
    with pytest.raises(BadImage, match="7000x6000"):
        prepare(data, InputRules.from_spec(Catalogue.load().get("dall-e-2")))


# --- square only -------------------------------------------------------------------------------------------


def test_pad_makes_a_transparent_square_around_the_whole_image() -> None:
    prepared = prepare(encode(Image.new("RGB", (200, 100), RED), "PNG"), PNG_ONLY)
    image = opened(prepared.data)
    assert (prepared.width, prepared.height, image.size, image.mode) == (200, 200, (200, 200), "RGBA")
    assert prepared.has_alpha
    assert image.getpixel((100, 10)) == (0, 0, 0, 0)
    assert image.getpixel((100, 190)) == (0, 0, 0, 0)
    assert image.getpixel((0, 50)) == (*RED, 255)
    assert image.getpixel((199, 149)) == (*RED, 255)
    assert image.getchannel("A").getbbox() == (0, 50, 200, 150)
    assert prepared.notes == ("The image was padded to a square with transparency.",)


def test_crop_takes_the_centre_square() -> None:
    source = Image.new("RGB", (300, 100), BLUE)
    source.paste(RED, (100, 0, 200, 100))
    prepared = prepare(encode(source, "PNG"), PNG_ONLY, square="crop")
    image = opened(prepared.data)
    assert image.size == (100, 100)
    assert not prepared.has_alpha
    assert image.getpixel((0, 0)) == (*RED, 255)
    assert image.getpixel((99, 99)) == (*RED, 255)
    assert prepared.notes == ("The image was cropped to a square from its centre.",)


def test_portrait_pads_left_and_right() -> None:
    prepared = prepare(encode(Image.new("RGB", (50, 80), RED), "JPEG"), PNG_ONLY)
    image = opened(prepared.data)
    assert image.size == (80, 80)
    assert image.getchannel("A").getbbox() == (15, 0, 65, 80)


def test_square_is_left_alone_when_the_model_takes_any_shape() -> None:
    data = encode(Image.new("RGB", (200, 100), RED), "PNG")
    prepared = prepare(data, GPT)
    assert (prepared.width, prepared.height, prepared.notes) == (200, 100, ())


@given(
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    square=st.sampled_from(["pad", "crop"]),
)
@example(width=3000, height=1, square="pad")
@example(width=1, height=3000, square="crop")
@example(width=2999, height=3000, square="pad")
@example(width=1, height=1, square="crop")
@settings(max_examples=40, deadline=None)
def test_square_geometry_property(width: int, height: int, square: str) -> None:
    """Pad gives a square holding the whole image (scaled evenly); crop gives a square wholly inside it."""
    rules = InputRules(formats=("png",), square_only=True, max_edge=128, rgba=True)
    data = encode(Image.new("RGB", (width, height), RED), "JPEG", quality=75)
    prepared = prepare(data, rules, square="pad" if square == "pad" else "crop")
    image = opened(prepared.data)
    side = prepared.width
    assert prepared.height == side == image.size[0] == image.size[1]
    if square == "crop":
        assert side == min(min(width, height), 128)
        assert not prepared.has_alpha
        assert image.getchannel("A").getextrema() == (255, 255)
    else:
        assert side == min(max(width, height), 128)
        bbox = image.getchannel("A").getbbox()
        assert bbox is not None
        content_w, content_h = bbox[2] - bbox[0], bbox[3] - bbox[1]
        scale = side / max(width, height)
        assert abs(content_w - width * scale) <= 1
        assert abs(content_h - height * scale) <= 1
        assert max(content_w, content_h) == side
        assert abs(bbox[0] - (side - bbox[2])) <= 1
        assert abs(bbox[1] - (side - bbox[3])) <= 1
        assert prepared.has_alpha == (content_w != content_h)


# --- size limits -------------------------------------------------------------------------------------------


def test_too_many_pixels_are_scaled_down_once_with_one_encode(encodes: list[str]) -> None:
    data = encode(halves(400, 200), "PNG")
    encodes.clear()
    prepared = prepare(data, InputRules(max_edge=100))
    assert (prepared.width, prepared.height) == (100, 50)
    assert encodes == ["JPEG"]
    assert prepared.notes == ("The image was scaled down from 400x200 to 100x50 to fit the model's limits.",)
    prepared = prepare(data, InputRules(max_pixels=20_000))
    assert (prepared.width, prepared.height) == (200, 100)


def test_max_pixels_and_max_edge_both_hold() -> None:
    prepared = prepare(encode(halves(3000, 1000), "JPEG"), InputRules(max_edge=2000, max_pixels=300_000))
    assert (prepared.width, prepared.height) == (948, 316)


def test_too_many_bytes_scales_down_just_once(encodes: list[str]) -> None:
    """The first encode is over the limit; one estimated downscale and a second encode fit."""
    data = encode(noise(600, 600), "PNG", compress_level=1)
    limit = len(data) // 3
    encodes.clear()
    prepared = prepare(data, InputRules(formats=("png",), max_bytes=limit))
    assert encodes == ["PNG", "PNG"]
    assert len(prepared.data) <= limit
    assert prepared.width == prepared.height
    assert 250 <= prepared.width < 600
    assert prepared.notes == (
        f"The image was scaled down from 600x600 to {prepared.width}x{prepared.width} to fit the model's limits.",
    )


def test_too_many_bytes_even_after_scaling_is_refused(encodes: list[str]) -> None:
    data = encode(noise(200, 200), "PNG")
    encodes.clear()
    with pytest.raises(BadImage, match=r"^The image is still \d+ bytes after scaling it down, over the model's 60"):
        prepare(data, InputRules(formats=("png",), max_bytes=60))
    assert len(encodes) == 2


def test_a_big_jpeg_for_dall_e_2_is_decoded_at_reduced_scale(
    monkeypatch: pytest.MonkeyPatch, specs: dict[str, ModelSpec], encodes: list[str]
) -> None:
    drafts: list[tuple[int, int] | None] = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> Any:
        result = real(self, mode, size)
        drafts.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    data = encode(halves(4000, 3000), "JPEG", quality=90)
    encodes.clear()
    prepared = prepare(data, InputRules.from_spec(specs["dall-e-2"]))
    assert drafts == [(2000, 1500)]
    assert (prepared.width, prepared.height, prepared.format) == (1024, 1024, "png")
    assert encodes == ["PNG"]
    image = opened(prepared.data)
    assert image.getchannel("A").getbbox() == (0, 128, 1024, 896)
    assert close(image.getpixel((100, 512)), (*RED, 255))
    assert close(image.getpixel((900, 512)), (*BLUE, 255))


# --- choosing what to send ---------------------------------------------------------------------------------


def test_an_accepted_upload_that_fits_passes_through_untouched(encodes: list[str]) -> None:
    jpeg = encode(halves(640, 480), "JPEG", quality=90)
    rgba_png = encode(Image.new("RGBA", (64, 64), (1, 2, 3, 100)), "PNG")
    webp = encode(halves(64, 32), "WEBP")
    encodes.clear()
    for data, rules, fmt in ((jpeg, GPT, "jpeg"), (webp, GPT, "webp"), (rgba_png, PNG_ONLY, "png")):
        prepared = prepare(data, rules)
        assert prepared.data is data
        assert (prepared.format, prepared.original_format, prepared.notes) == (fmt, fmt, ())
    assert encodes == []
    assert prepare(rgba_png, PNG_ONLY).has_alpha
    assert not prepare(jpeg, GPT).has_alpha


def test_dall_e_2_gets_rgba_even_for_an_opaque_square_png(encodes: list[str]) -> None:
    """Its edit endpoint refuses RGB PNGs, so an opaque square is re-encoded with an alpha channel."""
    data = encode(Image.new("RGB", (64, 64), RED), "PNG")
    encodes.clear()
    prepared = prepare(data, PNG_ONLY)
    assert encodes == ["PNG"]
    assert opened(prepared.data).mode == "RGBA"
    assert not prepared.has_alpha


def test_an_opaque_image_is_sent_as_jpeg_when_it_must_be_encoded() -> None:
    prepared = prepare(encode(Image.new("RGB", (30, 20), RED), "BMP"), GPT)
    assert (prepared.format, prepared.mime, opened(prepared.data).format) == ("jpeg", "image/jpeg", "JPEG")
    assert prepared.as_input("upload").filename == "upload.jpg"


def test_transparency_is_kept_as_png_or_webp() -> None:
    transparent = encode(Image.new("RGBA", (30, 20), (*RED, 0)), "TIFF")
    assert prepare(transparent, GPT).format == "png"
    assert prepare(transparent, InputRules(formats=("jpeg", "webp"))).format == "webp"
    assert opened(prepare(transparent, InputRules(formats=("webp",))).data).mode == "RGBA"


def test_an_opaque_alpha_channel_does_not_force_png() -> None:
    data = encode(Image.new("RGBA", (30, 20), (*RED, 255)), "TIFF")
    prepared = prepare(data, GPT)
    assert (prepared.format, prepared.has_alpha) == ("jpeg", False)


def test_transparency_is_flattened_onto_white_for_a_jpeg_only_model() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    image.putpixel((0, 0), (*RED, 255))
    prepared = prepare(encode(image, "PNG"), InputRules(formats=("jpeg",)))
    result = opened(prepared.data)
    assert (prepared.format, prepared.has_alpha, result.mode) == ("jpeg", False, "RGB")
    assert close(result.getpixel((3, 3)), (255, 255, 255), tolerance=20)
    assert prepared.notes == ("The image's transparent areas were filled with white: the model takes no transparency.",)


def test_as_input_names_the_file_by_its_format() -> None:
    prepared = PreparedImage(b"x", "image/png", 1, 1, False, (), "bmp")
    upload = prepared.as_input()
    assert (upload.data, upload.filename, upload.mime) == (b"x", "image.png", "image/png")
    assert PreparedImage(b"x", "image/webp", 1, 1, False, (), "webp").as_input("a").filename == "a.webp"


@pytest.mark.parametrize(
    "make",
    [
        lambda: encode(halves(1500, 900), "JPEG"),
        lambda: encode(Image.new("RGBA", (300, 700), (*RED, 128)), "PNG"),
        lambda: encode(noise(1200, 1200), "PNG", compress_level=0),
        lambda: encode(halves(64, 64), "WEBP"),
        lambda: oriented_jpeg(6),
        lambda: encode(Image.new("RGB", (2100, 40), RED).convert("P"), "GIF"),
        lambda: encode(Image.new("CMYK", (90, 60), (0, 255, 255, 0)), "TIFF"),
    ],
    ids=["big-jpeg", "tall-translucent-png", "noisy-big-png", "square-webp", "rotated-jpeg", "strip-gif", "cmyk"],
)
@pytest.mark.parametrize("square", ["pad", "crop"])
def test_output_always_passes_the_request_checker(
    make: Any, square: str, specs: dict[str, ModelSpec], catalogue: Catalogue
) -> None:
    checker = RequestChecker(catalogue)
    data = make()
    for spec in specs.values():
        rules = InputRules.from_spec(spec)
        prepared = prepare(data, rules, square="pad" if square == "pad" else "crop")
        found = checker.input_image(spec, prepared.as_input())
        assert found == prepared.format
        assert len(prepared.data) <= rules.max_bytes
        assert opened(prepared.data).size == (prepared.width, prepared.height)
        if rules.max_edge is not None:
            assert max(prepared.width, prepared.height) <= rules.max_edge
