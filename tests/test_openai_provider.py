"""OpenAI, Azure and compatible providers: wire format, response decoding, error mapping, and a real loopback server."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import respx

from bot.api.http import RetryPolicy
from bot.api.openai import USER_AGENT, AzureProvider, CompatibleProvider, OpenAIProvider
from bot.api.types import Completed, EditRequest, GenerateRequest, InputImage, PartialImage, Usage, VaryRequest
from bot.catalogue import Catalogue, ModelSpec
from bot.errors import (
    AuthenticationFailed,
    BadImage,
    BadRequest,
    ContentRejected,
    ModelUnavailable,
    PermissionDenied,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    StreamInterrupted,
)
from tests import images
from tests.conftest import NoSleep
from tests.tracking import TrackingTransport

OPENAI = "https://api.openai.com/v1"
AZURE = "https://myres.openai.azure.com"
AZURE_VERSION = "2025-04-01-preview"
COMPAT = "https://images.example.test/v1"
KEY = "sk-live-fake-123456"

PNG = images.png(64, 48)
USAGE = {
    "input_tokens": 50,
    "input_tokens_details": {"text_tokens": 40, "image_tokens": 10},
    "output_tokens": 4200,
    "output_tokens_details": {"image_tokens": 4160, "text_tokens": 40},
    "total_tokens": 4250,
}


# -- helpers ------------------------------------------------------------------------------------------------


@dataclass
class Part:
    """One multipart section: form field (filename None) or file."""

    name: str
    filename: str | None
    content_type: str
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Split a multipart/form-data body with the stdlib email parser."""
    assert content_type.startswith("multipart/form-data; boundary=")
    raw = b"Content-Type: " + content_type.encode("ascii") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body
    message = email.message_from_bytes(raw, policy=email.policy.HTTP)
    assert message.is_multipart()
    parts: list[Part] = []
    for section in message.iter_parts():
        assert section.get_content_disposition() == "form-data"
        name = section.get_param("name", header="content-disposition")
        payload = section.get_payload(decode=True)
        assert isinstance(name, str)
        assert isinstance(payload, bytes)
        parts.append(Part(name, section.get_filename(), section.get_content_type(), payload))
    return parts


def form_of(request: httpx.Request) -> tuple[dict[str, str], list[Part]]:
    """The (fields, files) of a multipart request; fields must not repeat."""
    parts = parse_multipart(request.headers["content-type"], request.content)
    fields = [p for p in parts if p.filename is None]
    names = [p.name for p in fields]
    assert len(names) == len(set(names)), f"repeated form fields: {names}"
    return {p.name: p.text for p in fields}, [p for p in parts if p.filename is not None]


