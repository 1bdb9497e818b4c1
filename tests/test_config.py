"""Settings: read from the environment and .env, secrets hidden, every problem one line naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import ConfigError
from tests.conftest import SETTING_NAMES

pytestmark = pytest.mark.usefixtures("clean_env")


def test_defaults() -> None:
    """With nothing set, Easel uses OpenAI, gpt-image-2 and ./data."""
    settings = load_settings(None)
    assert settings.provider == "openai"
    assert settings.model == "gpt-image-2"
    assert settings.data_dir == Path("data")
    assert settings.openai_base_url == "https://api.openai.com/v1"


def test_env_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values come from .env, and the environment overrides them."""
    env = tmp_path / ".env"
    env.write_text("EASEL_PROVIDER=mock\nEASEL_MODEL=dall-e-2\nOPENAI_API_KEY=sk-fromfile0000000000\n")
    monkeypatch.setenv("EASEL_MODEL", "gpt-image-1")
    settings = load_settings(env)
    assert settings.provider == "mock"
    assert settings.model == "gpt-image-1"
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-fromfile0000000000"


def test_empty_values_count_as_unset(tmp_path: Path) -> None:
    """A copied .env.example with blank keys means 'not set', not an empty key."""
    env = tmp_path / ".env"
    env.write_text("DISCORD_TOKEN=\nOPENAI_API_KEY=\n")
    settings = load_settings(env)
    assert settings.openai_api_key is None
    assert settings.discord_token is None
    assert settings.provider_problems() == [
        "OPENAI_API_KEY is not set: the openai provider needs an API key (or set EASEL_PROVIDER=mock)"
    ]


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    """repr and str of the settings hide the token and keys."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value-123456")
    monkeypatch.setenv("DISCORD_TOKEN", "discord-secret-token")
    settings = load_settings(None)
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "sk-secret-value-123456" not in shown
    assert "discord-secret-token" not in shown
    assert set(settings.secrets()) == {"sk-secret-value-123456", "discord-secret-token"}


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "EASEL_PROVIDER",
            "dalle",
            "EASEL_PROVIDER must be one of openai, azure, compatible, thread, mock (got 'dalle')",
        ),
        ("OPENAI_BASE_URL", "ftp://example.com", "OPENAI_BASE_URL must be an http(s) URL"),
        ("AZURE_OPENAI_ENDPOINT", "not a url", "AZURE_OPENAI_ENDPOINT must be an http(s) URL"),
        ("EASEL_MAX_IMAGES", "11", "EASEL_MAX_IMAGES:"),
        ("EASEL_TIMEOUT", "soon", "EASEL_TIMEOUT:"),
        ("EASEL_TIMEOUT", "inf", "EASEL_TIMEOUT:"),
        ("EASEL_TIMEOUT", "1e11", "EASEL_TIMEOUT:"),
        ("EASEL_IMAGE_RETENTION_DAYS", "800000", "EASEL_IMAGE_RETENTION_DAYS:"),
        ("EASEL_IMAGE_CLEANUP_HOURS", "nan", "EASEL_IMAGE_CLEANUP_HOURS:"),
        ("DISCORD_GATEWAY_URL", "wss://gateway.discord.gg:44x/", "DISCORD_GATEWAY_URL must be a ws:// or wss:// URL"),
        ("OPENAI_API_KEY", "sk-SECRETSECRET\u00e9123456", "OPENAI_API_KEY: contains a space or a character"),
        ("DISCORD_TOKEN", "MTIz.abc def", "DISCORD_TOKEN: contains a space or a character"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    """Each invalid value gives one line that starts with (or names) the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(expected)
    assert "SECRET" not in lines[0]
    assert "abc def" not in lines[0]


def test_several_problems_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two bad variables give two lines."""
    monkeypatch.setenv("EASEL_PROVIDER", "nope")
    monkeypatch.setenv("EASEL_MAX_RETRIES", "-1")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("EASEL_PROVIDER")
    assert lines[1].startswith("EASEL_MAX_RETRIES")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"EASEL_PROVIDER": "openai"}, "OPENAI_API_KEY is not set"),
        ({"EASEL_PROVIDER": "azure"}, "AZURE_OPENAI_ENDPOINT is not set"),
        ({"EASEL_PROVIDER": "azure", "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com"}, "AZURE_OPENAI_API_KEY"),
        ({"EASEL_PROVIDER": "thread"}, "EASEL_THREAD_TOKEN is not set"),
    ],
)
def test_provider_needs_its_credentials(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str) -> None:
    """Each provider names the variable it is missing."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    problems = load_settings(None).provider_problems()
    assert any(p.startswith(needle) for p in problems), problems


def test_mock_and_compatible_need_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mock provider and keyless compatible servers start with no key at all."""
    for provider in ("mock", "compatible"):
        monkeypatch.setenv("EASEL_PROVIDER", provider)
        assert load_settings(None).provider_problems() == []


def test_azure_deployments_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """model=deployment pairs become a mapping; nonsense is reported."""
    monkeypatch.setenv("EASEL_AZURE_DEPLOYMENTS", "gpt-image-2=img2, gpt-image-1 = img1")
    assert load_settings(None).deployment_map() == {"gpt-image-2": "img2", "gpt-image-1": "img1"}
    monkeypatch.setenv("EASEL_AZURE_DEPLOYMENTS", "nonsense")
    monkeypatch.setenv("EASEL_PROVIDER", "mock")
    assert load_settings(None).provider_problems() == [
        "EASEL_AZURE_DEPLOYMENTS must look like gpt-image-2=my-deployment,gpt-image-1=other"
    ]


def test_env_example_documents_every_variable() -> None:
    """.env.example names every setting Easel reads."""
    example = (Path(__file__).parent.parent / ".env.example").read_text()
    missing = [name for name in SETTING_NAMES if name not in example]
    assert missing == []


def test_retention_zero_means_no_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """0 turns a retention limit off; other values become days and bytes."""
    assert load_settings(None).retention() == (90, 2048 * 1024 * 1024)
    monkeypatch.setenv("EASEL_IMAGE_RETENTION_DAYS", "0")
    monkeypatch.setenv("EASEL_IMAGE_STORE_MB", "0")
    assert load_settings(None).retention() == (None, None)
