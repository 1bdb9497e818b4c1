"""Studio: every request checked, priced, reserved, then settled or refunded, through a real ledger."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from PIL import Image

from bot.api.client import ImagesClient
from bot.api.http import RetryPolicy
from bot.api.mock import MockProvider
from bot.api.openai import OpenAIProvider
from bot.api.types import EditRequest, GenerateRequest, ImageResult, InputImage, PartialImage, VaryRequest
from bot.catalogue import Catalogue
from bot.errors import BadImage, BudgetExceeded, ContentRejected, InvalidOption, ProviderTimeout, ProviderUnavailable
from bot.imaging.masks import parse_region
from bot.jobs import Requester, Studio, generate_again
from bot.store.db import Database, shipped_migrations
from bot.store.ledger import JobDraft, Ledger
from tests import images

BASE = "https://api.test/v1"
ALICE = Requester(user_id="alice", guild_id="g1", channel_id="c1", roles=("r1",))
USAGE = {
    "input_tokens": 40,
    "input_tokens_details": {"text_tokens": 40, "image_tokens": 0},
    "output_tokens": 1767,
    "output_tokens_details": {"image_tokens": 1767, "text_tokens": 0},
    "total_tokens": 1807,
}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def studio(http: httpx.AsyncClient, db: Database, catalogue: Catalogue) -> Studio:
    provider = OpenAIProvider(http, api_key="sk-test-0000000000", base_url=BASE, retry=RetryPolicy(max_retries=0))
    return Studio(ImagesClient(provider, catalogue, default_model="gpt-image-2"), Ledger(db))


def answer(usage: dict[str, object] | None = USAGE) -> httpx.Response:
    body: dict[str, object] = {"created": 1, "data": [{"b64_json": base64.b64encode(images.png(16, 16)).decode()}]}
    if usage:
        body["usage"] = usage
    return httpx.Response(200, json=body, headers={"x-request-id": "req_42"})


async def job(db: Database, job_id: int) -> dict[str, object]:
    row = await db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
    assert row is not None
    return dict(row)


async def net(db: Database) -> int:
    value = await db.fetchval(
        "SELECT COALESCE(SUM(CASE kind WHEN 'refund' THEN -amount ELSE amount END), 0) FROM ledger"
    )
    return int(value)


@respx.mock(base_url=BASE)
async def test_success_charges_the_actual_cost(respx_mock: respx.MockRouter, studio: Studio, db: Database) -> None:
    """A finished job is settled at the cost its token usage gives, and recorded with its request id."""
    respx_mock.post("/images/generations").mock(return_value=answer())
    outcome = await studio.generate(GenerateRequest(prompt="a fox", quality="medium", size="1024x1024"), ALICE)
    # 40 text tokens at $5/M and 1,767 image tokens at $30/M.
    assert outcome.cost == 200 + 53_010
    assert outcome.estimate >= 53_000
    row = await job(db, outcome.job_id)
    assert (row["status"], row["cost_state"], row["cost"], row["request_id"]) == (
        "succeeded",
        "settled",
        53_210,
        "req_42",
    )
    assert (row["user_id"], row["guild_id"], json.loads(str(row["roles"]))) == ("alice", "g1", ["r1"])
    assert await net(db) == 53_210


@respx.mock(base_url=BASE)
async def test_a_job_takes_a_turn_after_its_reservation_before_its_start_before_its_call_and_after_the_answer(
    respx_mock: respx.MockRouter, studio: Studio, db: Database
) -> None:
    """`Studio.pace` is awaited where many jobs become ready together (one group commit ends many
    reservations and starts; answers arrive at once), so the bot's pacer can spread them over turns."""
    route = respx_mock.post("/images/generations").mock(return_value=answer())
    seen: list[tuple[str, str, int]] = []

    async def pace() -> None:
        row = await db.fetchone("SELECT status, cost_state FROM jobs ORDER BY id DESC LIMIT 1")
        assert row is not None
        seen.append((row["status"], row["cost_state"], route.call_count))

    studio.pace = pace
    outcome = await studio.generate(GenerateRequest(prompt="a fox", quality="medium", size="1024x1024"), ALICE)
    assert seen == [
        ("queued", "reserved", 0),
        ("queued", "reserved", 0),
        ("running", "reserved", 0),
        ("running", "reserved", 1),
    ]
    assert (await job(db, outcome.job_id))["cost_state"] == "settled"


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_invalid_request_is_rejected_for_free(respx_mock: respx.MockRouter, studio: Studio, db: Database) -> None:
    """A request the model cannot take costs nothing, sends nothing, and leaves a job with the reason."""
    route = respx_mock.post("/images/generations").mock(return_value=answer())
    with pytest.raises(InvalidOption):
        await studio.generate(GenerateRequest(prompt="a fox", style="vivid"), ALICE)
    assert not route.called
    row = await job(db, 1)
    assert (row["status"], row["cost_state"], row["error_code"]) == ("rejected", "free", "InvalidOption")
    assert row["error_message"] == "gpt-image-2 takes no style; no model offered here does."
    assert await net(db) == 0


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_over_budget_is_rejected_before_the_call(
    respx_mock: respx.MockRouter, studio: Studio, db: Database
) -> None:
    """A budget with no room stops the request before any money is spent."""
    route = respx_mock.post("/images/generations").mock(return_value=answer())
    await studio.ledger.set_budget("user", "day", 10_000)
    with pytest.raises(BudgetExceeded):
        await studio.generate(GenerateRequest(prompt="a fox", quality="high"), ALICE)
    assert not route.called
    assert (await job(db, 1))["status"] == "rejected"
    assert await net(db) == 0


