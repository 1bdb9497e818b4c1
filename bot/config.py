"""Settings, read from the environment and `.env` (environment wins), typed and checked at start.

Secrets are `SecretStr`: they print as `**********` and reach code only through `.get_secret_value()`.
`load_settings()` turns every problem into one line naming the variable to set (see `ConfigError`).
Names follow the official OpenAI SDK where one exists (OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_API_VERSION,
AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY); Easel's own settings start with EASEL_.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError

ProviderName = Literal["openai", "azure", "compatible", "thread", "mock"]
PROVIDERS: tuple[str, ...] = ("openai", "azure", "compatible", "thread", "mock")


def _url(value: str | None, variable: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{variable} must be an http(s) URL such as https://example.com/v1, got {value!r}")
    return value.rstrip("/")


class Settings(BaseSettings):
    """Every setting Easel reads. The README's table and `.env.example` list the same names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    discord_token: SecretStr | None = Field(default=None, validation_alias="DISCORD_TOKEN")
    """The bot's token from the Discord developer portal."""
    dev_guild_id: int | None = Field(default=None, validation_alias="DEV_GUILD_ID")
    """A test server's id: commands are synced there instantly instead of globally."""
    discord_api_base: str | None = Field(default=None, validation_alias="DISCORD_API_BASE")
    """Another Discord REST base URL (a proxy, or a local fake in tests); unset: Discord's own."""
    discord_gateway_url: str | None = Field(default=None, validation_alias="DISCORD_GATEWAY_URL")
    """Another gateway URL (a gateway proxy, or a local fake in tests); unset: Discord's own."""

    provider: ProviderName = Field(default="openai", validation_alias="EASEL_PROVIDER")
    """Which image service to call: openai, azure, compatible, thread or mock."""
    model: str = Field(default="gpt-image-2", validation_alias="EASEL_MODEL")
    """The default model; members may pick another from the catalogue."""
    data_dir: Path = Field(default=Path("data"), validation_alias="EASEL_DATA_DIR")
    """Where the database and stored images live."""
    catalogue_file: Path | None = Field(default=None, validation_alias="EASEL_CATALOGUE_FILE")
    """An admin's TOML file adding models or overriding fields of shipped ones."""
    max_images: int = Field(default=4, ge=1, le=10, validation_alias="EASEL_MAX_IMAGES")
    """The most images one request may ask for."""
    max_running: int = Field(default=4, ge=1, le=100, validation_alias="EASEL_MAX_RUNNING")
    """The most requests sent to the image service at once (keep it within the provider's rate limit)."""
    max_per_user: int = Field(default=2, ge=1, le=100, validation_alias="EASEL_MAX_PER_USER")
    """The most requests of one member running at once."""
    max_per_guild: int = Field(default=3, ge=1, le=100, validation_alias="EASEL_MAX_PER_GUILD")
    """The most requests of one server running at once."""
    max_queued_per_user: int = Field(default=5, ge=1, le=1000, validation_alias="EASEL_MAX_QUEUED_PER_USER")
    """The most requests of one member waiting in line; another is refused at once, free."""
    timeout: float = Field(default=300.0, gt=0, le=3600, allow_inf_nan=False, validation_alias="EASEL_TIMEOUT")
    """Seconds to wait for the image service to answer one request."""
    max_retries: int = Field(default=2, ge=0, le=10, validation_alias="EASEL_MAX_RETRIES")
    """Retries of failed connections, 408/409/429 and 5xx answers."""
    user_salt: SecretStr = Field(default=SecretStr(""), validation_alias="EASEL_USER_SALT")
    """Mixed into the hash of user ids sent to the provider; set it to make the hashes unlinkable."""
    download_hosts: str = Field(default="", validation_alias="EASEL_DOWNLOAD_HOSTS")
    """Extra hosts (comma-separated; a leading dot admits subdomains) result images may be fetched from."""
    channels: str = Field(default="", validation_alias="EASEL_CHANNELS")
    """Channel ids (comma-separated) where members may use Easel, threads under them included; blank: everywhere."""
    max_download_mb: int = Field(default=50, ge=1, le=500, validation_alias="EASEL_MAX_DOWNLOAD_MB")
    """Largest result image fetched from a URL, in MB."""
    image_retention_days: float = Field(
        default=90, ge=0, le=36500, allow_inf_nan=False, validation_alias="EASEL_IMAGE_RETENTION_DAYS"
    )
    """Days to keep generated images in the local store (0: keep forever)."""
    image_store_mb: int = Field(default=2048, ge=0, validation_alias="EASEL_IMAGE_STORE_MB")
    """Most megabytes the local image store may hold; the oldest go first (0: no limit)."""
    image_cleanup_hours: float = Field(
        default=6, gt=0, le=8760, allow_inf_nan=False, validation_alias="EASEL_IMAGE_CLEANUP_HOURS"
    )
    """How often the bot applies the retention limits."""
    stop_grace: float = Field(default=8, ge=0, le=600, allow_inf_nan=False, validation_alias="EASEL_STOP_GRACE")
    """Seconds a stop waits for replies in flight to finish (docker stop allows 10 before it kills)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", validation_alias="EASEL_LOG_LEVEL")
    """How much to log."""

    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    """The API key for openai (and compatible servers that want one)."""
    openai_base_url: str = Field(default="https://api.openai.com/v1", validation_alias="OPENAI_BASE_URL")
    """The API's base URL: OpenAI's, or a compatible server's (e.g. http://localhost:8080/v1)."""

    azure_endpoint: str | None = Field(default=None, validation_alias="AZURE_OPENAI_ENDPOINT")
    """Azure OpenAI resource URL, e.g. https://my-resource.openai.azure.com."""
    azure_api_key: SecretStr | None = Field(default=None, validation_alias="AZURE_OPENAI_API_KEY")
    """Azure OpenAI key (sent as the api-key header)."""
    azure_api_version: str = Field(default="2025-04-01-preview", validation_alias="OPENAI_API_VERSION")
    """Azure OpenAI api-version."""
    azure_deployments: str = Field(default="", validation_alias="EASEL_AZURE_DEPLOYMENTS")
    """model=deployment pairs, comma-separated; a model without one uses its own name as deployment."""

    thread_base_url: str = Field(default="https://app.ai-client.com/api/v1", validation_alias="EASEL_THREAD_BASE_URL")
    """The thread/entry API's base URL."""
    thread_token: SecretStr | None = Field(default=None, validation_alias="EASEL_THREAD_TOKEN")
    """Bearer token for the thread/entry API."""
    thread_credit_usd: float = Field(default=0.002, ge=0, validation_alias="EASEL_THREAD_CREDIT_USD")
    """What one credit of the thread/entry API costs, in US dollars."""
    thread_poll_timeout: float = Field(default=180.0, gt=0, validation_alias="EASEL_THREAD_POLL_TIMEOUT")
    """Seconds to wait for the thread/entry API's answer before giving up."""

    @field_validator("openai_base_url", "thread_base_url")
    @classmethod
    def _check_required_url(cls, value: str, info: Any) -> str:
        alias = {"openai_base_url": "OPENAI_BASE_URL", "thread_base_url": "EASEL_THREAD_BASE_URL"}[info.field_name]
        checked = _url(value, alias)
        if checked is None:
            raise ValueError(f"{alias} must not be empty")
        return checked

    @field_validator("azure_endpoint")
    @classmethod
    def _check_azure_url(cls, value: str | None) -> str | None:
        return _url(value, "AZURE_OPENAI_ENDPOINT")

    @field_validator("discord_api_base")
    @classmethod
    def _check_discord_api(cls, value: str | None) -> str | None:
        return _url(value, "DISCORD_API_BASE")

    @field_validator("discord_token", "openai_api_key", "azure_api_key", "thread_token")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Sent in an HTTP header, where only printable ASCII goes: a pasted curly quote or space would fail
        # every request. The message never shows the value.
        if value is not None:
            secret = value.get_secret_value()
            if not all(33 <= ord(char) < 127 for char in secret):
                raise ValueError("contains a space or a character that cannot be sent (a pasted quote?)")
        return value

    @field_validator("discord_gateway_url")
    @classmethod
    def _check_gateway(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        try:
            url: httpx.URL | None = httpx.URL(value)
        except (httpx.InvalidURL, TypeError):
            url = None
        if url is None or url.scheme not in ("ws", "wss") or not url.host:
            raise ValueError(f"DISCORD_GATEWAY_URL must be a ws:// or wss:// URL, got {value!r}")
        return value

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, value: str) -> str:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        bad = [part for part in parts if not (part.isascii() and part.isdigit() and int(part) > 0)]
        if bad:
            raise ValueError(
                "EASEL_CHANNELS must be channel ids separated by commas, such as 112233445566778899,998877665544332211"
                f" (in Discord: right-click the channel, Copy Channel ID); {bad[0]!r} is not one"
            )
        return ",".join(parts)

    @field_validator("provider", mode="before")
    @classmethod
    def _lower_provider(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    # -- derived ----------------------------------------------------------------------------------

    def retention(self) -> tuple[float | None, int | None]:
        """The image store's limits for `ImageStore.cleanup`: (max age in days, max bytes), None for no limit."""
        days = self.image_retention_days or None
        size = self.image_store_mb * 1024 * 1024 or None
        return days, size

    def download_host_list(self) -> tuple[str, ...]:
        return tuple(h.strip() for h in self.download_hosts.split(",") if h.strip())

    def channel_ids(self) -> frozenset[int]:
        """The channels Easel answers in; empty: every channel."""
        return frozenset(int(part) for part in self.channels.split(",") if part)

    def deployment_map(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.azure_deployments.split(",") if "=" in item)
        return {model.strip(): deployment.strip() for model, deployment in pairs}

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for log redaction."""
        values = (self.discord_token, self.openai_api_key, self.azure_api_key, self.thread_token, self.user_salt)
        return tuple(v.get_secret_value() for v in values if v is not None and v.get_secret_value())

    def provider_problems(self) -> list[str]:
        """What the chosen provider still needs, one line each."""
        problems: list[str] = []
        if self.provider == "openai" and self.openai_api_key is None:
            problems.append(
                "OPENAI_API_KEY is not set: the openai provider needs an API key (or set EASEL_PROVIDER=mock)"
            )
        if self.provider == "azure":
            if self.azure_endpoint is None:
                problems.append("AZURE_OPENAI_ENDPOINT is not set: the azure provider needs your resource URL")
            if self.azure_api_key is None and self.openai_api_key is None:
                problems.append("AZURE_OPENAI_API_KEY is not set: the azure provider needs its key")
        if self.provider == "thread" and self.thread_token is None:
            problems.append("EASEL_THREAD_TOKEN is not set: the thread provider needs its bearer token")
        if self.azure_deployments and not self.deployment_map():
            problems.append("EASEL_AZURE_DEPLOYMENTS must look like gpt-image-2=my-deployment,gpt-image-1=other")
        return problems


_ALIASES = {name: str(field.validation_alias) for name, field in Settings.model_fields.items()}


def _describe(error: Any) -> str:
    """One line for one pydantic error, naming the environment variable."""
    loc = error.get("loc") or ("?",)
    field = str(loc[0])
    variable = _ALIASES.get(field, field)
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    given = error.get("input")
    if variable == "EASEL_PROVIDER":
        return f"EASEL_PROVIDER must be one of {', '.join(PROVIDERS)} (got {given!r})"
    if message.startswith(variable):
        return message
    # The error may name the field or its variable: either way a secret's value is never quoted back.
    secret = any(word in f"{field} {variable}".lower() for word in ("secret", "token", "key", "salt"))
    shown = "" if given is None or secret else f" (got {given!r})"
    return f"{variable}: {message}{shown}"


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Settings from the environment and `env_file`; ConfigError listing every problem, one per line."""
    try:
        settings = Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        lines = [_describe(error) for error in exc.errors()]
        raise ConfigError("\n".join(lines), variable=None) from None
    return settings
