"""RequestChecker: every refusal is one sentence naming the parameter, and good requests get their defaults."""

from __future__ import annotations

import dataclasses
import io
import os
import re
from typing import Any

import pytest
from PIL import Image

from bot.api.types import EditRequest, GenerateRequest, InputImage, VaryRequest
from bot.api.validate import RequestChecker, image_size, sniff_format
from bot.catalogue import Catalogue
from bot.errors import BadImage, EaselError, InvalidOption

PROMPT = "a lighthouse at dusk"


def _image(fmt: str, width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    mode = "RGBA" if fmt == "PNG" else "RGB"
    Image.new(mode, (width, height), (200, 30, 30, 255)[: len(mode)]).save(out, format=fmt)
    return out.getvalue()


def png(width: int = 64, height: int = 64) -> InputImage:
    return InputImage(_image("PNG", width, height), "image.png", "image/png")


def jpeg(width: int = 64, height: int = 64) -> InputImage:
    return InputImage(_image("JPEG", width, height), "image.jpg", "image/jpeg")


def webp(width: int = 64, height: int = 64) -> InputImage:
    return InputImage(_image("WEBP", width, height), "image.webp", "image/webp")


def noise_png(side: int) -> InputImage:
    """A square PNG of random pixels, which does not compress: about 3 × side² bytes."""
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=0)
    return InputImage(out.getvalue())


@pytest.fixture
def checker(catalogue: Catalogue) -> RequestChecker:
    return RequestChecker(catalogue)


def _run(checker: RequestChecker, catalogue: Catalogue, kind: str, model: str, **fields: Any) -> object:
    spec = catalogue.get(model)
    if kind == "generate":
        return checker.generate(spec, GenerateRequest(prompt=fields.pop("prompt", PROMPT), **fields))
    if kind == "edit":
        images = fields.pop("images", (png(),))
        return checker.edit(spec, EditRequest(prompt=fields.pop("prompt", PROMPT), images=images, **fields))
    return checker.vary(spec, VaryRequest(image=fields.pop("image", png()), **fields))


def assert_one_sentence(message: str) -> None:
    """Ends with a period, and no sentence ends inside it ("e.g." does not count)."""
    assert message.endswith("."), message
    assert re.search(r"(?<!e\.g)\.\s", message[:-1]) is None, message
    assert "\n" not in message


def refused(
    checker: RequestChecker, catalogue: Catalogue, kind: str, model: str, error: type[EaselError], **fields: Any
) -> EaselError:
    with pytest.raises(error) as caught:
        _run(checker, catalogue, kind, model, **fields)
    assert_one_sentence(caught.value.message)
    return caught.value


# -- exact messages --------------------------------------------------------------------------------


