"""ThreadProvider against a loopback fake of the thread/entry API, over a real httpx client."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from bot.api.client import ImagesClient
from bot.api.http import RetryPolicy
from bot.api.provider import ImageProvider
from bot.api.thread import ThreadProvider
from bot.api.types import Completed, EditRequest, GenerateRequest, InputImage, VaryRequest
from bot.catalogue import Catalogue
from bot.errors import (
    AuthenticationFailed,
    ContentRejected,
    InvalidOption,
    ModelUnavailable,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
)
from tests.conftest import NoSleep
from tests.fakes.thread_api import ThreadApi

TOKEN = "thread-secret-token-0123456789"
PROMPT = "Cats and dogs with lightsabers"
FOREIGN = "127.0.0.2"

MakeApi = Callable[..., ThreadApi]
MakeProvider = Callable[..., ThreadProvider]


@pytest.fixture
def make_api() -> Iterator[MakeApi]:
    """Start fakes with the given knobs; every one is shut down (threads joined) at teardown."""
    started: list[ThreadApi] = []

    def make(**options: Any) -> ThreadApi:
        api = ThreadApi(token=TOKEN, **options).start()
        started.append(api)
        return api

    yield make
    for api in started:
        api.close()


@pytest.fixture
def api(make_api: MakeApi) -> ThreadApi:
    return make_api()


@pytest.fixture
async def http(make_api: MakeApi) -> AsyncIterator[httpx.AsyncClient]:
    # Depends on make_api so that the client closes its connections before the fakes stop.
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


@pytest.fixture
def make_provider(http: httpx.AsyncClient, no_sleep: NoSleep) -> MakeProvider:
    """Providers on the shared client whose sleeps are recorded and whose clock is the time slept."""

    def make(api: ThreadApi, **options: Any) -> ThreadProvider:
        options.setdefault("token", TOKEN)
        options.setdefault("retry", RetryPolicy(sleep=no_sleep))
        options.setdefault("clock", lambda: sum(no_sleep.delays))
        return ThreadProvider(http, base_url=api.base_url, **options)

    return make


def _request(n: int = 2, size: str = "512x512") -> GenerateRequest:
    return GenerateRequest(prompt=PROMPT, model="dall-e-2", n=n, size=size)


def test_satisfies_the_provider_protocol(http: httpx.AsyncClient) -> None:
    provider: ImageProvider = ThreadProvider(http, token=TOKEN)
    assert provider.name == "thread"
    assert provider.follows_lifecycle is False
    assert provider.endpoints == frozenset({"generate"})
    assert TOKEN not in repr(provider)


async def test_happy_path(api: ThreadApi, make_provider: MakeProvider, catalogue: Catalogue) -> None:
    provider = make_provider(api, credit_usd=0.003)
    result = await provider.generate(catalogue.get("dall-e-2"), _request())

    assert len(result.images) == 2
    for image in result.images:
        assert (image.mime, image.width, image.height) == ("image/png", 512, 512)
        assert image.data.startswith(b"\x89PNG")
    assert result.credits == 14.0
    assert result.model == "dall-e-2"
    assert result.provider == "thread"
    assert result.size == "512x512"

    (create,) = api.calls("POST", r"^/api/v1/threads$")
    assert create.form == {"ai_version_code": "dalle2_text2img"}
    thread_guid = result.extra["thread"]
    assert result.extra == {"thread": thread_guid, "credit_usd": "0.003"}
    (entry,) = api.calls("POST", rf"^/api/v1/threads/{thread_guid}/entry$")
    assert entry.form == {"type": "request", "n": "2", "size": "512x512", "prompt": PROMPT}
    for call in (create, entry, *api.calls("GET", r"/entries$")):
        assert call.headers["authorization"] == f"Bearer {TOKEN}"
        assert call.headers["accept"] == "application/json"
    for call in (create, entry):
        assert call.headers["content-type"] == "application/x-www-form-urlencoded"

    # The request id is the response entry's guid, as listed by the fake.
    assert result.request_id is not None
    assert result.request_id not in (thread_guid, "")
    downloads = api.calls("GET", r"^/storage/dalle2_text2img/.*\.png$")
    assert len(downloads) == 2
    # Result images are fetched anonymously: the bearer token stays with the API calls.
    assert all("authorization" not in call.headers for call in downloads)


async def test_polls_with_exponential_backoff(
    make_api: MakeApi, make_provider: MakeProvider, no_sleep: NoSleep, catalogue: Catalogue
) -> None:
    api = make_api(pending_polls=5)
    provider = make_provider(api, poll_initial=0.5, poll_max=4.0)
    result = await provider.generate(catalogue.get("dall-e-2"), _request(n=1, size="256x256"))

    assert no_sleep.delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert api.polls == 6
    assert [(i.width, i.height) for i in result.images] == [(256, 256)]


async def test_times_out_as_maybe_billed(
    make_api: MakeApi, make_provider: MakeProvider, no_sleep: NoSleep, catalogue: Catalogue
) -> None:
    api = make_api(never_answer=True)
    provider = make_provider(api, poll_timeout=20.0, poll_initial=1.0, poll_max=8.0)
    with pytest.raises(ProviderTimeout) as caught:
        await provider.generate(catalogue.get("dall-e-2"), _request())

    assert caught.value.maybe_billed is True
    assert "20 seconds" in caught.value.message
    # The last wait is cut short so the final poll lands on the deadline, not past it.
    assert no_sleep.delays == [1.0, 2.0, 4.0, 8.0, 5.0]
    assert api.polls == 5
    assert not api.calls("GET", r"^/storage/")


async def test_wrong_token_is_an_authentication_failure(
    api: ThreadApi, make_provider: MakeProvider, catalogue: Catalogue, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-right-token-987654"
    provider = make_provider(api, token=wrong)
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationFailed) as caught:
        await provider.generate(catalogue.get("dall-e-2"), _request())

    assert caught.value.status == 401
    assert wrong not in str(caught.value)
    assert wrong not in caplog.text
    # A refused key is not retried, and nothing after the thread creation was attempted.
    assert [(r.method, r.path) for r in api.requests] == [("POST", "/api/v1/threads")]


async def test_token_never_reaches_logs(
    api: ThreadApi, make_provider: MakeProvider, catalogue: Catalogue, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await make_provider(api).generate(catalogue.get("dall-e-2"), _request(n=1))
    assert caplog.records
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("error", "code", "expected"),
    [
        ("Your request was rejected by the upstream service.", None, ProviderUnavailable),
        ("Your request was rejected as a result of our safety system.", "content_policy_violation", ContentRejected),
        ({"code": "content_policy_violation", "message": "Blocked by the safety system."}, None, ContentRejected),
        ({"code": "insufficient_quota", "message": "No credits left."}, None, QuotaExhausted),
        ('{"error": {"code": "moderation_blocked", "message": "no"}}', None, ContentRejected),
        ("content_policy_violation", None, ContentRejected),
    ],
)
async def test_entry_error_is_typed(
    make_api: MakeApi,
    make_provider: MakeProvider,
    catalogue: Catalogue,
    error: object,
    code: str | None,
    expected: type[Exception],
) -> None:
    api = make_api(entry_error=error, entry_error_code=code)
    with pytest.raises(expected) as caught:
        await make_provider(api).generate(catalogue.get("dall-e-2"), _request())
    assert type(caught.value) is expected
    assert not api.calls("GET", r"^/storage/")


async def test_entry_error_text_is_redacted(
    make_api: MakeApi, make_provider: MakeProvider, catalogue: Catalogue
) -> None:
    api = make_api(entry_error=f"upstream refused Authorization: Bearer {TOKEN} for {TOKEN}")
    with pytest.raises(ProviderUnavailable) as caught:
        await make_provider(api).generate(catalogue.get("dall-e-2"), _request())
    assert TOKEN not in caught.value.message
    assert "upstream refused" in caught.value.message
    assert caught.value.maybe_billed is False  # the service said it failed: its word, refunded


@pytest.fixture
def foreign_api(make_api: MakeApi) -> ThreadApi:
    """A fake whose images live on 127.0.0.2: reachable, but not the API's own host."""
    try:
        return make_api(image_host=FOREIGN)
    except OSError:
        pytest.skip(f"cannot listen on {FOREIGN} here")


