"""EASEL_CHANNELS: the channels Easel answers in, read as ids; a bad id is one line naming the variable."""

from __future__ import annotations

import pytest

from bot.config import load_settings
from bot.errors import ConfigError

pytestmark = pytest.mark.usefixtures("clean_env")


def test_channel_ids_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Comma-separated ids, with spaces and a stray comma, become a set of ints."""
    monkeypatch.setenv("EASEL_CHANNELS", " 112233445566778899, 998877665544332211 ,,")
    settings = load_settings(None)
    assert settings.channel_ids() == frozenset({112233445566778899, 998877665544332211})
    assert settings.channels == "112233445566778899,998877665544332211"


@pytest.mark.parametrize("value", [None, "", " , "])
def test_blank_means_every_channel(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    """Unset, empty or only separators: no restriction."""
    if value is not None:
        monkeypatch.setenv("EASEL_CHANNELS", value)
    assert load_settings(None).channel_ids() == frozenset()


@pytest.mark.parametrize("value", ["#art", "123,abc", "12.5", "-4", "0", "<#123>", "١٢٣"])
def test_a_bad_id_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Anything but positive decimal ids is refused with one line that starts with EASEL_CHANNELS."""
    monkeypatch.setenv("EASEL_CHANNELS", value)
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("EASEL_CHANNELS must be channel ids separated by commas")
    assert "Copy Channel ID" in lines[0]
