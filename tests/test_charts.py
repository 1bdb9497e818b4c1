"""Spending charts: real PNGs that Pillow decodes, of a sane size, for data, crowded data and no data;
drawable from worker threads; and matplotlib stays unloaded until a chart is drawn."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bot import charts
from bot.store.reports import DaySpend, Spend, UserSpend

ROOT = Path(__file__).resolve().parent.parent
DAY = dt.date(2026, 11, 1)


def spent(micros: int) -> Spend:
    """A settled job's rows: reserve, charge, refund; nets to `micros`."""
    return Spend(reserved=micros, charged=micros, refunded=micros, reserves=1, charges=1, refunds=1)


def decode(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    return image


def colour(image: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    pixel = image.convert("RGB").getpixel(xy)
    assert isinstance(pixel, tuple)
    return (pixel[0], pixel[1], pixel[2])


def days_rows(days: int = 30, models: tuple[str, ...] = ("gpt-image-2", "gpt-image-1")) -> list[DaySpend]:
    return [
        DaySpend(DAY + dt.timedelta(days=n), model, spent(10_000 * (n + 1) * (i + 1)))
        for n in range(days)
        for i, model in enumerate(models)
    ]


def test_spend_per_day_is_a_dark_png_of_a_fixed_size() -> None:
    image = decode(charts.spend_per_day_png(days_rows(), since=DAY, until=DAY + dt.timedelta(days=30)))
    assert image.size == (1000, 500)
    # The corner is the dark background, so the chart reads on Discord's dark theme.
    assert colour(image, (2, 2)) == (0x2B, 0x2D, 0x31)
    # Some pixels carry the first model's colour (the bars).
    rgb = image.convert("RGB")
    first = tuple(int(charts.PALETTE[0][i : i + 2], 16) for i in (1, 3, 5))
    assert first in {c for _, c in rgb.getcolors(maxcolors=1_000_000) or []}


def test_spend_per_day_with_many_models_and_a_long_range() -> None:
    """More models than colours share one "other" layer; a year of days still draws at the same size."""
    models = tuple(f"model-{n}" for n in range(12))
    rows = days_rows(days=365, models=models)
    image = decode(charts.spend_per_day_png(rows))
    assert image.size == (1000, 500)
    crossing = [DaySpend(dt.date(2025, 12, 30) + dt.timedelta(days=n), "m", spent(5)) for n in range(5)]
    assert decode(charts.spend_per_day_png(crossing)).size == (1000, 500)


def test_spend_per_day_with_one_day_and_tiny_amounts() -> None:
    image = decode(charts.spend_per_day_png([DaySpend(DAY, "dall-e-2", spent(7))]))
    assert image.size == (1000, 500)


def test_drawable_text() -> None:
    assert charts._drawable("Bea 🎨  Lovelace\t") == "Bea Lovelace"
    assert charts._drawable("🎨") == ""
    assert charts._plain("$5 and $6") == r"\$5 and \$6"


def test_top_users_grows_with_the_number_of_users() -> None:
    rows = [UserSpend(f"{n:018d}", spent(1_000_000 * (10 - n))) for n in range(10)]
    names = {
        rows[0].user_id: "Ada $$ Lovelace $",
        rows[1].user_id: "a very long display name that goes on and on",
        rows[2].user_id: "Bea 🎨",  # no glyph in the font: dropped, not drawn as a box with a warning
        rows[3].user_id: "🎨🎨",  # nothing drawable left: the id is shown
    }
    tall = decode(charts.top_users_png(rows, names=names))
    short = decode(charts.top_users_png(rows[:3]))
    assert tall.size[0] == short.size[0] == 800
    assert short.size[1] < tall.size[1] <= 600
    assert colour(tall, (2, 2)) == (0x2B, 0x2D, 0x31)
    many = [UserSpend(f"u{n}", spent(1_000 + n)) for n in range(100)]
    assert decode(charts.top_users_png(many)).size == (800, round((1.4 + 0.42 * charts.MAX_USERS) * charts.DPI))


@pytest.mark.parametrize(
    "png",
    [
        lambda: charts.spend_per_day_png([]),
        lambda: charts.spend_per_day_png([DaySpend(DAY, "m", Spend())]),  # all refunded: nets to nothing
        lambda: charts.spend_per_day_png([DaySpend(DAY, "m", spent(5))], since=DAY + dt.timedelta(days=1)),
        lambda: charts.top_users_png([]),
        lambda: charts.top_users_png([UserSpend("u1", Spend())]),
    ],
    ids=["days-empty", "days-zero", "days-out-of-range", "users-empty", "users-zero"],
)
def test_no_data_is_a_small_no_spending_image(png: object) -> None:
    assert callable(png)
    image = decode(png())
    assert image.size == (400, 120)
    assert len(image.convert("RGB").getcolors(maxcolors=100_000) or []) > 2  # the text is drawn


async def test_charts_draw_in_worker_threads() -> None:
    """The async callers' way: several charts at once through asyncio.to_thread."""
    rows = days_rows(days=14)
    users = [UserSpend("u1", spent(3_000_000)), UserSpend("u2", spent(1_000_000))]
    pngs = await asyncio.gather(
        asyncio.to_thread(charts.spend_per_day_png, rows),
        asyncio.to_thread(charts.top_users_png, users),
        asyncio.to_thread(charts.spend_per_day_png, rows),
    )
    assert pngs[0] == pngs[2]
    assert [decode(p).size[0] for p in pngs] == [1000, 800, 1000]


def test_matplotlib_is_loaded_only_to_draw() -> None:
    """Importing the charts module and the CLI does not import matplotlib (start-up stays fast)."""
    code = "import sys, bot.charts, bot.cli; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)  # noqa: S603
    assert result.stdout.strip() == "False"
