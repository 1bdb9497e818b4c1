"""Spending charts as PNG bytes, for Discord's `/usage` and the CLI: spend per day stacked by model, top users.

matplotlib draws them through its object-oriented API: each chart is its own `matplotlib.figure.Figure` on
an Agg canvas, never pyplot and its global figure manager, so a chart can be drawn in a worker thread.
matplotlib is imported on the first chart, so the bot's start-up and the CLI never pay for it. Drawing
is synchronous CPU work (tens of milliseconds): from async code call these through `asyncio.to_thread`.
A module lock lets one chart draw at a time, because matplotlib's shared caches (fonts, text layout)
are not documented as safe to use from several threads at once.

The colours suit Discord's dark theme (the image has its own dark background, so it also reads on the
light theme); amounts are dollars on the axis. No data gives a small image saying "No spending yet".
"""

from __future__ import annotations

import datetime as dt
import io
import math
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from bot.pricing import MICROS_PER_USD, format_usd
from bot.store.reports import DaySpend, UserSpend

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BACKGROUND = "#2b2d31"
"""Discord's dark embed background."""
PANEL = "#313338"
TEXT = "#dbdee1"
MUTED = "#949ba4"
GRID = "#3f4147"
PALETTE = ("#5865f2", "#57f287", "#fee75c", "#eb459e", "#ed4245", "#3ba5ff", "#faa61a")
"""Bright colours that stand apart on the dark background, one per model; the rest share OTHER."""
OTHER = "#80848e"
MAX_MODELS = len(PALETTE)
MAX_USERS = 25
DPI = 100
EMPTY_TEXT = "No spending yet"

_lock = threading.Lock()


def spend_per_day_png(
    rows: Sequence[DaySpend],
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    title: str = "Spend per day",
) -> bytes:
    """Bars of net spend per UTC day, stacked by model, as PNG bytes.

    The days run from `since` (or the first day in `rows`) up to but excluding `until` (or through the
    last day in `rows`), so quiet days show as gaps. The seven models that spent most get their own
    colour; any others are stacked together as "other".
    """
    days = _days(rows, since, until)
    index = {day: i for i, day in enumerate(days)}
    rows = [row for row in rows if row.day in index and row.spend.net > 0]
    totals: dict[str, int] = {}
    for row in rows:
        totals[row.model] = totals.get(row.model, 0) + row.spend.net
    if not totals:
        return _empty()
    ranked = sorted(totals, key=lambda m: (-totals[m], m))
    shown = ranked if len(ranked) <= MAX_MODELS else ranked[: MAX_MODELS - 1]
    series: dict[str, list[float]] = {model: [0.0] * len(days) for model in shown}
    other = [0.0] * len(days)
    for row in rows:
        target = series.get(row.model, other)
        target[index[row.day]] += row.spend.net / MICROS_PER_USD
    total = sum(totals.values())
    with _lock:
        from matplotlib.collections import PolyCollection
        from matplotlib.patches import Patch

        fig, ax = _figure(10.0, 5.0)
        xs = list(range(len(days)))
        bottom = [0.0] * len(days)
        half = 0.4 if len(days) > 1 else 0.25
        layers = [(model, series[model], PALETTE[n]) for n, model in enumerate(shown)]
        if any(other):
            layers.append(("other", other, OTHER))
        handles = []
        for label, values, colour in layers:
            # One collection per layer: a Rectangle artist per bar would cost ~1 ms each to add and draw.
            boxes = [
                ((x - half, b), (x - half, b + v), (x + half, b + v), (x + half, b))
                for x, b, v in zip(xs, bottom, values, strict=True)
                if v > 0
            ]
            ax.add_collection(PolyCollection(boxes, facecolors=colour, linewidths=0), autolim=False)
            handles.append(Patch(color=colour, label=_plain(_drawable(label) or "?")))
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        step = max(1, math.ceil(len(days) / 10))
        ticks = xs[::step]
        ax.set_xticks(ticks, [_day_label(days[i], days) for i in ticks])
        ax.set_xlim(-0.6, len(days) - 0.4)
        ax.set_ylim(0, max(bottom) * 1.05)
        _dollar_axis(ax, "y", max(bottom))
        ax.set_title(_plain(f"{title}  ·  {format_usd(total)}"), color=TEXT, loc="left", fontsize=13, pad=12)
        legend = fig.legend(
            handles=handles, loc="outside lower center", frameon=False, fontsize=9, ncols=min(len(layers), 6)
        )
        for text in legend.get_texts():
            text.set_color(TEXT)
        return _png(fig)