def ok(*blobs: bytes, headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
    body = {"created": 1_800_000_000, "data": [{"b64_json": images.b64(b)} for b in (blobs or (PNG,))], **extra}
    return httpx.Response(200, json=body, headers=headers)


def err(status: int, code: str | None, kind: str = "invalid_request_error", **more: Any) -> httpx.Response:
    headers = more.pop("headers", None)
    body = {"error": {"message": more.pop("message", "failed"), "type": kind, "param": None, "code": code, **more}}
    return httpx.Response(status, json=body, headers=headers)


@pytest.fixture
def policy(no_sleep: NoSleep) -> RetryPolicy:
    return RetryPolicy(sleep=no_sleep)


@pytest.fixture
def openai(client: httpx.AsyncClient, policy: RetryPolicy) -> OpenAIProvider:
    return OpenAIProvider(client, api_key=KEY, retry=policy)


@pytest.fixture
def azure(client: httpx.AsyncClient, policy: RetryPolicy) -> AzureProvider:
    return AzureProvider(
        client,
        api_key="azure-key-0123456789abcdef",
        endpoint=AZURE + "/",
        api_version=AZURE_VERSION,
        deployments={"gpt-image-2": "img2-prod"},
        retry=policy,
    )


@pytest.fixture
def compatible(client: httpx.AsyncClient, policy: RetryPolicy) -> CompatibleProvider:
    return CompatibleProvider(client, api_key=None, base_url=COMPAT + "/", retry=policy)


@pytest.fixture
def gpt2(catalogue: Catalogue) -> ModelSpec:
    return catalogue.get("gpt-image-2")


def image(name: str = "cat.png", data: bytes | None = None, mime: str = "image/png") -> InputImage:
    return InputImage(data=data if data is not None else images.png(16, 16), filename=name, mime=mime)


# -- generate: wire format ------------------------------------------------------------------------------------


async def test_openai_generate_minimal_body_and_headers(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec
) -> None:
    """A bare request sends exactly model, prompt and n as JSON, with Bearer auth and Easel's user agent."""
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(return_value=ok())
    await openai.generate(gpt2, GenerateRequest(prompt="a red fox"))
    request = route.calls.last.request
    assert json.loads(request.content) == {"model": "gpt-image-2", "prompt": "a red fox", "n": 1}
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert "api-key" not in request.headers


async def test_openai_generate_sends_every_set_field_and_nothing_else(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec
) -> None:
    """Set options go out under their API names; None fields, streaming-only and DALL·E-only fields do not."""
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(return_value=ok())
    req = GenerateRequest(
        prompt="a lighthouse",
        model="gpt-image-2",
        n=3,
        size="1536x1024",
        quality="high",
        background="opaque",
        output_format="webp",
        output_compression=80,
        moderation="low",
        partial_images=2,
        user="hashed-user-1",
    )
    await openai.generate(gpt2, req)
    body = json.loads(route.calls.last.request.content)
    assert body == {
        "model": "gpt-image-2",
        "prompt": "a lighthouse",
        "n": 3,
        "size": "1536x1024",
        "quality": "high",
        "background": "opaque",
        "output_format": "webp",
        "output_compression": 80,
        "moderation": "low",
        "user": "hashed-user-1",
    }
    assert None not in body.values()


async def test_generate_uses_the_spec_name_not_an_alias(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec
) -> None:
    """The model sent is the catalogue's canonical name even when the request named an alias."""
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(return_value=ok())
    await openai.generate(gpt2, GenerateRequest(prompt="x", model="gpt-image-2-2026-04-21"))
    assert json.loads(route.calls.last.request.content)["model"] == "gpt-image-2"


async def test_generate_sends_complexity_for_2_6(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, catalogue: Catalogue
) -> None:
    """gpt-image-2.6's `complexity` is sent when set."""
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(return_value=ok())
    await openai.generate(catalogue.get("gpt-image-2.6-sunburst"), GenerateRequest(prompt="x", complexity="low"))
    body = json.loads(route.calls.last.request.content)
    assert body["complexity"] == "low"
    assert body["model"] == "gpt-image-2.6-sunburst"


@pytest.mark.parametrize("model", ["dall-e-2", "dall-e-3"])
async def test_dalle_generate_asks_for_b64(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, catalogue: Catalogue, model: str
) -> None:
    """DALL·E models are asked for response_format=b64_json (they would answer with URLs otherwise)."""
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(return_value=ok())
    await openai.generate(catalogue.get(model), GenerateRequest(prompt="x", quality="standard"))
    body = json.loads(route.calls.last.request.content)
    assert body == {"model": model, "prompt": "x", "n": 1, "quality": "standard", "response_format": "b64_json"}


@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-1.5", "gpt-image-1", "gpt-image-2.5-flare"])
async def test_gpt_image_generate_never_sends_response_format(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, catalogue: Catalogue, model: str
) -> None:
    """GPT image models reject response_format, so it is never sent to them."""
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(return_value=ok())
    await openai.generate(catalogue.get(model), GenerateRequest(prompt="x"))
    assert "response_format" not in json.loads(route.calls.last.request.content)


async def test_dalle3_generate_with_style(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, catalogue: Catalogue
) -> None:
    """dall-e-3's style and hd quality go out as given, and its revised_prompt comes back."""
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(
        return_value=httpx.Response(
            200,
            json={
                "created": 1,
                "data": [{"b64_json": images.b64(images.png(32, 32)), "revised_prompt": "A fox, photorealistic."}],
            },
        )
    )
    result = await openai.generate(
        catalogue.get("dall-e-3"), GenerateRequest(prompt="fox", style="natural", quality="hd", size="1024x1024")
    )
    body = json.loads(route.calls.last.request.content)
    assert (body["style"], body["quality"], body["size"]) == ("natural", "hd", "1024x1024")
    assert result.revised_prompt == "A fox, photorealistic."
    assert result.usage is None


async def test_azure_generate_url_headers_and_deployment(
    respx_mock: respx.MockRouter, azure: AzureProvider, gpt2: ModelSpec
) -> None:
    """Azure addresses the mapped deployment with api-version and sends `api-key`, never Authorization."""
    route = respx_mock.post(
        f"{AZURE}/openai/deployments/img2-prod/images/generations", params={"api-version": AZURE_VERSION}
    ).mock(return_value=ok(headers={"apim-request-id": "apim-123"}))
    result = await azure.generate(gpt2, GenerateRequest(prompt="x"))
    request = route.calls.last.request
    assert str(request.url) == (f"{AZURE}/openai/deployments/img2-prod/images/generations?api-version={AZURE_VERSION}")
    assert request.headers["api-key"] == "azure-key-0123456789abcdef"
    assert "authorization" not in request.headers
    assert json.loads(request.content) == {"model": "gpt-image-2", "prompt": "x", "n": 1}
    assert result.provider == "azure"
    assert result.request_id == "apim-123"


async def test_azure_unmapped_model_uses_its_own_name_as_deployment(
    respx_mock: respx.MockRouter, azure: AzureProvider, catalogue: Catalogue
) -> None:
    """A model missing from the deployment map is addressed by its own name."""
    spec = catalogue.get("gpt-image-1.5")
    assert azure.deployment(spec) == "gpt-image-1.5"
    route = respx_mock.post(f"{AZURE}/openai/deployments/gpt-image-1.5/images/generations").mock(return_value=ok())
    await azure.generate(spec, GenerateRequest(prompt="x"))
    assert route.calls.last.request.url.params["api-version"] == AZURE_VERSION


async def test_azure_without_key_sends_no_auth(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, gpt2: ModelSpec
) -> None:
    """An Azure provider without a key (e.g. behind a managed proxy) sends neither api-key nor Authorization."""
    provider = AzureProvider(client, api_key=None, endpoint=AZURE, api_version="v1")
    route = respx_mock.post(f"{AZURE}/openai/deployments/gpt-image-2/images/generations").mock(return_value=ok())
    await provider.generate(gpt2, GenerateRequest(prompt="x"))
    headers = route.calls.last.request.headers
    assert "api-key" not in headers
    assert "authorization" not in headers


async def test_compatible_generate_without_key(
    respx_mock: respx.MockRouter, compatible: CompatibleProvider, gpt2: ModelSpec
) -> None:
    """A compatible server gets the OpenAI path at its own base URL, without auth when there is no key."""
    route = respx_mock.post(f"{COMPAT}/images/generations").mock(return_value=ok())
    result = await compatible.generate(gpt2, GenerateRequest(prompt="x"))
    assert "authorization" not in route.calls.last.request.headers
    assert result.provider == "compatible"
    assert CompatibleProvider.follows_lifecycle is False
    assert OpenAIProvider.follows_lifecycle is True


async def test_compatible_with_key_uses_bearer(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, gpt2: ModelSpec
) -> None:
    """A compatible server with a key gets it as a Bearer token."""
    provider = CompatibleProvider(client, api_key="local-secret", base_url=COMPAT)
    route = respx_mock.post(f"{COMPAT}/images/generations").mock(return_value=ok())
    await provider.generate(gpt2, GenerateRequest(prompt="x"))
    assert route.calls.last.request.headers["authorization"] == "Bearer local-secret"


async def test_timeout_is_passed_per_request(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, gpt2: ModelSpec
) -> None:
    """A provider timeout is attached to each request it sends."""
    provider = OpenAIProvider(client, api_key=KEY, timeout=httpx.Timeout(42.0, connect=3.0))
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(return_value=ok())
    await provider.generate(gpt2, GenerateRequest(prompt="x"))
    timeout = route.calls.last.request.extensions["timeout"]
    assert timeout == {"connect": 3.0, "read": 42.0, "write": 42.0, "pool": 42.0}


def test_repr_does_not_show_the_key(client: httpx.AsyncClient) -> None:
    """A provider's repr shows its base URL and never its key."""
    provider = OpenAIProvider(client, api_key=KEY)
    assert KEY not in repr(provider)
    assert "api.openai.com" in repr(provider)


# -- responses ----------------------------------------------------------------------------------------------


async def test_generate_response_decoded(respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec) -> None:
    """b64 images are decoded to bytes with mime and size; size/quality/usage/request id are carried over."""
    respx_mock.post(f"{OPENAI}/images/generations").mock(
        return_value=ok(
            PNG,
            headers={"x-request-id": "req_abc"},
            size="1536x1024",
            quality="high",
            background="opaque",
            output_format="png",
            usage=USAGE,
        )
    )
    result = await openai.generate(gpt2, GenerateRequest(prompt="x"))
    (picture,) = result.images
    assert (picture.data, picture.mime, picture.width, picture.height) == (PNG, "image/png", 64, 48)
    assert (result.model, result.provider) == ("gpt-image-2", "openai")
    assert (result.size, result.quality, result.background, result.output_format) == (
        "1536x1024",
        "high",
        "opaque",
        "png",
    )
    assert result.usage == Usage(
        input_text_tokens=40, input_image_tokens=10, output_image_tokens=4160, output_text_tokens=40
    )
    assert result.usage.total_tokens == 4250
    assert result.request_id == "req_abc"
    assert result.revised_prompt is None


async def test_generate_several_images_in_order(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec
) -> None:
    """n images come back in the order the provider sent them, each with its own format and size."""
    blobs = (images.png(10, 20), images.jpeg(30, 10), images.webp(8, 8))
    respx_mock.post(f"{OPENAI}/images/generations").mock(return_value=ok(*blobs))
    result = await openai.generate(gpt2, GenerateRequest(prompt="x", n=3))
    assert [(i.mime, i.width, i.height, i.data) for i in result.images] == [
        ("image/png", 10, 20, blobs[0]),
        ("image/jpeg", 30, 10, blobs[1]),
        ("image/webp", 8, 8, blobs[2]),
    ]


async def test_usage_without_details_uses_totals(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec
) -> None:
    """Usage without the *_details objects maps input_tokens to text and output_tokens to image tokens."""
    usage = {"input_tokens": 12, "output_tokens": 272, "total_tokens": 284}
    respx_mock.post(f"{OPENAI}/images/generations").mock(return_value=ok(usage=usage))
    result = await openai.generate(gpt2, GenerateRequest(prompt="x"))
    assert result.usage == Usage(input_text_tokens=12, output_image_tokens=272)
    assert result.usage.total_tokens == 284


async def test_usage_cached_tokens(respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec) -> None:
    """input_tokens_details.cached_tokens is reported as cached input."""
    usage = {
        "input_tokens": 30,
        "input_tokens_details": {"text_tokens": 20, "image_tokens": 10, "cached_tokens": 8},
        "output_tokens": 100,
        "total_tokens": 130,
    }
    respx_mock.post(f"{OPENAI}/images/generations").mock(return_value=ok(usage=usage))
    result = await openai.generate(gpt2, GenerateRequest(prompt="x"))
    assert result.usage == Usage(
        input_text_tokens=20, input_image_tokens=10, output_image_tokens=100, cached_input_tokens=8
    )


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json={"created": 1, "data": []}),
        httpx.Response(200, json={"created": 1}),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json={"created": 1, "data": [{"revised_prompt": "only text"}]}),
        httpx.Response(200, json={"created": 1, "data": [{"b64_json": "!!!not-base64!!!"}]}),
        httpx.Response(200, json={"created": 1, "data": [{"b64_json": images.b64(b"plain text, not an image")}]}),
        httpx.Response(200, text="<html>oops</html>", headers={"content-type": "text/html"}),
        httpx.Response(200, content=b""),
    ],
    ids=["empty-data", "no-data", "list", "no-image", "bad-b64", "not-an-image", "html", "empty-body"],
)
async def test_unusable_success_is_provider_unavailable(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec, response: httpx.Response
) -> None:
    """A 200 without a usable image is ProviderUnavailable, not a crash and not a success."""
    respx_mock.post(f"{OPENAI}/images/generations").mock(return_value=response)
    with pytest.raises(ProviderUnavailable):
        await openai.generate(gpt2, GenerateRequest(prompt="x"))


