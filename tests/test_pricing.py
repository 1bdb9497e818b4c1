"""Prices in integer micro-dollars: estimates before a call, actual cost from usage, and how they read."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import pricing
from bot.api.types import Usage
from bot.catalogue import Catalogue, ModelSpec, Prices

_CATALOGUE = Catalogue.load()
_PRICED = [(spec, quality, size) for spec in _CATALOGUE for quality in spec.qualities for size in spec.sizes]


def _estimate(
    catalogue: Catalogue, model: str, size: str, quality: str, n: int = 1, *, prompt: str = "", input_images: int = 0
) -> int:
    spec = catalogue.get(model)
    return pricing.estimate(spec, size=size, quality=quality, n=n, prompt=prompt, input_images=input_images)


# -- estimate: per-image models --------------------------------------------------------------------


def test_dall_e_2_small_times_three(catalogue: Catalogue) -> None:
    """dall-e-2 at 256x256, n=3: 3 × $0.016."""
    assert _estimate(catalogue, "dall-e-2", "256x256", "standard", n=3) == 48_000


@pytest.mark.parametrize(
    ("size", "quality", "micros"),
    [
        ("1024x1024", "standard", 40_000),
        ("1792x1024", "standard", 80_000),
        ("1024x1024", "hd", 80_000),
        ("1792x1024", "hd", 120_000),
        ("1024x1792", "hd", 120_000),
    ],
)
def test_dall_e_3_table(catalogue: Catalogue, size: str, quality: str, micros: int) -> None:
    """dall-e-3 prices come straight from its table, hd wide at $0.120."""
    assert _estimate(catalogue, "dall-e-3", size, quality) == micros


def test_per_image_models_ignore_tokens(catalogue: Catalogue) -> None:
    """A per-image price does not grow with the prompt or input images."""
    plain = _estimate(catalogue, "dall-e-2", "512x512", "standard")
    assert plain == 18_000
    assert _estimate(catalogue, "dall-e-2", "512x512", "standard", prompt="x" * 1000, input_images=1) == plain


@pytest.mark.parametrize(
    ("model", "size", "quality"),
    [
        ("dall-e-3", "1024x1024", "ultra"),
        ("dall-e-3", "2048x2048", "hd"),
        ("dall-e-3", "auto", "auto"),
        ("dall-e-3", "1024x1024", ""),
    ],
)
def test_per_image_unknown_combination_is_dearest(catalogue: Catalogue, model: str, size: str, quality: str) -> None:
    """A quality/size the table lacks costs the model's highest price instead of failing."""
    assert _estimate(catalogue, model, size, quality) == 120_000


def test_dall_e_2_unknown_size_is_dearest(catalogue: Catalogue) -> None:
    """dall-e-2 at a size it does not list is priced as its dearest size."""
    assert _estimate(catalogue, "dall-e-2", "300x300", "standard", n=2) == 40_000


# -- estimate: token models ------------------------------------------------------------------------


def test_gpt_image_2_medium_matches_table_plus_prompt(catalogue: Catalogue) -> None:
    """gpt-image-2 medium 1024²: $0.053 from the table plus 10 prompt tokens at $5/1M."""
    prompt = "a lighthouse at dusk, oil on canvas, 4k."
    assert len(prompt) == 40
    assert _estimate(catalogue, "gpt-image-2", "1024x1024", "medium", prompt=prompt) == 53_000 + 10 * 5


def test_prompt_tokens_round_up(catalogue: Catalogue) -> None:
    """A prompt is counted as ceil(len / 4) tokens: 41 characters are 11 tokens."""
    assert _estimate(catalogue, "gpt-image-2", "1024x1024", "low", prompt="x" * 41) == 6_000 + 11 * 5


def test_auto_quality_priced_as_high(catalogue: Catalogue) -> None:
    """Quality auto costs what high costs, at listed and free-form sizes."""
    for size in ("1024x1024", "1536x1024", "2048x1152", "auto"):
        assert _estimate(catalogue, "gpt-image-2", size, "auto") == _estimate(catalogue, "gpt-image-2", size, "high")
    assert _estimate(catalogue, "gpt-image-2", "1024x1024", "auto") == 211_000


def test_auto_size_priced_at_dearest_listed_size(catalogue: Catalogue) -> None:
    """Size auto costs the dearest size of that quality's row."""
    assert _estimate(catalogue, "gpt-image-2", "auto", "high") == 211_000
    assert _estimate(catalogue, "gpt-image-1", "auto", "high") == 250_000
    assert _estimate(catalogue, "gpt-image-1.5", "auto", "medium") == 51_000


def test_free_form_size_scales_by_area(catalogue: Catalogue) -> None:
    """2048x1152 is 2.25 × 1024²: 1767 medium tokens × 2.25 × $30/1M = 119,272.5 → 119,273 micro-dollars."""
    assert _estimate(catalogue, "gpt-image-2", "2048x1152", "medium") == 119_273
    assert _estimate(catalogue, "gpt-image-2", "2048x2048", "low") == 200 * 4 * 30
    assert _estimate(catalogue, "gpt-image-2", "3840x2160", "high") == math.floor(
        7033 * 3840 * 2160 * 30 / 1024**2 + 0.5
    )


