"""The thread/entry image API (app.ai-client.com): DALL·E 2 through threads, entries and polling.

One generate call is one conversation with that service:

1. `POST {base}/threads` with the model's `ai_version_code` opens a thread (`data.guid`);
2. `POST {base}/threads/{guid}/entry` with `type=request`, `n`, `size` and `prompt` asks for images;
3. `GET {base}/threads/{guid}/entries` is polled, backing off exponentially, until an entry of type
   `response` lists the image URLs (or the poll timeout runs out);
4. each image URL is downloaded from an allowed host, with a byte cap, and decoded.

Every body is form-encoded, every answer is JSON wrapped in `{"data": ...}`, and the bearer token goes
in the `Authorization` header only: it is never logged nor put into an error.
The service bills in credits; the result carries them, with the admin's dollar price of one credit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from typing import Any

import httpx

from bot.api import decode
from bot.api.download import DEFAULT_MAX_DOWNLOAD, fetch_images
from bot.api.http import CONTENT_CODES, RetryPolicy, billed_anyway, error_from_body, send
from bot.api.openai import USER_AGENT
from bot.api.types import (
    Completed,
    EditRequest,
    GenerateRequest,
    ImageResult,
    StreamEvent,
    VaryRequest,
)
from bot.catalogue import ModelSpec
from bot.errors import (
    ContentRejected,
    EaselError,
    InvalidOption,
    ModelUnavailable,
    ProviderTimeout,
    ProviderUnavailable,
)
from bot.log import redact, register_secrets

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://app.ai-client.com/api/v1"

# The service writes "no error" in more than one way: JSON null, or the Python repr "None" as a string.
_NO_ERROR = frozenset({"", "none", "null"})
# A request entry that says it is done but whose response entry is not listed yet gets this many more polls.
_MISSING_RESPONSE_GRACE = 1


def _no_error(value: object) -> bool:
    """True when an entry's `error` field means "no error"."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return value.strip().lower() in _NO_ERROR
    return isinstance(value, dict | list) and not value


def _text(value: object) -> str | None:
    """`value` as a non-empty string, else None."""
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _credits(value: object) -> float:
    """An entry's `credits` as a number (0 when missing or unreadable)."""
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return 0.0
    return 0.0