OPTION_CASES = [
    pytest.param(
        "generate",
        "gpt-image-2",
        {"style": "vivid"},
        "style",
        "gpt-image-2 takes no style; dall-e-3 does.",
        id="style-on-gpt-image-2",
    ),
    pytest.param(
        "generate",
        "dall-e-3",
        {"style": "moody"},
        "style",
        "style 'moody' is not offered by dall-e-3: use vivid or natural.",
        id="unknown-style",
    ),
    pytest.param(
        "generate",
        "dall-e-2",
        {"size": "255x255"},
        "size",
        "size 255x255 is not allowed for dall-e-2: use 256x256, 512x512 or 1024x1024.",
        id="dall-e-2-odd-size",
    ),
    pytest.param(
        "generate",
        "dall-e-2",
        {"size": "auto"},
        "size",
        "size 'auto' is not a size: write WIDTHxHEIGHT, e.g. 256x256, 512x512 or 1024x1024.",
        id="dall-e-2-auto",
    ),
    pytest.param(
        "generate",
        "gpt-image-2",
        {"size": "big"},
        "size",
        "size 'big' is not a size: write WIDTHxHEIGHT, e.g. 1024x1024, 1536x1024 or 1024x1536.",
        id="not-a-size",
    ),
    pytest.param(
        "generate",
        "gpt-image-2",
        {"quality": "hd"},
        "quality",
        "quality 'hd' is not offered by gpt-image-2: use auto, low, medium or high.",
        id="quality-not-offered",
    ),
    pytest.param(
        "generate",
        "dall-e-3",
        {"quality": "xhigh"},
        "quality",
        "quality 'xhigh' is not offered by dall-e-3: use standard or hd.",
        id="xhigh-on-dall-e-3",
    ),
    pytest.param(
        "generate", "gpt-image-2", {"n": 11}, "n", "n must be between 1 and 10 for gpt-image-2.", id="n-too-big"
    ),
    pytest.param("generate", "gpt-image-2", {"n": 0}, "n", "n must be between 1 and 10 for gpt-image-2.", id="n-zero"),
    pytest.param(
        "generate", "dall-e-3", {"n": 2}, "n", "dall-e-3 makes one image per request; use n=1.", id="dall-e-3-n2"
    ),
    pytest.param(
        "generate",
        "dall-e-2",
        {"prompt": "x" * 1001},
        "prompt",
        "The prompt is 1,001 characters; dall-e-2 takes at most 1,000.",
        id="prompt-too-long",
    ),
    pytest.param(
        "generate",
        "gpt-image-2",
        {"prompt": ""},
        "prompt",
        "The prompt is empty: describe the image you want.",
        id="prompt-empty",
    ),
    pytest.param(
        "generate",
        "gpt-image-2",
        {"prompt": " \n\t "},
        "prompt",
        "The prompt is empty: describe the image you want.",
        id="prompt-blank",
    ),
    pytest.param(
        "generate",
        "gpt-image-2",
        {"background": "transparent", "output_format": "jpeg"},
        "background",
        "A transparent background needs png or webp output, not jpeg.",
        id="transparent-jpeg",
    ),
    pytest.param(
        "generate",
        "gpt-image-2",
        {"background": "glass"},
        "background",
        "background 'glass' is not offered by gpt-image-2: use auto, opaque or transparent.",
        id="unknown-background",
    ),
    pytest.param(
        "generate",
        "dall-e-3",
        {"background": "transparent"},
        "background",
        "dall-e-3 takes no background; " + "gpt-image-2, gpt-image-2.5-sunburst, gpt-image-2.5-flare, "
        "gpt-image-2.6-sunburst, gpt-image-2.6-flare, gpt-image-1.5, gpt-image-1-mini or gpt-image-1 do.",
        id="background-on-dall-e-3",
    ),
    pytest.param(
        "generate",
        "gpt-image-2",
        {"output_format": "svg"},
        "output_format",
        "output format 'svg' is not offered by gpt-image-2: use png, jpeg or webp.",
        id="svg-before-2-6",
    ),
    pytest.param(
        "generate",
        "gpt-image-2",
        {"output_format": "png", "output_compression": 80},
        "output_compression",
        "output_compression works only with jpeg or webp output.",
        id="compression-png",
    ),
    pytest.param(
        "generate",
        "gpt-image-2",
        {"output_compression": 80},
        "output_compression",
        "output_compression works only with jpeg or webp output.",
        id="compression-default-png",
    ),
    pytest.param(
        "generate",
        "gpt-image-2",
        {"output_format": "jpeg", "output_compression": 101},
        "output_compression",
        "output_compression must be between 0 and 100.",
        id="compression-101",
    ),
    pytest.param(
        "generate",
        "dall-e-3",
        {"partial_images": 2},
        "partial_images",
        "dall-e-3 cannot stream partial images.",
        id="partials-not-streaming",
    ),
    pytest.param(
        "generate",
        "gpt-image-2",
        {"partial_images": 4},
        "partial_images",
        "partial_images must be between 0 and 3 for gpt-image-2.",
        id="partials-too-many",
    ),
    pytest.param(
        "generate",
        "gpt-image-2",
        {"complexity": "high"},
        "complexity",
        "gpt-image-2 takes no complexity; gpt-image-2.6-sunburst or gpt-image-2.6-flare do.",
        id="complexity-before-2-6",
    ),
    pytest.param(
        "generate",
        "gpt-image-2.6-flare",
        {"complexity": "extreme"},
        "complexity",
        "complexity 'extreme' is not offered by gpt-image-2.6-flare: use low, medium or high.",
        id="complexity-unknown",
    ),
    pytest.param(
        "generate",
        "dall-e-2",
        {"moderation": "low"},
        "moderation",
        "dall-e-2 takes no moderation; " + "gpt-image-2, gpt-image-2.5-sunburst, gpt-image-2.5-flare, "
        "gpt-image-2.6-sunburst, gpt-image-2.6-flare, gpt-image-1.5, gpt-image-1-mini or gpt-image-1 do.",
        id="moderation-on-dall-e-2",
    ),
    pytest.param(
        "edit",
        "gpt-image-1-mini",
        {"input_fidelity": "high"},
        "input_fidelity",
        "gpt-image-1-mini takes no input_fidelity; " + "gpt-image-2, gpt-image-2.5-sunburst, gpt-image-2.5-flare, "
        "gpt-image-2.6-sunburst, gpt-image-2.6-flare, gpt-image-1.5 or gpt-image-1 do.",
        id="input-fidelity-on-mini",
    ),
    pytest.param(
        "edit",
        "gpt-image-2",
        {"input_fidelity": "max"},
        "input_fidelity",
        "input_fidelity 'max' is not offered by gpt-image-2: use low or high.",
        id="input-fidelity-unknown",
    ),
    pytest.param(
        "edit",
        "dall-e-2",
        {"output_format": "webp"},
        "output_format",
        "dall-e-2 takes no output format; " + "gpt-image-2, gpt-image-2.5-sunburst, gpt-image-2.5-flare, "
        "gpt-image-2.6-sunburst, gpt-image-2.6-flare, gpt-image-1.5, gpt-image-1-mini or gpt-image-1 do.",
        id="output-format-on-dall-e-2-edit",
    ),
    pytest.param(
        "edit",
        "gpt-image-2",
        {"images": tuple(png() for _ in range(17))},
        "images",
        "gpt-image-2 edits at most 16 images at once; you gave 17.",
        id="edit-17-images",
    ),
    pytest.param(
        "edit",
        "dall-e-2",
        {"images": (png(), png())},
        "images",
        "dall-e-2 edits one image at a time; you gave 2.",
        id="dall-e-2-two-images",
    ),
    pytest.param(
        "edit",
        "dall-e-3",
        {},
        "model",
        "dall-e-3 cannot edit images; "
        "gpt-image-2, gpt-image-2.5-sunburst, gpt-image-2.5-flare, gpt-image-2.6-sunburst, gpt-image-2.6-flare, "
        "gpt-image-1.5, gpt-image-1-mini, gpt-image-1 or dall-e-2 do.",
        id="edit-on-dall-e-3",
    ),
    pytest.param(
        "vary",
        "dall-e-3",
        {},
        "model",
        "dall-e-3 cannot make variations; "
        "gpt-image-2, gpt-image-2.5-sunburst, gpt-image-2.5-flare, gpt-image-2.6-sunburst, gpt-image-2.6-flare, "
        "gpt-image-1.5, gpt-image-1-mini, gpt-image-1 or dall-e-2 do.",
        id="vary-on-dall-e-3",
    ),
    pytest.param("vary", "dall-e-2", {"n": 11}, "n", "n must be between 1 and 10 for dall-e-2.", id="vary-n"),
    pytest.param(
        "vary",
        "dall-e-2",
        {"size": "1536x1024"},
        "size",
        "size 1536x1024 is not allowed for dall-e-2: use 256x256, 512x512 or 1024x1024.",
        id="vary-size",
    ),
    pytest.param(
        "vary",
        "gpt-image-2",
        {"prompt": "x" * 32_001},
        "prompt",
        "The prompt is 32,001 characters; gpt-image-2 takes at most 32,000.",
        id="vary-hint-too-long",
    ),
]


