"""Providers speaking the OpenAI Images API: OpenAI itself, Azure OpenAI, and compatible servers.

One wire format, three ways to address it: OpenAI uses `Authorization: Bearer` on `/images/...`;
Azure puts a deployment and an `api-version` in the URL and sends `api-key`; compatible servers
(LocalAI and the like) take the OpenAI paths at their own base URL and may answer with image URLs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import Any

import httpx

from bot.api import decode
from bot.api.download import DEFAULT_MAX_DOWNLOAD, fetch_images
from bot.api.http import BILLED_NOTE, RetryPolicy, billed_anyway, error_from_body, send
from bot.api.sse import iter_sse
from bot.api.types import (
    Completed,
    EditRequest,
    GeneratedImage,
    GenerateRequest,
    ImageResult,
    InputImage,
    PartialImage,
    StreamEvent,
    Usage,
    VaryRequest,
)
from bot.catalogue import ModelSpec
from bot.errors import EaselError, ProviderTimeout, ProviderUnavailable, StreamInterrupted
from bot.log import register_secrets

USER_AGENT = "Easel/0.1 (+https://github.com/easel-bot/easel)"

FormFields = dict[str, str]
Files = list[tuple[str, tuple[str, bytes, str]]]


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    given = raw.get("input_tokens_details") or {}
    made = raw.get("output_tokens_details") or {}
    text_in = int(given.get("text_tokens", 0) or 0)
    image_in = int(given.get("image_tokens", 0) or 0)
    if not given:
        text_in = int(raw.get("input_tokens", 0) or 0)
    image_out = int(made.get("image_tokens", 0) or 0) if made else int(raw.get("output_tokens", 0) or 0)
    return Usage(
        input_text_tokens=text_in,
        input_image_tokens=image_in,
        output_image_tokens=image_out,
        output_text_tokens=int(made.get("text_tokens", 0) or 0) if made else 0,
        cached_input_tokens=int(given.get("cached_tokens", 0) or 0),
    )


def _fields(pairs: Mapping[str, object]) -> dict[str, object]:
    """The pairs whose value is set, for a JSON body."""
    return {key: value for key, value in pairs.items() if value is not None}


def _form(pairs: Mapping[str, object]) -> FormFields:
    """The pairs whose value is set, as multipart form strings."""
    out: FormFields = {}
    for key, value in pairs.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _file(field: str, image: InputImage) -> tuple[str, tuple[str, bytes, str]]:
    return field, (image.filename, image.data, image.mime)


class OpenAIProvider:
    """The OpenAI Images API at `base_url` (default https://api.openai.com/v1)."""

    name = "openai"
    follows_lifecycle = True
    endpoints = frozenset({"generate", "edit", "variations"})

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str | None,
        base_url: str = "https://api.openai.com/v1",
        retry: RetryPolicy | None = None,
        download_hosts: Iterable[str] = (),
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        self._http = http
        self._key = api_key
        register_secrets([api_key or ""])
        self._base = base_url.rstrip("/")
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        own_host = httpx.URL(self._base).host
        self._download_hosts = (own_host, *download_hosts)
        self._max_download = max_download_bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base!r})"

    # -- addressing: the parts Azure overrides ----------------------------------------------------

    def _url(self, spec: ModelSpec, endpoint: str) -> str:  # noqa: ARG002 - Azure addresses by model
        return f"{self._base}/images/{endpoint}"

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    # -- request bodies ---------------------------------------------------------------------------

    def _generate_body(self, spec: ModelSpec, req: GenerateRequest, *, stream: bool) -> dict[str, object]:
        return _fields(
            {
                "model": spec.name,
                "prompt": req.prompt,
                "n": req.n,
                "size": req.size,
                "quality": req.quality,
                "style": req.style,
                "background": req.background,
                "output_format": req.output_format,
                "output_compression": req.output_compression,
                "moderation": req.moderation,
                "complexity": req.complexity,
                "response_format": "b64_json" if spec.response_format else None,
                "stream": True if stream else None,
                "partial_images": req.partial_images if stream else None,
                "user": req.user,
            }
        )

    def _edit_form(self, spec: ModelSpec, req: EditRequest, *, stream: bool) -> tuple[FormFields, Files]:
        fields = _form(
            {
                "model": spec.name,
                "prompt": req.prompt,
                "n": req.n,
                "size": req.size,
                "quality": req.quality,
                "background": req.background,
                "output_format": req.output_format,
                "output_compression": req.output_compression,
                "input_fidelity": req.input_fidelity,
                "complexity": req.complexity,
                "response_format": "b64_json" if spec.response_format else None,
                "stream": True if stream else None,
                "partial_images": req.partial_images if stream else None,
                "user": req.user,
            }
        )
        # One image goes as `image`; several as repeated `image[]`, as the official clients send them.
        field = "image" if len(req.images) == 1 else "image[]"
        files: Files = [_file(field, image) for image in req.images]
        if req.mask is not None:
            files.append(_file("mask", req.mask))
        return fields, files

    # -- calls --------------------------------------------------------------------------------------

    def _request(
        self, spec: ModelSpec, endpoint: str, *, json_body: object = None, form: tuple[FormFields, Files] | None = None
    ) -> httpx.Request:
        headers = self._headers()
        extensions = {"timeout": self._timeout.as_dict()} if self._timeout else None
        if form is not None:
            fields, files = form
            return self._http.build_request(
                "POST", self._url(spec, endpoint), data=fields, files=files, headers=headers, extensions=extensions
            )
        return self._http.build_request(
            "POST", self._url(spec, endpoint), json=json_body, headers=headers, extensions=extensions
        )

    async def _call(
        self,
        spec: ModelSpec,
        endpoint: str,
        *,
        json_body: object = None,
        form: tuple[FormFields, Files] | None = None,
    ) -> ImageResult:
        response = await send(
            self._http,
            lambda: self._request(spec, endpoint, json_body=json_body, form=form),
            policy=self._retry,
        )
        try:
            try:
                body = response.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ProviderUnavailable("The image service answered with something that is not JSON.") from None
            return await self._result(spec, body, response.headers)
        except ProviderUnavailable as error:
            # A success: the images were made and billed, whatever became of the answer on its way.
            raise billed_anyway(error, request_id=_request_id(response.headers)) from None

    async def _result(self, spec: ModelSpec, body: object, headers: Mapping[str, str]) -> ImageResult:
        if not isinstance(body, dict) or not isinstance(body.get("data"), list) or not body["data"]:
            raise ProviderUnavailable("The image service answered without any image.")
        items: list[dict[str, Any]] = [item for item in body["data"] if isinstance(item, dict)]
        encoded = [item["b64_json"] for item in items if isinstance(item.get("b64_json"), str)]
        urls = [item["url"] for item in items if isinstance(item.get("url"), str) and not item.get("b64_json")]
        images: tuple[GeneratedImage, ...] = ()
        if encoded:
            images = await asyncio.to_thread(decode.decode_all, encoded)
        if urls:
            blobs = await fetch_images(
                self._http, urls, allowed_hosts=self._download_hosts, max_bytes=self._max_download
            )
            images += await asyncio.to_thread(decode.describe_all, blobs)
        if not images:
            raise ProviderUnavailable("The image service answered without any image.")
        revised = next((str(i["revised_prompt"]) for i in items if i.get("revised_prompt")), None)
        return ImageResult(
            images=images,
            model=spec.name,
            provider=self.name,
            size=body.get("size") or None,
            quality=body.get("quality") or None,
            background=body.get("background") or None,
            output_format=body.get("output_format") or None,
            revised_prompt=revised,
            usage=_usage(body.get("usage")),
            request_id=_request_id(headers),
        )

    async def generate(self, spec: ModelSpec, req: GenerateRequest) -> ImageResult:
        return await self._call(spec, "generations", json_body=self._generate_body(spec, req, stream=False))

    async def edit(self, spec: ModelSpec, req: EditRequest) -> ImageResult:
        return await self._call(spec, "edits", form=self._edit_form(spec, req, stream=False))

    async def variations(self, spec: ModelSpec, req: VaryRequest) -> ImageResult:
        fields = _form(
            {
                "model": spec.name,
                "n": req.n,
                "size": req.size,
                "response_format": "b64_json" if spec.response_format else None,
                "user": req.user,
            }
        )
        return await self._call(spec, "variations", form=(fields, [_file("image", req.image)]))

    # -- streaming ----------------------------------------------------------------------------------

    def stream_generate(self, spec: ModelSpec, req: GenerateRequest) -> AsyncGenerator[StreamEvent, None]:
        return self._stream(spec, "generations", json_body=self._generate_body(spec, req, stream=True), n=req.n)

    def stream_edit(self, spec: ModelSpec, req: EditRequest) -> AsyncGenerator[StreamEvent, None]:
        return self._stream(spec, "edits", form=self._edit_form(spec, req, stream=True), n=req.n)

    async def _stream(
        self,
        spec: ModelSpec,
        endpoint: str,
        *,
        json_body: object = None,
        form: tuple[FormFields, Files] | None = None,
        n: int = 1,
    ) -> AsyncGenerator[StreamEvent, None]:
        response = await send(
            self._http,
            lambda: self._request(spec, endpoint, json_body=json_body, form=form),
            policy=self._retry,
            stream=True,
        )
        finals: list[str] = []
        last: dict[str, Any] = {}
        reported: EaselError | None = None
        try:
            if "text/event-stream" not in response.headers.get("content-type", ""):
                # A server that ignores `stream` answers with one JSON body: still a valid result.
                await response.aread()
                try:
                    body = response.json()
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise ProviderUnavailable("The image service answered with something that is not JSON.") from None
                result = await self._result(spec, body, response.headers)
                yield Completed(result)
                return
            async for event, data in iter_sse(response.aiter_lines()):
                if data.strip() == "[DONE]":
                    # Some compatible servers close their streams the way chat completions do.
                    continue
                try:
                    payload = json.loads(data)
                except json.JSONDecodeError:
                    payload = None
                if not isinstance(payload, dict):
                    raise StreamInterrupted("The image stream sent something unreadable; try again.")
                kind = str(payload.get("type") or event)
                if kind == "error" or "error" in payload:
                    error = payload.get("error", payload)
                    reported = error_from_body(None, error if isinstance(error, dict) else {}, response.headers)
                    raise reported
                if kind.endswith(".partial_image"):
                    if len(finals) >= n:
                        continue  # a late preview of an image already finished ("final may arrive first")
                    blob = await asyncio.to_thread(decode.decode_b64, str(payload.get("b64_json", "")))
                    fmt = str(payload.get("output_format") or "png")
                    yield PartialImage(
                        index=len(finals),
                        sequence=int(payload.get("partial_image_index", 0) or 0),
                        data=blob,
                        mime=f"image/{fmt}",
                    )
                elif kind.endswith(".completed"):
                    finals.append(str(payload.get("b64_json", "")))
                    last = payload
        except httpx.TimeoutException:
            raise ProviderTimeout(
                "The image stream stopped answering; the request may still have been billed.", maybe_billed=True
            ) from None
        except httpx.TransportError:
            # The provider had the request and was answering it: it may finish, and bill, the images anyway.
            raise StreamInterrupted(
                "The image stream broke off before the image was finished" + BILLED_NOTE,
                maybe_billed=True,
                request_id=_request_id(response.headers),
            ) from None
        except ProviderUnavailable as error:
            if error is reported:  # the provider said what went wrong: its word, not a broken answer
                raise
            raise billed_anyway(error, request_id=_request_id(response.headers)) from None
        finally:
            await response.aclose()
        if not finals:
            raise StreamInterrupted(
                "The image stream ended before the image was finished" + BILLED_NOTE,
                maybe_billed=True,
                request_id=_request_id(response.headers),
            )
        body = {
            "data": [{"b64_json": b64} for b64 in finals],
            "size": last.get("size"),
            "quality": last.get("quality"),
            "background": last.get("background"),
            "output_format": last.get("output_format"),
            "usage": last.get("usage"),
        }
        try:
            result = await self._result(spec, body, response.headers)
        except ProviderUnavailable as error:
            raise billed_anyway(error, request_id=_request_id(response.headers)) from None
        yield Completed(result)

    async def aclose(self) -> None:
        """Nothing of its own to close: the HTTP client belongs to whoever made it."""


