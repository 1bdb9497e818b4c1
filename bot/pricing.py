"""What an image request costs, in integer micro-dollars (1 USD = 1_000_000), from the catalogue's prices.

Two prices per request: `estimate` before the call (what to reserve against a budget; where the data leaves a
choice it takes the dearer one) and `actual` after it (from the token `usage` the provider reported, when it did).
Arithmetic is exact (fractions of the catalogue's decimal prices), rounded half up once at the end; results are
always `int`. No I/O here.

Token prices in the catalogue are US dollars per 1M tokens, which is the same number as micro-dollars per token.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from fractions import Fraction

from bot.api.types import Usage
from bot.catalogue import ModelSpec, parse_size

MICROS_PER_USD = 1_000_000

REFERENCE_AREA = 1024 * 1024
"""`output_tokens` in the catalogue are for one image of this many pixels; other sizes scale by area."""

AUTO_SIZE_AREA = 1536 * 1024
"""Size "auto" picks one of the standard sizes (1024², 1536x1024, 1024x1536); price the largest of them."""

IMAGE_INPUT_TOKENS = 1_000
"""Estimated input tokens for one uploaded image. The API scales an input image to about 1024x1024, which costs
a few hundred tokens at low input fidelity; 1,000 leaves room for high fidelity without tracking each upload's size.
The exact count arrives in `usage` and `actual` uses that."""

CHARS_PER_TOKEN = 4
"""Rough size of a text token in characters; prompt tokens are estimated as ceil(len(prompt) / 4)."""

_AUTO_AS = ("auto", "high")
"""Quality "auto" is priced as the dearest of these rows, so a reservation never falls short."""


def _exact(value: float) -> Fraction:
    """A catalogue number as the decimal it was written as (0.2 is 1/5, not the nearest binary float)."""
    try:
        return Fraction(repr(value))
    except ValueError:
        raise ValueError(f"not a finite price: {value!r}") from None


def _round(value: Fraction) -> int:
    """Round half away from zero (half up for the non-negative amounts used here)."""
    whole = math.floor(abs(value) + Fraction(1, 2))
    return whole if value >= 0 else -whole


def usd_to_micros(usd: float) -> int:
    """US dollars to micro-dollars, rounded half up: 0.053 → 53_000, 0.0000005 → 1."""
    try:
        micros = Decimal(repr(usd)) * MICROS_PER_USD
        return int(micros.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except (InvalidOperation, ValueError):
        raise ValueError(f"not a finite amount of dollars: {usd!r}") from None


def credits_to_micros(credits: float, credit_usd: float) -> int:
    """What `credits` of a credit-billing provider (the thread API) cost at `credit_usd` dollars each."""
    return _round(_exact(credits) * _exact(credit_usd) * MICROS_PER_USD)


def _prompt_tokens(prompt: str) -> int:
    return -(-len(prompt) // CHARS_PER_TOKEN)


def _area(spec: ModelSpec, size: str) -> int:
    """Pixels of `size`; "auto" → the largest standard size; anything unreadable → the largest size offered."""
    parsed = parse_size(size)
    if parsed is not None:
        return parsed[0] * parsed[1]
    if size.strip().lower() == "auto":
        return AUTO_SIZE_AREA
    offered = [p[0] * p[1] for p in (parse_size(s) for s in spec.sizes) if p is not None]
    return max([AUTO_SIZE_AREA, *offered])


def _qualities(quality: str) -> tuple[str, ...]:
    quality = quality.strip().lower()
    return _AUTO_AS if quality == "auto" else (quality,)


def _highest(values: Iterable[float]) -> Fraction | None:
    prices = [_exact(v) for v in values]
    return max(prices) if prices else None


def _table_price(per_image: Mapping[str, Mapping[str, float]], size: str, quality: str) -> Fraction | None:
    """The per-image price for `quality` at `size` from the table, or None when the table has no such entry.

    Size "auto" takes the dearest size of that quality's row.
    """
    size = size.strip().lower()
    found: list[Fraction] = []
    for name in _qualities(quality):
        row = per_image.get(name)
        if not row:
            continue
        if size == "auto":
            found.append(max(_exact(v) for v in row.values()))
        elif size in row:
            found.append(_exact(row[size]))
    return max(found) if found else None


def _output_tokens(spec: ModelSpec, quality: str) -> int | None:
    """Expected output tokens of one 1024² image at `quality`; unknown quality → the most any quality takes."""
    table = spec.prices.output_tokens
    if not table:
        return None
    counts = [table[q] for q in _qualities(quality) if q in table]
    return max(counts) if counts else max(table.values())


def _one_image(spec: ModelSpec, size: str, quality: str) -> Fraction:
    """Micro-dollars for the output of one image, before any input cost."""
    prices = spec.prices
    usd = _table_price(prices.per_image, size, quality)
    if usd is not None:
        return usd * MICROS_PER_USD
    if prices.unit == "tokens":
        tokens = _output_tokens(spec, quality)
        if tokens is not None:
            return Fraction(tokens * _area(spec, size), REFERENCE_AREA) * _exact(prices.image_out)
    # A combination the table does not list: charge the model's dearest image rather than guess low.
    dearest = _highest(v for row in prices.per_image.values() for v in row.values())
    return Fraction(0) if dearest is None else dearest * MICROS_PER_USD


def estimate(
    spec: ModelSpec,
    *,
    size: str,
    quality: str,
    n: int,
    prompt: str = "",
    input_images: int = 0,
) -> int:
    """Micro-dollars to reserve before asking `spec` for `n` images.

    Per-image models: the table's price for `quality` at `size`, times `n`; a combination the table lacks costs the
    model's dearest price. Token models: the table's price when it lists `quality` at `size` (quality "auto" as
    "high", size "auto" as the dearest listed size), else `output_tokens[quality]` scaled by area from 1024² at the
    image-output rate; times `n`, plus the prompt (about 4 characters a token) at the text rate and
    `input_images` × IMAGE_INPUT_TOKENS at the image-input rate. Input is charged once per request, as the API does.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    if input_images < 0:
        raise ValueError(f"input_images must not be negative, not {input_images}")
    prices = spec.prices
    total = _one_image(spec, size, quality) * n
    if prices.unit == "tokens":
        total += _prompt_tokens(prompt) * _exact(prices.text_in)
        total += input_images * IMAGE_INPUT_TOKENS * _exact(prices.image_in)
    return _round(total)


