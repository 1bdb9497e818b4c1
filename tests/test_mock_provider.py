"""The mock provider: real placeholder images, honest results, streams, and the client's vary paths."""

from __future__ import annotations

import dataclasses
import gc
import io
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from bot.api import decode
from bot.api.client import ImagesClient
from bot.api.mock import LABEL_EDIT, LABEL_GENERATE, LABEL_VARIATION, MockProvider
from bot.api.provider import ImageProvider
from bot.api.types import (
    Completed,
    EditRequest,
    GenerateRequest,
    ImageResult,
    InputImage,
    PartialImage,
    StreamEvent,
    VaryRequest,
)
from bot.catalogue import Catalogue, ModelSpec
from bot.errors import InvalidOption
from tests.conftest import NoSleep

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def gpt2(catalogue: Catalogue) -> ModelSpec:
    return catalogue.get("gpt-image-2")


@pytest.fixture
def gpt26(catalogue: Catalogue) -> ModelSpec:
    """The model that offers svg and gif output."""
    return catalogue.get("gpt-image-2.6-sunburst")


def png_bytes(size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def svg_root(data: bytes) -> ET.Element:
    return ET.fromstring(data)  # noqa: S314 - our own output, not untrusted XML


def assert_mock(result: ImageResult, spec: ModelSpec) -> None:
    assert result.mock is True
    assert result.provider == "mock"
    assert result.model == spec.name
    assert result.usage is None
    assert result.credits is None
    assert result.request_id is not None
    assert result.request_id.startswith("mock-")
    assert len(result.request_id) == len("mock-") + 12
    int(result.request_id.removeprefix("mock-"), 16)


async def collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


def test_satisfies_the_provider_protocol() -> None:
    provider: ImageProvider = MockProvider()
    assert provider.name == "mock"
    assert provider.follows_lifecycle is False
    assert provider.endpoints == frozenset({"generate", "edit", "variations"})


def test_negative_latency_is_refused() -> None:
    with pytest.raises(ValueError, match="latency"):
        MockProvider(latency=-1)


async def test_generate_honours_n_and_size(gpt2: ModelSpec) -> None:
    result = await MockProvider().generate(gpt2, GenerateRequest(prompt="a cat", n=3, size="1536x1024", quality="low"))
    assert_mock(result, gpt2)
    assert len(result.images) == 3
    assert result.size == "1536x1024"
    assert result.quality == "low"
    assert result.output_format == "png"
    assert result.revised_prompt == "[mock] a cat"
    assert result.extra["label"] == LABEL_GENERATE
    for image in result.images:
        assert (image.width, image.height) == (1536, 1024)
        assert image.mime == "image/png"
        assert opened(image.data).size == (1536, 1024)


@pytest.mark.parametrize("size", ["auto", None])
async def test_auto_size_is_the_models_first_concrete_size(gpt2: ModelSpec, size: str | None) -> None:
    result = await MockProvider().generate(gpt2, GenerateRequest(prompt="a cat", size=size))
    assert result.size == "1024x1024"
    assert opened(result.images[0].data).size == (1024, 1024)


async def test_auto_size_without_concrete_sizes_falls_back_to_1024(gpt2: ModelSpec) -> None:
    only_auto = dataclasses.replace(gpt2, sizes=("auto",))
    result = await MockProvider().generate(only_auto, GenerateRequest(prompt="a cat", size="auto"))
    assert opened(result.images[0].data).size == (1024, 1024)


async def test_absurd_sizes_are_refused_before_drawing(gpt2: ModelSpec) -> None:
    with pytest.raises(InvalidOption):
        await MockProvider().generate(gpt2, GenerateRequest(prompt="a cat", size="99999x99999"))


@pytest.mark.parametrize(
    ("fmt", "pil_format", "mime"),
    [("png", "PNG", "image/png"), ("jpeg", "JPEG", "image/jpeg"), ("webp", "WEBP", "image/webp")],
)
async def test_raster_formats_are_real_images(gpt2: ModelSpec, fmt: str, pil_format: str, mime: str) -> None:
    result = await MockProvider().generate(gpt2, GenerateRequest(prompt="a cat", size="1024x1536", output_format=fmt))
    image = result.images[0]
    assert image.mime == mime
    assert result.output_format == fmt
    picture = opened(image.data)
    assert picture.format == pil_format
    assert picture.size == (1024, 1536)
    assert decode.describe(image.data) == image


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
async def test_output_compression_changes_the_bytes(gpt2: ModelSpec, fmt: str) -> None:
    provider = MockProvider()

    async def size_at(compression: int) -> int:
        req = GenerateRequest(prompt="a cat", output_format=fmt, output_compression=compression)
        return len((await provider.generate(gpt2, req)).images[0].data)

    assert await size_at(5) < await size_at(95)


async def test_gif_output(gpt26: ModelSpec) -> None:
    result = await MockProvider().generate(
        gpt26, GenerateRequest(prompt="a cat", size="1024x1024", output_format="gif")
    )
    image = result.images[0]
    assert image.mime == "image/gif"
    assert opened(image.data).format == "GIF"
    assert decode.describe(image.data) == image


@pytest.mark.parametrize("fmt", ["png", "webp"])
async def test_transparent_background_has_clear_pixels(gpt2: ModelSpec, fmt: str) -> None:
    req = GenerateRequest(prompt="a cat", size="1024x1024", output_format=fmt, background="transparent")
    result = await MockProvider().generate(gpt2, req)
    assert result.background == "transparent"
    picture = opened(result.images[0].data).convert("RGBA")
    alpha = picture.getchannel("A")
    assert alpha.getextrema() == (0, 255)  # a clear background, with the label drawn opaque on it
    assert picture.getpixel((0, 0))[3] == 0  # type: ignore[index]


async def test_opaque_background_has_no_alpha(gpt2: ModelSpec) -> None:
    result = await MockProvider().generate(gpt2, GenerateRequest(prompt="a cat", background="opaque"))
    assert result.background == "opaque"
    assert opened(result.images[0].data).mode == "RGB"


async def test_images_differ_by_index_and_repeat_for_the_same_request(gpt2: ModelSpec) -> None:
    provider = MockProvider()
    req = GenerateRequest(prompt="a cat", n=2, size="1024x1024")
    first = await provider.generate(gpt2, req)
    again = await provider.generate(gpt2, req)
    a, b = (opened(image.data).convert("RGB") for image in first.images)
    assert first.images[0].data != first.images[1].data
    assert a.getpixel((1, 1)) != b.getpixel((1, 1))  # different background colours
    assert [i.data for i in first.images] == [i.data for i in again.images]
    assert first.request_id != again.request_id


async def test_different_prompts_give_different_colours(gpt2: ModelSpec) -> None:
    provider = MockProvider()
    cat = await provider.generate(gpt2, GenerateRequest(prompt="a cat"))
    dog = await provider.generate(gpt2, GenerateRequest(prompt="a dog"))
    assert opened(cat.images[0].data).getpixel((1, 1)) != opened(dog.images[0].data).getpixel((1, 1))


async def test_svg_output_parses_with_size_and_label(gpt26: ModelSpec) -> None:
    prompt = 'a <cat> & a "dog"\x00 with\nnewlines'
    result = await MockProvider().generate(gpt26, GenerateRequest(prompt=prompt, size="1536x1024", output_format="svg"))
    image = result.images[0]
    assert image.mime == "image/svg+xml"
    assert (image.width, image.height) == (1536, 1024)
    root = svg_root(image.data)
    assert root.tag == f"{SVG_NS}svg"
    assert (root.get("width"), root.get("height")) == ("1536", "1024")
    texts = [element.text for element in root.iter(f"{SVG_NS}text")]
    assert texts[0] == LABEL_GENERATE
    assert 'a <cat> & a "dog" with newlines' in texts
    assert "image 1 of 1" in texts
    assert "1536x1024" in texts
    assert gpt26.name in texts
    assert decode.describe(image.data) == image


async def test_long_prompts_are_wrapped_and_cut(gpt26: ModelSpec) -> None:
    prompt = " ".join(f"word{i}" for i in range(5000))
    req = GenerateRequest(prompt=prompt, size="1024x1024", output_format="svg")
    root = svg_root((await MockProvider().generate(gpt26, req)).images[0].data)
    texts = [element.text or "" for element in root.iter(f"{SVG_NS}text")]
    prompt_lines = [text for text in texts if text.startswith("word")]
    assert 1 < len(prompt_lines) <= 5
    assert prompt_lines[-1].endswith("…")
    assert "word4999" not in " ".join(texts)


async def test_one_unbroken_long_word_is_split_across_lines(gpt2: ModelSpec) -> None:
    req = GenerateRequest(prompt="x" * 3000, size="1024x1024")
    result = await MockProvider().generate(gpt2, req)
    assert opened(result.images[0].data).size == (1024, 1024)


async def test_big_images_draw_quickly(gpt2: ModelSpec) -> None:
    started = time.perf_counter()
    result = await MockProvider().generate(gpt2, GenerateRequest(prompt="a cat", size="3840x2160"))
    elapsed = time.perf_counter() - started
    assert opened(result.images[0].data).size == (3840, 2160)
    assert elapsed < 5  # about 0.3 s; a per-pixel Python loop would take minutes


async def test_latency_goes_through_the_injected_sleep(gpt2: ModelSpec, no_sleep: NoSleep) -> None:
    provider = MockProvider(latency=1.5, sleep=no_sleep)
    await provider.generate(gpt2, GenerateRequest(prompt="a cat"))
    assert no_sleep.delays == [1.5]


async def test_no_latency_no_sleep(gpt2: ModelSpec, no_sleep: NoSleep) -> None:
    await MockProvider(sleep=no_sleep).generate(gpt2, GenerateRequest(prompt="a cat"))
    assert no_sleep.delays == []


# -- streaming ------------------------------------------------------------------------------------


async def test_stream_generate_yields_partials_then_completed(gpt2: ModelSpec, no_sleep: NoSleep) -> None:
    provider = MockProvider(latency=1.0, sleep=no_sleep)
    req = GenerateRequest(prompt="a cat", n=2, size="1024x1024", partial_images=2)
    events = await collect(provider.stream_generate(gpt2, req))
    partials = [event for event in events if isinstance(event, PartialImage)]
    assert [(p.index, p.sequence) for p in partials] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert isinstance(events[-1], Completed)
    assert len(events) == 5
    result = events[-1].result
    assert_mock(result, gpt2)
    assert len(result.images) == 2
    assert result.revised_prompt == "[mock] a cat"
    for partial in partials:
        assert partial.mime == "image/png"
        preview = opened(partial.data)
        assert preview.format == "PNG"
        assert max(preview.size) <= 1024
    assert sum(no_sleep.delays) == pytest.approx(1.0)
    # Previews are the final images, blurred and small: roughly the same colour in the middle.
    final = opened(result.images[0].data).convert("RGB")
    last_preview = opened(partials[1].data).convert("RGB")
    corner, preview_corner = final.getpixel((20, 20)), last_preview.getpixel((5, 5))
    assert isinstance(corner, tuple)
    assert isinstance(preview_corner, tuple)
    assert all(abs(x - y) < 40 for x, y in zip(corner, preview_corner, strict=True))


@pytest.mark.parametrize("partials", [None, 0])
async def test_stream_without_partials_is_just_completed(gpt2: ModelSpec, partials: int | None) -> None:
    req = GenerateRequest(prompt="a cat", partial_images=partials)
    events = await collect(MockProvider().stream_generate(gpt2, req))
    assert len(events) == 1
    assert isinstance(events[0], Completed)


async def test_stream_partials_match_the_output_format(gpt2: ModelSpec) -> None:
    req = GenerateRequest(prompt="a cat", output_format="jpeg", partial_images=3)
    events = await collect(MockProvider().stream_generate(gpt2, req))
    partials = [event for event in events if isinstance(event, PartialImage)]
    assert [p.sequence for p in partials] == [0, 1, 2]
    assert all(p.mime == "image/jpeg" and opened(p.data).format == "JPEG" for p in partials)


async def test_stream_svg_partials_are_svg(gpt26: ModelSpec) -> None:
    req = GenerateRequest(prompt="a cat", output_format="svg", partial_images=1)
    events = await collect(MockProvider().stream_generate(gpt26, req))
    partial = events[0]
    assert isinstance(partial, PartialImage)
    assert partial.mime == "image/svg+xml"
    assert svg_root(partial.data).find(f"{SVG_NS}filter") is not None


async def test_stream_edit(gpt2: ModelSpec) -> None:
    req = EditRequest(prompt="add a hat", images=(InputImage(png_bytes()),), partial_images=1, n=2)
    events = await collect(MockProvider().stream_edit(gpt2, req))
    assert [type(event) for event in events] == [PartialImage, PartialImage, Completed]
    completed = events[-1]
    assert isinstance(completed, Completed)
    assert completed.result.extra["label"] == LABEL_EDIT
    assert completed.result.mock is True


@pytest.mark.parametrize("kind", ["generate", "edit"])
async def test_a_stream_closed_early_closes_what_it_reads_from(gpt2: ModelSpec, kind: str) -> None:
    """Left to the garbage collector, an async generator is closed by a task of the loop's, at a random turn."""
    provider = MockProvider()
    left: list[object] = []
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=left.append)
    try:
        if kind == "generate":
            stream = provider.stream_generate(gpt2, GenerateRequest(prompt="a cat", partial_images=2))
        else:
            images = (InputImage(png_bytes()),)
            stream = provider.stream_edit(gpt2, EditRequest(prompt="add a hat", images=images, partial_images=2))
        first = await anext(stream)
        await stream.aclose()
        del stream
        gc.collect()
    finally:
        sys.set_asyncgen_hooks(*hooks)
    assert isinstance(first, PartialImage)
    assert left == []


