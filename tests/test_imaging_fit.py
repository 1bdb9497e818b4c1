"""Fitting results into Discord's limits: what is kept, what is re-encoded, how often, and the process pool."""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import random

import pytest
from PIL import Image, ImageChops, ImageCms, ImageDraw

from bot.api.decode import describe
from bot.api.types import GeneratedImage
from bot.errors import ProviderUnavailable
from bot.imaging import fit
from bot.imaging.fit import FitResult, FittedFile, fit_images, fit_one
from bot.imaging.grid import make_grid
from bot.imaging.pool import ImageWorkers
from tests import images as samples

MiB = 1024 * 1024
KiB = 1024


def noise(size: tuple[int, int], sigma: float, rnd: random.Random) -> Image.Image:
    """Seeded grey noise around 128 with standard deviation `sigma` (Pillow's effect_noise cannot be seeded)."""
    flat = Image.frombytes("L", size, rnd.randbytes(size[0] * size[1]))
    scale = sigma / 73.9  # the standard deviation of uniform bytes
    return flat.point([max(0, min(255, round(128 + (v - 128) * scale))) for v in range(256)])


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB picture: smooth colour fields and shapes, mid-scale texture and fine grain.

    Pure noise would be as hard for JPEG as for PNG; this compresses like a photo (PNG ~1.8 bytes a
    pixel, JPEG at quality 90 ~0.45). The same generator drives bench/imaging.py.
    """
    rnd = random.Random(seed)
    small = (max(width // 8, 8), max(height // 8, 8))
    bands = []
    for _ in range(3):
        ramp = Image.linear_gradient("L").rotate(rnd.randrange(360)).resize(small)
        blobs = noise((small[0] // 6 + 1, small[1] // 6 + 1), 50, rnd).resize(small, Image.Resampling.BICUBIC)
        bands.append(Image.blend(ramp, blobs, 0.5).point(lambda v: max(0, min(255, 2 * v - 64))))
    picture = Image.merge("RGB", bands)
    draw = ImageDraw.Draw(picture)
    for _ in range(12):
        x, y = rnd.randrange(small[0]), rnd.randrange(small[1])
        s = rnd.randrange(small[0] // 12 + 1, small[0] // 3 + 2)
        colour = (rnd.randrange(40, 220), rnd.randrange(40, 220), rnd.randrange(40, 220))
        draw.ellipse((x, y, x + s, y + s), fill=colour)
    picture = picture.resize((width, height), Image.Resampling.BICUBIC)
    texture = noise((width // 3, height // 3), 24, rnd).resize((width, height), Image.Resampling.BICUBIC)
    grain = noise((width, height), 8, rnd)
    detail = Image.blend(texture, grain, 0.5).point(lambda v: max(0, min(255, 2 * v - 128)))
    return Image.merge("RGB", [ImageChops.add(band, detail, 1.0, -128) for band in picture.split()])


def with_hole(picture: Image.Image) -> Image.Image:
    """`picture` with everything outside a centred ellipse fully transparent."""
    alpha = Image.new("L", picture.size, 0)
    width, height = picture.size
    ImageDraw.Draw(alpha).ellipse((width // 10, height // 20, width * 9 // 10, height * 19 // 20), fill=255)
    out = picture.convert("RGBA")
    out.putalpha(alpha)
    return out


def result(picture: Image.Image, fmt: str = "PNG", **options: object) -> GeneratedImage:
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return describe(out.getvalue())


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture(scope="module")
def results() -> list[GeneratedImage]:
    """What a GPT image model sends back: photo-like PNGs of about 2 MiB, one of them with a transparent border."""
    return [
        result(photo(1536, 1024, seed=1), compress_level=1),
        result(photo(1024, 1024, seed=2), compress_level=1),
        result(with_hole(photo(1024, 1024, seed=3)), compress_level=1),
    ]


def test_the_samples_look_like_provider_output(results: list[GeneratedImage]) -> None:
    """The fixtures are the size real results are, or the tests below would prove little."""
    assert all(1.5 * MiB <= len(r.data) <= 4 * MiB for r in results), [len(r.data) for r in results]


@pytest.mark.parametrize("limit", [10 * MiB, 8 * MiB])
def test_results_that_fit_are_sent_untouched(results: list[GeneratedImage], limit: int) -> None:
    """No decode, no encode: the provider's own bytes, dimensions and type."""
    fitted = fit_images(results, max_bytes=limit)
    assert fitted.encodes == 0
    assert fitted.omitted == 0
    for index, (original, file) in enumerate(zip(results, fitted.files, strict=True)):
        assert file.data is original.data
        assert (file.mime, file.width, file.height) == (original.mime, original.width, original.height)
        assert not file.reencoded
        assert file.index == index
        assert file.filename == f"easel_{index + 1}.png"


