"""HTTP plumbing shared by the providers: the retry policy and the one status/code → error mapping.

The policy copies the official OpenAI SDK's: retry 408, 409, 429, 5xx and failed connections; honour
`x-should-retry`, `retry-after-ms` and `retry-after` (seconds or an HTTP date) up to a cap; otherwise back
off exponentially with jitter. A request whose answer never arrived (read timeout, dropped connection
after sending) is not retried, and its error is `maybe_billed`: the provider may already have made, and
billed, the images. So is a success the provider's own code cannot use (`billed_anyway`).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import httpx

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
from bot.log import redact

log = logging.getLogger(__name__)

DEFAULT_MAX_RETRIES = 2
# Same schedule as the official SDK: 0.5 s, 1 s, 2 s ... never above 8 s.
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
# Honour server-directed delays up to two minutes; a longer one means "not now", so give up instead.
MAX_RETRY_AFTER = 120.0
# Image generation routinely takes a minute or two; connecting should not.
DEFAULT_TIMEOUT = httpx.Timeout(timeout=300.0, connect=10.0)

RETRY_STATUSES = frozenset({408, 409, 429})
CONTENT_CODES = frozenset({"content_policy_violation", "moderation_blocked", "content_filter"})
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})
MODEL_CODES = frozenset({"model_not_found", "DeploymentNotFound", "model_not_available"})
IMAGE_PARAMS = frozenset({"image", "image[]", "mask", "images"})

Sleep = Callable[[float], Awaitable[None]]

_AFTER_SENDING = (httpx.ReadError, httpx.RemoteProtocolError)
"""Transport errors raised while the answer is read, so after the provider had the whole request."""
BILLED_NOTE = "; the images may still have been billed, so check the spending before trying again."
"""How a sentence about an answer that came too late or broken ends (its full stop replaced)."""


def billed_anyway(error: ProviderUnavailable, *, request_id: str | None = None) -> ProviderUnavailable:
    """`error` for an answer the provider gave after it had the whole request: it may have billed.

    For a success whose body could not be used (not JSON, no image, an image that does not decode, a
    download that failed): the provider made the images, so the ledger must not refund them.
    """
    if error.maybe_billed:
        return error
    return type(error)(
        error.message.rstrip(".") + BILLED_NOTE,
        maybe_billed=True,
        status=error.status,
        code=error.code,
        request_id=error.request_id or request_id,
    )


class _Meta(TypedDict):
    status: int | None
    code: str | None
    request_id: str | None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry; `sleep` is injectable so tests never wait."""

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = INITIAL_RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY
    max_retry_after: float = MAX_RETRY_AFTER
    sleep: Sleep = asyncio.sleep


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The server's requested delay in seconds, from `retry-after-ms` or `retry-after`, if any."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    when = email.utils.mktime_tz(parsed)
    return max(when - (time.time() if now is None else now), 0.0)


def backoff(policy: RetryPolicy, retries_taken: int, headers: Mapping[str, str] | None = None) -> float | None:
    """Seconds to wait before retry number `retries_taken + 1`; None when the server asked for too long."""
    hinted = retry_after(headers or {})
    if hinted is not None:
        return hinted if hinted <= policy.max_retry_after else None
    delay = min(policy.initial_delay * (2.0**retries_taken), policy.max_delay)
    # Up to 25% less, so a crowd of clients does not retry in step.
    return delay * (1.0 - 0.25 * random.random())  # noqa: S311 - jitter, not security


def should_retry(response: httpx.Response, error: EaselError) -> bool:
    """Whether a failed response is worth another try."""
    directive = response.headers.get("x-should-retry")
    if directive == "true":
        return True
    if directive == "false":
        return False
    if isinstance(error, ContentRejected | QuotaExhausted):
        return False
    return response.status_code in RETRY_STATUSES or response.status_code >= 500


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return error
        if isinstance(error, str):
            return {"message": error}
    return {}