# -- edit: multipart ----------------------------------------------------------------------------------------


async def test_edit_single_image_multipart(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec
) -> None:
    """One input image goes as field `image` with its file name, type and bytes; options are form fields."""
    route = respx_mock.post(f"{OPENAI}/images/edits").mock(return_value=ok(usage=USAGE))
    source = image("cat.png")
    req = EditRequest(
        prompt="give the cat a hat",
        images=(source,),
        n=2,
        size="1024x1536",
        quality="medium",
        input_fidelity="high",
        background="transparent",
        output_format="webp",
        output_compression=70,
        partial_images=1,
        user="hashed-9",
    )
    result = await openai.edit(gpt2, req)
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {KEY}"
    fields, files = form_of(request)
    assert fields == {
        "model": "gpt-image-2",
        "prompt": "give the cat a hat",
        "n": "2",
        "size": "1024x1536",
        "quality": "medium",
        "input_fidelity": "high",
        "background": "transparent",
        "output_format": "webp",
        "output_compression": "70",
        "user": "hashed-9",
    }
    assert [(f.name, f.filename, f.content_type, f.data) for f in files] == [
        ("image", "cat.png", "image/png", source.data)
    ]
    assert result.usage is not None
    assert result.usage.input_image_tokens == 10


async def test_edit_minimal_fields(respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec) -> None:
    """An edit with only a prompt and image sends exactly model, prompt and n besides the file."""
    route = respx_mock.post(f"{OPENAI}/images/edits").mock(return_value=ok())
    await openai.edit(gpt2, EditRequest(prompt="p", images=(image(),)))
    fields, files = form_of(route.calls.last.request)
    assert fields == {"model": "gpt-image-2", "prompt": "p", "n": "1"}
    assert [f.name for f in files] == ["image"]