@respx.mock(base_url=BASE)
async def test_provider_refusal_is_refunded(respx_mock: respx.MockRouter, studio: Studio, db: Database) -> None:
    """A content rejection returns the reservation in full."""
    respx_mock.post("/images/generations").mock(
        return_value=httpx.Response(
            400, json={"error": {"message": "no", "type": "invalid_request_error", "code": "content_policy_violation"}}
        )
    )
    with pytest.raises(ContentRejected):
        await studio.generate(GenerateRequest(prompt="a fox"), ALICE)
    row = await job(db, 1)
    assert (row["status"], row["cost_state"], row["error_code"]) == ("failed", "refunded", "content_policy_violation")
    assert await net(db) == 0


@respx.mock(base_url=BASE)
async def test_read_timeout_keeps_an_unknown_charge(respx_mock: respx.MockRouter, studio: Studio, db: Database) -> None:
    """A generation that timed out after sending may have been billed: the estimate stays, marked unknown."""
    respx_mock.post("/images/generations").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderTimeout):
        await studio.generate(GenerateRequest(prompt="a fox", quality="low", size="1024x1024"), ALICE)
    row = await job(db, 1)
    assert row["cost_state"] == "unknown"
    assert await net(db) == row["estimate"]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"created": 1, "data": [{"b64_json": "!!not base64"}]}),
        httpx.Response(200, text="<html>gateway says hi</html>"),
        httpx.Response(200, json={"created": 1, "data": []}),
    ],
    ids=["image-does-not-decode", "not-json", "no-image"],
)
@respx.mock(base_url=BASE)
async def test_a_success_that_cannot_be_read_keeps_an_unknown_charge(
    respx_mock: respx.MockRouter, studio: Studio, db: Database, answer: httpx.Response
) -> None:
    """A 200 means the provider made (and billed) the images: an answer we cannot use is not refunded."""
    respx_mock.post("/images/generations").mock(return_value=answer)
    with pytest.raises(ProviderUnavailable) as caught:
        await studio.generate(GenerateRequest(prompt="a fox", quality="low", size="1024x1024"), ALICE)
    assert "may still have been billed" in caught.value.message
    row = await job(db, 1)
    assert (row["status"], row["cost_state"]) == ("failed", "unknown")
    assert await net(db) == row["estimate"]


@pytest.mark.parametrize(
    ("broken", "kept"),
    [
        (httpx.ReadError("reset"), "unknown"),
        (httpx.RemoteProtocolError("gone"), "unknown"),
        (httpx.WriteError("x"), "refunded"),
    ],
    ids=["read", "protocol", "write"],
)
@respx.mock(base_url=BASE)
async def test_a_connection_broken_after_sending_keeps_an_unknown_charge(
    respx_mock: respx.MockRouter, studio: Studio, db: Database, broken: Exception, kept: str
) -> None:
    """Broken while the answer was read: the provider had the whole request, so it may have billed; broken while
    the request was still being written: it had nothing to bill, so the reservation goes back."""
    respx_mock.post("/images/generations").mock(side_effect=broken)
    with pytest.raises(ProviderUnavailable):
        await studio.generate(GenerateRequest(prompt="a fox", quality="low", size="1024x1024"), ALICE)
    row = await job(db, 1)
    assert row["cost_state"] == kept