def test_quality_without_table_row_uses_output_tokens(catalogue: Catalogue) -> None:
    """gpt-image-2.5 xhigh and max have no per-image row: output tokens × $30/1M."""
    assert _estimate(catalogue, "gpt-image-2.5-sunburst", "1024x1024", "xhigh") == 10_550 * 30
    assert _estimate(catalogue, "gpt-image-2.6-flare", "1024x1024", "max") == 14_066 * 30
    # Size auto is priced at the largest standard size, 1536x1024.
    assert _estimate(catalogue, "gpt-image-2.5-flare", "auto", "max") == 14_066 * 30 * 3 // 2


def test_unknown_quality_on_token_model_is_dearest(catalogue: Catalogue) -> None:
    """A quality the model has no numbers for is priced at its most output tokens."""
    assert _estimate(catalogue, "gpt-image-2", "2048x2048", "ultra") == 7033 * 4 * 30


def test_edit_adds_input_images(catalogue: Catalogue) -> None:
    """Each input image adds IMAGE_INPUT_TOKENS at the image-input rate ($8/1M on gpt-image-2)."""
    assert pricing.IMAGE_INPUT_TOKENS == 1_000
    assert _estimate(catalogue, "gpt-image-2", "1024x1024", "medium", input_images=2) == 53_000 + 2 * 1_000 * 8


def test_n_multiplies_output_but_input_is_paid_once(catalogue: Catalogue) -> None:
    """n images cost n outputs; the prompt and input images are charged once per request."""
    one = _estimate(catalogue, "gpt-image-2", "1024x1024", "medium", n=1, prompt="x" * 40, input_images=1)
    three = _estimate(catalogue, "gpt-image-2", "1024x1024", "medium", n=3, prompt="x" * 40, input_images=1)
    assert one == 53_000 + 50 + 8_000
    assert three == 3 * 53_000 + 50 + 8_000


def test_estimate_refuses_nonsense_counts(catalogue: Catalogue) -> None:
    """n below 1 or a negative image count is a programming error."""
    with pytest.raises(ValueError, match="n must be at least 1"):
        _estimate(catalogue, "gpt-image-2", "1024x1024", "low", n=0)
    with pytest.raises(ValueError, match="input_images"):
        _estimate(catalogue, "gpt-image-2", "1024x1024", "low", input_images=-1)


def test_model_without_prices_costs_nothing(catalogue: Catalogue) -> None:
    """A model the admin added with no prices estimates to 0 rather than failing."""
    spec = dataclasses.replace(catalogue.get("dall-e-2"), prices=Prices())
    assert pricing.estimate(spec, size="1024x1024", quality="standard", n=4) == 0


@given(
    combo=st.sampled_from(_PRICED),
    n=st.integers(min_value=1, max_value=9),
    prompt=st.text(max_size=300),
    input_images=st.integers(min_value=0, max_value=16),
)
def test_estimate_monotone_in_n_and_never_negative(
    combo: tuple[ModelSpec, str, str], n: int, prompt: str, input_images: int
) -> None:
    """For every model × quality × listed size, the estimate is a non-negative int that grows with n."""
    spec, quality, size = combo
    low = pricing.estimate(spec, size=size, quality=quality, n=n, prompt=prompt, input_images=input_images)
    high = pricing.estimate(spec, size=size, quality=quality, n=n + 1, prompt=prompt, input_images=input_images)
    assert type(low) is int
    assert 0 <= low <= high
    if spec.prices.per_image or spec.prices.output_tokens:
        assert low < high


@given(combo=st.sampled_from(_PRICED))
def test_auto_quality_never_cheaper_than_high(combo: tuple[ModelSpec, str, str]) -> None:
    """Reserving for quality auto never falls below quality high at the same size."""
    spec, _quality, size = combo
    if "high" in spec.qualities and "auto" in spec.qualities:
        auto = pricing.estimate(spec, size=size, quality="auto", n=1)
        assert auto >= pricing.estimate(spec, size=size, quality="high", n=1)


# -- actual ----------------------------------------------------------------------------------------


def test_actual_from_usage(catalogue: Catalogue) -> None:
    """gpt-image-2: 50 text tokens × $5 + 1767 output image tokens × $30 per 1M."""
    usage = Usage(input_text_tokens=50, output_image_tokens=1767)
    assert pricing.actual(catalogue.get("gpt-image-2"), usage=usage, estimate=999_999) == 250 + 53_010


def test_actual_counts_every_token_kind(catalogue: Catalogue) -> None:
    """Input images at the image rate; output text tokens at the image-output rate (no separate rate exists)."""
    usage = Usage(input_text_tokens=10, input_image_tokens=323, output_image_tokens=100, output_text_tokens=7)
    assert pricing.actual(catalogue.get("gpt-image-1"), usage=usage, estimate=0) == 10 * 5 + 323 * 10 + 107 * 40