async def test_edit_several_images_and_mask(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec
) -> None:
    """Several inputs go as repeated `image[]` in order (never `image`), and the mask as `mask`."""
    route = respx_mock.post(f"{OPENAI}/images/edits").mock(return_value=ok())
    first = image("one.png", images.png(16, 16, (1, 2, 3, 255)))
    second = image("two.jpg", images.jpeg(16, 16), "image/jpeg")
    third = image("three.webp", images.webp(16, 16), "image/webp")
    mask = image("mask.png", images.mask(16, 16))
    await openai.edit(gpt2, EditRequest(prompt="merge", images=(first, second, third), mask=mask))
    _, files = form_of(route.calls.last.request)
    assert [(f.name, f.filename, f.content_type, f.data) for f in files] == [
        ("image[]", "one.png", "image/png", first.data),
        ("image[]", "two.jpg", "image/jpeg", second.data),
        ("image[]", "three.webp", "image/webp", third.data),
        ("mask", "mask.png", "image/png", mask.data),
    ]


async def test_edit_single_image_with_mask(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec
) -> None:
    """One image plus a mask: `image` and `mask` parts."""
    route = respx_mock.post(f"{OPENAI}/images/edits").mock(return_value=ok())
    await openai.edit(gpt2, EditRequest(prompt="p", images=(image(),), mask=image("m.png", images.mask())))
    _, files = form_of(route.calls.last.request)
    assert [(f.name, f.filename) for f in files] == [("image", "cat.png"), ("mask", "m.png")]


async def test_dalle2_edit_asks_for_b64(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, catalogue: Catalogue
) -> None:
    """A dall-e-2 edit sends response_format=b64_json as a form field."""
    route = respx_mock.post(f"{OPENAI}/images/edits").mock(return_value=ok())
    await openai.edit(catalogue.get("dall-e-2"), EditRequest(prompt="p", images=(image(),), size="256x256"))
    fields, _ = form_of(route.calls.last.request)
    assert fields == {"model": "dall-e-2", "prompt": "p", "n": "1", "size": "256x256", "response_format": "b64_json"}


async def test_azure_edit_url(respx_mock: respx.MockRouter, azure: AzureProvider, gpt2: ModelSpec) -> None:
    """Azure edits go to the deployment's images/edits with api-version and api-key."""
    route = respx_mock.post(
        f"{AZURE}/openai/deployments/img2-prod/images/edits", params={"api-version": AZURE_VERSION}
    ).mock(return_value=ok())
    await azure.edit(gpt2, EditRequest(prompt="p", images=(image(),)))
    request = route.calls.last.request
    assert request.headers["api-key"] == "azure-key-0123456789abcdef"
    assert [f.name for f in form_of(request)[1]] == ["image"]


# -- variations ---------------------------------------------------------------------------------------------


async def test_variations_multipart(respx_mock: respx.MockRouter, openai: OpenAIProvider, catalogue: Catalogue) -> None:
    """Variations send `image` plus model, n, size and response_format; no prompt."""
    route = respx_mock.post(f"{OPENAI}/images/variations").mock(
        return_value=ok(images.png(256, 256), images.png(256, 256))
    )
    source = image("in.png", images.png(32, 32))
    result = await openai.variations(
        catalogue.get("dall-e-2"), VaryRequest(image=source, n=2, size="256x256", prompt="ignored", user="u1")
    )
    fields, files = form_of(route.calls.last.request)
    assert fields == {"model": "dall-e-2", "n": "2", "size": "256x256", "response_format": "b64_json", "user": "u1"}
    assert [(f.name, f.filename, f.content_type, f.data) for f in files] == [
        ("image", "in.png", "image/png", source.data)
    ]
    assert [(i.width, i.height) for i in result.images] == [(256, 256), (256, 256)]


# -- URL answers ----------------------------------------------------------------------------------------------