def test_one_encode_each_at_full_size_when_quality_is_enough(results: list[GeneratedImage]) -> None:
    """At 1 MiB every image still fits at full size after a single encode, transparency included."""
    fitted = fit_images(results, max_bytes=1 * MiB)
    assert fitted.encodes == len(results)
    for original, file in zip(results, fitted.files, strict=True):
        assert len(file.data) <= 1 * MiB
        assert file.reencoded
        assert (file.width, file.height) == (original.width, original.height)
        assert opened(file.data).size == (file.width, file.height)
    opaque, square, transparent = fitted.files
    assert (opaque.mime, opaque.filename) == ("image/jpeg", "easel_1.jpg")
    assert square.mime == "image/jpeg"
    assert transparent.mime in ("image/webp", "image/png")
    assert opened(transparent.data).getchannel("A").getextrema()[0] == 0


def test_a_tight_limit_downscales_as_the_last_step(results: list[GeneratedImage]) -> None:
    """At 200 KiB the images shrink, keep their aspect ratio and transparency, and still take one encode each."""
    limit = 200 * KiB
    fitted = fit_images(results, max_bytes=limit)
    assert fitted.encodes == len(results)
    for original, file in zip(results, fitted.files, strict=True):
        assert len(file.data) <= limit
        assert file.width <= original.width
        assert file.width / file.height == pytest.approx(original.width / original.height, rel=0.01)
    assert fitted.files[0].width < 1536  # a 1536x1024 photo does not fit 200 KiB at quality 60
    assert opened(fitted.files[2].data).mode == "RGBA"


def test_an_image_over_the_limit_keeps_its_size_when_quality_suffices() -> None:
    """A 12 MiB uncompressed PNG is over 10 MiB; one JPEG encode brings it under at full size."""
    big = result(photo(2048, 2048, seed=4), compress_level=0)
    assert len(big.data) > 10 * MiB
    file, encodes = fit_one(big, max_bytes=10 * MiB)
    assert encodes == 1
    assert (file.width, file.height, file.mime) == (2048, 2048, "image/jpeg")
    assert len(file.data) <= 10 * MiB


def test_opaque_rgba_is_treated_as_opaque() -> None:
    """An RGBA PNG whose alpha is 255 everywhere becomes a JPEG: there is no transparency to keep."""
    image = result(photo(512, 512).convert("RGBA"), compress_level=0)
    file, encodes = fit_one(image, max_bytes=64 * KiB)
    assert (file.mime, encodes) == ("image/jpeg", 1)


def test_palette_transparency_is_kept() -> None:
    """A palette image with a transparent index counts as transparent."""
    picture = photo(512, 512).quantize(64)
    picture.info["transparency"] = 0
    image = result(picture, transparency=0)
    file, _ = fit_one(image, max_bytes=4096)
    assert file.mime in ("image/webp", "image/png")
    assert opened(file.data).mode == "RGBA"


def test_a_non_png_transparent_image_may_become_png() -> None:
    """When a lossless PNG is estimated to fit (the source was not a PNG), transparency stays lossless."""
    picture = Image.new("RGBA", (600, 400), (0, 0, 0, 0))
    ImageDraw.Draw(picture).rectangle((100, 100, 500, 300), fill=(200, 40, 40, 255))
    image = result(picture, "TIFF")  # uncompressed: ~940 KB
    file, encodes = fit_one(image, max_bytes=100 * KiB)
    assert (file.mime, encodes) == ("image/png", 1)
    assert opened(file.data).getpixel((0, 0)) == (0, 0, 0, 0)


def test_the_icc_profile_survives_a_reencode() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = result(photo(512, 512), compress_level=0, icc_profile=profile)
    file, _ = fit_one(image, max_bytes=100 * KiB)
    assert opened(file.data).info.get("icc_profile") == profile