def error_from_body(status: int | None, error: Mapping[str, Any], headers: Mapping[str, str]) -> EaselError:
    """The one mapping from an HTTP status and an OpenAI-shaped error object onto Easel's error tree."""
    code = error.get("code")
    code = str(code) if code not in (None, "") else None
    kind = error.get("type")
    kind = str(kind) if kind not in (None, "") else None
    param = error.get("param")
    request_id = headers.get("x-request-id") or headers.get("apim-request-id")
    inner = error.get("innererror") if isinstance(error.get("innererror"), dict) else {}
    inner_code = inner.get("code") if isinstance(inner, dict) else None
    meta = _Meta(status=status, code=code or kind, request_id=request_id)

    if code in CONTENT_CODES or inner_code == "ResponsibleAIPolicyViolation" or kind == "image_generation_user_error":
        details = error.get("moderation_details")
        details = details if isinstance(details, dict) else {}
        categories = tuple(str(c) for c in details.get("categories") or () if isinstance(c, str))
        stage = details.get("moderation_stage")
        what = {"input": "the prompt or input image", "output": "the generated image"}.get(str(stage), "this request")
        return ContentRejected(
            f"The provider's safety system rejected {what}; try rewording the prompt.",
            categories=categories,
            stage=str(stage) if stage else None,
            **meta,
        )
    if code in QUOTA_CODES or kind == "insufficient_quota":
        return QuotaExhausted(
            "The image service account is out of credit or hit its spending limit; the bot's admin must top it up.",
            **meta,
        )
    if code in MODEL_CODES:
        return ModelUnavailable("The image service does not offer this model (any more); pick another model.", **meta)
    if status == 401:
        return AuthenticationFailed(
            "The image service refused the bot's API key; the bot's admin must check it.", **meta
        )
    if status == 403:
        return PermissionDenied(
            "The bot's image service account may not use this model (it may need organisation verification).",
            **meta,
        )
    if status is None:
        # An error inside a stream carries no HTTP status: infer one from its code and type.
        if code == "rate_limit_exceeded" or kind == "rate_limit_error":
            status = 429
        elif kind == "invalid_request_error":
            status = 400
    if status == 429:
        return RateLimited(
            "The image service is busy with too many requests; try again in a moment.",
            retry_after=retry_after(headers),
            **meta,
        )
    if status == 408:
        return ProviderTimeout("The image service timed out; try again.", **meta)
    if status == 413 or (isinstance(code, str) and code.startswith("invalid_image")) or param in IMAGE_PARAMS:
        return BadImage("The image service could not use the uploaded image; try a smaller PNG or JPEG.", **meta)
    if status == 404:
        if param == "model":
            return ModelUnavailable("The image service does not offer this model; pick another model.", **meta)
        return ProviderUnavailable(
            "The image service has no such endpoint (HTTP 404); the bot's admin should check the provider URL.",
            **meta,
        )
    if status is not None and 400 <= status < 500:
        detail = redact(str(error.get("message") or ""))[:200].strip()
        where = f" ({param})" if param else ""
        return BadRequest(
            f"The image service refused the request{where}: {detail}"
            if detail
            else "The image service refused the request.",
            **meta,
        )
    return ProviderUnavailable("The image service is having trouble right now; try again in a few minutes.", **meta)


def error_from_response(response: httpx.Response) -> EaselError:
    """Map a non-2xx response (already read) onto the error tree."""
    return error_from_body(response.status_code, _error_body(response), response.headers)


async def send(
    http: httpx.AsyncClient,
    build: Callable[[], httpx.Request],
    *,
    policy: RetryPolicy,
    stream: bool = False,
    billable: bool = True,
) -> httpx.Response:
    """Send the request `build()` makes, retrying per `policy`; a 2xx response or an EaselError.

    With `stream=True` the caller owns the returned response and must `aclose()` it.
    `billable` marks calls that may cost money once the provider has them (so they are not retried blind).
    """
    retries = 0
    while True:
        request = build()
        try:
            response = await http.send(request, stream=stream)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing reached the provider, so nothing was billed: safe to try again.
            if retries < policy.max_retries:
                delay = backoff(policy, retries)
                log.info(
                    "connection to %s failed (%s); retry %d in %.2fs",
                    request.url.host,
                    type(exc).__name__,
                    retries + 1,
                    delay or 0.0,
                )
                retries += 1
                await policy.sleep(delay or 0.0)
                continue
            if isinstance(exc, httpx.ConnectError):
                raise ProviderUnavailable("The image service cannot be reached right now; try again later.") from None
            raise ProviderTimeout("The image service did not accept the connection in time; try again.") from None
        except httpx.TimeoutException:
            raise ProviderTimeout(
                "The image service took too long to answer; the request may still have been billed, so check before "
                "retrying."
                if billable
                else "The image service took too long to answer; try again.",
                maybe_billed=billable,
            ) from None
        except httpx.TransportError as exc:
            # A read that broke (the answer, or its body) comes after the whole request went out.
            sent = billable and isinstance(exc, _AFTER_SENDING)
            raise ProviderUnavailable(
                f"The connection to the image service broke ({type(exc).__name__})"
                + (BILLED_NOTE if sent else "; try again."),
                maybe_billed=sent,
            ) from None

        if response.is_success:
            return response
        try:
            await response.aread()
        except httpx.TransportError:
            # The error body broke off (streamed responses are read only here): map on the status alone.
            error = error_from_body(response.status_code, {}, response.headers)
        else:
            error = error_from_response(response)
        finally:
            await response.aclose()
        if retries < policy.max_retries and should_retry(response, error):
            delay = backoff(policy, retries, response.headers)
            if delay is not None:
                log.info(
                    "%s %s answered %d; retry %d in %.2fs",
                    request.method,
                    request.url.path,
                    response.status_code,
                    retries + 1,
                    delay,
                )
                retries += 1
                await policy.sleep(delay)
                continue
        raise error
