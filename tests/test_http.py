"""bot.api.http: the retry policy (unit and through a provider over respx) and the status/code → error mapping."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from bot.api import http as http_mod
from bot.api.http import RetryPolicy, backoff, error_from_body, error_from_response, retry_after, send, should_retry
from bot.api.openai import OpenAIProvider
from bot.api.types import GenerateRequest
from bot.catalogue import Catalogue, ModelSpec
from bot.errors import (
    AuthenticationFailed,
    BadImage,
    BadRequest,
    ContentRejected,
    EaselError,
    ModelUnavailable,
    PermissionDenied,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from tests import images
from tests.conftest import NoSleep
from tests.tracking import TrackingTransport

GEN_URL = "https://api.openai.com/v1/images/generations"


@pytest.fixture
def spec(catalogue: Catalogue) -> ModelSpec:
    return catalogue.get("gpt-image-2")


@pytest.fixture
def policy(no_sleep: NoSleep) -> RetryPolicy:
    return RetryPolicy(sleep=no_sleep)


@pytest.fixture
def provider(client: httpx.AsyncClient, policy: RetryPolicy) -> OpenAIProvider:
    return OpenAIProvider(client, api_key="sk-test-key-123456", retry=policy)


REQ = GenerateRequest(prompt="a red fox in snow")


def ok() -> httpx.Response:
    return httpx.Response(200, json={"created": 1, "data": [{"b64_json": images.b64(images.png(4, 4))}]})


def err(status: int, code: str | None = None, kind: str = "invalid_request_error", **headers: str) -> httpx.Response:
    body = {"error": {"message": "nope", "type": kind, "param": None, "code": code}}
    return httpx.Response(status, json=body, headers={k.replace("_", "-"): v for k, v in headers.items()})


@pytest.fixture
def frozen_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the jitter deterministic: random() == 0 means no reduction."""
    monkeypatch.setattr(random, "random", lambda: 0.0)


# -- retry_after -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "0"}, 0.0),
        ({"retry-after-ms": "-40"}, 0.0),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "-2"}, 0.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": "whenever"}, None),
        ({"retry-after": ""}, None),
    ],
)
def test_retry_after_parses_headers(headers: dict[str, str], expected: float | None) -> None:
    """retry-after-ms wins over retry-after, seconds may be fractional, negatives clamp to 0, junk is ignored."""
    assert retry_after(httpx.Headers(headers)) == expected


def test_retry_after_http_date_relative_to_now() -> None:
    """An HTTP-date retry-after gives the seconds from `now` until then."""
    now = 1_800_000_000.0
    header = email.utils.formatdate(now + 42, usegmt=True)
    assert retry_after({"retry-after": header}, now=now) == pytest.approx(42.0)


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    """An HTTP date already past means retry now."""
    now = 1_800_000_000.0
    assert retry_after({"retry-after": email.utils.formatdate(now - 300, usegmt=True)}, now=now) == 0.0


def test_retry_after_headers_are_case_insensitive() -> None:
    """Real responses carry httpx.Headers, so header case does not matter."""
    assert retry_after(httpx.Headers({"Retry-After-Ms": "100"})) == pytest.approx(0.1)


# -- backoff -----------------------------------------------------------------------------------------