async def test_foreign_image_host_is_refused(
    foreign_api: ThreadApi, make_provider: MakeProvider, catalogue: Catalogue
) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        await make_provider(foreign_api).generate(catalogue.get("dall-e-2"), _request())
    assert FOREIGN in caught.value.message
    assert not foreign_api.calls("GET", r"^/storage/")
    # The service answered with images it made (and billed): not ours to refund.
    assert caught.value.maybe_billed is True


async def test_admin_can_allow_another_image_host(
    foreign_api: ThreadApi, make_provider: MakeProvider, catalogue: Catalogue
) -> None:
    api = foreign_api
    provider = make_provider(api, download_hosts=[FOREIGN])
    result = await provider.generate(catalogue.get("dall-e-2"), _request())
    assert len(result.images) == 2
    assert len(api.calls("GET", r"^/storage/")) == 2


async def test_download_byte_cap(api: ThreadApi, make_provider: MakeProvider, catalogue: Catalogue) -> None:
    provider = make_provider(api, max_download_bytes=100)
    with pytest.raises(ProviderUnavailable, match="download cap") as caught:
        await provider.generate(catalogue.get("dall-e-2"), _request(n=1))
    assert caught.value.maybe_billed is True


async def test_model_without_thread_code_is_unavailable(
    api: ThreadApi, make_provider: MakeProvider, catalogue: Catalogue
) -> None:
    spec = catalogue.get("gpt-image-1")
    assert spec.thread_version_code is None
    with pytest.raises(ModelUnavailable) as caught:
        await make_provider(api).generate(spec, GenerateRequest(prompt=PROMPT))
    assert "thread provider" in caught.value.message
    assert caught.value.model == "gpt-image-1"
    assert api.requests == []