async def test_url_answer_on_own_host_is_downloaded_without_credentials(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, gpt2: ModelSpec
) -> None:
    """A compatible server answering with a URL on its own host: the image is fetched anonymously and decoded."""
    provider = CompatibleProvider(client, api_key="local-secret", base_url=COMPAT)
    picture = images.jpeg(40, 30)
    respx_mock.post(f"{COMPAT}/images/generations").mock(
        return_value=httpx.Response(200, json={"created": 1, "data": [{"url": "https://images.example.test/o/1.jpg"}]})
    )
    get = respx_mock.get("https://images.example.test/o/1.jpg").mock(
        return_value=httpx.Response(200, content=picture, headers={"content-type": "image/jpeg"})
    )
    result = await provider.generate(gpt2, GenerateRequest(prompt="x"))
    assert [(i.mime, i.width, i.height, i.data) for i in result.images] == [("image/jpeg", 40, 30, picture)]
    assert "authorization" not in get.calls.last.request.headers
    assert "api-key" not in get.calls.last.request.headers


async def test_url_answer_on_foreign_host_is_refused(
    respx_mock: respx.MockRouter, compatible: CompatibleProvider, gpt2: ModelSpec
) -> None:
    """A result URL on a host that is neither the provider's nor allow-listed is not fetched."""
    respx_mock.post(f"{COMPAT}/images/generations").mock(
        return_value=httpx.Response(200, json={"created": 1, "data": [{"url": "https://evil.example.org/x.png"}]})
    )
    get = respx_mock.get("https://evil.example.org/x.png").mock(return_value=httpx.Response(200))
    with pytest.raises(ProviderUnavailable) as caught:
        await compatible.generate(gpt2, GenerateRequest(prompt="x"))
    assert not get.called
    assert "evil.example.org" in caught.value.message