def test_backoff_doubles_from_initial_delay_and_caps(frozen_jitter: None) -> None:
    """Without jitter the schedule is 0.5, 1, 2, 4, 8, 8 ... seconds."""
    policy = RetryPolicy()
    assert [backoff(policy, n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_jitter_takes_off_at_most_a_quarter(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the largest jitter the delay is 25% shorter; it never grows."""
    monkeypatch.setattr(random, "random", lambda: 1.0)
    assert backoff(RetryPolicy(), 0) == pytest.approx(0.375)
    assert backoff(RetryPolicy(), 10) == pytest.approx(6.0)


@pytest.mark.parametrize("retries", range(6))
def test_backoff_random_jitter_within_bounds(retries: int) -> None:
    """Real random jitter keeps each delay within [75%, 100%] of the nominal step."""
    policy = RetryPolicy()
    nominal = min(0.5 * 2**retries, 8.0)
    for _ in range(200):
        delay = backoff(policy, retries)
        assert delay is not None
        assert 0.75 * nominal <= delay <= nominal


def test_backoff_follows_the_policy_numbers(frozen_jitter: None) -> None:
    """A custom policy's initial and maximum delays are used."""
    policy = RetryPolicy(initial_delay=0.1, max_delay=0.3)
    assert [backoff(policy, n) for n in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.3])


def test_backoff_honours_server_hint_up_to_the_cap() -> None:
    """A server-directed delay is used as-is up to max_retry_after, and means 'give up' above it."""
    policy = RetryPolicy()
    assert backoff(policy, 0, {"retry-after": "7"}) == 7.0
    assert backoff(policy, 5, {"retry-after-ms": "10"}) == pytest.approx(0.01)
    assert backoff(policy, 0, {"retry-after": "120"}) == 120.0
    assert backoff(policy, 0, {"retry-after": "121"}) is None
    assert backoff(RetryPolicy(max_retry_after=5), 0, {"retry-after": "6"}) is None


# -- should_retry ---------------------------------------------------------------------------------------


def _response(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers={k.replace("_", "-"): v for k, v in headers.items()})


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, False), (401, False), (403, False), (404, False), (408, True), (409, True), (422, False), (429, True)]
    + [(s, True) for s in (500, 502, 503, 504, 529)],
)
def test_should_retry_by_status(status: int, expected: bool) -> None:
    """408, 409, 429 and every 5xx are retried; other 4xx are not."""
    response = _response(status)
    assert should_retry(response, error_from_response(response)) is expected


def test_should_retry_obeys_x_should_retry() -> None:
    """`x-should-retry` overrides the status either way."""
    assert should_retry(_response(400, x_should_retry="true"), BadRequest("x")) is True
    assert should_retry(_response(503, x_should_retry="false"), ProviderUnavailable("x")) is False


def test_should_retry_never_retries_content_or_quota_by_default() -> None:
    """Content rejections and exhausted quota are final even on a retryable status."""
    assert should_retry(_response(429), QuotaExhausted("x")) is False
    assert should_retry(_response(500), ContentRejected("x")) is False


# -- error_from_body / error_from_response ---------------------------------------------------------------


def _map(status: int | None, error: dict[str, object], **headers: str) -> EaselError:
    return error_from_body(status, error, httpx.Headers({k.replace("_", "-"): v for k, v in headers.items()}))


def test_mapping_content_policy_violation() -> None:
    """DALL·E's content_policy_violation is a ContentRejected with no stage."""
    error = _map(400, {"type": "invalid_request_error", "code": "content_policy_violation", "message": "x"})
    assert isinstance(error, ContentRejected)
    assert (error.stage, error.categories, error.status, error.code) == (None, (), 400, "content_policy_violation")


def test_mapping_moderation_blocked_with_details() -> None:
    """GPT image moderation_blocked keeps the stage and categories and says what was rejected."""
    error = _map(
        400,
        {
            "type": "image_generation_user_error",
            "code": "moderation_blocked",
            "message": "Your request was rejected by the safety system. safety_violations=[sexual].",
            "moderation_details": {"moderation_stage": "input", "categories": ["sexual", "violence"]},
        },
        x_request_id="req_1",
    )
    assert isinstance(error, ContentRejected)
    assert (error.stage, error.categories, error.request_id) == ("input", ("sexual", "violence"), "req_1")
    assert "prompt" in error.message