@pytest.mark.parametrize(("kind", "model", "fields", "param", "message"), OPTION_CASES)
def test_invalid_option_messages(
    checker: RequestChecker,
    catalogue: Catalogue,
    kind: str,
    model: str,
    fields: dict[str, Any],
    param: str,
    message: str,
) -> None:
    """Each refused option gives InvalidOption with the request parameter's name and one exact sentence."""
    error = refused(checker, catalogue, kind, model, InvalidOption, **fields)
    assert isinstance(error, InvalidOption)
    assert error.message == message
    assert error.param == param


def test_style_message_starts_as_required(checker: RequestChecker, catalogue: Catalogue) -> None:
    """Style on gpt-image-2 starts "gpt-image-2 takes no style;" and names dall-e-3 as the model that does."""
    error = refused(checker, catalogue, "generate", "gpt-image-2", InvalidOption, style="natural")
    assert error.message.startswith("gpt-image-2 takes no style;")
    assert "dall-e-3" in error.message


def test_free_form_size_names_the_rule_and_suggests(checker: RequestChecker, catalogue: Catalogue) -> None:
    """gpt-image-2 at 1000x1000 names the multiple-of-16 rule and suggests a size the model allows."""
    error = refused(checker, catalogue, "generate", "gpt-image-2", InvalidOption, size="1000x1000")
    assert isinstance(error, InvalidOption)
    assert error.param == "size"
    assert error.message.startswith(
        "size 1000x1000 is not allowed for gpt-image-2: both sides must be multiples of 16;"
    )
    suggestion = re.search(r"try (\d+x\d+)\.$", error.message)
    assert suggestion is not None
    assert catalogue.get("gpt-image-2").size_allowed(suggestion.group(1))