class CompatibleProvider(OpenAIProvider):
    """An OpenAI-compatible server (LocalAI and the like): its own base URL, key optional, no lifecycle."""

    name = "compatible"
    follows_lifecycle = False


class AzureProvider(OpenAIProvider):
    """Azure OpenAI: `{endpoint}/openai/deployments/{deployment}/images/{op}?api-version=...` with `api-key`."""

    name = "azure"

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str | None,
        endpoint: str,
        api_version: str,
        deployments: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        download_hosts: Iterable[str] = (),
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        super().__init__(
            http,
            api_key=api_key,
            base_url=endpoint,
            retry=retry,
            download_hosts=download_hosts,
            max_download_bytes=max_download_bytes,
            timeout=timeout,
        )
        self._version = api_version
        self._deployments = dict(deployments or {})

    def deployment(self, spec: ModelSpec) -> str:
        """The deployment serving `spec`: the admin's mapping, else the model's own name."""
        return self._deployments.get(spec.name, spec.name)

    def _url(self, spec: ModelSpec, endpoint: str) -> str:
        return f"{self._base}/openai/deployments/{self.deployment(spec)}/images/{endpoint}?api-version={self._version}"

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self._key:
            headers["api-key"] = self._key
        return headers


def _request_id(headers: Mapping[str, str]) -> str | None:
    """The provider's id for a request, from its answer's headers (OpenAI's, or Azure's)."""
    return headers.get("x-request-id") or headers.get("apim-request-id")
