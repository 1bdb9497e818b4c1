"""The error table: every sentence short enough for Discord, members' own text quoted back briefly."""

from __future__ import annotations

from bot.errors import QUOTE_LIMIT, BadRequest, InvalidOption, quoted
from cogs.errors import SENTENCE_LIMIT, friendly


def test_quoted_cuts_long_text_and_keeps_short_text() -> None:
    assert quoted("low") == "'low'"
    long = quoted("z" * 5000)
    assert len(long) == QUOTE_LIMIT
    assert long.startswith("'zzz")
    assert long.endswith("…'")


def test_friendly_never_exceeds_its_limit() -> None:
    """Even an error whose own message is huge (a provider's detail, a future message) comes back short."""
    for error in (InvalidOption("x" * 5000, param="size"), BadRequest("y" * 5000)):
        sentence = friendly(error)
        assert len(sentence) == SENTENCE_LIMIT
        assert sentence.endswith("…")


def test_friendly_leaves_a_normal_sentence_alone() -> None:
    assert friendly(InvalidOption("gpt-image-2 takes no style; dall-e-3 does.")) == (
        "gpt-image-2 takes no style; dall-e-3 does."
    )