@pytest.mark.parametrize(
    ("size", "rule"),
    [
        ("3856x2160", "the longer side may be at most 3840"),
        ("3200x1008", "the aspect ratio must be between 1:3 and 3:1"),
        ("512x512", "at least 655,360 pixels in all"),
        ("3840x2176", "at most 8,294,400 pixels in all"),
        ("4001x999", "both sides must be multiples of 16; the longer side may be at most 3840"),
    ],
)
def test_free_form_size_rules(checker: RequestChecker, catalogue: Catalogue, size: str, rule: str) -> None:
    """Each broken limit is named, and the suggestion is always allowed."""
    error = refused(checker, catalogue, "generate", "gpt-image-2.5-flare", InvalidOption, size=size)
    assert rule in error.message
    suggestion = re.search(r"try (\d+x\d+)\.$", error.message)
    assert suggestion is not None
    assert catalogue.get("gpt-image-2.5-flare").size_allowed(suggestion.group(1))


def test_n_capped_by_caller(checker: RequestChecker, catalogue: Catalogue) -> None:
    """max_n (e.g. a guild's cap) tightens the model's own limit."""
    spec = catalogue.get("gpt-image-2")
    with pytest.raises(InvalidOption) as caught:
        checker.generate(spec, GenerateRequest(prompt=PROMPT, n=5), max_n=4)
    assert caught.value.message == "n must be between 1 and 4 for gpt-image-2."
    assert checker.generate(spec, GenerateRequest(prompt=PROMPT, n=4), max_n=4).n == 4
    with pytest.raises(InvalidOption, match="makes one image per request"):
        checker.generate(spec, GenerateRequest(prompt=PROMPT, n=2), max_n=1)


def test_prompt_at_the_limit_is_fine(checker: RequestChecker, catalogue: Catalogue) -> None:
    """Exactly prompt_max characters pass."""
    checked = _run(checker, catalogue, "generate", "dall-e-2", prompt="x" * 1000)
    assert isinstance(checked, GenerateRequest)


def test_model_that_cannot_generate(checker: RequestChecker, catalogue: Catalogue) -> None:
    """A model without the generate endpoint is refused with param model."""
    spec = dataclasses.replace(catalogue.get("gpt-image-2"), endpoints=frozenset({"edit"}))
    with pytest.raises(InvalidOption) as caught:
        checker.generate(spec, GenerateRequest(prompt=PROMPT))
    assert caught.value.message == "gpt-image-2 cannot create images from text."
    assert caught.value.param == "model"


def test_no_other_model_has_it(catalogue: Catalogue) -> None:
    """With no other models to point at, the message says none does."""
    with pytest.raises(InvalidOption) as caught:
        RequestChecker().generate(catalogue.get("gpt-image-2"), GenerateRequest(prompt=PROMPT, style="vivid"))
    assert caught.value.message == "gpt-image-2 takes no style; no model offered here does."