# -- edit and variations --------------------------------------------------------------------------


async def test_edit_is_labelled_and_shows_the_input(gpt2: ModelSpec) -> None:
    provider = MockProvider()
    req = EditRequest(prompt="add a hat", images=(InputImage(png_bytes()),), size="1024x1024", quality="high")
    result = await provider.edit(gpt2, req)
    assert_mock(result, gpt2)
    assert result.extra["label"] == LABEL_EDIT
    assert result.quality == "high"
    assert result.revised_prompt is None
    with_thumb = opened(result.images[0].data).convert("RGB")
    # The input's green sits in the middle of the top half, where the thumbnail goes.
    top_half = with_thumb.crop((0, 0, 1024, 512))
    colours = top_half.getcolors(maxcolors=1 << 20)
    assert colours is not None
    assert any(colour == (10, 200, 30) for _, colour in colours)


async def test_edit_with_an_unreadable_image_skips_the_thumbnail(gpt2: ModelSpec) -> None:
    provider = MockProvider()
    broken = EditRequest(prompt="add a hat", images=(InputImage(b"\x89PNG\r\n\x1a\nnot really"),))
    plain = EditRequest(prompt="add a hat", images=(InputImage(png_bytes()),))
    broken_result = await provider.edit(gpt2, broken)
    plain_result = await provider.edit(gpt2, plain)
    assert opened(broken_result.images[0].data).size == (1024, 1024)
    assert broken_result.images[0].data != plain_result.images[0].data