async def test_mock_jobs_cost_nothing(db: Database, catalogue: Catalogue) -> None:
    """The mock provider's placeholders are recorded at zero cost."""
    studio = Studio(ImagesClient(MockProvider(), catalogue, default_model="gpt-image-2"), Ledger(db))
    await studio.ledger.set_budget("user", "day", 0)
    outcome = await studio.generate(GenerateRequest(prompt="a fox", n=2), ALICE)
    assert (outcome.estimate, outcome.cost, len(outcome.result.images)) == (0, 0, 2)
    vary = await studio.vary(VaryRequest(image=InputImage(images.png(64, 64))), ALICE, parent=(outcome.job_id, 1))
    row = await job(db, vary.job_id)
    assert (row["kind"], row["parent_job"], row["parent_index"], row["status"]) == ("vary", 1, 1, "succeeded")


async def test_unexpected_failure_refunds(db: Database, catalogue: Catalogue) -> None:
    """A bug or cancellation inside the call still gives the money back."""

    class Broken(MockProvider):
        async def generate(self, spec, req):  # type: ignore[no-untyped-def]
            raise RuntimeError("bug")

    studio = Studio(ImagesClient(Broken(), catalogue, default_model="gpt-image-2"), Ledger(db))
    with pytest.raises(RuntimeError):
        await studio.generate(GenerateRequest(prompt="a fox"), ALICE)
    assert (await job(db, 1))["cost_state"] == "refunded"


async def test_edit_prepares_uploads_and_sends_the_region_mask(db: Database, catalogue: Catalogue) -> None:
    """A phone JPEG and a region become a PNG-compatible upload plus a mask of the same size."""
    seen: list[object] = []

    class Recording(MockProvider):
        async def edit(self, spec, req):  # type: ignore[no-untyped-def]
            seen.append(req)
            return await super().edit(spec, req)

    studio = Studio(ImagesClient(Recording(), catalogue, default_model="dall-e-2"), Ledger(db))
    photo = InputImage(images.jpeg(800, 600), "photo.jpg", "image/jpeg")
    outcome = await studio.edit(
        EditRequest(prompt="a hat", images=(photo,)), ALICE, region=parse_region("top"), square="pad"
    )
    sent = seen[0]
    assert isinstance(sent, EditRequest)
    assert sent.images[0].mime == "image/png"
    assert sent.mask is not None
    with Image.open(io.BytesIO(sent.images[0].data)) as picture, Image.open(io.BytesIO(sent.mask.data)) as mask:
        assert picture.size == mask.size == (800, 800)
        assert mask.getpixel((400, 10))[3] == 0
        assert mask.getpixel((400, 790))[3] == 255
    assert "The image was padded to a square with transparency." in outcome.notes


async def test_unreadable_upload_is_rejected_for_free(db: Database, catalogue: Catalogue) -> None:
    """An upload that is not an image leaves a rejected job with the reason."""
    studio = Studio(ImagesClient(MockProvider(), catalogue, default_model="gpt-image-2"), Ledger(db))
    with pytest.raises(BadImage):
        await studio.vary(VaryRequest(image=InputImage(b"not an image")), ALICE)
    row = await job(db, 1)
    assert (row["kind"], row["status"], row["error_code"]) == ("vary", "rejected", "BadImage")


async def test_outpaint_job(db: Database, catalogue: Catalogue) -> None:
    """Zooming out is recorded as an outpaint job on an allowed canvas size."""
    studio = Studio(ImagesClient(MockProvider(), catalogue, default_model="gpt-image-2"), Ledger(db))
    outcome = await studio.outpaint(InputImage(images.png(1024, 1024)), ALICE, factor=1.5)
    assert (outcome.result.images[0].width, outcome.result.images[0].height) == (1536, 1536)
    assert (await job(db, outcome.job_id))["kind"] == "outpaint"


async def test_cancelled_during_the_call_keeps_an_unknown_charge(db: Database, catalogue: Catalogue) -> None:
    """A job cancelled while the provider has it is treated like a crash then: the estimate stays, marked unknown."""
    started = asyncio.Event()

    class Slow(OpenAIStub):
        async def generate(self, spec, req):  # type: ignore[no-untyped-def]
            started.set()
            await asyncio.sleep(30)
            raise AssertionError("not reached")

    studio = Studio(ImagesClient(Slow(), catalogue, default_model="gpt-image-2"), Ledger(db))
    task = asyncio.create_task(studio.generate(GenerateRequest(prompt="a fox", quality="low"), ALICE))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = await job(db, 1)
    assert (row["cost_state"], row["error_code"]) == ("unknown", "cancelled")
    assert await net(db) == row["estimate"] > 0


