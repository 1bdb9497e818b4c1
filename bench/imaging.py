"""Benchmark Easel's image pipeline and print a Markdown table.

    python bench/imaging.py            # every case, median of 5 runs (about a minute with the baseline)
    python bench/imaging.py --quick    # median of 2 runs, no 4K case and no GPTDiscord baseline

Inputs are generated, seeded and photo-like (colour fields, shapes, texture and grain: ~1.8 bytes a
pixel as PNG, ~0.45 as JPEG at quality 90), so every run measures the same pixels. Fitting runs through
`ImageWorkers` with a warm process pool of `os.cpu_count()` workers, as the bot does. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import io
import math
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import PIL
from PIL import Image, ImageChops, ImageDraw

from bot.api.decode import decode_all
from bot.api.types import GeneratedImage
from bot.imaging.grid import make_grid
from bot.imaging.pool import ImageWorkers

MiB = 1024 * 1024
BASELINE_CAP_S = 90.0
T = TypeVar("T")


# --- inputs ----------------------------------------------------------------------------------------


def noise(size: tuple[int, int], sigma: float, rnd: random.Random) -> Image.Image:
    """Seeded grey noise around 128 with standard deviation `sigma` (Pillow's effect_noise cannot be seeded)."""
    flat = Image.frombytes("L", size, rnd.randbytes(size[0] * size[1]))
    scale = sigma / 73.9  # the standard deviation of uniform bytes
    return flat.point([max(0, min(255, round(128 + (v - 128) * scale))) for v in range(256)])


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like RGB picture: it compresses like a photo, unlike pure noise."""
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
    alpha = Image.new("L", picture.size, 0)
    width, height = picture.size
    ImageDraw.Draw(alpha).ellipse((width // 10, height // 20, width * 9 // 10, height * 19 // 20), fill=255)
    out = picture.convert("RGBA")
    out.putalpha(alpha)
    return out


def encoded(picture: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return out.getvalue()


def results(count: int, width: int, height: int, *, seed: int, transparent: bool = False) -> list[GeneratedImage]:
    """`count` PNG results as a GPT image model sends them (default zlib level, like the API's)."""
    out = []
    for i in range(count):
        picture = photo(width, height, seed + i)
        if transparent:
            picture = with_hole(picture)
        out.append(GeneratedImage(encoded(picture), "image/png", width, height))
    return out


# --- measuring -------------------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    seconds: float | None
    encodes: str
    output: str
    target: str
    ok: bool | None
    note: str = ""

    def cells(self) -> list[str]:
        if self.seconds is None:
            time_text = self.note or "n/a"
        elif self.seconds < 1:
            time_text = f"{self.seconds * 1000:.0f} ms"
        else:
            time_text = f"{self.seconds:.2f} s"
        verdict = "—" if self.ok is None else "pass" if self.ok else "**FAIL**"
        return [self.case, time_text, self.encodes, self.output, self.target, verdict]


def median_time(runs: int, call: Callable[[], T]) -> tuple[float, T]:
    """Median wall time of `runs` calls after one untimed warm-up call, and the last call's result."""
    call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        last = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), last


async def median_time_async(runs: int, call: Callable[[], Awaitable[T]]) -> tuple[float, T]:
    await call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        last = await call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), last


async def worst_stall(work: Callable[[], Awaitable[object]]) -> float:
    """The longest the event loop went without running a 1 ms ticker while `work` ran, less the 1 ms."""
    worst = 0.0
    running = True

    async def tick() -> None:
        nonlocal worst
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.02)
    await work()
    running = False
    await ticker
    return worst