async def test_edit_svg_embeds_the_thumbnail(gpt26: ModelSpec) -> None:
    req = EditRequest(prompt="add a hat", images=(InputImage(png_bytes()),), output_format="svg")
    root = svg_root((await MockProvider().edit(gpt26, req)).images[0].data)
    texts = [element.text for element in root.iter(f"{SVG_NS}text")]
    assert texts[0] == LABEL_EDIT
    embedded = root.find(f"{SVG_NS}image")
    assert embedded is not None
    assert (embedded.get("href") or "").startswith("data:image/png;base64,")


async def test_variations_are_labelled_png(catalogue: Catalogue) -> None:
    spec = catalogue.get("dall-e-2")
    req = VaryRequest(image=InputImage(png_bytes()), n=2, size="512x512")
    result = await MockProvider().variations(spec, req)
    assert_mock(result, spec)
    assert result.extra["label"] == LABEL_VARIATION
    assert result.output_format == "png"
    assert result.quality is None
    assert [opened(image.data).size for image in result.images] == [(512, 512), (512, 512)]


async def test_aclose_releases_nothing() -> None:
    provider = MockProvider()
    await provider.aclose()
    await provider.aclose()


# -- through the real client ----------------------------------------------------------------------


async def test_client_generate(catalogue: Catalogue) -> None:
    client = ImagesClient(MockProvider(), catalogue, default_model="gpt-image-2")
    result = await client.generate(GenerateRequest(prompt="a cat", n=2))
    assert_mock(result, catalogue.get("gpt-image-2"))
    assert len(result.images) == 2
    assert result.size == "1024x1024"
    assert result.quality == "auto"
    assert all(opened(image.data).size == (1024, 1024) for image in result.images)