def top_users_png(
    rows: Sequence[UserSpend],
    *,
    names: Mapping[str, str] | None = None,
    title: str = "Top users",
) -> bytes:
    """Horizontal bars of net spend per user, the largest at the top, as PNG bytes.

    `names` maps user ids to what to show (display names); an id without a name is shown as is. At most
    MAX_USERS bars are drawn, the first of `rows` (which come largest first from `Reports.top_users`).
    """
    shown = [row for row in rows if row.spend.net > 0][:MAX_USERS]
    if not shown:
        return _empty()
    names = names or {}
    values = [row.spend.net / MICROS_PER_USD for row in shown]
    peak = max(values)
    with _lock:
        labels = [_plain(_shorten(_drawable(names.get(row.user_id, "")) or row.user_id, 28)) for row in shown]
        fig, ax = _figure(8.0, 1.4 + 0.42 * len(shown))
        ys = list(range(len(shown)))
        ax.barh(ys, values, 0.7, color=PALETTE[0], linewidth=0)
        ax.set_yticks(ys, labels)
        ax.invert_yaxis()
        ax.set_xlim(0, peak * 1.22)
        for y, row in zip(ys, shown, strict=True):
            ax.text(
                row.spend.net / MICROS_PER_USD + peak * 0.01,
                y,
                _plain(format_usd(row.spend.net)),
                va="center",
                color=TEXT,
                fontsize=9,
            )
        _dollar_axis(ax, "x", peak)
        ax.grid(axis="y", visible=False)
        ax.grid(axis="x", color=GRID, linewidth=0.6)
        ax.set_title(_plain(title), color=TEXT, loc="left", fontsize=13, pad=12)
        return _png(fig)


# -- drawing helpers ---------------------------------------------------------------------------------


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A dark figure with one axes on its own Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, facecolor=BACKGROUND, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_facecolor(PANEL)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color(GRID)
    ax.tick_params(colors=MUTED, labelcolor=TEXT, labelsize=9)
    ax.grid(axis="y", color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    return fig, ax


def _dollar_axis(ax: Axes, which: str, peak: float) -> None:
    """Dollar tick labels on one axis, with as many decimals as its scale needs."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    decimals = min(max(math.ceil(-math.log10(peak)) + 1, 2), 6) if peak > 0 else 2
    formatter = FuncFormatter(lambda value, _pos: rf"\${value:,.{decimals}f}")
    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_formatter(formatter)
    axis.set_major_locator(MaxNLocator(nbins=6, min_n_ticks=3))


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor=fig.get_facecolor(), metadata={"Software": None})
    return buffer.getvalue()


def _empty() -> bytes:
    """A small image that says there is nothing to draw."""
    with _lock:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.0, 1.2), dpi=DPI, facecolor=BACKGROUND)
        FigureCanvasAgg(fig)
        fig.text(0.5, 0.5, EMPTY_TEXT, ha="center", va="center", color=TEXT, fontsize=14)
        return _png(fig)


def _days(rows: Sequence[DaySpend], since: dt.date | None, until: dt.date | None) -> list[dt.date]:
    """Every day of the chart, in order."""
    first = since or min((row.day for row in rows), default=None)
    last = until - dt.timedelta(days=1) if until else max((row.day for row in rows), default=None)
    if first is None or last is None or last < first:
        return []
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def _day_label(day: dt.date, days: Sequence[dt.date]) -> str:
    """ "Nov 3", or "2025-11-03" when the chart crosses a new year."""
    if days[0].year != days[-1].year:
        return day.isoformat()
    return f"{day:%b} {day.day}"


def _plain(text: str) -> str:
    """Text shown as written: matplotlib would read a pair of "$" signs as mathematics."""
    return text.replace("$", r"\$")


def _drawable(text: str) -> str:
    """`text` without the characters the chart font has no glyph for (emoji in display names, say), which
    matplotlib would draw as boxes with a warning; runs of spaces become one."""
    from matplotlib.font_manager import FontProperties, findfont, get_font

    font = get_font(findfont(FontProperties()))
    kept = "".join(c if c.isspace() or font.get_char_index(ord(c)) else " " for c in text)
    return " ".join(kept.split())


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