def test_a_missed_estimate_costs_an_encode_but_still_fits(
    results: list[GeneratedImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the estimate is far too optimistic, the overshoot tightens the next attempt until the file fits."""
    real = fit._estimate
    monkeypatch.setattr(fit, "_estimate", lambda *args: real(*args) / 3)
    file, encodes = fit_one(results[0], max_bytes=300 * KiB)
    assert encodes >= 2
    assert len(file.data) <= 300 * KiB


def test_images_over_the_count_limit_are_reported() -> None:
    """Only `max_files` images are sent; the rest are counted, not silently lost."""
    many = [describe(samples.png(8, 8)) for _ in range(12)]
    fitted = fit_images(many, max_files=10)
    assert (len(fitted.files), fitted.omitted, fitted.encodes) == (10, 2, 0)
    assert [f.filename for f in fitted.files] == [f"easel_{i}.png" for i in range(1, 11)]
    assert fitted.total_bytes == sum(len(m.data) for m in many[:10])


def test_filenames_follow_the_stem_and_type() -> None:
    kinds = [describe(samples.jpeg()), describe(samples.webp()), describe(samples.gif())]
    fitted = fit_images(kinds, stem="cat")
    assert [f.filename for f in fitted.files] == ["cat_1.jpg", "cat_2.webp", "cat_3.gif"]


@pytest.mark.parametrize(("max_bytes", "max_files"), [(4095, 10), (10 * MiB, 0)])
def test_impossible_limits_are_refused(max_bytes: int, max_files: int) -> None:
    with pytest.raises(ValueError, match="must be at least"):
        fit_images([], max_bytes=max_bytes, max_files=max_files)


def test_an_oversized_file_that_is_not_an_image_is_a_provider_error() -> None:
    junk = GeneratedImage(data=b"\x89PNG" + b"x" * 10_000, mime="image/png", width=1, height=1)
    with pytest.raises(ProviderUnavailable):
        fit_one(junk, max_bytes=4096)


def test_values_pickle_for_the_process_pool() -> None:
    """The frozen slots dataclasses cross process boundaries intact."""
    image = describe(samples.png(4, 4))
    file = FittedFile(b"x", "image/png", "easel_1.png", 4, 4, reencoded=False, index=0)
    outcome = FitResult(files=(file,), encodes=0, omitted=1)
    for value in (image, file, outcome):
        assert pickle.loads(pickle.dumps(value)) == value  # noqa: S301 - our own bytes


async def test_the_process_pool_matches_the_thread_path() -> None:
    """Same files, same encodes, same grid, whether the work runs in worker processes or threads."""
    small = [
        result(photo(320, 240, seed=5), compress_level=0),
        describe(samples.png(8, 8)),  # fits: never leaves the process
        result(with_hole(photo(256, 256, seed=6)), compress_level=0),
    ]
    limit = 16 * KiB
    outcomes = []
    for workers in (ImageWorkers(max_workers=2), ImageWorkers(mode="thread")):
        async with workers:
            fitted = await workers.fit(small, max_bytes=limit, max_files=2)
            grid = await workers.grid(small)
            both = await workers.fit_and_grid(small, max_bytes=limit, max_files=2)
        outcomes.append((fitted, grid, both))
        with pytest.raises(RuntimeError, match="closed"):
            await workers.fit(small)
    assert outcomes[0] == outcomes[1]
    fitted, grid, (both_fitted, both_grid) = outcomes[0]
    assert fitted == both_fitted == fit_images(small, max_bytes=limit, max_files=2)
    assert (fitted.encodes, fitted.omitted) == (1, 1)
    assert grid == make_grid(small)
    # The combined path shrinks the pixels it decoded for the file, so only the layout must match.
    two = make_grid(small[:2])
    assert (both_grid.mime, both_grid.width, both_grid.height) == (two.mime, two.width, two.height)


def _dies_in_a_worker() -> str:
    """Kills the worker process that runs it; in the main process (the thread fallback) it just answers."""
    if multiprocessing.parent_process() is not None:
        os._exit(1)
    return "finished in a thread"


async def test_a_dead_worker_costs_no_result() -> None:
    """The job that saw the pool break is finished in a thread, and the next call gets a fresh pool."""
    async with ImageWorkers(max_workers=1) as workers:
        assert await workers._run(_dies_in_a_worker) == "finished in a thread"
        fitted = await workers.fit([result(photo(64, 64), compress_level=0)], max_bytes=4096)
        assert fitted.encodes == 1