# -- images ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "image", "message"),
    [
        ("gpt-image-2", InputImage(b""), "The image is empty (0 bytes): upload the image file again."),
        (
            "gpt-image-2",
            InputImage(b"%PDF-1.7 not an image at all"),
            "The image is not a PNG, JPEG, WEBP or GIF image: upload one of those.",
        ),
        ("dall-e-2", jpeg(), "dall-e-2 takes PNG images, not JPEG."),
        ("dall-e-2", webp(), "dall-e-2 takes PNG images, not WEBP."),
        (
            "dall-e-2",
            png(96, 64),
            "dall-e-2 takes only square images, and the image is 96x64: crop it to a square.",
        ),
        (
            "dall-e-2",
            InputImage(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
            "The image could not be read: upload it again as a PNG file.",
        ),
    ],
)
def test_bad_edit_images(
    checker: RequestChecker, catalogue: Catalogue, model: str, image: InputImage, message: str
) -> None:
    """Unusable images are BadImage with one sentence that says what to do."""
    error = refused(checker, catalogue, "edit", model, BadImage, images=(image,))
    assert error.message == message


def test_edit_image_too_large_for_dall_e_2(checker: RequestChecker, catalogue: Catalogue) -> None:
    """A real square PNG over 4 MB is BadImage for dall-e-2 and fine for gpt-image-2 (50 MB)."""
    big = noise_png(1200)
    assert len(big.data) > 4 * 1024 * 1024
    error = refused(checker, catalogue, "edit", "dall-e-2", BadImage, images=(big,))
    assert error.message == "The image is 4.1 MB; dall-e-2 takes at most 4 MB: use a smaller image."
    checked = _run(checker, catalogue, "edit", "gpt-image-2", images=(big,))
    assert isinstance(checked, EditRequest)


def test_edit_without_images(checker: RequestChecker, catalogue: Catalogue) -> None:
    """An edit with no image at all is BadImage."""
    error = refused(checker, catalogue, "edit", "gpt-image-2", BadImage, images=())
    assert error.message == "An edit needs an image: attach the picture to change."


@pytest.mark.parametrize("mask", [jpeg(), webp()])
def test_mask_must_be_png(checker: RequestChecker, catalogue: Catalogue, mask: InputImage) -> None:
    """A JPEG or WEBP mask is BadImage, even where the image itself may be JPEG."""
    error = refused(checker, catalogue, "edit", "gpt-image-2", BadImage, images=(jpeg(),), mask=mask)
    assert error.message == "The mask must be a PNG with transparent pixels where the image should change."


def test_mask_that_is_not_an_image(checker: RequestChecker, catalogue: Catalogue) -> None:
    """Mask bytes that are no image name the mask."""
    error = refused(checker, catalogue, "edit", "gpt-image-2", BadImage, mask=InputImage(b"hello"))
    assert error.message == "The mask is not a PNG, JPEG, WEBP or GIF image: upload one of those."


def test_vary_checks_the_image(checker: RequestChecker, catalogue: Catalogue) -> None:
    """vary on dall-e-2 refuses a JPEG and a non-square PNG like edit does."""
    assert refused(checker, catalogue, "vary", "dall-e-2", BadImage, image=jpeg()).message == (
        "dall-e-2 takes PNG images, not JPEG."
    )
    assert "only square images" in refused(checker, catalogue, "vary", "dall-e-2", BadImage, image=png(64, 32)).message


def test_sniff_format_and_image_size() -> None:
    """Formats come from magic bytes; sizes from the header."""
    assert sniff_format(_image("PNG")) == "png"
    assert sniff_format(_image("JPEG")) == "jpeg"
    assert sniff_format(_image("WEBP")) == "webp"
    assert sniff_format(_image("GIF")) == "gif"
    assert sniff_format(b"BM....") is None
    assert image_size(_image("PNG", 30, 20)) == (30, 20)
    assert image_size(b"not an image") is None


# -- success fills defaults ------------------------------------------------------------------------


def test_generate_fills_defaults(checker: RequestChecker, catalogue: Catalogue) -> None:
    """A bare request gets the model's name, default size and default quality."""
    checked = checker.generate(catalogue.get("gpt-image-2-2026-04-21"), GenerateRequest(prompt=PROMPT))
    assert (checked.model, checked.size, checked.quality) == ("gpt-image-2", "auto", "auto")
    checked = checker.generate(catalogue.get("dall-e-3"), GenerateRequest(prompt=PROMPT))
    assert (checked.model, checked.size, checked.quality) == ("dall-e-3", "1024x1024", "standard")
    assert checked.prompt == PROMPT