class ThreadProvider:
    """DALL·E 2 through the thread/entry API at `base_url`; text to image only, results as URLs."""

    name = "thread"
    follows_lifecycle = False
    endpoints = frozenset({"generate"})

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        credit_usd: float = 0.002,
        poll_timeout: float = 180.0,
        retry: RetryPolicy | None = None,
        download_hosts: Iterable[str] = (),
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD,
        poll_initial: float = 1.0,
        poll_max: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._token = token
        register_secrets([token])
        self._base = base_url.rstrip("/")
        self._credit_usd = credit_usd
        self._poll_timeout = poll_timeout
        self._retry = retry or RetryPolicy()
        own_host = httpx.URL(self._base).host
        self._download_hosts = (own_host, *download_hosts)
        self._max_download = max_download_bytes
        self._poll_initial = max(poll_initial, 0.0)
        self._poll_max = max(poll_max, self._poll_initial)
        self._clock = clock

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base!r})"

    # -- plumbing -------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _redact(self, text: str) -> str:
        return redact(text, (self._token,))

    async def _call(
        self, method: str, path: str, *, form: Mapping[str, str] | None = None, billable: bool = True
    ) -> Any:
        """The `data` member of the JSON answer to `method path`, via `send` (retries, error mapping)."""
        url = f"{self._base}{path}"
        response = await send(
            self._http,
            lambda: self._http.build_request(method, url, data=form, headers=self._headers()),
            policy=self._retry,
            billable=billable,
        )
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProviderUnavailable("The thread image service answered with something that is not JSON.") from None
        if not isinstance(body, dict) or "data" not in body:
            raise ProviderUnavailable("The thread image service answered without the expected data.")
        return body["data"]

    def _entry_error(self, entry: Mapping[str, Any]) -> EaselError | None:
        """The error an entry reports, mapped onto the error tree; None when it reports none."""
        raw = entry.get("error")
        if _no_error(raw):
            return None
        request_id = _text(entry.get("guid"))
        if isinstance(raw, str) and raw.lstrip().startswith("{"):
            # Some upstream errors arrive as the provider's JSON error object, serialised into the string.
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict):
                raw = parsed.get("error", parsed)
        error: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
        code = (
            _text(error.get("code"))
            or _text(error.get("type"))
            or _text(entry.get("error_code"))
            or _text(entry.get("code"))
        )
        if code is None and isinstance(raw, str) and raw.strip() in CONTENT_CODES:
            code = raw.strip()
        if code in CONTENT_CODES:
            return ContentRejected(
                "The image service's safety system rejected this prompt; try rewording it.",
                code=code,
                request_id=request_id,
            )
        if error and code is not None:
            mapped = error_from_body(None, {**error, "code": code}, {})
            if not isinstance(mapped, ProviderUnavailable):
                mapped.request_id = mapped.request_id or request_id
                return mapped
        message = _text(error.get("message")) if error else _text(raw)
        detail = self._redact(message or "")[:200].strip().rstrip(".")
        return ProviderUnavailable(
            f"The thread image service could not make the images: {detail}."
            if detail
            else "The thread image service could not make the images; try again later.",
            code=code,
            request_id=request_id,
        )

    # -- the conversation -------------------------------------------------------------------------------

    async def _open_thread(self, version_code: str) -> str:
        data = await self._call("POST", "/threads", form={"ai_version_code": version_code}, billable=False)
        guid = _text(data.get("guid")) if isinstance(data, dict) else None
        if guid is None:
            raise ProviderUnavailable("The thread image service did not say which thread it opened.")
        return guid

    async def _ask(self, guid: str, req: GenerateRequest, size: str) -> dict[str, Any]:
        form = {"type": "request", "n": str(req.n), "size": size, "prompt": req.prompt}
        data = await self._call("POST", f"/threads/{guid}/entry", form=form)
        if not isinstance(data, dict) or _text(data.get("guid")) is None:
            raise ProviderUnavailable("The thread image service did not confirm the request.")
        error = self._entry_error(data)
        if error is not None:
            raise error
        return data

    async def _poll(self, guid: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """The response entry for `request`, polling with exponential backoff until `poll_timeout`."""
        request_guid = _text(request.get("guid"))
        started = self._clock()
        deadline = started + self._poll_timeout
        delay = self._poll_initial
        grace = _MISSING_RESPONSE_GRACE
        polls = 0
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                log.info("thread %s: no answer after %d polls in %.0fs", guid, polls, self._poll_timeout)
                raise ProviderTimeout(
                    f"The thread image service did not finish the images within {self._poll_timeout:g} seconds; "
                    "they may still have been made and billed, so check before retrying.",
                    maybe_billed=True,
                    request_id=request_guid,
                )
            await self._retry.sleep(min(delay, remaining))
            delay = min(delay * 2.0, self._poll_max)
            try:
                entries = await self._call("GET", f"/threads/{guid}/entries", billable=False)
            except ProviderUnavailable as failed:
                # The service has the request: it may make, and bill, the images while the poll fails.
                raise billed_anyway(failed, request_id=request_guid) from None
            polls += 1
            if not isinstance(entries, list):
                raise billed_anyway(
                    ProviderUnavailable("The thread image service listed the thread's entries in a strange form."),
                    request_id=request_guid,
                )
            listed = [entry for entry in entries if isinstance(entry, dict)]
            ours = next((e for e in listed if request_guid and e.get("guid") == request_guid), None)
            if ours is not None:
                error = self._entry_error(ours)
                if error is not None:
                    raise error
            response = next((e for e in listed if e.get("type") == "response"), None)
            if response is not None:
                error = self._entry_error(response)
                if error is not None:
                    raise error
                if not response.get("waiting_response"):
                    log.debug("thread %s: answered after %d polls", guid, polls)
                    return response
            elif ours is not None and ours.get("waiting_response") is False:
                # Done, yet no response listed: allow for a listing that lags, then give up.
                if grace <= 0:
                    raise billed_anyway(
                        ProviderUnavailable(
                            "The thread image service finished the request without sending any image.",
                            request_id=request_guid,
                        )
                    )
                grace -= 1

    # -- the ImageProvider interface -------------------------------------------------------------------

    async def generate(self, spec: ModelSpec, req: GenerateRequest) -> ImageResult:
        """Open a thread, ask for the images, wait for the answer and download the images."""
        version_code = spec.thread_version_code
        if not version_code:
            raise ModelUnavailable(
                f"The thread provider does not serve {spec.name}; pick a model it offers, such as DALL·E 2.",
                model=spec.name,
            )
        size = req.size or spec.default_size
        guid = await self._open_thread(version_code)
        request = await self._ask(guid, req, size)
        log.debug("thread %s: request entry %s sent", guid, request.get("guid"))
        response = await self._poll(guid, request)

        content = response.get("content")
        items = [item for item in content if isinstance(item, dict)] if isinstance(content, list) else []
        urls = [str(item["url"]) for item in items if _text(item.get("url"))]
        answered = _text(response.get("guid"))
        # From here on the service has answered: the images were made and billed, whatever becomes of them.
        try:
            if not urls:
                raise ProviderUnavailable("The thread image service answered without any image.")
            blobs = await fetch_images(
                self._http, urls, allowed_hosts=self._download_hosts, max_bytes=self._max_download
            )
            images = await asyncio.gather(*(asyncio.to_thread(decode.describe, blob) for blob in blobs))
        except ProviderUnavailable as failed:
            raise billed_anyway(failed, request_id=answered) from None
        credits = _credits(response.get("credits"))
        log.info("thread %s: %d image(s) for %g credits", guid, len(images), credits)
        return ImageResult(
            images=tuple(images),
            model=spec.name,
            provider=self.name,
            size=size,
            request_id=_text(response.get("guid")),
            credits=credits,
            extra={"thread": guid, "credit_usd": str(self._credit_usd)},
        )

    def _text_only(self) -> InvalidOption:
        return InvalidOption(
            "The thread provider only creates images from text; it cannot edit or vary an image.", param="model"
        )

    async def edit(self, spec: ModelSpec, req: EditRequest) -> ImageResult:  # noqa: ARG002 - the interface's signature
        """Not offered: the thread API only turns text into images."""
        raise self._text_only()

    async def variations(self, spec: ModelSpec, req: VaryRequest) -> ImageResult:  # noqa: ARG002 - the interface's signature
        """Not offered: the thread API only turns text into images."""
        raise self._text_only()

    async def stream_generate(self, spec: ModelSpec, req: GenerateRequest) -> AsyncGenerator[StreamEvent, None]:
        """No previews: one Completed event once the images are there."""
        yield Completed(await self.generate(spec, req))

    async def stream_edit(self, spec: ModelSpec, req: EditRequest) -> AsyncGenerator[StreamEvent, None]:
        """Not offered: raises InvalidOption when iterated, like `edit`."""
        yield Completed(await self.edit(spec, req))

    async def aclose(self) -> None:
        """Nothing of its own to close: the HTTP client belongs to whoever made it."""