@pytest.mark.parametrize(
    "details",
    [None, {}, {"moderation_stage": "output", "categories": None}, {"categories": ["ok", 3, None]}],
    ids=["none", "empty", "null-categories", "mixed-categories"],
)
def test_mapping_moderation_details_tolerates_odd_shapes(details: object) -> None:
    """Missing, empty or oddly typed moderation_details still map to ContentRejected (no crash)."""
    body: dict[str, object] = {"type": "image_generation_user_error", "code": "moderation_blocked"}
    if details is not None:
        body["moderation_details"] = details
    error = _map(400, body)
    assert isinstance(error, ContentRejected)
    assert all(isinstance(c, str) for c in error.categories)


def test_mapping_azure_content_filter() -> None:
    """Azure's content filter (innererror ResponsibleAIPolicyViolation) is a ContentRejected."""
    error = _map(
        400,
        {
            "code": "content_policy_violation",
            "message": "blocked",
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {}},
        },
        apim_request_id="apim-9",
    )
    assert isinstance(error, ContentRejected)
    assert error.request_id == "apim-9"
    other = _map(400, {"code": "BadRequest", "innererror": {"code": "ResponsibleAIPolicyViolation"}})
    assert isinstance(other, ContentRejected)


@pytest.mark.parametrize(
    ("status", "error", "cls"),
    [
        (400, {"code": "billing_hard_limit_reached", "type": "invalid_request_error"}, QuotaExhausted),
        (429, {"code": "insufficient_quota", "type": "insufficient_quota"}, QuotaExhausted),
        (403, {"code": "billing_not_active"}, QuotaExhausted),
        (404, {"code": "model_not_found"}, ModelUnavailable),
        (400, {"code": "model_not_found"}, ModelUnavailable),
        (404, {"code": "DeploymentNotFound"}, ModelUnavailable),
        (404, {"param": "model", "code": None}, ModelUnavailable),
        (404, {"message": "Not found"}, ProviderUnavailable),
        (401, {"code": "invalid_api_key"}, AuthenticationFailed),
        (403, {"code": None, "message": "Your organization must be verified"}, PermissionDenied),
        (429, {"code": "rate_limit_exceeded", "type": "requests"}, RateLimited),
        (408, {}, ProviderTimeout),
        (413, {}, BadImage),
        (400, {"code": "invalid_image_format"}, BadImage),
        (400, {"code": "invalid_value", "param": "image[]"}, BadImage),
        (400, {"code": "invalid_value", "param": "mask"}, BadImage),
        (400, {"code": "invalid_value", "param": "size"}, BadRequest),
        (409, {}, BadRequest),
        (422, {}, BadRequest),
        (500, {"type": "server_error"}, ProviderUnavailable),
        (503, {}, ProviderUnavailable),
        (None, {"type": "server_error"}, ProviderUnavailable),
    ],
)
def test_mapping_table(status: int | None, error: dict[str, object], cls: type[EaselError]) -> None:
    """Each status/type/code lands on its class (exactly), with status kept."""
    mapped = _map(status, error)
    assert type(mapped) is cls
    assert mapped.status == status


def test_mapping_rate_limit_carries_retry_after() -> None:
    """A 429 keeps the server's retry hint in seconds."""
    error = _map(429, {"code": "rate_limit_exceeded"}, retry_after_ms="1500")
    assert isinstance(error, RateLimited)
    assert error.retry_after == 1.5


def test_mapping_code_falls_back_to_type() -> None:
    """`code` on the error is the provider's code, else its type."""
    assert _map(500, {"type": "server_error", "code": None}).code == "server_error"
    assert _map(400, {"type": "invalid_request_error", "code": "invalid_value"}).code == "invalid_value"


def test_bad_request_message_names_param_and_redacts_keys() -> None:
    """BadRequest quotes the provider's reason and parameter, with anything key-like redacted."""
    error = _map(
        400, {"code": "invalid_value", "param": "size", "message": "Invalid size for key sk-abcdef1234567890: 7x7"}
    )
    assert isinstance(error, BadRequest)
    assert "(size)" in error.message
    assert "sk-abcdef1234567890" not in error.message
    assert "7x7" in error.message