async def test_client_generate_stream(catalogue: Catalogue) -> None:
    client = ImagesClient(MockProvider(), catalogue, default_model="gpt-image-2")
    events = [event async for event in client.generate_stream(GenerateRequest(prompt="a cat", partial_images=2))]
    assert [type(event) for event in events] == [PartialImage, PartialImage, Completed]


async def test_client_vary_without_variations_endpoint_goes_through_edit(catalogue: Catalogue) -> None:
    client = ImagesClient(MockProvider(), catalogue, default_model="gpt-image-2")
    result = await client.vary(VaryRequest(image=InputImage(png_bytes((256, 256)))))
    assert result.mock is True
    assert result.variation == "edit-subtle"
    assert result.extra["label"] == LABEL_EDIT


async def test_client_vary_on_dall_e_2_uses_the_variations_endpoint(catalogue: Catalogue) -> None:
    # dall-e-2 is shut down at OpenAI, but the mock does not follow that lifecycle.
    client = ImagesClient(MockProvider(), catalogue, default_model="gpt-image-2")
    result = await client.vary(VaryRequest(image=InputImage(png_bytes((256, 256))), model="dall-e-2"))
    assert result.mock is True
    assert result.variation == "endpoint"
    assert result.extra["label"] == LABEL_VARIATION
    assert result.size == "1024x1024"


async def test_vary_with_auto_size_keeps_the_source_shape(catalogue: Catalogue) -> None:
    """A landscape source varied with size auto comes back landscape (as the real service does)."""
    client = ImagesClient(MockProvider(), catalogue, default_model="gpt-image-2")
    source = InputImage(png_bytes((1536, 1024)))
    result = await client.vary(VaryRequest(image=source))
    assert (result.images[0].width, result.images[0].height) == (1536, 1024)
    fixed = ImagesClient(MockProvider(), catalogue, default_model="gpt-image-1")
    result = await fixed.vary(VaryRequest(image=InputImage(png_bytes((900, 1400)))))
    assert (result.images[0].width, result.images[0].height) == (1024, 1536)
