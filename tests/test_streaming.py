"""Streaming generate/edit over SSE (respx), and the SSE reader bot.api.sse.iter_sse."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx
import pytest
import respx

from bot.api.http import RetryPolicy
from bot.api.openai import AzureProvider, OpenAIProvider
from bot.api.sse import iter_sse
from bot.api.types import Completed, EditRequest, GenerateRequest, InputImage, PartialImage, StreamEvent, Usage
from bot.catalogue import Catalogue, ModelSpec
from bot.errors import (
    BadRequest,
    ContentRejected,
    EaselError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    StreamInterrupted,
)
from tests import images
from tests.conftest import NoSleep
from tests.tracking import TrackingTransport

GEN_URL = "https://api.openai.com/v1/images/generations"
EDIT_URL = "https://api.openai.com/v1/images/edits"

PARTIAL_0 = images.png(8, 8, (10, 0, 0, 255))
PARTIAL_1 = images.png(8, 8, (20, 0, 0, 255))
FINAL = images.png(32, 16)
USAGE = {
    "input_tokens": 25,
    "input_tokens_details": {"text_tokens": 25, "image_tokens": 0},
    "output_tokens": 1756,
    "total_tokens": 1781,
}


def sse(event: str | None, payload: dict[str, Any] | str) -> bytes:
    """One SSE event; `event=None` leaves out the `event:` line."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def partial(b: bytes, index: int, op: str = "image_generation", **extra: Any) -> bytes:
    kind = f"{op}.partial_image"
    return sse(kind, {"type": kind, "b64_json": images.b64(b), "partial_image_index": index, **extra})


def completed(b: bytes = FINAL, op: str = "image_generation", **extra: Any) -> bytes:
    kind = f"{op}.completed"
    return sse(kind, {"type": kind, "b64_json": images.b64(b), **extra})


def stream_response(*chunks: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        200, content=b"".join(chunks), headers={"content-type": "text/event-stream; charset=utf-8", **(headers or {})}
    )


class Breaking(httpx.AsyncByteStream):
    """A response body that sends `chunks` and then fails with `error`, like a connection dropping."""

    def __init__(self, *chunks: bytes, error: Exception) -> None:
        self.chunks = chunks
        self.error = error
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        raise self.error

    async def aclose(self) -> None:
        self.closed = True


def breaking_response(*chunks: bytes, error: Exception, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        200,
        stream=Breaking(*chunks, error=error),
        headers={"content-type": "text/event-stream", **(headers or {})},
    )


async def collect(events: AsyncIterator[StreamEvent], into: list[StreamEvent] | None = None) -> list[StreamEvent]:
    """Drain a provider stream (closing it properly), appending to `into` as events arrive."""
    got: list[StreamEvent] = [] if into is None else into
    async with aclosing(events) as stream:
        async for event in stream:
            got.append(event)
    return got


@pytest.fixture
def provider(client: httpx.AsyncClient, no_sleep: NoSleep) -> OpenAIProvider:
    return OpenAIProvider(client, api_key="sk-stream-test-0000", retry=RetryPolicy(sleep=no_sleep))


@pytest.fixture
def spec(catalogue: Catalogue) -> ModelSpec:
    return catalogue.get("gpt-image-2")


REQ = GenerateRequest(prompt="a paper crane", partial_images=2)


# -- successful streams --------------------------------------------------------------------------------------