async def test_cancelled_while_reserving_gives_the_money_back(db: Database, catalogue: Catalogue) -> None:
    """A caller that stops waiting for its reservation does not leave the money held."""
    studio = Studio(ImagesClient(OpenAIStub(), catalogue, default_model="gpt-image-2"), Ledger(db))
    task = asyncio.create_task(studio.generate(GenerateRequest(prompt="a fox", quality="low"), ALICE))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):
        if await db.fetchval("SELECT count(*) FROM jobs WHERE cost_state = 'reserved'") == 0:
            break
        await asyncio.sleep(0.01)
    assert await net(db) == 0
    assert await db.fetchval("SELECT cost_state FROM jobs") in ("refunded", None)


class OpenAIStub(MockProvider):
    """A provider that bills (so estimates are not zero) but draws locally."""

    name = "stub"


async def test_generate_streams_previews_to_the_caller(db: Database, catalogue: Catalogue) -> None:
    """With on_partial, a streaming model's previews reach the caller before the settled result."""
    studio = Studio(ImagesClient(MockProvider(), catalogue, default_model="gpt-image-2"), Ledger(db))
    seen: list[PartialImage] = []

    async def show(partial: PartialImage) -> None:
        seen.append(partial)

    outcome = await studio.generate(GenerateRequest(prompt="a fox", n=2), ALICE, on_partial=show)
    assert [(p.index, p.sequence) for p in seen] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len(outcome.result.images) == 2
    assert (await job(db, outcome.job_id))["status"] == "succeeded"


async def test_previews_are_only_asked_of_models_that_stream(db: Database, catalogue: Catalogue) -> None:
    """A progress handler on a model that cannot stream gets no previews and no error."""
    studio = Studio(ImagesClient(MockProvider(), catalogue, default_model="gpt-image-2"), Ledger(db))
    seen: list[PartialImage] = []

    async def show(partial: PartialImage) -> None:
        seen.append(partial)

    outcome = await studio.generate(
        GenerateRequest(prompt="a fox", model="dall-e-3", style="vivid"), ALICE, on_partial=show
    )
    assert (seen, len(outcome.result.images)) == ([], 1)


# -- options kept on the job: what a re-roll, a remix and a resume ask for again -------------------------


@respx.mock(base_url=BASE)
async def test_a_jobs_options_are_kept_and_asked_for_again(
    respx_mock: respx.MockRouter, studio: Studio, db: Database
) -> None:
    """Background, format and compression are stored with the job; generate_again asks for the same."""
    route = respx_mock.post("/images/generations").mock(return_value=answer())
    req = GenerateRequest(prompt="a fox", background="transparent", output_format="webp", output_compression=80)
    outcome = await studio.generate(req, ALICE)
    record = await studio.ledger.job(outcome.job_id)
    assert record is not None
    assert record.options == (("background", "transparent"), ("output_compression", 80), ("output_format", "webp"))
    again = generate_again(record)
    assert (again.prompt, again.model, again.background, again.output_format, again.output_compression) == (
        "a fox",
        "gpt-image-2",
        "transparent",
        "webp",
        80,
    )
    assert generate_again(record, prompt="a cat").prompt == "a cat"
    await studio.generate(again, ALICE)
    first, second = (json.loads(call.request.content) for call in route.calls)
    for key in ("background", "output_format", "output_compression", "size", "quality", "n"):
        assert first[key] == second[key], key


@respx.mock(base_url=BASE)
async def test_a_resumed_job_asks_for_its_kept_options(
    respx_mock: respx.MockRouter, studio: Studio, db: Database
) -> None:
    """A job queued before a restart is resumed with the background and format it was asked with."""
    route = respx_mock.post("/images/generations").mock(return_value=answer())
    draft = JobDraft(
        kind="generate",
        user_id="alice",
        guild_id="g1",
        model="gpt-image-2",
        size="1024x1024",
        quality="medium",
        prompt="a fox",
        options=(("background", "transparent"), ("output_format", "webp")),
    )
    job_id = await studio.ledger.reserve(draft, 60_000)
    (queued,) = await studio.queued()
    assert queued.job_id == job_id
    assert queued.options == draft.options
    await studio.resume(queued)
    body = json.loads(route.calls.last.request.content)
    assert (body["background"], body["output_format"], body["size"], body["quality"]) == (
        "transparent",
        "webp",
        "1024x1024",
        "medium",
    )