def test_actual_cached_tokens_use_cached_rates(catalogue: Catalogue) -> None:
    """Cached tokens come off the text first, then the images, each at its cached rate ($1.25 and $2)."""
    spec = catalogue.get("gpt-image-2")
    text_only = Usage(input_text_tokens=100, cached_input_tokens=40)
    assert pricing.actual(spec, usage=text_only, estimate=0) == 60 * 5 + 50
    spill = Usage(input_text_tokens=10, input_image_tokens=100, cached_input_tokens=30)
    # 10 × 1.25 + 20 × 2 + 80 × 8 = 692.5, rounded half up.
    assert pricing.actual(spec, usage=spill, estimate=0) == 693


def test_actual_cached_without_cached_rate_is_full_price(catalogue: Catalogue) -> None:
    """gpt-image-1.5 lists no cached rate, so cached tokens cost the full rate."""
    usage = Usage(input_text_tokens=100, cached_input_tokens=100)
    assert pricing.actual(catalogue.get("gpt-image-1.5"), usage=usage, estimate=0) == 500


def test_actual_without_usage_is_the_estimate(catalogue: Catalogue) -> None:
    """No usage, an all-zero usage, or a per-image model: the estimate stands."""
    assert pricing.actual(catalogue.get("gpt-image-2"), usage=None, estimate=53_050) == 53_050
    assert pricing.actual(catalogue.get("gpt-image-2"), usage=Usage(), estimate=53_050) == 53_050
    usage = Usage(input_text_tokens=50, output_image_tokens=1767)
    assert pricing.actual(catalogue.get("dall-e-3"), usage=usage, estimate=40_000) == 40_000


# -- conversions and text --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usd", "micros"),
    [(0.053, 53_000), (1.2, 1_200_000), (0.0000005, 1), (0.0000004, 0), (0.1 + 0.2, 300_000), (7, 7_000_000)],
)
def test_usd_to_micros(usd: float, micros: int) -> None:
    """Dollars to micro-dollars, rounded half up."""
    assert pricing.usd_to_micros(usd) == micros
    assert pricing.MICROS_PER_USD == 1_000_000


def test_usd_to_micros_refuses_nan() -> None:
    """Not-a-number is no amount of money."""
    with pytest.raises(ValueError, match="not a finite"):
        pricing.usd_to_micros(float("nan"))


@pytest.mark.parametrize(
    ("credits", "credit_usd", "micros"),
    [(3, 0.002, 6_000), (0.1, 0.3, 30_000), (1, 0.0000005, 1), (0, 0.002, 0), (12.5, 0.004, 50_000)],
)
def test_credits_to_micros(credits: float, credit_usd: float, micros: int) -> None:
    """Thread-API credits times the dollar price of one credit, exactly."""
    assert pricing.credits_to_micros(credits, credit_usd) == micros


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "$0.00"),
        (53_000, "$0.053"),
        (53_260, "$0.053"),
        (211_000, "$0.211"),
        (5_000, "$0.0050"),
        (6_000, "$0.0060"),
        (9_996, "$0.010"),
        (12, "$0.000012"),
        (999_499, "$0.999"),
        (999_500, "$1.00"),
        (1_200_000, "$1.20"),
        (12_345_678, "$12.35"),
        (1_234_500_000, "$1,234.50"),
        (-53_000, "-$0.053"),
    ],
)
def test_format_usd(micros: int, text: str) -> None:
    """Cents from a dollar up; below that at least three decimals and two significant digits."""
    assert pricing.format_usd(micros) == text


@pytest.mark.parametrize(
    ("model", "text"),
    [
        ("dall-e-2", "$0.016–$0.020 per image"),
        ("dall-e-3", "$0.040–$0.120 per image"),
        ("gpt-image-2", "$0.0060–$0.211 per 1024² image"),
        ("gpt-image-2.5-sunburst", "$0.0060–$0.422 per 1024² image"),
        ("gpt-image-1", "$0.011–$0.167 per 1024² image"),
    ],
)
def test_price_summary(catalogue: Catalogue, model: str, text: str) -> None:
    """One short line per model for the models listing."""
    assert pricing.price_summary(catalogue.get(model)) == text


def test_price_summary_fallbacks(catalogue: Catalogue) -> None:
    """Only token rates: rates per 1M tokens; no prices at all: says so."""
    spec = catalogue.get("gpt-image-2")
    rates_only = dataclasses.replace(spec, prices=Prices(unit="tokens", text_in=5.0, image_out=30.0))
    assert pricing.price_summary(rates_only) == "$5 in / $30 out per 1M tokens"
    assert pricing.price_summary(dataclasses.replace(spec, prices=Prices())) == "price not listed"
    one_price = dataclasses.replace(spec, prices=Prices(per_image={"standard": {"1024x1024": 0.04}}))
    assert pricing.price_summary(one_price) == "$0.040 per image"