async def test_url_answer_on_allow_listed_subdomain(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    """A `.cdn.example.net` allow-list entry admits any of its subdomains (DALL·E-style blob URLs)."""
    provider = OpenAIProvider(client, api_key=KEY, download_hosts=[".cdn.example.net"])
    respx_mock.post(f"{OPENAI}/images/generations").mock(
        return_value=httpx.Response(
            200, json={"created": 1, "data": [{"url": "https://eu.blob.cdn.example.net/a.png?sig=1"}]}
        )
    )
    respx_mock.get("https://eu.blob.cdn.example.net/a.png").mock(
        return_value=httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
    )
    result = await provider.generate(catalogue.get("dall-e-3"), GenerateRequest(prompt="x"))
    assert result.images[0].data == PNG


async def test_url_answer_download_failure_is_provider_unavailable(
    respx_mock: respx.MockRouter, compatible: CompatibleProvider, gpt2: ModelSpec
) -> None:
    """A result URL answering 404 makes the call fail as ProviderUnavailable."""
    respx_mock.post(f"{COMPAT}/images/generations").mock(
        return_value=httpx.Response(200, json={"created": 1, "data": [{"url": "https://images.example.test/gone.png"}]})
    )
    respx_mock.get("https://images.example.test/gone.png").mock(return_value=httpx.Response(404))
    with pytest.raises(ProviderUnavailable) as caught:
        await compatible.generate(gpt2, GenerateRequest(prompt="x"))
    assert "404" in caught.value.message


# -- error envelopes through the provider ---------------------------------------------------------------------


async def test_content_policy_violation(respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec) -> None:
    """400 content_policy_violation → ContentRejected with status, code and request id; one call."""
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(
        return_value=err(
            400,
            "content_policy_violation",
            message="Your request was rejected as a result of our safety system.",
            headers={"x-request-id": "req_cp"},
        )
    )
    with pytest.raises(ContentRejected) as caught:
        await openai.generate(gpt2, GenerateRequest(prompt="x"))
    error = caught.value
    assert (error.status, error.code, error.request_id, error.stage, error.categories) == (
        400,
        "content_policy_violation",
        "req_cp",
        None,
        (),
    )
    assert route.call_count == 1


async def test_moderation_blocked_output(respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec) -> None:
    """400 image_generation_user_error/moderation_blocked at the output stage keeps stage and categories."""
    respx_mock.post(f"{OPENAI}/images/generations").mock(
        return_value=err(
            400,
            "moderation_blocked",
            "image_generation_user_error",
            message="Your request was rejected by the safety system. safety_violations=[sexual].",
            moderation_details={"moderation_stage": "output", "categories": ["sexual"]},
        )
    )
    with pytest.raises(ContentRejected) as caught:
        await openai.generate(gpt2, GenerateRequest(prompt="x"))
    assert (caught.value.stage, caught.value.categories) == ("output", ("sexual",))
    assert "generated image" in caught.value.message


async def test_invalid_size_is_bad_request(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec
) -> None:
    """400 invalid_value on `size` → BadRequest naming the parameter."""
    response = httpx.Response(
        400,
        json={
            "error": {
                "message": "Invalid value: '7x7'. Supported values are: '1024x1024'.",
                "type": "invalid_request_error",
                "param": "size",
                "code": "invalid_value",
            }
        },
    )
    respx_mock.post(f"{OPENAI}/images/generations").mock(return_value=response)
    with pytest.raises(BadRequest) as caught:
        await openai.generate(gpt2, GenerateRequest(prompt="x", size="7x7"))
    assert type(caught.value) is BadRequest
    assert "(size)" in caught.value.message
    assert caught.value.code == "invalid_value"


async def test_billing_hard_limit(respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec) -> None:
    """400 billing_hard_limit_reached → QuotaExhausted, not retried."""
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(
        return_value=err(400, "billing_hard_limit_reached", message="Billing hard limit has been reached")
    )
    with pytest.raises(QuotaExhausted):
        await openai.generate(gpt2, GenerateRequest(prompt="x"))
    assert route.call_count == 1


async def test_unauthorized_never_echoes_the_key(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec
) -> None:
    """401 → AuthenticationFailed whose text, repr and args hold no part of the key the provider echoed."""
    respx_mock.post(f"{OPENAI}/images/generations").mock(
        return_value=err(
            401,
            "invalid_api_key",
            message=f"Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com.",
        )
    )
    with pytest.raises(AuthenticationFailed) as caught:
        await openai.generate(gpt2, GenerateRequest(prompt="x"))
    error = caught.value
    for text in (str(error), error.message, repr(error), repr(error.args), repr(vars(error))):
        assert KEY not in text
        assert "sk-live" not in text
    assert error.status == 401


async def test_unauthorized_azure_key_not_echoed(
    respx_mock: respx.MockRouter, azure: AzureProvider, gpt2: ModelSpec
) -> None:
    """Azure's 401 (which names the key header) maps to AuthenticationFailed without the key."""
    respx_mock.post(f"{AZURE}/openai/deployments/img2-prod/images/generations").mock(
        return_value=httpx.Response(
            401,
            json={
                "error": {"code": "401", "message": "Access denied due to invalid api-key azure-key-0123456789abcdef"}
            },
        )
    )
    with pytest.raises(AuthenticationFailed) as caught:
        await azure.generate(gpt2, GenerateRequest(prompt="x"))
    assert "azure-key-0123456789abcdef" not in str(caught.value)


async def test_forbidden_is_permission_denied(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec
) -> None:
    """403 (organisation not verified) → PermissionDenied, one call."""
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(
        return_value=err(403, None, message="Your organization must be verified to use the model `gpt-image-2`.")
    )
    with pytest.raises(PermissionDenied):
        await openai.generate(gpt2, GenerateRequest(prompt="x"))
    assert route.call_count == 1


async def test_model_not_found(respx_mock: respx.MockRouter, openai: OpenAIProvider, catalogue: Catalogue) -> None:
    """404 model_not_found (a shut-down model) → ModelUnavailable."""
    respx_mock.post(f"{OPENAI}/images/generations").mock(
        return_value=err(404, "model_not_found", message="The model `dall-e-3` does not exist.")
    )
    with pytest.raises(ModelUnavailable) as caught:
        await openai.generate(catalogue.get("dall-e-3"), GenerateRequest(prompt="x"))
    assert caught.value.status == 404


async def test_azure_deployment_not_found(respx_mock: respx.MockRouter, azure: AzureProvider, gpt2: ModelSpec) -> None:
    """Azure's 404 DeploymentNotFound → ModelUnavailable."""
    respx_mock.post(f"{AZURE}/openai/deployments/img2-prod/images/generations").mock(
        return_value=httpx.Response(404, json={"error": {"code": "DeploymentNotFound", "message": "no deployment"}})
    )
    with pytest.raises(ModelUnavailable):
        await azure.generate(gpt2, GenerateRequest(prompt="x"))


async def test_rate_limited_with_retry_after(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec, no_sleep: NoSleep
) -> None:
    """429 rate_limit_exceeded is retried, then raised as RateLimited carrying retry_after."""
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(
        return_value=err(429, "rate_limit_exceeded", "requests", headers={"retry-after": "2"})
    )
    with pytest.raises(RateLimited) as caught:
        await openai.generate(gpt2, GenerateRequest(prompt="x"))
    assert caught.value.retry_after == 2.0
    assert route.call_count == 3
    assert no_sleep.delays == [2.0, 2.0]


async def test_insufficient_quota_not_retried(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec, no_sleep: NoSleep
) -> None:
    """429 insufficient_quota → QuotaExhausted after exactly one call."""
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(
        return_value=err(429, "insufficient_quota", "insufficient_quota", message="You exceeded your current quota")
    )
    with pytest.raises(QuotaExhausted):
        await openai.generate(gpt2, GenerateRequest(prompt="x"))
    assert route.call_count == 1
    assert no_sleep.delays == []


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_after_retries(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec, status: int
) -> None:
    """500/503 server_error → ProviderUnavailable once the retries are used up."""
    route = respx_mock.post(f"{OPENAI}/images/generations").mock(
        return_value=err(status, None, "server_error", message="The server had an error")
    )
    with pytest.raises(ProviderUnavailable) as caught:
        await openai.generate(gpt2, GenerateRequest(prompt="x"))
    assert type(caught.value) is ProviderUnavailable
    assert caught.value.status == status
    assert route.call_count == 3


@pytest.mark.parametrize(
    ("status", "cls"), [(502, ProviderUnavailable), (400, BadRequest), (401, AuthenticationFailed)]
)
async def test_non_json_error_body(
    respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec, status: int, cls: type[Exception]
) -> None:
    """An HTML error page (a proxy in the way) still maps by status."""
    respx_mock.post(f"{OPENAI}/images/generations").mock(
        return_value=httpx.Response(
            status, text="<html><h1>Bad Gateway</h1></html>", headers={"content-type": "text/html"}
        )
    )
    with pytest.raises(cls) as caught:
        await openai.generate(gpt2, GenerateRequest(prompt="x"))
    assert type(caught.value) is cls


async def test_edit_bad_image_param(respx_mock: respx.MockRouter, openai: OpenAIProvider, gpt2: ModelSpec) -> None:
    """An edit refused because of `image` (e.g. wrong format) → BadImage."""
    respx_mock.post(f"{OPENAI}/images/edits").mock(
        return_value=httpx.Response(
            400,
            json={
                "error": {
                    "message": "Invalid input image - format must be in ['RGBA', 'LA', 'L'], got RGB.",
                    "type": "invalid_request_error",
                    "param": "image",
                    "code": "invalid_value",
                }
            },
        )
    )
    with pytest.raises(BadImage):
        await openai.edit(gpt2, EditRequest(prompt="p", images=(image(),)))


async def test_azure_content_filter(respx_mock: respx.MockRouter, azure: AzureProvider, gpt2: ModelSpec) -> None:
    """Azure's content filter error (innererror ResponsibleAIPolicyViolation) → ContentRejected."""
    respx_mock.post(f"{AZURE}/openai/deployments/img2-prod/images/generations").mock(
        return_value=httpx.Response(
            400,
            json={
                "error": {
                    "code": "contentFilter",
                    "message": "Your request was rejected as a result of our safety system.",
                    "innererror": {
                        "code": "ResponsibleAIPolicyViolation",
                        "content_filter_result": {"sexual": {"filtered": True, "severity": "high"}},
                    },
                }
            },
        )
    )
    with pytest.raises(ContentRejected):
        await azure.generate(gpt2, GenerateRequest(prompt="x"))


# -- a real loopback HTTP server ------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request the loopback server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    parts: list[Part] = field(default_factory=list)


Route = Callable[["_Handler", Seen], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's pool really holds connections
    owner: Loopback

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        body = self._read_body()
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        content_type = seen.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            seen.parts = parse_multipart(content_type, body)
        self.owner.seen.append(seen)
        route = self.owner.routes.get((self.command, urlsplit(self.path).path))
        if route is None:
            self.reply(404, b'{"error": {"message": "no route", "type": "invalid_request_error"}}')
        else:
            route(self, seen)

    def reply(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, status: int, payload: object, **headers: str) -> None:
        self.reply(status, json.dumps(payload).encode(), **headers)

    def start_chunked(self, content_type: str = "text/event-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def drop_connection(self) -> None:
        """Hang up mid-response, as a crashing proxy would."""
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[_Handler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.failures: list[BaseException] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Record handler failures for the test to check; a client hanging up on purpose is not one."""
        failure = sys.exc_info()[1]
        if failure is not None and not isinstance(failure, ConnectionError):
            self.failures.append(failure)


class Loopback:
    """A ThreadingHTTPServer on 127.0.0.1 with per-test routes, recording what it received."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.routes: dict[tuple[str, str], Route] = {}
        handler = type("Handler", (_Handler,), {"owner": self})
        self.httpd = _Server(handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="loopback-http", daemon=True
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def route(self, method: str, path: str) -> Callable[[Route], Route]:
        def register(fn: Route) -> Route:
            self.routes[(method, path)] = fn
            return fn

        return register


@pytest.fixture
def server() -> Iterator[Loopback]:
    loopback = Loopback()
    loopback.thread.start()
    yield loopback
    loopback.httpd.shutdown()
    loopback.httpd.server_close()
    loopback.thread.join(timeout=5)
    assert not loopback.httpd.failures, loopback.httpd.failures


@pytest.fixture
async def real(server: Loopback) -> AsyncIterator[tuple[httpx.AsyncClient, TrackingTransport]]:
    """A real httpx client (real sockets) on the loopback server, with response tracking."""
    transport = TrackingTransport(httpx.AsyncHTTPTransport())
    async with httpx.AsyncClient(transport=transport, timeout=10.0) as http:
        yield http, transport
    assert transport.open == 0


def assert_pool_quiet(transport: TrackingTransport) -> None:
    """No response left open and no pooled connection busy with a request."""
    assert transport.open == 0
    pool = transport.inner._pool
    assert not pool._requests
    for connection in pool.connections:
        assert connection.is_idle() or connection.is_closed(), connection


async def test_real_multipart_edit_then_url_download(
    server: Loopback, real: tuple[httpx.AsyncClient, TrackingTransport], gpt2: ModelSpec
) -> None:
    """A real multipart edit upload reaches the server intact; its URL answer is then downloaded from it."""
    http, transport = real
    result_png = images.png(24, 12, (9, 9, 9, 255))

    @server.route("POST", "/v1/images/edits")
    def edits(h: _Handler, seen: Seen) -> None:
        h.reply_json(
            200,
            {"created": 1, "data": [{"url": f"{server.base}/files/out.png"}], "usage": USAGE},
            x_request_id="req_loop",
        )

    @server.route("GET", "/files/out.png")
    def download(h: _Handler, seen: Seen) -> None:
        h.reply(200, result_png, "image/png")

    provider = CompatibleProvider(http, api_key="local-key", base_url=f"{server.base}/v1")
    first, second = image("a.png", images.png(16, 16)), image("b.jpg", images.jpeg(16, 16), "image/jpeg")
    mask = image("mask.png", images.mask(16, 16))
    result = await provider.edit(
        gpt2, EditRequest(prompt="blend them", images=(first, second), mask=mask, size="1024x1024", quality="low")
    )

    upload, fetch = server.seen
    assert (upload.method, upload.path) == ("POST", "/v1/images/edits")
    assert upload.headers["authorization"] == "Bearer local-key"
    fields = {p.name: p.text for p in upload.parts if p.filename is None}
    assert fields == {"model": "gpt-image-2", "prompt": "blend them", "n": "1", "size": "1024x1024", "quality": "low"}
    files = [(p.name, p.filename, p.content_type, p.data) for p in upload.parts if p.filename is not None]
    assert files == [
        ("image[]", "a.png", "image/png", first.data),
        ("image[]", "b.jpg", "image/jpeg", second.data),
        ("mask", "mask.png", "image/png", mask.data),
    ]

    assert (fetch.method, fetch.path) == ("GET", "/files/out.png")
    assert "authorization" not in fetch.headers
    (picture,) = result.images
    assert (picture.data, picture.mime, picture.width, picture.height) == (result_png, "image/png", 24, 12)
    assert result.request_id == "req_loop"
    assert result.usage is not None
    assert result.usage.output_image_tokens == 4160
    assert transport.opened == 2
    assert_pool_quiet(transport)


async def test_real_server_errors_leave_no_connection_busy(
    server: Loopback, real: tuple[httpx.AsyncClient, TrackingTransport], gpt2: ModelSpec, no_sleep: NoSleep
) -> None:
    """After a 503 retried to failure and then a success over real sockets, every response is closed."""
    http, transport = real
    calls = {"n": 0}

    @server.route("POST", "/v1/images/generations")
    def generations(h: _Handler, seen: Seen) -> None:
        calls["n"] += 1
        if calls["n"] <= 3:
            h.reply_json(503, {"error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}})
        else:
            h.reply_json(200, {"created": 1, "data": [{"b64_json": images.b64(PNG)}]})

    provider = CompatibleProvider(http, api_key=None, base_url=f"{server.base}/v1", retry=RetryPolicy(sleep=no_sleep))
    with pytest.raises(ProviderUnavailable):
        await provider.generate(gpt2, GenerateRequest(prompt="x"))
    assert calls["n"] == 3
    assert_pool_quiet(transport)

    result = await provider.generate(gpt2, GenerateRequest(prompt="x"))
    assert result.images[0].data == PNG
    assert_pool_quiet(transport)
    assert transport.opened == 4


async def test_real_refused_download_closes_its_response(
    server: Loopback, real: tuple[httpx.AsyncClient, TrackingTransport], gpt2: ModelSpec
) -> None:
    """A result URL serving HTML is refused and its response closed without reading it all."""
    http, transport = real

    @server.route("POST", "/v1/images/generations")
    def generations(h: _Handler, seen: Seen) -> None:
        h.reply_json(200, {"created": 1, "data": [{"url": f"{server.base}/files/page"}]})

    @server.route("GET", "/files/page")
    def page(h: _Handler, seen: Seen) -> None:
        h.reply(200, b"<html>" + b"x" * 100_000 + b"</html>", "text/html")

    provider = CompatibleProvider(http, api_key=None, base_url=f"{server.base}/v1")
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.generate(gpt2, GenerateRequest(prompt="x"))
    assert "text/html" in caught.value.message
    assert_pool_quiet(transport)


def _sse(event: str, payload: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode()


async def test_real_stream_split_across_chunks(
    server: Loopback, real: tuple[httpx.AsyncClient, TrackingTransport], gpt2: ModelSpec
) -> None:
    """Real chunked SSE, cut at awkward places (mid-line, mid-JSON), still yields partial then Completed."""
    http, transport = real
    partial, final = images.png(8, 8, (1, 1, 1, 255)), images.png(16, 16)
    body = _sse(
        "image_generation.partial_image",
        {"type": "image_generation.partial_image", "b64_json": images.b64(partial), "partial_image_index": 0},
    ) + _sse(
        "image_generation.completed",
        {"type": "image_generation.completed", "b64_json": images.b64(final), "size": "1024x1024", "usage": USAGE},
    )

    @server.route("POST", "/v1/images/generations")
    def generations(h: _Handler, seen: Seen) -> None:
        h.start_chunked()
        for start in range(0, len(body), 37):
            h.chunk(body[start : start + 37])
        h.end_chunked()

    provider = CompatibleProvider(http, api_key=None, base_url=f"{server.base}/v1")
    async with aclosing(provider.stream_generate(gpt2, GenerateRequest(prompt="x", partial_images=1))) as stream:
        events = [event async for event in stream]
    assert [type(e) for e in events] == [PartialImage, Completed]
    assert isinstance(events[0], PartialImage)
    assert events[0].data == partial
    assert isinstance(events[1], Completed)
    assert events[1].result.images[0].data == final
    sent = json.loads(server.seen[0].body)
    assert (sent["stream"], sent["partial_images"]) == (True, 1)
    assert_pool_quiet(transport)


async def test_real_stream_dropped_midway(
    server: Loopback, real: tuple[httpx.AsyncClient, TrackingTransport], gpt2: ModelSpec
) -> None:
    """A server hanging up mid-stream gives StreamInterrupted after the partials; the connection is released."""
    http, transport = real

    @server.route("POST", "/v1/images/generations")
    def generations(h: _Handler, seen: Seen) -> None:
        h.start_chunked()
        h.chunk(
            _sse(
                "image_generation.partial_image",
                {"type": "image_generation.partial_image", "b64_json": images.b64(PNG), "partial_image_index": 0},
            )
        )
        h.chunk(b'event: image_generation.completed\ndata: {"type": "image_gen')
        h.drop_connection()

    provider = CompatibleProvider(http, api_key=None, base_url=f"{server.base}/v1")
    events: list[object] = []

    async def drain() -> None:
        async with aclosing(provider.stream_generate(gpt2, GenerateRequest(prompt="x", partial_images=1))) as stream:
            async for event in stream:
                events.append(event)

    with pytest.raises(StreamInterrupted):
        await drain()
    assert [type(e) for e in events] == [PartialImage]
    assert_pool_quiet(transport)
