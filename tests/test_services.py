"""Composition: the right provider for each setting, one HTTP client, closed by whoever opened it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest

from bot.api.client import ImagesClient
from bot.api.mock import MockProvider
from bot.api.openai import AzureProvider, CompatibleProvider, OpenAIProvider
from bot.api.thread import ThreadProvider
from bot.api.types import Completed, EditRequest, GenerateRequest, InputImage, PartialImage, VaryRequest
from bot.catalogue import Catalogue
from bot.config import Settings
from bot.errors import ConfigError, InvalidOption
from bot.services import build_provider, open_core, settings_problems
from bot.store.ledger import CLI_USER_ID, JobDraft

pytestmark = pytest.mark.usefixtures("clean_env")


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("values", "cls"),
    [
        ({"provider": "openai", "openai_api_key": "sk-x"}, OpenAIProvider),
        ({"provider": "compatible", "openai_base_url": "http://127.0.0.1:8080/v1"}, CompatibleProvider),
        ({"provider": "azure", "azure_endpoint": "https://r.openai.azure.com", "azure_api_key": "k"}, AzureProvider),
        ({"provider": "thread", "thread_token": "t"}, ThreadProvider),
        ({"provider": "mock"}, MockProvider),
    ],
)
async def test_each_provider_setting_builds_its_provider(values: dict[str, object], cls: type) -> None:
    """EASEL_PROVIDER picks the provider class."""
    async with httpx.AsyncClient() as http:
        assert type(build_provider(settings(**values), http)) is cls


async def test_open_core_closes_the_client_it_made() -> None:
    """The core's own HTTP client is closed when the core closes."""
    async with open_core(settings(provider="mock")) as core:
        assert isinstance(core.images, ImagesClient)
        http = core.http
        assert not http.is_closed
    assert http.is_closed


async def test_open_core_leaves_a_given_client_open() -> None:
    """A client passed in belongs to the caller and stays open."""
    async with httpx.AsyncClient() as http:
        async with open_core(settings(provider="mock"), http=http) as core:
            assert core.http is http
        assert not http.is_closed


async def test_open_core_reports_every_problem() -> None:
    """A missing key and an unknown model are reported together, one line each."""
    with pytest.raises(ConfigError) as caught:
        async with open_core(settings(provider="openai", model="gpt-9")):
            pass
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("OPENAI_API_KEY is not set")
    assert lines[1].startswith("EASEL_MODEL: unknown model 'gpt-9'")


def test_a_default_model_shut_down_is_a_start_up_problem(catalogue: Catalogue) -> None:
    """EASEL_MODEL naming a model OpenAI shut down: said once at start, with its replacement, instead of to
    every member on every request; a provider that serves it anyway (compatible) is left alone."""
    today = dt.date(2026, 12, 4)
    shut = settings(provider="openai", openai_api_key="sk-test", model="gpt-image-1.5")
    assert settings_problems(shut, catalogue, today=today) == [
        "EASEL_MODEL: gpt-image-1.5 was shut down on 2026-12-01; use gpt-image-2 instead"
    ]
    assert settings_problems(shut, catalogue, today=dt.date(2026, 11, 30)) == []
    assert settings_problems(settings(provider="compatible", model="gpt-image-1.5"), catalogue, today=today) == []


async def test_admin_catalogue_file_is_used(tmp_path: Path) -> None:
    """EASEL_CATALOGUE_FILE adds a model the core can then serve."""
    extra = tmp_path / "models.toml"
    extra.write_text('[models."house-model"]\nextends = "gpt-image-2"\nlabel = "House"\n')
    async with open_core(settings(provider="mock", catalogue_file=extra, model="house-model")) as core:
        result = await core.images.generate(GenerateRequest(prompt="a house"))
    assert result.model == "house-model"
    assert result.mock


async def test_streaming_through_the_client_yields_partials_then_the_result() -> None:
    """generate_stream: previews first, then exactly one Completed with the images."""
    async with open_core(settings(provider="mock")) as core:
        events = [e async for e in core.images.generate_stream(GenerateRequest(prompt="fox", n=2, partial_images=2))]
    partials = [e for e in events if isinstance(e, PartialImage)]
    assert len(partials) == 4
    assert isinstance(events[-1], Completed)
    assert len(events[-1].result.images) == 2
    assert sum(isinstance(e, Completed) for e in events) == 1


async def test_non_streaming_model_streams_one_completed() -> None:
    """A model that cannot stream still gives a stream: one Completed event."""
    async with open_core(settings(provider="mock", model="dall-e-2")) as core:
        events = [e async for e in core.images.generate_stream(GenerateRequest(prompt="fox", size="256x256"))]
    assert len(events) == 1
    assert isinstance(events[0], Completed)


async def test_thread_provider_refuses_edits_before_any_call() -> None:
    """The thread service only generates: edit and vary are refused up front."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    thread = settings(provider="thread", thread_token="t", model="dall-e-2")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http, open_core(thread, http=http) as core:
        png = InputImage(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
        with pytest.raises(InvalidOption, match="cannot edit images"):
            await core.images.edit(EditRequest(prompt="x", images=(png,)))
        with pytest.raises(InvalidOption, match="cannot vary images"):
            await core.images.vary(VaryRequest(image=png))
    assert calls == []


async def test_the_bots_start_up_spares_a_cli_run_beside_it(tmp_path: Path) -> None:
    """A CLI job reserved moments ago is left to its CLI run; a bot job queued before the start is refunded."""
    values = {"provider": "mock", "data_dir": tmp_path}
    async with open_core(settings(**values)) as cli:
        cli_job = await cli.ledger.reserve(JobDraft(kind="generate", user_id=CLI_USER_ID, model="gpt-image-2"), 0)
        bot_job = await cli.ledger.reserve(JobDraft(kind="generate", user_id="42", model="gpt-image-2"), 0)
        async with open_core(settings(**values), recover=True) as bot:
            assert bot.recovery is not None
            assert bot.recovery.refunded == (bot_job,)
            assert await cli.ledger.start(cli_job)
            assert await cli.ledger.settle(cli_job, 0)
