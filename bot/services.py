"""Composition: build the core's services from settings, and own their lifetimes.

`open_core()` is the one place that creates the process's `httpx.AsyncClient`, the image provider and
the database connection, and closes them in reverse order. The CLI uses it directly; the Discord bot
opens it in `setup_hook` (with `recover=True`: only the long-running bot resolves jobs a crash left
behind, so a CLI run beside it never touches the bot's jobs in flight, and the bot spares CLI jobs young
enough to belong to a CLI run still going (`cli_lifetime`); with `resume_queued=True` as well,
jobs still queued stay reserved for `Studio.resume()` instead of being refunded).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from bot.api.client import ImagesClient
from bot.api.http import DEFAULT_TIMEOUT, RetryPolicy, Sleep
from bot.api.mock import MockProvider
from bot.api.openai import AzureProvider, CompatibleProvider, OpenAIProvider
from bot.api.provider import ImageProvider
from bot.api.thread import ThreadProvider
from bot.catalogue import Catalogue
from bot.config import Settings
from bot.errors import ConfigError
from bot.jobs import Studio
from bot.log import register_secrets
from bot.queue import REPORT_EVERY, JobQueue
from bot.store.db import Database
from bot.store.images import ImageStore
from bot.store.ledger import Ledger, Recovery, utc_now

DATABASE_FILE = "easel.db"
IMAGES_FOLDER = "images"


@dataclass(frozen=True, slots=True)
class Core:
    """The core services one process shares."""

    settings: Settings
    catalogue: Catalogue
    http: httpx.AsyncClient
    provider: ImageProvider
    images: ImagesClient
    db: Database
    ledger: Ledger
    studio: Studio
    image_store: ImageStore
    queue: JobQueue
    recovery: Recovery | None = None


def cli_lifetime(settings: Settings) -> dt.timedelta:
    """The longest a CLI run can hold a job: every try of the request at the full timeout, plus a minute."""
    return dt.timedelta(seconds=settings.timeout * (settings.max_retries + 1) + 60)


PROVIDER_CLASSES: dict[str, type[ImageProvider]] = {
    "openai": OpenAIProvider,
    "azure": AzureProvider,
    "compatible": CompatibleProvider,
    "thread": ThreadProvider,
    "mock": MockProvider,
}
"""Each EASEL_PROVIDER's class (`make_provider` builds them)."""


def settings_problems(settings: Settings, catalogue: Catalogue, *, today: dt.date | None = None) -> list[str]:
    """Every reason these settings cannot serve images, one line each (empty when fine)."""
    problems = settings.provider_problems()
    spec = catalogue.find(settings.model)
    if spec is None:
        known = ", ".join(spec.name for spec in catalogue)
        problems.append(f"EASEL_MODEL: unknown model {settings.model!r}; choose one of {known}")
        return problems
    provider = PROVIDER_CLASSES.get(settings.provider)
    day = today or utc_now().date()
    if provider is not None and provider.follows_lifecycle and spec.status(day) == "shutdown":
        # Every request on the default would be refused: better said once at start than to every member.
        use = f"; use {spec.replacement} instead" if spec.replacement else ""
        shut = spec.shutdown.isoformat() if spec.shutdown else "already"
        problems.append(f"EASEL_MODEL: {spec.name} was shut down on {shut}{use}")
    return problems


def load_catalogue(settings: Settings) -> Catalogue:
    return Catalogue.load(settings.catalogue_file)


def build_provider(settings: Settings, http: httpx.AsyncClient, *, sleep: Sleep | None = None) -> ImageProvider:
    """The provider EASEL_PROVIDER names, wired to the shared HTTP client."""
    retry = RetryPolicy(max_retries=settings.max_retries, sleep=sleep or asyncio.sleep)
    timeout = httpx.Timeout(timeout=settings.timeout, connect=DEFAULT_TIMEOUT.connect)
    hosts = settings.download_host_list()
    cap = settings.max_download_mb * 1024 * 1024
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    match settings.provider:
        case "openai" | "compatible":
            cls = OpenAIProvider if settings.provider == "openai" else CompatibleProvider
            return cls(
                http,
                api_key=key,
                base_url=settings.openai_base_url,
                retry=retry,
                download_hosts=hosts,
                max_download_bytes=cap,
                timeout=timeout,
            )
        case "azure":
            if settings.azure_endpoint is None:
                raise ConfigError("AZURE_OPENAI_ENDPOINT is not set", variable="AZURE_OPENAI_ENDPOINT")
            azure_key = settings.azure_api_key.get_secret_value() if settings.azure_api_key else key
            return AzureProvider(
                http,
                api_key=azure_key,
                endpoint=settings.azure_endpoint,
                api_version=settings.azure_api_version,
                deployments=settings.deployment_map(),
                retry=retry,
                download_hosts=hosts,
                max_download_bytes=cap,
                timeout=timeout,
            )
        case "thread":
            token = settings.thread_token.get_secret_value() if settings.thread_token else ""
            return ThreadProvider(
                http,
                token=token,
                base_url=settings.thread_base_url,
                credit_usd=settings.thread_credit_usd,
                poll_timeout=settings.thread_poll_timeout,
                retry=retry,
                download_hosts=hosts,
                max_download_bytes=cap,
            )
        case "mock":
            return MockProvider()
    raise ConfigError(f"EASEL_PROVIDER: unknown provider {settings.provider!r}", variable="EASEL_PROVIDER")


@contextlib.asynccontextmanager
async def open_core(
    settings: Settings,
    *,
    http: httpx.AsyncClient | None = None,
    sleep: Sleep | None = None,
    recover: bool = False,
    resume_queued: bool = False,
) -> AsyncIterator[Core]:
    """Open the core for `settings`; closes what it opened (a passed-in `http` stays the caller's)."""
    register_secrets(settings.secrets())
    catalogue = load_catalogue(settings)
    problems = settings_problems(settings, catalogue)
    if problems:
        raise ConfigError("\n".join(problems))
    async with contextlib.AsyncExitStack() as stack:
        if http is None:
            timeout = httpx.Timeout(timeout=settings.timeout, connect=DEFAULT_TIMEOUT.connect)
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout))
        provider = build_provider(settings, http, sleep=sleep)
        stack.push_async_callback(provider.aclose)
        images = ImagesClient(
            provider,
            catalogue,
            default_model=settings.model,
            max_n=settings.max_images,
            user_salt=settings.user_salt.get_secret_value(),
        )
        db = await Database.open(settings.data_dir / DATABASE_FILE)
        stack.push_async_callback(db.close)
        ledger = Ledger(db)
        recovery = (
            await ledger.recover(resume_queued=resume_queued, cli_since=utc_now() - cli_lifetime(settings))
            if recover
            else None
        )
        image_store = ImageStore(
            db, settings.data_dir / IMAGES_FOLDER, http=http, max_fetch_bytes=settings.max_download_mb * 1024 * 1024
        )
        queue = JobQueue(
            max_running=settings.max_running,
            per_user=settings.max_per_user,
            per_guild=settings.max_per_guild,
            max_waiting_per_user=settings.max_queued_per_user,
            report_every=REPORT_EVERY,
        )
        studio = Studio(images, ledger, store=image_store, credit_usd=settings.thread_credit_usd, queue=queue)
        yield Core(
            settings=settings,
            catalogue=catalogue,
            http=http,
            provider=provider,
            images=images,
            db=db,
            ledger=ledger,
            studio=studio,
            image_store=image_store,
            queue=queue,
            recovery=recovery,
        )