def test_bad_request_message_is_bounded() -> None:
    """A huge provider message is cut to a readable length."""
    error = _map(400, {"message": "x" * 5000})
    assert len(error.message) < 300


@pytest.mark.parametrize(
    ("content", "content_type", "cls"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "text/html", ProviderUnavailable),
        (b"", "application/json", ProviderUnavailable),
        (b"\xff\xfe\x00garbage", "application/json", ProviderUnavailable),
        (b'["a", "list"]', "application/json", ProviderUnavailable),
        (b'{"error": "model overloaded"}', "application/json", ProviderUnavailable),
    ],
    ids=["html", "empty", "undecodable", "list", "string-error"],
)
def test_error_from_response_survives_non_json_bodies(content: bytes, content_type: str, cls: type[EaselError]) -> None:
    """Non-JSON, empty or oddly shaped error bodies still map by status."""
    response = httpx.Response(502, content=content, headers={"content-type": content_type})
    mapped = error_from_response(response)
    assert type(mapped) is cls
    assert mapped.status == 502


def test_error_from_response_string_error_becomes_message() -> None:
    """`{"error": "..."}` (some compatible servers) is used as the message of a 4xx."""
    response = httpx.Response(400, json={"error": "prompt too long"})
    mapped = error_from_response(response)
    assert isinstance(mapped, BadRequest)
    assert "prompt too long" in mapped.message


def test_error_from_response_flat_body() -> None:
    """A body without an `error` wrapper is read as the error object itself."""
    response = httpx.Response(404, json={"code": "model_not_found", "message": "no such model"})
    assert isinstance(error_from_response(response), ModelUnavailable)


# -- send() directly ------------------------------------------------------------------------------------