def busy_share(seconds: float = 1.0) -> float | None:
    """The share of all CPUs busy over the next `seconds`, from /proc/stat (None off Linux)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (busy1 - busy0) / max(1, total1 - total0)


def mib(size: int) -> str:
    return f"{size / MiB:.2f}"


# --- cases -----------------------------------------------------------------------------------------


def prepare_rows(runs: int) -> list[Row]:
    names = ("gpt-image-2", "dall-e-2")
    try:
        from bot.catalogue import Catalogue
        from bot.imaging.inputs import InputRules, prepare
    except ImportError:
        missing = "n/a (inputs.py missing)"
        return [Row(f"prepare a 12 MP JPEG for {n}", None, "—", "—", "report", None, missing) for n in names]
    source = encoded(photo(4240, 2832, seed=100), "JPEG", quality=92)
    catalogue = Catalogue.load()
    rows = []
    for name in names:
        rules = InputRules.from_spec(catalogue.get(name))
        seconds, prepared = median_time(runs, functools.partial(prepare, source, rules))
        out = f"{mib(len(prepared.data))} MiB {prepared.mime.removeprefix('image/')} {prepared.width}×{prepared.height}"
        rows.append(Row(f"prepare a 12 MP JPEG ({mib(len(source))} MiB) for {name}", seconds, "—", out, "report", None))
    return rows


async def fit_row(
    workers: ImageWorkers, runs: int, label: str, images: Sequence[GeneratedImage], limit: int, seconds_target: float
) -> Row:
    """Files and grid together, as the bot sends them: `ImageWorkers.fit_and_grid`."""
    call = functools.partial(workers.fit_and_grid, images, max_bytes=limit)
    seconds, (fitted, grid) = await median_time_async(runs, call)
    needing_work = sum(len(i.data) > limit for i in images)
    largest = max(len(f.data) for f in fitted.files)
    ok = (
        seconds <= seconds_target
        and largest <= limit
        and fitted.encodes <= needing_work
        and (needing_work > 0 or fitted.encodes == 0)
        and len(fitted.files) == len(images)
    )
    downscaled = sum((f.width, f.height) != (i.width, i.height) for f, i in zip(fitted.files, images, strict=True))
    kinds = sorted({f.mime.removeprefix("image/") for f in fitted.files})
    output = (
        f"max {mib(largest)}, total {mib(fitted.total_bytes)} ({'/'.join(kinds)}); grid {len(grid.data) // 1024} KiB"
    )
    if downscaled:
        output += f"; {downscaled} downscaled"
    encodes = f"{fitted.encodes} + 1 grid ({needing_work} over the limit)"
    target = f"≤ {seconds_target:g} s, ≤ 1 encode/image + grid"
    return Row(f"{label} → {limit // MiB} MiB, files + grid", seconds, encodes, output, target, ok)


async def fit_only_row(
    workers: ImageWorkers, runs: int, label: str, images: Sequence[GeneratedImage], limit: int
) -> Row:
    seconds, fitted = await median_time_async(runs, functools.partial(workers.fit, images, max_bytes=limit))
    largest = max(len(f.data) for f in fitted.files)
    sizes = {f"{f.width}×{f.height}" for f in fitted.files}
    ok = largest <= limit and fitted.encodes <= len(images)
    output = f"max {mib(largest)} ({'/'.join(sorted(sizes))})"
    return Row(
        f"{label} → {limit // MiB} MiB, files only", seconds, str(fitted.encodes), output, "≤ 1 encode/image", ok
    )


def decode_row(runs: int, images: Sequence[GeneratedImage]) -> Row:
    payloads = [base64.b64encode(i.data).decode("ascii") for i in images]
    seconds, decoded = median_time(runs, lambda: decode_all(payloads))
    ok = seconds <= 0.150 and len(decoded) == len(images)
    size = sum(len(p) for p in payloads)
    return Row(
        f"decode + validate {len(images)} × 1024² base64 ({mib(size)} MiB of text)",
        seconds,
        "0",
        "header check only",
        "≤ 150 ms",
        ok,
    )


async def grid_rows(
    workers: ImageWorkers, runs: int, four: Sequence[GeneratedImage], ten: Sequence[GeneratedImage]
) -> list[Row]:
    rows = []
    for label, images in (("grid of 4 × 1024²", four), ("grid of 10 × 1536×1024", ten)):
        seconds, grid = await median_time_async(runs, functools.partial(workers.grid, images))
        out = f"{len(grid.data) // 1024} KiB {grid.mime.removeprefix('image/')} {grid.width}×{grid.height}"
        rows.append(Row(f"{label} (pool)", seconds, "1", out, "one encode, well under 10 MiB", len(grid.data) < MiB))
    seconds, grid = median_time(runs, functools.partial(make_grid, four))
    out = f"{len(grid.data) // 1024} KiB"
    rows.append(Row("grid of 4 × 1024² (one thread, make_grid)", seconds, "1", out, "report", None))
    return rows


async def stall_rows(workers: ImageWorkers, images: Sequence[GeneratedImage], limit: int) -> list[Row]:
    rows = []
    threads = ImageWorkers(mode="thread")
    for name, pool, target in (("process pool", workers, "≤ 25 ms"), ("threads, for comparison", threads, "report")):

        async def work(pool: ImageWorkers = pool) -> object:
            return await pool.fit_and_grid(images, max_bytes=limit)

        stalls = [await worst_stall(work) for _ in range(3)]
        worst = max(stalls)
        rows.append(
            Row(
                f"event loop worst stall, fit + grid of 10 × 1536×1024 → {limit // MiB} MiB ({name})",
                worst,
                "—",
                "worst of 3 runs, 1 ms ticker",
                target,
                worst <= 0.025 if target != "report" else None,
            )
        )
    await threads.close()
    return rows


def gptdiscord_grid(blobs: list[bytes], limit: int) -> tuple[float, int, int]:
    """Kav-K/GPTDiscord's approach: every image pasted into one RGBA grid of ceil(sqrt(n))² cells, saved as
    PNG, then shrunk by 1/1.05 a side and fully re-saved at most twice while over the limit."""
    start = time.perf_counter()
    images = [Image.open(io.BytesIO(b)) for b in blobs]
    widths, heights = zip(*(i.size for i in images), strict=True)
    columns = rows = math.ceil(math.sqrt(len(images)))
    if len(images) == 2:
        rows = 1
    grid = Image.new("RGBA", (max(widths) * columns, max(heights) * rows))
    x = y = 0
    for image in images:
        grid.paste(image, (x, y))
        x += image.width
        if x >= grid.width:
            x, y = 0, y + image.height
    size = len(encoded(grid))
    steps = 0
    while size > limit and steps < 2:
        steps += 1
        grid = grid.resize((int(grid.width / 1.05), int(grid.height / 1.05)))
        size = len(encoded(grid))
    return time.perf_counter() - start, size, steps + 1


def baseline_row(images: Sequence[GeneratedImage], limit: int) -> Row:
    context = multiprocessing.get_context("forkserver")
    label = f"GPTDiscord-style baseline: 10 × 1536×1024 as one RGBA PNG grid → {limit // MiB} MiB"
    with context.Pool(1) as pool:
        pending = pool.apply_async(gptdiscord_grid, ([i.data for i in images], limit))
        try:
            seconds, size, encodes = pending.get(timeout=BASELINE_CAP_S)
        except multiprocessing.TimeoutError:
            pool.terminate()
            return Row(label, None, "—", "—", "for comparison", None, f"> {BASELINE_CAP_S:g} s (stopped)")
    over = "over the limit" if size > limit else "fits"
    return Row(label, seconds, str(encodes), f"{mib(size)} MiB, one file ({over})", "for comparison", None)


# --- main ------------------------------------------------------------------------------------------


async def run(quick: bool) -> list[Row]:
    runs = 2 if quick else 5
    print(f"Generating inputs ({'quick' if quick else 'full'} run)...", file=sys.stderr)
    ten = results(10, 1536, 1024, seed=1)
    four = results(4, 1024, 1024, seed=20)
    four_clear = results(4, 1024, 1024, seed=30, transparent=True)
    rows: list[Row] = []
    print("prepare...", file=sys.stderr)
    rows += prepare_rows(runs)
    async with ImageWorkers() as workers:
        print(f"fit with {workers.max_workers} worker processes...", file=sys.stderr)
        for limit in (10 * MiB, 8 * MiB):
            rows.append(await fit_row(workers, runs, "10 × 1536×1024 PNG", ten, limit, 0.7))
            rows.append(await fit_row(workers, runs, "4 × 1024² PNG", four, limit, 0.2))
        rows.append(await fit_row(workers, runs, "10 × 1536×1024 PNG", ten, 1 * MiB, 0.7))
        rows.append(await fit_row(workers, runs, "4 × 1024² PNG", four, 1 * MiB, 0.2))
        rows.append(await fit_only_row(workers, runs, "4 × 1024² transparent PNG", four_clear, 1 * MiB))
        if not quick:
            print("4K...", file=sys.stderr)
            big = results(2, 3840, 2160, seed=40)
            label = f"2 × 3840×2160 PNG ({mib(len(big[0].data))} MiB each)"
            rows.append(await fit_only_row(workers, runs, label, big, 10 * MiB))
        rows.append(decode_row(runs * 4, four))
        rows += await grid_rows(workers, runs, four, ten)
        print("event loop stalls...", file=sys.stderr)
        rows += await stall_rows(workers, ten, 1 * MiB)
    if quick:
        rows.append(Row("GPTDiscord-style baseline", None, "—", "—", "for comparison", None, "skipped (--quick)"))
    else:
        print("GPTDiscord-style baseline (slow)...", file=sys.stderr)
        rows.append(baseline_row(ten, 10 * MiB))
    return rows


def table(rows: Sequence[Row]) -> str:
    header = ["case", "time (median)", "encodes", "output (MiB)", "target", "result"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs; skip the 4K case and the slow baseline")
    quick = parser.parse_args().quick
    before = busy_share()
    rows = asyncio.run(run(quick))
    after = busy_share()
    print(f"Python {platform.python_version()}, Pillow {PIL.__version__}, {os.cpu_count()} CPUs, {platform.machine()}")
    if before is not None and after is not None:
        # Other processes inflate every time below; a quiet machine shows a few percent here.
        print(f"CPU busy with other work: {before:.0%} just before the run, {after:.0%} just after.")
    print()
    print(table(rows))
    failed = [r.case for r in rows if r.ok is False]
    if failed:
        print(f"\n{len(failed)} target(s) missed.")


if __name__ == "__main__":
    main()