async def test_stream_generate_partials_then_completed(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """Two partial images arrive as PartialImage events, then one Completed with the decoded image and usage."""
    route = respx_mock.post(GEN_URL).mock(
        return_value=stream_response(
            partial(PARTIAL_0, 0),
            partial(PARTIAL_1, 1),
            completed(FINAL, size="1024x1024", quality="medium", background="opaque", output_format="png", usage=USAGE),
            headers={"x-request-id": "req_stream"},
        )
    )
    events = await collect(provider.stream_generate(spec, REQ))
    assert events[:2] == [
        PartialImage(index=0, sequence=0, data=PARTIAL_0, mime="image/png"),
        PartialImage(index=0, sequence=1, data=PARTIAL_1, mime="image/png"),
    ]
    assert len(events) == 3
    done = events[2]
    assert isinstance(done, Completed)
    result = done.result
    assert [(i.data, i.mime, i.width, i.height) for i in result.images] == [(FINAL, "image/png", 32, 16)]
    assert result.usage == Usage(input_text_tokens=25, output_image_tokens=1756)
    assert (result.size, result.quality, result.background, result.output_format) == (
        "1024x1024",
        "medium",
        "opaque",
        "png",
    )
    assert (result.model, result.provider, result.request_id) == ("gpt-image-2", "openai", "req_stream")
    body = json.loads(route.calls.last.request.content)
    assert body == {"model": "gpt-image-2", "prompt": "a paper crane", "n": 1, "stream": True, "partial_images": 2}


async def test_stream_partial_mime_follows_output_format(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """A partial image sent as jpeg is labelled image/jpeg."""
    jpg = images.jpeg(8, 8)
    respx_mock.post(GEN_URL).mock(
        return_value=stream_response(partial(jpg, 0, output_format="jpeg"), completed(images.jpeg(16, 16)))
    )
    events = await collect(provider.stream_generate(spec, REQ))
    assert events[0] == PartialImage(index=0, sequence=0, data=jpg, mime="image/jpeg")
    assert isinstance(events[1], Completed)
    assert events[1].result.images[0].mime == "image/jpeg"


async def test_stream_without_partials(respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec) -> None:
    """partial_images=0: just one completed event, giving one Completed."""
    respx_mock.post(GEN_URL).mock(return_value=stream_response(completed()))
    events = await collect(provider.stream_generate(spec, GenerateRequest(prompt="x")))
    assert len(events) == 1
    assert isinstance(events[0], Completed)


async def test_stream_several_images(respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec) -> None:
    """n=2: partials of the second image get index 1, and the Completed holds both finals in order."""
    second = images.png(16, 32)
    respx_mock.post(GEN_URL).mock(
        return_value=stream_response(
            partial(PARTIAL_0, 0), completed(FINAL), partial(PARTIAL_1, 0), completed(second, usage=USAGE)
        )
    )
    events = await collect(provider.stream_generate(spec, GenerateRequest(prompt="x", n=2, partial_images=1)))
    partials = [e for e in events if isinstance(e, PartialImage)]
    assert [(p.index, p.sequence) for p in partials] == [(0, 0), (1, 0)]
    assert isinstance(events[-1], Completed)
    assert [i.data for i in events[-1].result.images] == [FINAL, second]
    assert sum(isinstance(e, Completed) for e in events) == 1


async def test_stream_ignores_comments_and_unknown_events(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """Keep-alive comments, `id:`/`retry:` fields and unknown event types are skipped."""
    respx_mock.post(GEN_URL).mock(
        return_value=stream_response(
            b": keep-alive\n\n",
            b"retry: 3000\nid: 7\n\n",
            sse("image_generation.in_progress", {"type": "image_generation.in_progress"}),
            partial(PARTIAL_0, 0),
            b": still working\n\n",
            completed(),
        )
    )
    events = await collect(provider.stream_generate(spec, REQ))
    assert [type(e) for e in events] == [PartialImage, Completed]


async def test_stream_event_type_from_payload_when_event_line_missing(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """Data-only events (no `event:` line) are classified by the payload's `type`."""
    respx_mock.post(GEN_URL).mock(
        return_value=stream_response(
            sse(None, {"type": "image_generation.partial_image", "b64_json": images.b64(PARTIAL_0)}),
            sse(None, {"type": "image_generation.completed", "b64_json": images.b64(FINAL)}),
        )
    )
    events = await collect(provider.stream_generate(spec, REQ))
    assert [type(e) for e in events] == [PartialImage, Completed]


async def test_stream_crlf_line_endings(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """A server using CRLF line endings streams just the same."""
    body = (partial(PARTIAL_0, 0) + completed()).replace(b"\n", b"\r\n")
    respx_mock.post(GEN_URL).mock(return_value=stream_response(body))
    events = await collect(provider.stream_generate(spec, REQ))
    assert [type(e) for e in events] == [PartialImage, Completed]


async def test_stream_edit_multipart_and_events(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """stream_edit uploads multipart with stream=true and partial_images, and reads image_edit.* events."""
    route = respx_mock.post(EDIT_URL).mock(
        return_value=stream_response(partial(PARTIAL_0, 0, "image_edit"), completed(FINAL, "image_edit", usage=USAGE))
    )
    source = InputImage(images.png(16, 16), "in.png")
    req = EditRequest(prompt="add snow", images=(source,), partial_images=1, input_fidelity="high")
    events = await collect(provider.stream_edit(spec, req))
    assert [type(e) for e in events] == [PartialImage, Completed]
    content = route.calls.last.request.content
    for name, value in [
        ("stream", "true"),
        ("partial_images", "1"),
        ("input_fidelity", "high"),
        ("prompt", "add snow"),
    ]:
        assert f'name="{name}"\r\n\r\n{value}\r\n'.encode() in content
    assert b'name="image"; filename="in.png"' in content
    assert source.data in content


async def test_azure_stream_url(respx_mock: respx.MockRouter, client: httpx.AsyncClient, spec: ModelSpec) -> None:
    """Azure streams from the deployment URL with api-version, like non-streamed calls."""
    provider = AzureProvider(client, api_key="az", endpoint="https://r.openai.azure.com", api_version="2025-04-01")
    route = respx_mock.post(
        "https://r.openai.azure.com/openai/deployments/gpt-image-2/images/generations",
        params={"api-version": "2025-04-01"},
    ).mock(return_value=stream_response(completed(), headers={"apim-request-id": "apim-s"}))
    events = await collect(provider.stream_generate(spec, REQ))
    assert route.called
    assert isinstance(events[0], Completed)
    assert events[0].result.request_id == "apim-s"


async def test_server_ignoring_stream_returns_one_completed(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """A server that ignores `stream` and answers plain JSON gives a single Completed and no partials."""
    respx_mock.post(GEN_URL).mock(
        return_value=httpx.Response(
            200,
            json={"created": 1, "data": [{"b64_json": images.b64(FINAL)}], "usage": USAGE},
            headers={"x-request-id": "req_json"},
        )
    )
    events = await collect(provider.stream_generate(spec, REQ))
    assert len(events) == 1
    done = events[0]
    assert isinstance(done, Completed)
    assert done.result.images[0].data == FINAL
    assert done.result.usage == Usage(input_text_tokens=25, output_image_tokens=1756)
    assert done.result.request_id == "req_json"


async def test_stream_retried_after_rate_limit(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, no_sleep: NoSleep
) -> None:
    """A 429 before the stream starts is retried like any call; the retry streams normally."""
    limited = httpx.Response(429, json={"error": {"code": "rate_limit_exceeded"}}, headers={"retry-after-ms": "100"})
    route = respx_mock.post(GEN_URL).mock(side_effect=[limited, stream_response(completed())])
    events = await collect(provider.stream_generate(spec, REQ))
    assert route.call_count == 2
    assert no_sleep.delays == [pytest.approx(0.1)]
    assert isinstance(events[-1], Completed)


# -- failing streams -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [httpx.ReadError("connection reset"), httpx.RemoteProtocolError("incomplete chunked read")],
    ids=["read-error", "protocol-error"],
)
async def test_stream_breaking_midway_is_interrupted(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, error: Exception
) -> None:
    """A stream dropping after a partial raises StreamInterrupted; nothing was reported as a success."""
    response = breaking_response(
        partial(PARTIAL_0, 0),
        b'event: image_generation.completed\ndata: {"type": "image_gen',
        error=error,
        headers={"x-request-id": "req_cut"},
    )
    respx_mock.post(GEN_URL).mock(return_value=response)
    events: list[StreamEvent] = []
    with pytest.raises(StreamInterrupted) as caught:
        await collect(provider.stream_generate(spec, REQ), events)
    assert events == [PartialImage(index=0, sequence=0, data=PARTIAL_0, mime="image/png")]
    assert caught.value.request_id == "req_cut"
    # The provider had the request and was answering it: the ledger keeps the estimate, not a refund.
    assert caught.value.maybe_billed is True


async def test_stream_breaking_after_completed_event_still_interrupted(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """Even with one completed image already received, a broken stream is not reported as a success."""
    response = breaking_response(
        partial(PARTIAL_0, 0), completed(FINAL), partial(PARTIAL_1, 0), error=httpx.ReadError("reset")
    )
    respx_mock.post(GEN_URL).mock(return_value=response)
    events: list[StreamEvent] = []
    with pytest.raises(StreamInterrupted):
        await collect(provider.stream_generate(spec, GenerateRequest(prompt="x", n=2, partial_images=1)), events)
    assert not any(isinstance(e, Completed) for e in events)


async def test_stream_read_timeout_is_maybe_billed(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """A stream going silent past the read timeout is a ProviderTimeout that may have been billed."""
    respx_mock.post(GEN_URL).mock(
        return_value=breaking_response(partial(PARTIAL_0, 0), error=httpx.ReadTimeout("silence"))
    )
    with pytest.raises(ProviderTimeout) as caught:
        await collect(provider.stream_generate(spec, REQ))
    assert caught.value.maybe_billed is True


@pytest.mark.parametrize(
    "chunks",
    [
        (partial(PARTIAL_0, 0), partial(PARTIAL_1, 1)),
        (),
        (b": keep-alive\n\n",),
        (partial(PARTIAL_0, 0), b"event: image_generation.completed\n"),
    ],
    ids=["partials-only", "empty", "comment-only", "event-without-data"],
)
async def test_stream_ending_without_completed_is_interrupted(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, chunks: tuple[bytes, ...]
) -> None:
    """A stream that ends cleanly but never sent a completed event raises StreamInterrupted."""
    respx_mock.post(GEN_URL).mock(return_value=stream_response(*chunks))
    events: list[StreamEvent] = []
    with pytest.raises(StreamInterrupted) as caught:
        await collect(provider.stream_generate(spec, REQ), events)
    assert not any(isinstance(e, Completed) for e in events)
    assert caught.value.maybe_billed is True


async def test_an_error_the_stream_reports_is_its_word_not_a_possible_charge(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """A server_error event in the stream is the provider saying it failed: mapped as such, not maybe billed."""
    event = sse("error", {"type": "error", "error": {"type": "server_error", "message": "The server had an error."}})
    respx_mock.post(GEN_URL).mock(return_value=stream_response(partial(PARTIAL_0, 0), event))
    with pytest.raises(ProviderUnavailable) as caught:
        await collect(provider.stream_generate(spec, REQ))
    assert not isinstance(caught.value, StreamInterrupted)
    assert caught.value.maybe_billed is False


async def test_stream_error_event_moderation(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """An `error` event after a partial (output moderation) maps to ContentRejected with stage and categories."""
    error_event = sse(
        "error",
        {
            "type": "error",
            "error": {
                "type": "image_generation_user_error",
                "code": "moderation_blocked",
                "message": "Your request was rejected by the safety system.",
                "param": None,
                "moderation_details": {"moderation_stage": "output", "categories": ["sexual"]},
            },
        },
    )
    respx_mock.post(GEN_URL).mock(
        return_value=stream_response(partial(PARTIAL_0, 0), error_event, headers={"x-request-id": "req_mod"})
    )
    events: list[StreamEvent] = []
    with pytest.raises(ContentRejected) as caught:
        await collect(provider.stream_generate(spec, REQ), events)
    assert (caught.value.stage, caught.value.categories) == ("output", ("sexual",))
    assert caught.value.request_id == "req_mod"
    assert [type(e) for e in events] == [PartialImage]


@pytest.mark.parametrize(
    ("payload", "cls"),
    [
        ({"type": "error", "error": {"type": "server_error", "code": None, "message": "boom"}}, ProviderUnavailable),
        (
            {"type": "error", "error": {"type": "requests", "code": "rate_limit_exceeded", "message": "slow"}},
            RateLimited,
        ),
        ({"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value"}}, BadRequest),
        ({"error": {"code": "content_policy_violation", "message": "no"}}, ContentRejected),
        ({"type": "error", "error": "something went wrong"}, ProviderUnavailable),
        ({"type": "error", "code": "moderation_blocked", "message": "flat error object"}, ContentRejected),
    ],
    ids=["server-error", "rate-limited", "invalid-request", "error-key-only", "string-error", "flat"],
)
async def test_stream_error_event_shapes(
    respx_mock: respx.MockRouter,
    provider: OpenAIProvider,
    spec: ModelSpec,
    payload: dict[str, Any],
    cls: type[EaselError],
) -> None:
    """Error events in their various shapes map onto the error tree; none ends as a success."""
    respx_mock.post(GEN_URL).mock(return_value=stream_response(sse("error", payload), completed()))
    events: list[StreamEvent] = []
    with pytest.raises(cls):
        await collect(provider.stream_generate(spec, REQ), events)
    assert events == []


@pytest.mark.parametrize(
    "data",
    ["{not json", "[DONE", "42", '"a string"', "[1, 2]", "null"],
    ids=["broken-json", "bracket", "number", "string", "list", "null"],
)
async def test_stream_unreadable_data_is_interrupted(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, data: str
) -> None:
    """A data line that is not a JSON object ends the stream as StreamInterrupted, not a crash."""
    respx_mock.post(GEN_URL).mock(return_value=stream_response(partial(PARTIAL_0, 0), sse("x", data), completed()))
    with pytest.raises(StreamInterrupted):
        await collect(provider.stream_generate(spec, REQ))


async def test_stream_completed_with_bad_image(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """A completed event whose image is not decodable raises ProviderUnavailable."""
    bad = sse("image_generation.completed", {"type": "image_generation.completed", "b64_json": "@@@"})
    respx_mock.post(GEN_URL).mock(return_value=stream_response(bad))
    with pytest.raises(ProviderUnavailable):
        await collect(provider.stream_generate(spec, REQ))


async def test_server_ignoring_stream_with_non_json_body(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """A 200 that is neither SSE nor JSON is ProviderUnavailable (as for non-streamed calls), not a JSON error."""
    respx_mock.post(GEN_URL).mock(
        return_value=httpx.Response(200, text="<html>maintenance</html>", headers={"content-type": "text/html"})
    )
    with pytest.raises(ProviderUnavailable):
        await collect(provider.stream_generate(spec, REQ))


async def test_stream_http_error_before_start(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """A content rejection before any event is raised from the first iteration, after one call."""
    route = respx_mock.post(GEN_URL).mock(
        return_value=httpx.Response(
            400, json={"error": {"type": "invalid_request_error", "code": "content_policy_violation"}}
        )
    )
    with pytest.raises(ContentRejected):
        await collect(provider.stream_generate(spec, REQ))
    assert route.call_count == 1


async def test_stream_rate_limited_to_the_end(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """Persistent 429s before the stream starts end as RateLimited after the retries."""
    route = respx_mock.post(GEN_URL).mock(
        return_value=httpx.Response(429, json={"error": {"code": "rate_limit_exceeded"}})
    )
    with pytest.raises(RateLimited):
        await collect(provider.stream_generate(spec, REQ))
    assert route.call_count == 3


async def test_stream_error_body_breaking_is_provider_unavailable(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """A 503 whose error body breaks while it is read (streamed mode) is ProviderUnavailable after retries."""
    route = respx_mock.post(GEN_URL).mock(
        side_effect=lambda request: httpx.Response(503, stream=Breaking(b'{"error": ', error=httpx.ReadError("reset")))
    )
    with pytest.raises(ProviderUnavailable) as caught:
        await collect(provider.stream_generate(spec, REQ))
    assert type(caught.value) is ProviderUnavailable
    assert caught.value.status == 503
    assert route.call_count == 3


async def test_stream_send_timeout_is_maybe_billed_and_not_retried(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """A read timeout before the stream's headers arrive is ProviderTimeout(maybe_billed=True), one call."""
    route = respx_mock.post(GEN_URL).mock(side_effect=httpx.ReadTimeout)
    with pytest.raises(ProviderTimeout) as caught:
        await collect(provider.stream_generate(spec, REQ))
    assert caught.value.maybe_billed is True
    assert route.call_count == 1


async def test_consumer_stopping_early_closes_the_response(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec, tracking: TrackingTransport
) -> None:
    """Closing the stream after the first partial releases the HTTP response at once."""
    respx_mock.post(GEN_URL).mock(
        return_value=stream_response(partial(PARTIAL_0, 0), partial(PARTIAL_1, 1), completed())
    )
    async with aclosing(provider.stream_generate(spec, REQ)) as stream:
        async for event in stream:
            assert isinstance(event, PartialImage)
            assert tracking.open == 1
            break
    assert tracking.open == 0


async def test_stream_request_is_lazy(respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec) -> None:
    """Nothing is sent until the stream is iterated (an unused stream costs nothing)."""
    route = respx_mock.post(GEN_URL).mock(return_value=stream_response(completed()))
    stream = provider.stream_generate(spec, REQ)
    assert not route.called
    await collect(stream)
    assert route.call_count == 1


# -- iter_sse --------------------------------------------------------------------------------------------------


async def _lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def _events(*items: str) -> list[tuple[str, str]]:
    return [pair async for pair in iter_sse(_lines(*items))]


async def test_iter_sse_single_event() -> None:
    """An event line and a data line, then a blank line, make one event."""
    assert await _events("event: ping", "data: {}", "") == [("ping", "{}")]


async def test_iter_sse_multi_line_data_is_joined_with_newlines() -> None:
    """Several data lines of one event are joined with '\\n'."""
    assert await _events("event: e", "data: first", "data: second", "data:", "data: fourth", "") == [
        ("e", "first\nsecond\n\nfourth")
    ]


async def test_iter_sse_comments_are_ignored() -> None:
    """Lines starting with ':' are comments, also between the fields of an event."""
    assert await _events(": hello", "event: e", ": in between", "data: x", "", ":bye", "") == [("e", "x")]


async def test_iter_sse_missing_trailing_blank_line() -> None:
    """The last event is still delivered when the stream ends without a blank line."""
    assert await _events("event: a", "data: 1", "", "event: b", "data: 2") == [("a", "1"), ("b", "2")]


async def test_iter_sse_default_event_name_is_message() -> None:
    """An event without an `event:` field is called 'message'."""
    assert await _events("data: hi", "") == [("message", "hi")]


async def test_iter_sse_event_name_resets_between_events() -> None:
    """The event name applies to one event only."""
    assert await _events("event: named", "data: 1", "", "data: 2", "") == [("named", "1"), ("message", "2")]


async def test_iter_sse_event_without_data_is_not_dispatched() -> None:
    """An event with no data lines is dropped, and its name does not leak into the next one."""
    assert await _events("event: lonely", "", "data: x", "") == [("message", "x")]


async def test_iter_sse_only_one_leading_space_removed() -> None:
    """'data:x' and 'data: x' are the same; a second space is part of the value."""
    assert await _events("data:x", "", "data:  y", "") == [("message", "x"), ("message", " y")]


async def test_iter_sse_line_endings_stripped() -> None:
    """Lines still carrying CR/LF (or a bare CR line as separator) are handled."""
    assert await _events("event: e\r\n", "data: v\r\n", "\r\n", "data: w\n", "\r") == [("e", "v"), ("message", "w")]


async def test_iter_sse_unknown_fields_and_field_without_colon() -> None:
    """`id:`/`retry:` are ignored; a bare 'data' line is a data field with an empty value."""
    assert await _events("id: 1", "retry: 100", "data", "data: z", "") == [("message", "\nz")]


async def test_iter_sse_colons_in_value_are_kept() -> None:
    """Only the first colon separates field and value (JSON keeps its colons)."""
    assert await _events('data: {"a": "b:c"}', "") == [("message", '{"a": "b:c"}')]


async def test_iter_sse_several_blank_lines_between_events() -> None:
    """Extra blank lines do not create empty events."""
    assert await _events("", "", "data: 1", "", "", "", "data: 2", "") == [("message", "1"), ("message", "2")]


async def test_iter_sse_nothing() -> None:
    """An empty stream yields nothing."""
    assert await _events() == []


async def test_done_marker_after_completed_is_ignored(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """A trailing `data: [DONE]` (as some compatible servers send) does not break a finished stream."""
    respx_mock.post(GEN_URL).mock(return_value=stream_response(completed(), sse(None, "[DONE]")))
    events = await collect(provider.stream_generate(spec, REQ))
    assert isinstance(events[-1], Completed)


async def test_a_preview_arriving_after_the_last_image_is_dropped(
    respx_mock: respx.MockRouter, provider: OpenAIProvider, spec: ModelSpec
) -> None:
    """The final event may come before all the previews: a late one is not shown as a next image."""
    respx_mock.post(GEN_URL).mock(
        return_value=stream_response(partial(PARTIAL_0, 0), completed(FINAL), partial(PARTIAL_1, 1))
    )
    events: list[StreamEvent] = []
    await collect(provider.stream_generate(spec, GenerateRequest(prompt="x", n=1, partial_images=2)), events)
    assert [(e.index, e.sequence) for e in events if isinstance(e, PartialImage)] == [(0, 0)]
    assert isinstance(events[-1], Completed)