def actual(spec: ModelSpec, *, usage: Usage | None, estimate: int) -> int:
    """Micro-dollars a finished call cost: from `usage` for token-priced models, else `estimate`.

    Input text and image tokens are charged at their rates. `cached_input_tokens` (one number in the API's usage)
    are taken from the text tokens first, then from the image tokens, and charged at the cached rate where the
    catalogue has one (a cached rate of 0 means "none listed": full price). The catalogue has no separate rate
    for output text tokens, so they are charged at the image-output rate, the dearer and safer choice.
    A usage of all zeros is treated as no usage (a provider that reports nothing), and the estimate stands.
    """
    prices = spec.prices
    if prices.unit != "tokens" or usage is None or usage.total_tokens == 0:
        return estimate
    text, image = usage.input_text_tokens, usage.input_image_tokens
    cached = max(usage.cached_input_tokens, 0)
    cached_text = min(cached, text)
    cached_image = min(cached - cached_text, image)
    text_cached_rate = _exact(prices.cached_text_in) if prices.cached_text_in > 0 else _exact(prices.text_in)
    image_cached_rate = _exact(prices.cached_image_in) if prices.cached_image_in > 0 else _exact(prices.image_in)
    out_rate = _exact(prices.image_out)
    total = (
        (text - cached_text) * _exact(prices.text_in)
        + cached_text * text_cached_rate
        + (image - cached_image) * _exact(prices.image_in)
        + cached_image * image_cached_rate
        + (usage.output_image_tokens + usage.output_text_tokens) * out_rate
    )
    return _round(total)


def format_usd(micros: int) -> str:
    """Micro-dollars as readable dollars: "$1.20", "$0.053", "$0.0050", "$0.000012".

    A dollar or more shows cents; less shows at least three decimals and at least two significant digits.
    """
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    decimals = 3
    while decimals < 6:
        step = 10 ** (6 - decimals)
        if (micros + step // 2) // step >= 10:
            break
        decimals += 1
    step = 10 ** (6 - decimals)
    units = (micros + step // 2) // step
    if micros == 0 or units >= 10**decimals:
        cents = (micros + 5_000) // 10_000
        return f"{sign}${cents // 100:,}.{cents % 100:02d}"
    return f"{sign}$0.{units:0{decimals}d}"


def price_summary(spec: ModelSpec) -> str:
    """One line for a `models` listing: "$0.016–$0.020 per image" or "$0.0060–$0.422 per 1024² image"."""
    prices = spec.prices
    if prices.unit == "image":
        values = [usd_to_micros(v) for row in prices.per_image.values() for v in row.values()]
        if not values:
            return "price not listed"
        return f"{_span(values)} per image"
    qualities = [q for q in dict.fromkeys([*spec.qualities, *prices.per_image, *prices.output_tokens]) if q != "auto"]
    if prices.output_tokens or any("1024x1024" in row for row in prices.per_image.values()):
        costs = [estimate(spec, size="1024x1024", quality=q, n=1) for q in qualities or ["auto"]]
        return f"{_span(costs)} per 1024² image"
    if prices.text_in or prices.image_out:
        return f"${prices.text_in:g} in / ${prices.image_out:g} out per 1M tokens"
    return "price not listed"


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return format_usd(low) if low == high else f"{format_usd(low)}–{format_usd(high)}"