def test_generate_keeps_and_normalises_choices(checker: RequestChecker, catalogue: Catalogue) -> None:
    """Chosen options pass through; the size is trimmed and lower-cased."""
    req = GenerateRequest(
        prompt=PROMPT,
        n=3,
        size=" 2048X1152 ",
        quality="xhigh",
        background="transparent",
        output_format="webp",
        output_compression=70,
        moderation="low",
        complexity="medium",
        partial_images=2,
    )
    checked = checker.generate(catalogue.get("gpt-image-2.6-sunburst"), req)
    assert checked == dataclasses.replace(req, model="gpt-image-2.6-sunburst", size="2048x1152")


def test_generate_dall_e_3_with_style(checker: RequestChecker, catalogue: Catalogue) -> None:
    """dall-e-3 takes its style and hd wide."""
    req = GenerateRequest(prompt=PROMPT, style="natural", quality="hd", size="1792x1024")
    checked = checker.generate(catalogue.get("dall-e-3"), req)
    assert (checked.style, checked.quality, checked.size) == ("natural", "hd", "1792x1024")


def test_edit_fills_defaults(checker: RequestChecker, catalogue: Catalogue) -> None:
    """A valid edit with a mask gets model, size and quality filled."""
    req = EditRequest(prompt=PROMPT, images=(png(), jpeg(), webp()), mask=png(), input_fidelity="high")
    checked = checker.edit(catalogue.get("gpt-image-1.5"), req)
    assert (checked.model, checked.size, checked.quality) == ("gpt-image-1.5", "auto", "auto")
    assert checked.images == req.images
    dalle = checker.edit(catalogue.get("dall-e-2"), EditRequest(prompt=PROMPT, images=(png(),), mask=png()))
    assert (dalle.model, dalle.size, dalle.quality) == ("dall-e-2", "1024x1024", "standard")


def test_vary_fills_defaults(checker: RequestChecker, catalogue: Catalogue) -> None:
    """vary fills model and size, for the variations endpoint and for edit-backed models."""
    checked = checker.vary(catalogue.get("dall-e-2"), VaryRequest(image=png(), n=2))
    assert (checked.model, checked.size, checked.n) == ("dall-e-2", "1024x1024", 2)
    checked = checker.vary(catalogue.get("gpt-image-2"), VaryRequest(image=jpeg(300, 200), prompt="bluer"))
    assert (checked.model, checked.size) == ("gpt-image-2", "auto")


def test_mask_over_4_mb_is_refused_even_for_gpt_models(catalogue: Catalogue) -> None:
    """Masks must stay under 4 MB whatever the model's image limit."""
    checker = RequestChecker(catalogue)
    big_mask = InputImage(b"\x89PNG\r\n\x1a\n" + b"\0" * (4 * 1024 * 1024 + 1), "mask.png")
    with pytest.raises(BadImage, match=r"^The mask is 4\.0 MB; gpt-image-2 takes at most 4 MB: use a smaller mask\.$"):
        checker.input_image(catalogue.get("gpt-image-2"), big_mask, "mask")


def test_sizes_are_ascii_digits_sent_as_the_api_writes_them(checker: RequestChecker, catalogue: Catalogue) -> None:
    """Full-width digits are no size (int() reads them, the API does not); leading zeros are sent without."""
    spec = catalogue.get("gpt-image-2")
    assert not spec.size_allowed("１５３６x１０２４")
    refused(checker, catalogue, "generate", "gpt-image-2", InvalidOption, size="１５３６x１０２４")
    checked = checker.generate(spec, GenerateRequest(prompt="a fox", size="01536x01024"))
    assert checked.size == "1536x1024"


def test_a_transparent_background_needs_png_or_webp(checker: RequestChecker, catalogue: Catalogue) -> None:
    """As the reference says, whatever formats a model offers (gif included)."""
    for fmt in ("jpeg", "gif"):
        spec = dataclasses.replace(catalogue.get("gpt-image-2"), output_formats=("png", "jpeg", "webp", "gif"))
        with pytest.raises(InvalidOption, match="needs png or webp"):
            checker.generate(spec, GenerateRequest(prompt="x", background="transparent", output_format=fmt))