async def test_send_returns_success_untouched(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """A 2xx response is returned without retries or sleeps."""
    respx_mock.get("https://x.test/ok").mock(return_value=httpx.Response(201, text="made"))
    sleeps = NoSleep()
    response = await send(
        client, lambda: client.build_request("GET", "https://x.test/ok"), policy=RetryPolicy(sleep=sleeps)
    )
    assert (response.status_code, response.text, sleeps.delays) == (201, "made", [])


async def test_send_rebuilds_the_request_for_each_attempt(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    """Every attempt sends a freshly built request (so streamed bodies are never reused)."""
    respx_mock.post("https://x.test/r").mock(side_effect=[err(500), err(500), httpx.Response(200)])
    built: list[httpx.Request] = []

    def build() -> httpx.Request:
        built.append(client.build_request("POST", "https://x.test/r", content=b"body"))
        return built[-1]

    await send(client, build, policy=RetryPolicy(sleep=NoSleep()))
    assert len(built) == 3
    assert len({id(r) for r in built}) == 3


async def test_send_read_timeout_not_billable(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """A read timeout on a call marked not billable is a ProviderTimeout without maybe_billed, still not retried."""
    route = respx_mock.get("https://x.test/t").mock(side_effect=httpx.ReadTimeout)
    with pytest.raises(ProviderTimeout) as caught:
        await send(
            client,
            lambda: client.build_request("GET", "https://x.test/t"),
            policy=RetryPolicy(sleep=NoSleep()),
            billable=False,
        )
    assert caught.value.maybe_billed is False
    assert route.call_count == 1


async def test_send_stream_error_body_that_breaks_is_provider_unavailable(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    """A streamed error response whose body breaks while being read still ends as an EaselError, response closed."""

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b'{"error": {"mess'
            raise httpx.ReadError("connection reset")

    respx_mock.post("https://x.test/s").mock(return_value=httpx.Response(500, stream=Broken()))
    with pytest.raises(ProviderUnavailable):
        await send(
            client,
            lambda: client.build_request("POST", "https://x.test/s"),
            policy=RetryPolicy(max_retries=0, sleep=NoSleep()),
            stream=True,
        )


# -- retries through a provider ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [(408, ProviderTimeout), (409, BadRequest), (429, RateLimited), (500, ProviderUnavailable)]
    + [(s, ProviderUnavailable) for s in (502, 503, 504)],
)
async def test_retryable_statuses_retried_then_raised(
    respx_mock: respx.MockRouter,
    provider: OpenAIProvider,
    spec: ModelSpec,
    no_sleep: NoSleep,
    status: int,
    cls: type[EaselError],
) -> None:
    """408/409/429/5xx are tried 1 + max_retries times, then the mapped error is raised."""
    route = respx_mock.post(GEN_URL).mock(return_value=err(status, kind="server_error" if status >= 500 else "x"))
    with pytest.raises(cls) as caught:
        await provider.generate(spec, REQ)
    assert type(caught.value) is cls
    assert route.call_count == 1 + http_mod.DEFAULT_MAX_RETRIES
    assert len(no_sleep.delays) == http_mod.DEFAULT_MAX_RETRIES
    if isinstance(caught.value, ProviderTimeout):
        assert caught.value.maybe_billed is False


@pytest.mark.parametrize("max_retries", [0, 1, 4])
async def test_max_retries_is_respected(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, spec: ModelSpec, max_retries: int
) -> None:
    """The number of attempts is exactly 1 + max_retries."""
    sleeps = NoSleep()
    provider = OpenAIProvider(client, api_key="k", retry=RetryPolicy(max_retries=max_retries, sleep=sleeps))
    route = respx_mock.post(GEN_URL).mock(return_value=err(503))
    with pytest.raises(ProviderUnavailable):
        await provider.generate(spec, REQ)
    assert route.call_count == 1 + max_retries
    assert len(sleeps.delays) == max_retries


async def test_backoff_schedule_through_provider(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, spec: ModelSpec
) -> None:
    """Failed attempts wait a jittered 0.5, 1, 2, 4, 8, 8 s (each within 75-100% of nominal)."""
    sleeps = NoSleep()
    provider = OpenAIProvider(client, api_key="k", retry=RetryPolicy(max_retries=6, sleep=sleeps))
    respx_mock.post(GEN_URL).mock(return_value=err(500))
    with pytest.raises(ProviderUnavailable):
        await provider.generate(spec, REQ)
    nominal = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert len(sleeps.delays) == len(nominal)
    for delay, step in zip(sleeps.delays, nominal, strict=True):
        assert 0.75 * step <= delay <= step


async def test_success_on_second_try_returns_result(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, no_sleep: NoSleep
) -> None:
    """A 500 followed by a 200 returns the 200's images after one short wait."""
    route = respx_mock.post(GEN_URL).mock(side_effect=[err(500), ok()])
    result = await provider.generate(spec, REQ)
    assert route.call_count == 2
    assert len(result.images) == 1
    assert len(no_sleep.delays) == 1
    assert 0.375 <= no_sleep.delays[0] <= 0.5


@pytest.mark.parametrize(
    ("status", "code", "kind", "cls"),
    [
        (400, "content_policy_violation", "invalid_request_error", ContentRejected),
        (400, "moderation_blocked", "image_generation_user_error", ContentRejected),
        (400, "invalid_value", "invalid_request_error", BadRequest),
        (400, "billing_hard_limit_reached", "invalid_request_error", QuotaExhausted),
        (401, "invalid_api_key", "invalid_request_error", AuthenticationFailed),
        (403, None, "invalid_request_error", PermissionDenied),
        (404, "model_not_found", "invalid_request_error", ModelUnavailable),
        (429, "insufficient_quota", "insufficient_quota", QuotaExhausted),
    ],
)
async def test_final_errors_are_not_retried(
    respx_mock: respx.MockRouter,
    provider: OpenAIProvider,
    spec: ModelSpec,
    no_sleep: NoSleep,
    status: int,
    code: str | None,
    kind: str,
    cls: type[EaselError],
) -> None:
    """Content rejections, parameter, auth, permission, model and quota errors are raised after one call."""
    route = respx_mock.post(GEN_URL).mock(return_value=err(status, code, kind))
    with pytest.raises(cls):
        await provider.generate(spec, REQ)
    assert route.call_count == 1
    assert no_sleep.delays == []


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after-ms": "1200", "retry-after": "30"}, 1.2),
        ({"retry-after": "120"}, 120.0),
    ],
)
async def test_retry_after_headers_set_the_wait(
    respx_mock: respx.MockRouter,
    provider: OpenAIProvider,
    spec: ModelSpec,
    no_sleep: NoSleep,
    headers: dict[str, str],
    expected: float,
) -> None:
    """A 429 with retry-after-ms / retry-after waits exactly that long before the retry."""
    limited = httpx.Response(429, json={"error": {"code": "rate_limit_exceeded", "type": "requests"}}, headers=headers)
    route = respx_mock.post(GEN_URL).mock(side_effect=[limited, ok()])
    await provider.generate(spec, REQ)
    assert route.call_count == 2
    assert no_sleep.delays == [pytest.approx(expected)]


async def test_retry_after_http_date_sets_the_wait(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, no_sleep: NoSleep
) -> None:
    """A retry-after HTTP date 30 s ahead waits about 30 s."""
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    busy = httpx.Response(503, json={"error": {"type": "server_error"}}, headers={"retry-after": when})
    respx_mock.post(GEN_URL).mock(side_effect=[busy, ok()])
    await provider.generate(spec, REQ)
    assert len(no_sleep.delays) == 1
    assert 27.0 <= no_sleep.delays[0] <= 31.0


@pytest.mark.parametrize("headers", [{"retry-after": "121"}, {"retry-after-ms": "600000"}, {"retry-after": "3600"}])
async def test_retry_after_beyond_cap_means_no_retry(
    respx_mock: respx.MockRouter,
    provider: OpenAIProvider,
    spec: ModelSpec,
    no_sleep: NoSleep,
    headers: dict[str, str],
) -> None:
    """A server asking to wait more than 120 s gets no retry; the RateLimited carries its hint."""
    limited = httpx.Response(429, json={"error": {"code": "rate_limit_exceeded"}}, headers=headers)
    route = respx_mock.post(GEN_URL).mock(return_value=limited)
    with pytest.raises(RateLimited) as caught:
        await provider.generate(spec, REQ)
    assert route.call_count == 1
    assert no_sleep.delays == []
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 120


async def test_x_should_retry_false_stops_a_retryable_status(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, no_sleep: NoSleep
) -> None:
    """`x-should-retry: false` on a 503 means one attempt only."""
    route = respx_mock.post(GEN_URL).mock(return_value=err(503, x_should_retry="false"))
    with pytest.raises(ProviderUnavailable):
        await provider.generate(spec, REQ)
    assert route.call_count == 1
    assert no_sleep.delays == []


async def test_x_should_retry_true_retries_a_final_status(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, no_sleep: NoSleep
) -> None:
    """`x-should-retry: true` on a 400 is retried like a 5xx, then succeeds."""
    route = respx_mock.post(GEN_URL).mock(side_effect=[err(400, "invalid_value", x_should_retry="true"), ok()])
    result = await provider.generate(spec, REQ)
    assert route.call_count == 2
    assert len(result.images) == 1
    assert len(no_sleep.delays) == 1


async def test_x_should_retry_true_still_bounded(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """`x-should-retry: true` does not lift max_retries."""
    route = respx_mock.post(GEN_URL).mock(return_value=err(400, "invalid_value", x_should_retry="true"))
    with pytest.raises(BadRequest):
        await provider.generate(spec, REQ)
    assert route.call_count == 1 + http_mod.DEFAULT_MAX_RETRIES


async def test_connect_error_retried_then_succeeds(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, no_sleep: NoSleep
) -> None:
    """Refused connections never reached the provider, so they are retried; a later success is returned."""
    route = respx_mock.post(GEN_URL).mock(side_effect=[httpx.ConnectError, httpx.ConnectError, ok()])
    result = await provider.generate(spec, REQ)
    assert route.call_count == 3
    assert len(result.images) == 1
    assert len(no_sleep.delays) == 2
    assert 0.375 <= no_sleep.delays[0] <= 0.5
    assert 0.75 <= no_sleep.delays[1] <= 1.0


async def test_connect_error_every_time_is_provider_unavailable(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """Connections that always fail end as ProviderUnavailable after all retries."""
    route = respx_mock.post(GEN_URL).mock(side_effect=httpx.ConnectError)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.generate(spec, REQ)
    assert route.call_count == 3
    assert "reached" in caught.value.message


@pytest.mark.parametrize("exc", [httpx.ConnectTimeout, httpx.PoolTimeout])
async def test_connect_timeout_every_time_is_unbilled_timeout(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, exc: type[Exception]
) -> None:
    """Connection (or pool) timeouts are retried and end as a ProviderTimeout that cannot have been billed."""
    route = respx_mock.post(GEN_URL).mock(side_effect=exc)
    with pytest.raises(ProviderTimeout) as caught:
        await provider.generate(spec, REQ)
    assert route.call_count == 3
    assert caught.value.maybe_billed is False


@pytest.mark.parametrize("exc", [httpx.ReadTimeout, httpx.WriteTimeout])
async def test_read_timeout_is_maybe_billed_and_not_retried(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, no_sleep: NoSleep, exc: type[Exception]
) -> None:
    """A timeout after the request went out may have been billed: ProviderTimeout(maybe_billed=True), one call."""
    route = respx_mock.post(GEN_URL).mock(side_effect=exc)
    with pytest.raises(ProviderTimeout) as caught:
        await provider.generate(spec, REQ)
    assert route.call_count == 1
    assert caught.value.maybe_billed is True
    assert no_sleep.delays == []


@pytest.mark.parametrize(
    ("exc", "billed"), [(httpx.ReadError, True), (httpx.RemoteProtocolError, True), (httpx.WriteError, False)]
)
async def test_broken_connection_after_sending_is_not_retried(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, exc: type[Exception], billed: bool
) -> None:
    """A connection that broke after the request was sent is ProviderUnavailable after exactly one call; one
    that broke while the answer was read (the provider had the whole request) may have been billed."""
    route = respx_mock.post(GEN_URL).mock(side_effect=exc)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.generate(spec, REQ)
    assert route.call_count == 1
    assert caught.value.maybe_billed is billed
    assert ("may still have been billed" in caught.value.message) is billed


async def test_a_broken_read_on_a_call_that_costs_nothing_is_not_billed(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    """A poll or a download (`billable=False`) that breaks while reading is a plain ProviderUnavailable."""
    respx_mock.get("https://x.test/poll").mock(side_effect=httpx.ReadError("reset"))
    with pytest.raises(ProviderUnavailable) as caught:
        await send(
            client,
            lambda: client.build_request("GET", "https://x.test/poll"),
            policy=RetryPolicy(max_retries=0, sleep=NoSleep()),
            billable=False,
        )
    assert caught.value.maybe_billed is False


async def test_retried_requests_carry_the_same_body(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """Every retry sends the same JSON body and headers as the first attempt."""
    route = respx_mock.post(GEN_URL).mock(side_effect=[err(502), err(502), ok()])
    await provider.generate(spec, REQ)
    bodies = {call.request.content for call in route.calls}
    auths = {call.request.headers["authorization"] for call in route.calls}
    assert len(bodies) == 1
    assert auths == {"Bearer sk-test-key-123456"}


async def test_error_responses_are_closed_after_retries(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, tracking: TrackingTransport
) -> None:
    """Every failed attempt's response is closed before the next one (checked by the tracking transport)."""
    respx_mock.post(GEN_URL).mock(return_value=err(500))
    with pytest.raises(ProviderUnavailable):
        await provider.generate(spec, REQ)
    assert tracking.opened == 3
    assert tracking.open == 0