async def test_edit_and_variations_are_refused(
    api: ThreadApi, make_provider: MakeProvider, catalogue: Catalogue
) -> None:
    provider = make_provider(api)
    spec = catalogue.get("dall-e-2")
    image = InputImage(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InvalidOption) as caught:
        await provider.edit(spec, EditRequest(prompt=PROMPT, images=(image,)))
    assert caught.value.param == "model"
    assert "only creates images from text" in caught.value.message
    with pytest.raises(InvalidOption):
        await provider.variations(spec, VaryRequest(image=image))
    with pytest.raises(InvalidOption):
        async for _ in provider.stream_edit(spec, EditRequest(prompt=PROMPT, images=(image,))):
            pass
    assert api.requests == []
    await provider.aclose()


async def test_stream_generate_yields_one_completed(
    api: ThreadApi, make_provider: MakeProvider, catalogue: Catalogue
) -> None:
    events = [event async for event in make_provider(api).stream_generate(catalogue.get("dall-e-2"), _request(n=1))]
    assert len(events) == 1
    assert isinstance(events[0], Completed)
    assert events[0].result.credits == 14.0


async def test_through_the_images_client(api: ThreadApi, make_provider: MakeProvider, catalogue: Catalogue) -> None:
    # Long after dall-e-2's shutdown at OpenAI: the thread provider does not follow that lifecycle.
    client = ImagesClient(make_provider(api), catalogue, default_model="dall-e-2", today=lambda: dt.date(2030, 1, 1))
    result = await client.generate(GenerateRequest(prompt=PROMPT, n=1, size="1024x1024", user="12345"))

    assert [(i.width, i.height) for i in result.images] == [(1024, 1024)]
    assert result.model == "dall-e-2"
    assert result.provider == "thread"
    assert result.credits == 14.0
    (entry,) = api.calls("POST", r"/entry$")
    assert entry.form == {"type": "request", "n": "1", "size": "1024x1024", "prompt": PROMPT}
