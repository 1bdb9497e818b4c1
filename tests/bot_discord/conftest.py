"""Fixtures for the Discord layer: a real EaselBot on simcord's simulated Discord, with the mock provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.app import EaselBot
from bot.config import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a bot that draws placeholders and keeps its data in the test's folder."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        discord_token=SecretStr("simcord-token"),
        provider="mock",
        data_dir=tmp_path / "data",
    )


@pytest.fixture
async def simcord_bot(settings: Settings) -> AsyncIterator[EaselBot]:
    """A fresh bot per test, so command objects and their state never leak between tests; closed after."""
    bot = EaselBot(settings, workers="thread")
    yield bot
    # simcord detaches the bot without closing it; close() releases the services as in production.
    await bot.close()
