"""ImagesClient: model lifecycle, checks before the network, hashed users, and how variations are served."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json

import httpx
import pytest
import respx
from PIL import Image

from bot.api.client import ImagesClient, hash_user
from bot.api.http import RetryPolicy
from bot.api.openai import CompatibleProvider, OpenAIProvider
from bot.api.types import EditRequest, GenerateRequest, InputImage, VaryRequest
from bot.catalogue import Catalogue
from bot.errors import InvalidOption, ModelUnavailable

BASE = "https://api.test/v1"


def png(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def answer(n: int = 1) -> httpx.Response:
    item = {"b64_json": base64.b64encode(png()).decode()}
    return httpx.Response(200, json={"created": 1, "data": [item] * n}, headers={"x-request-id": "req_1"})


@pytest.fixture
async def http():
    async with httpx.AsyncClient() as client:
        yield client


def client_for(
    http: httpx.AsyncClient, catalogue: Catalogue, *, provider: str = "openai", today: dt.date
) -> ImagesClient:
    cls = OpenAIProvider if provider == "openai" else CompatibleProvider
    impl = cls(http, api_key="sk-test-key-0000000000", base_url=BASE, retry=RetryPolicy(max_retries=0))
    return ImagesClient(impl, catalogue, default_model="gpt-image-2", user_salt="pepper", today=lambda: today)


TODAY = dt.date(2026, 11, 24)


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_user_id_is_hashed(respx_mock: respx.MockRouter, http: httpx.AsyncClient, catalogue: Catalogue) -> None:
    """The provider sees a salted hash of the Discord user id, never the id itself."""
    route = respx_mock.post("/images/generations").mock(return_value=answer())
    result = await client_for(http, catalogue, today=TODAY).generate(GenerateRequest(prompt="a fox", user="123456789"))
    body = json.loads(route.calls.last.request.content)
    assert body["user"] == hash_user("123456789", "pepper")
    assert "123456789" not in route.calls.last.request.content.decode()
    assert hash_user("123456789", "pepper") != hash_user("123456789", "salt")
    assert result.request_id == "req_1"
    assert result.model == "gpt-image-2"
    assert result.provider_ms >= 0


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_defaults_are_filled(respx_mock: respx.MockRouter, http: httpx.AsyncClient, catalogue: Catalogue) -> None:
    """The default model, size and quality are sent explicitly; unset options are left out."""
    route = respx_mock.post("/images/generations").mock(return_value=answer())
    await client_for(http, catalogue, today=TODAY).generate(GenerateRequest(prompt="a fox"))
    body = json.loads(route.calls.last.request.content)
    assert body == {"model": "gpt-image-2", "prompt": "a fox", "n": 1, "size": "auto", "quality": "auto"}


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_shut_down_model_is_refused_before_any_call(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    """dall-e-3 at OpenAI after 2026-05-12: refused with its replacement, nothing sent."""
    route = respx_mock.post("/images/generations").mock(return_value=answer())
    with pytest.raises(ModelUnavailable) as caught:
        await client_for(http, catalogue, today=TODAY).generate(GenerateRequest(prompt="x", model="dall-e-3"))
    assert str(caught.value) == "dall-e-3 was shut down on 2026-05-12. Use gpt-image-2 instead."
    assert caught.value.replacement == "gpt-image-2"
    assert not route.called


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_deprecated_model_works_until_its_date(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    """gpt-image-1.5 still works on 2026-11-30 and is refused from 2026-12-01."""
    respx_mock.post("/images/generations").mock(return_value=answer())
    before = client_for(http, catalogue, today=dt.date(2026, 11, 30))
    assert (await before.generate(GenerateRequest(prompt="x", model="gpt-image-1.5"))).model == "gpt-image-1.5"
    after = client_for(http, catalogue, today=dt.date(2026, 12, 1))
    with pytest.raises(ModelUnavailable, match="shut down on 2026-12-01"):
        await after.generate(GenerateRequest(prompt="x", model="gpt-image-1.5"))


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_compatible_servers_still_serve_dall_e(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    """A compatible server does not follow OpenAI's lifecycle: dall-e-2 works there."""
    route = respx_mock.post("/images/generations").mock(return_value=answer())
    client = client_for(http, catalogue, provider="compatible", today=TODAY)
    await client.generate(GenerateRequest(prompt="x", model="dall-e-2", size="256x256"))
    assert json.loads(route.calls.last.request.content)["response_format"] == "b64_json"


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_invalid_option_costs_no_call(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    """A style on gpt-image-2 is refused locally with a precise sentence."""
    route = respx_mock.post("/images/generations").mock(return_value=answer())
    with pytest.raises(InvalidOption, match=r"^gpt-image-2 takes no style; no model offered here does\.$"):
        await client_for(http, catalogue, today=TODAY).generate(GenerateRequest(prompt="x", style="vivid"))
    assert not route.called


@pytest.mark.parametrize(("strength", "fidelity"), [("subtle", "high"), ("strong", "low")])
@respx.mock(base_url=BASE, assert_all_called=False)
async def test_vary_goes_through_edit_when_no_variations_endpoint(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient, catalogue: Catalogue, strength: str, fidelity: str
) -> None:
    """gpt-image-2 has no variations endpoint: vary becomes an edit at the asked strength."""
    edits = respx_mock.post("/images/edits").mock(return_value=answer(2))
    variations = respx_mock.post("/images/variations").mock(return_value=answer())
    client = client_for(http, catalogue, today=TODAY)
    result = await client.vary(VaryRequest(image=InputImage(png()), n=2, strength=strength))  # type: ignore[arg-type]
    assert not variations.called
    content = edits.calls.last.request.content
    assert f'name="input_fidelity"\r\n\r\n{fidelity}'.encode() in content
    assert b'name="image"; filename="image.png"' in content
    assert result.variation == f"edit-{strength}"
    assert len(result.images) == 2


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_vary_uses_the_endpoint_where_the_model_has_one(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    """dall-e-2 on a compatible server: the real variations endpoint."""
    route = respx_mock.post("/images/variations").mock(return_value=answer())
    client = client_for(http, catalogue, provider="compatible", today=TODAY)
    result = await client.vary(VaryRequest(image=InputImage(png()), model="dall-e-2", size="256x256"))
    assert route.called
    assert result.variation == "endpoint"


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_vary_without_model_picks_one_that_can(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    """A default model that cannot vary (dall-e-3 on a compatible server) falls back to the newest that can."""
    respx_mock.post("/images/edits").mock(return_value=answer())
    impl = CompatibleProvider(http, api_key=None, base_url=BASE, retry=RetryPolicy(max_retries=0))
    client = ImagesClient(impl, catalogue, default_model="dall-e-3", today=lambda: TODAY)
    result = await client.vary(VaryRequest(image=InputImage(png())))
    assert client.catalogue.get(result.model).can_vary()
    with pytest.raises(InvalidOption, match="dall-e-3 cannot make variations"):
        await client.vary(VaryRequest(image=InputImage(png()), model="dall-e-3"))


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_edit_with_mask_sends_both_files(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    """An edit uploads the image and the mask as multipart files."""
    route = respx_mock.post("/images/edits").mock(return_value=answer())
    client = client_for(http, catalogue, today=TODAY)
    await client.edit(EditRequest(prompt="add a hat", images=(InputImage(png()),), mask=InputImage(png(), "mask.png")))
    content = route.calls.last.request.content
    assert b'name="mask"; filename="mask.png"' in content
    assert b'name="prompt"\r\n\r\nadd a hat' in content