async def test_jobs_from_before_the_options_column_have_none(tmp_path: Path) -> None:
    """Upgrading a database from schema 4 gives its jobs no options, and they still read back."""
    path = tmp_path / "old.db"
    async with await Database.open(path, migrations=shipped_migrations()[:4]) as old:
        await old.execute(
            "INSERT INTO jobs (kind, user_id, model, cost_state, status, created_at) "
            "VALUES ('generate', 'u', 'gpt-image-2', 'free', 'rejected', '2026-11-24T00:00:00.000Z')"
        )
    async with await Database.open(path) as db:
        record = await Ledger(db).job(1)
        assert record is not None
        assert record.options == ()
        assert generate_again(record).background is None
        with pytest.raises(sqlite3.IntegrityError):
            await db.execute("UPDATE jobs SET options = '[1]' WHERE id = 1")


@respx.mock(base_url=BASE)
async def test_a_variation_through_edit_is_asked_and_priced_at_its_quality(
    respx_mock: respx.MockRouter, studio: Studio, db: Database
) -> None:
    """A quality the vary model has goes into the edit it sends and into the estimate; one it lacks is dropped."""
    route = respx_mock.post("/images/edits").mock(return_value=answer())
    image = InputImage(images.png(64, 64))
    high = studio.plan_vary(VaryRequest(image=image, quality="high"))
    low = studio.plan_vary(VaryRequest(image=image, quality="low"))
    assert (high.quality, low.quality) == ("high", "low")
    assert high.estimate > low.estimate
    assert (
        studio.plan_vary(VaryRequest(image=image, quality="hd")).quality
        == studio.plan_vary(VaryRequest(image=image)).quality
    )
    await studio.vary(VaryRequest(image=image, quality="high"), ALICE)
    assert b'name="quality"\r\n\r\nhigh' in route.calls.last.request.content


class Crediting(MockProvider):
    """A provider that bills in credits (like the thread service) and reports `credits` for every result."""

    name = "crediting"

    def __init__(self, credits: float) -> None:
        super().__init__()
        self.credits = credits

    def _result(self, *args: Any, **kwargs: Any) -> ImageResult:
        return dataclasses.replace(super()._result(*args, **kwargs), mock=False, credits=self.credits)


@pytest.mark.parametrize("credits", [float("nan"), float("inf"), -2.0, 1e400, 1e30], ids=str)
async def test_credits_that_are_no_price_charge_the_estimate(
    db: Database, catalogue: Catalogue, credits: float
) -> None:
    """A provider reporting NaN, infinite, negative or absurd credits: the images are delivered and settled at
    the estimate the job was reserved at, instead of the job failing after it was paid for."""
    studio = Studio(
        ImagesClient(Crediting(credits), catalogue, default_model="gpt-image-2"), Ledger(db), credit_usd=0.01
    )
    outcome = await studio.generate(GenerateRequest(prompt="a fox", quality="low", size="1024x1024"), ALICE)
    assert len(outcome.result.images) == 1
    row = await job(db, outcome.job_id)
    assert (row["status"], row["cost_state"]) == ("succeeded", "settled")
    assert row["cost"] == row["estimate"] == outcome.cost > 0


async def test_a_charge_that_cannot_be_written_still_delivers_the_images(
    db: Database, catalogue: Catalogue, tmp_path: Path
) -> None:
    """Another writer holds the database past its timeout while the images arrive: the member still gets
    them, and the job is left reserved for the next start's crash rule (an unknown charge) rather than lost."""
    other = sqlite3.connect(db.path, isolation_level=None, timeout=0)

    class Locking(OpenAIStub):
        def _result(self, *args: Any, **kwargs: Any) -> ImageResult:
            other.execute("BEGIN IMMEDIATE")  # an admin's script, say, holding the write lock
            return dataclasses.replace(super()._result(*args, **kwargs), mock=False)

    await db.execute("PRAGMA busy_timeout = 50")
    studio = Studio(ImagesClient(Locking(), catalogue, default_model="gpt-image-2"), Ledger(db))
    try:
        outcome = await studio.generate(GenerateRequest(prompt="a fox", quality="low", size="1024x1024"), ALICE)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert len(outcome.result.images) == 1
    row = await job(db, outcome.job_id)
    assert (row["status"], row["cost_state"]) == ("running", "reserved")
    recovery = await studio.ledger.recover()
    assert outcome.job_id in recovery.unknown
