"""The local image store on a real SQLite file and a real folder: content-addressed files, re-fetching
from Discord, retention, the periodic cleaner, and Studio saving its results through it."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import httpx
import pytest
import respx

from bot.api.client import ImagesClient
from bot.api.mock import MockProvider
from bot.api.types import GeneratedImage, GenerateRequest
from bot.catalogue import Catalogue
from bot.config import Settings
from bot.errors import ImageGone, RequestError
from bot.jobs import Requester, ResultStore, Studio
from bot.services import open_core
from bot.store import images as images_module
from bot.store.db import Database, shipped_migrations
from bot.store.images import CleanupReport, ImageStore, content_path, extension
from bot.store.ledger import JobDraft, Ledger
from tests import images
from tests.conftest import NOW, Clock

CDN = "https://cdn.discordapp.com/attachments/111/222/image.png?ex=abc&is=def&hm=123"
GONE = "That image is no longer stored and its Discord attachment is gone; generate it again."


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data" / "images"


@pytest.fixture
def store(db: Database, root: Path, http: httpx.AsyncClient, clock: Clock) -> ImageStore:
    return ImageStore(db, root, http=http, clock=clock)


@pytest.fixture
def ledger(db: Database, clock: Clock) -> Ledger:
    return Ledger(db, clock=clock)


async def new_job(ledger: Ledger) -> int:
    """A real job row, for the images' foreign key."""
    return await ledger.reserve(JobDraft(kind="generate", user_id="u1", model="gpt-image-2"), 0)


def image(data: bytes, mime: str = "image/png", size: int = 8) -> GeneratedImage:
    return GeneratedImage(data=data, mime=mime, width=size, height=size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def rows(db: Database) -> list[dict[str, object]]:
    return [dict(row) for row in await db.fetchall("SELECT * FROM images ORDER BY job_id, idx")]


async def saved(store: ImageStore, ledger: Ledger, *data: bytes) -> int:
    job_id = await new_job(ledger)
    await store.save(job_id, [image(d) for d in data])
    return job_id


RED, GREEN, BLUE = images.png(colour=(255, 0, 0, 255)), images.png(colour=(0, 255, 0, 255)), images.png(16, 16)


# -- saving -------------------------------------------------------------------------------------------


async def test_save_writes_content_addressed_files_and_rows(
    store: ImageStore, ledger: Ledger, db: Database, root: Path
) -> None:
    """Each image lands at ab/cd/<sha256>.<ext> with its exact bytes, and gets a row with its facts."""
    jpeg = images.jpeg(12, 10)
    job_id = await new_job(ledger)
    await store.save(job_id, [image(RED), GeneratedImage(data=jpeg, mime="image/jpeg", width=12, height=10)])
    red_path = root / sha(RED)[:2] / sha(RED)[2:4] / f"{sha(RED)}.png"
    jpeg_path = root / sha(jpeg)[:2] / sha(jpeg)[2:4] / f"{sha(jpeg)}.jpg"
    assert red_path.read_bytes() == RED
    assert jpeg_path.read_bytes() == jpeg
    found = await rows(db)
    assert [(r["job_id"], r["idx"], r["sha256"], r["path"]) for r in found] == [
        (job_id, 0, sha(RED), content_path(sha(RED), "image/png")),
        (job_id, 1, sha(jpeg), content_path(sha(jpeg), "image/jpeg")),
    ]
    assert (found[1]["bytes"], found[1]["width"], found[1]["height"], found[1]["mime"]) == (
        len(jpeg),
        12,
        10,
        "image/jpeg",
    )
    assert found[0]["created_at"] == "2026-11-24T10:30:00.000Z"
    assert found[0]["message_id"] is None


async def test_identical_images_are_stored_once(store: ImageStore, ledger: Ledger, db: Database, root: Path) -> None:
    """The same bytes from two jobs (or twice in one) share one file; each keeps its own row."""
    first = await saved(store, ledger, RED, RED)
    second = await saved(store, ledger, RED)
    assert files_under(root) == [store.root / content_path(sha(RED), "image/png")]
    assert [(r["job_id"], r["idx"]) for r in await rows(db)] == [(first, 0), (first, 1), (second, 0)]


async def test_existing_file_is_not_rewritten(store: ImageStore, ledger: Ledger, root: Path) -> None:
    """A file already present with the right size is taken as this content and left alone."""
    await saved(store, ledger, RED)
    target = root / content_path(sha(RED), "image/png")
    os.utime(target, (1_000_000, 1_000_000))
    await saved(store, ledger, RED)
    assert target.stat().st_mtime == 1_000_000


async def test_atomic_write_leaves_no_temporary_files(
    store: ImageStore, ledger: Ledger, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only final names remain after a save; a write that fails half way leaves nothing and no rows."""
    await saved(store, ledger, RED, GREEN)
    assert {p.name for p in files_under(root)} == {f"{sha(RED)}.png", f"{sha(GREEN)}.png"}

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    job_id = await new_job(ledger)
    with pytest.raises(OSError, match="No space"):
        await store.save(job_id, [image(BLUE, size=16)])
    assert {p.name for p in files_under(root)} == {f"{sha(RED)}.png", f"{sha(GREEN)}.png"}
    assert await store.db.fetchval("SELECT COUNT(*) FROM images WHERE job_id = ?", (job_id,)) == 0


async def test_saving_a_job_again_keeps_its_attachment(store: ImageStore, ledger: Ledger, db: Database) -> None:
    """Saving is idempotent per (job, index): the image facts are replaced, Discord's ids stay."""
    job_id = await saved(store, ledger, RED)
    assert await store.attach(job_id, 0, message_id=5, attachment_id=6, attachment_url=CDN)
    await store.save(job_id, [image(GREEN)])
    (row,) = await rows(db)
    assert (row["sha256"], row["message_id"], row["attachment_url"]) == (sha(GREEN), "5", CDN)


def test_extensions_follow_the_mime_type() -> None:
    """Known types get their usual extension; others a cleaned subtype."""
    assert [extension(m) for m in ("image/png", "image/jpeg", "image/webp", "image/gif", "image/svg+xml")] == [
        "png",
        "jpg",
        "webp",
        "gif",
        "svg",
    ]
    assert extension("image/x-icon") == "xicon"
    assert extension("weird") == "weird"
    assert extension("image/") == "bin"


async def test_image_store_satisfies_the_result_store_protocol(store: ImageStore) -> None:
    """Studio takes it as its ResultStore."""
    as_protocol: ResultStore = store
    assert as_protocol is store


# -- attachments -------------------------------------------------------------------------------------


async def test_attach_and_find_by_message(store: ImageStore, ledger: Ledger) -> None:
    """Posting records the message and attachment; a message's images are found again in order."""
    job_id = await saved(store, ledger, RED, GREEN)
    other = await saved(store, ledger, BLUE)
    assert await store.attach(job_id, 1, message_id=900, attachment_id=2, attachment_url=CDN)
    assert await store.attach(job_id, 0, message_id="900", attachment_id="1", attachment_url=CDN)
    assert await store.attach(other, 0, message_id=901, attachment_id=3, attachment_url=CDN)
    assert not await store.attach(job_id, 7, message_id=900, attachment_id=4, attachment_url=CDN)
    assert await store.find_by_message(900) == [(job_id, 0), (job_id, 1)]
    assert await store.find_by_message("901") == [(other, 0)]
    assert await store.find_by_message(1) == []


# -- loading -----------------------------------------------------------------------------------------


async def test_load_round_trip(store: ImageStore, ledger: Ledger) -> None:
    """What was saved comes back byte for byte, with its type and size."""
    jpeg = images.jpeg(12, 10)
    job_id = await new_job(ledger)
    await store.save(job_id, [image(RED), GeneratedImage(data=jpeg, mime="image/jpeg", width=12, height=10)])
    assert await store.load(job_id, 0) == image(RED)
    assert await store.load(job_id, 1) == GeneratedImage(data=jpeg, mime="image/jpeg", width=12, height=10)


async def test_unknown_image_is_gone(store: ImageStore) -> None:
    """An image with no record raises ImageGone, a RequestError with a plain message."""
    with pytest.raises(ImageGone) as caught:
        await store.load(41, 0)
    assert isinstance(caught.value, RequestError)
    assert caught.value.code == "image_gone"
    assert "no stored copy" in caught.value.message


@respx.mock
async def test_corrupted_file_is_fetched_back_from_discord(store: ImageStore, ledger: Ledger, root: Path) -> None:
    """A file whose hash no longer matches counts as missing: fetched from the attachment, written back."""
    job_id = await saved(store, ledger, RED)
    await store.attach(job_id, 0, message_id=1, attachment_id=2, attachment_url=CDN)
    target = root / content_path(sha(RED), "image/png")
    target.write_bytes(RED[:-1] + bytes([RED[-1] ^ 0xFF]))  # same size, one byte flipped
    route = respx.get(CDN).mock(return_value=httpx.Response(200, content=RED, headers={"content-type": "image/png"}))
    assert await store.load(job_id, 0) == image(RED)
    assert route.call_count == 1
    assert target.read_bytes() == RED
    assert await store.load(job_id, 0) == image(RED)
    assert route.call_count == 1  # served from disk again


@respx.mock
async def test_cleaned_file_is_fetched_back_and_every_row_regains_it(
    store: ImageStore, ledger: Ledger, db: Database, root: Path
) -> None:
    """After cleanup removed a shared file, re-fetching it gives all its path-less rows their path back."""
    first = await saved(store, ledger, RED)
    second = await saved(store, ledger, RED)
    await store.attach(second, 0, message_id=1, attachment_id=2, attachment_url=CDN)
    await store.cleanup(max_age_days=None, max_total_bytes=0)
    assert [r["path"] for r in await rows(db)] == [None, None]
    respx.get(CDN).mock(return_value=httpx.Response(200, content=RED, headers={"content-type": "image/png"}))
    assert (await store.load(second, 0)).data == RED
    rel = content_path(sha(RED), "image/png")
    assert [r["path"] for r in await rows(db)] == [rel, rel]
    assert (await store.load(first, 0)).data == RED  # from disk: the first job never had an attachment


async def test_missing_file_without_attachment_is_gone(store: ImageStore, ledger: Ledger, root: Path) -> None:
    """No file and nothing posted: ImageGone with the friendly message."""
    job_id = await saved(store, ledger, RED)
    (root / content_path(sha(RED), "image/png")).unlink()
    with pytest.raises(ImageGone) as caught:
        await store.load(job_id, 0)
    assert caught.value.message == GONE
    assert str(caught.value) == GONE


async def test_missing_file_without_http_client_is_gone(db: Database, ledger: Ledger, root: Path, clock: Clock) -> None:
    """A store with no HTTP client never tries Discord."""
    store = ImageStore(db, root, clock=clock)
    job_id = await saved(store, ledger, RED)
    await store.attach(job_id, 0, message_id=1, attachment_id=2, attachment_url=CDN)
    (root / content_path(sha(RED), "image/png")).unlink()
    with pytest.raises(ImageGone):
        await store.load(job_id, 0)


@respx.mock
@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/attachments/1/2/image.png",
        "https://cdn.discordapp.com.evil.example/a.png",
        "http://cdn.discordapp.com/attachments/1/2/image.png",
        "not a url",
    ],
)
async def test_attachment_off_discord_is_refused(store: ImageStore, ledger: Ledger, root: Path, url: str) -> None:
    """Only https links on Discord's CDN hosts are fetched; anything else is not even requested."""
    job_id = await saved(store, ledger, RED)
    await store.attach(job_id, 0, message_id=1, attachment_id=2, attachment_url=url)
    (root / content_path(sha(RED), "image/png")).unlink()
    with pytest.raises(ImageGone):
        await store.load(job_id, 0)
    assert respx.calls.call_count == 0


@respx.mock
async def test_expired_attachment_is_gone(store: ImageStore, ledger: Ledger, root: Path) -> None:
    """Discord answering 404 (or 403 for an expired signed link) means the image is gone."""
    job_id = await saved(store, ledger, RED)
    await store.attach(job_id, 0, message_id=1, attachment_id=2, attachment_url=CDN)
    (root / content_path(sha(RED), "image/png")).unlink()
    respx.get(CDN).mock(return_value=httpx.Response(404, text="not found"))
    with pytest.raises(ImageGone) as caught:
        await store.load(job_id, 0)
    assert caught.value.message == GONE


@respx.mock
async def test_oversized_attachment_is_refused(db: Database, ledger: Ledger, root: Path, clock: Clock) -> None:
    """The re-fetch is capped in bytes."""
    async with httpx.AsyncClient() as client:
        store = ImageStore(db, root, http=client, clock=clock, max_fetch_bytes=len(RED) - 1)
        job_id = await saved(store, ledger, RED)
        await store.attach(job_id, 0, message_id=1, attachment_id=2, attachment_url=CDN)
        (root / content_path(sha(RED), "image/png")).unlink()
        respx.get(CDN).mock(return_value=httpx.Response(200, content=RED, headers={"content-type": "image/png"}))
        with pytest.raises(ImageGone):
            await store.load(job_id, 0)


@respx.mock
async def test_reencoded_attachment_is_used_but_not_stored(
    store: ImageStore, ledger: Ledger, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A copy whose hash differs is returned as what it is, with a warning, and not written under the old hash."""
    media = "https://media.discordapp.net/attachments/111/222/image.png?width=8&height=8"
    job_id = await saved(store, ledger, RED)
    await store.attach(job_id, 0, message_id=1, attachment_id=2, attachment_url=media)
    (root / content_path(sha(RED), "image/png")).unlink()
    other = images.webp(8, 8, (255, 0, 0))
    respx.get(media).mock(return_value=httpx.Response(200, content=other, headers={"content-type": "image/webp"}))
    with caplog.at_level(logging.WARNING, logger="bot.store.images"):
        got = await store.load(job_id, 0)
    assert got == GeneratedImage(data=other, mime="image/webp", width=8, height=8)
    assert "differs from the original" in caplog.text
    assert files_under(root) == []


# -- retention ---------------------------------------------------------------------------------------


async def test_cleanup_by_age(store: ImageStore, ledger: Ledger, db: Database, root: Path, clock: Clock) -> None:
    """Files whose rows are all older than the limit go; their rows stay, with path NULL."""
    clock.now = NOW - dt.timedelta(days=100)
    old = await saved(store, ledger, RED)
    clock.now = NOW - dt.timedelta(days=10)
    recent = await saved(store, ledger, GREEN)
    clock.now = NOW
    report = await store.cleanup(max_age_days=30, max_total_bytes=None)
    assert report == CleanupReport(deleted_files=1, freed_bytes=len(RED), kept_files=1, kept_bytes=len(GREEN))
    assert files_under(root) == [root / content_path(sha(GREEN), "image/png")]
    assert {r["job_id"]: r["path"] for r in await rows(db)} == {
        old: None,
        recent: content_path(sha(GREEN), "image/png"),
    }
    again = await store.cleanup(max_age_days=30, max_total_bytes=None)
    assert (again.deleted_files, again.kept_files) == (0, 1)


async def test_shared_file_is_kept_until_all_its_rows_are_old(
    store: ImageStore, ledger: Ledger, db: Database, root: Path, clock: Clock
) -> None:
    """A file shared by an old and a recent row stays while the recent one is within the limit."""
    clock.now = NOW - dt.timedelta(days=100)
    await saved(store, ledger, RED)
    clock.now = NOW - dt.timedelta(days=5)
    await saved(store, ledger, RED)
    clock.now = NOW
    report = await store.cleanup(max_age_days=30, max_total_bytes=None)
    assert report.deleted_files == 0
    assert all(r["path"] is not None for r in await rows(db))
    clock.now = NOW + dt.timedelta(days=26)
    report = await store.cleanup(max_age_days=30, max_total_bytes=None)
    assert (report.deleted_files, report.freed_bytes) == (1, len(RED))
    assert all(r["path"] is None for r in await rows(db))
    assert files_under(root) == []


async def test_cleanup_by_total_size_removes_the_oldest_first(
    store: ImageStore, ledger: Ledger, db: Database, root: Path, clock: Clock
) -> None:
    """Over the size limit, files go oldest first (by their newest row) until the store fits."""
    for days, data in ((30, RED), (20, GREEN), (10, BLUE)):
        clock.now = NOW - dt.timedelta(days=days)
        await saved(store, ledger, data)
    clock.now = NOW - dt.timedelta(days=1)
    await saved(store, ledger, RED)  # RED is now the newest by its latest row
    clock.now = NOW
    limit = len(RED) + len(BLUE)
    report = await store.cleanup(max_age_days=None, max_total_bytes=limit)
    assert (report.deleted_files, report.freed_bytes, report.kept_files) == (1, len(GREEN), 2)
    assert {p.name for p in files_under(root)} == {f"{sha(RED)}.png", f"{sha(BLUE)}.png"}
    report = await store.cleanup(max_age_days=None, max_total_bytes=len(RED))
    assert {p.name for p in files_under(root)} == {f"{sha(RED)}.png"}
    assert report.kept_bytes == len(RED)
    nulls = await db.fetchall("SELECT sha256 FROM images WHERE path IS NULL")
    assert {r["sha256"] for r in nulls} == {sha(GREEN), sha(BLUE)}


async def test_cleanup_removes_stale_temporary_and_orphan_files(
    store: ImageStore, ledger: Ledger, db: Database, root: Path
) -> None:
    """Leftover temp files and files no row refers to go once an hour old; younger ones may be saves in flight."""
    await saved(store, ledger, RED)
    folder = root / "ab" / "cd"
    folder.mkdir(parents=True, exist_ok=True)
    orphan_name = "abcd" + "0" * 60 + ".png"
    stale_temp, young_temp = folder / f".{orphan_name}.1234.tmp", folder / f".{orphan_name}.5678.tmp"
    stale_orphan, young_orphan = folder / orphan_name, folder / ("abcd" + "1" * 60 + ".png")
    unrelated = root / "README.txt"
    for path in (stale_temp, young_temp, stale_orphan, young_orphan, unrelated):
        path.write_bytes(b"x" * 10)
    old = (NOW - dt.timedelta(hours=2)).timestamp()
    fresh = (NOW - dt.timedelta(minutes=5)).timestamp()
    for path, moment in ((stale_temp, old), (stale_orphan, old), (young_temp, fresh), (young_orphan, fresh)):
        os.utime(path, (moment, moment))
    report = await store.cleanup(max_age_days=None, max_total_bytes=None)
    assert (report.deleted_files, report.freed_bytes) == (2, 20)
    assert not stale_temp.exists()
    assert not stale_orphan.exists()
    assert young_temp.exists()
    assert young_orphan.exists()
    assert unrelated.exists()
    assert (await rows(db))[0]["path"] is not None


async def test_cleanup_marks_rows_whose_file_vanished(
    store: ImageStore, ledger: Ledger, db: Database, root: Path
) -> None:
    """A row pointing at a file someone deleted is set to path NULL, so the record says what is on disk."""
    await saved(store, ledger, RED)
    (root / content_path(sha(RED), "image/png")).unlink()
    report = await store.cleanup(max_age_days=None, max_total_bytes=None)
    assert report == CleanupReport(deleted_files=0, freed_bytes=0, kept_files=0, kept_bytes=0)
    assert (await rows(db))[0]["path"] is None


async def test_cleanup_of_an_empty_store(store: ImageStore) -> None:
    """No folder yet: nothing to do, no error."""
    assert await store.cleanup(max_age_days=1, max_total_bytes=0) == CleanupReport(0, 0, 0, 0)


async def test_cleanup_refuses_negative_limits(store: ImageStore) -> None:
    with pytest.raises(ValueError, match="max_age_days"):
        await store.cleanup(max_age_days=-1, max_total_bytes=None)
    with pytest.raises(ValueError, match="max_total_bytes"):
        await store.cleanup(max_age_days=None, max_total_bytes=-1)


# -- the periodic cleaner ----------------------------------------------------------------------------


async def test_periodic_cleanup_stops_on_the_event(store: ImageStore, ledger: Ledger, root: Path, clock: Clock) -> None:
    """The loop cleans at once, then waits; setting the event ends it promptly."""
    clock.now = NOW - dt.timedelta(days=100)
    await saved(store, ledger, RED)
    clock.now = NOW
    stop = asyncio.Event()
    task = asyncio.create_task(store.run_periodic(3600, 30, None, stop))
    for _ in range(200):
        if not files_under(root):
            break
        await asyncio.sleep(0.01)
    assert files_under(root) == []
    stop.set()
    await asyncio.wait_for(task, timeout=2)


async def test_periodic_cleanup_survives_an_error(
    store: ImageStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing cleanup is logged and tried again next time; the loop does not die."""
    stop = asyncio.Event()
    calls: list[tuple[float | None, int | None]] = []

    async def flaky(*, max_age_days: float | None, max_total_bytes: int | None) -> CleanupReport:
        calls.append((max_age_days, max_total_bytes))
        if len(calls) == 1:
            raise OSError("disk went away")
        if len(calls) == 3:
            stop.set()
        return CleanupReport(deleted_files=1, freed_bytes=2048, kept_files=3, kept_bytes=4096)

    monkeypatch.setattr(store, "cleanup", flaky)
    with caplog.at_level(logging.INFO, logger="bot.store.images"):
        await asyncio.wait_for(store.run_periodic(0.001, 90, 2048, stop), timeout=5)
    assert calls == [(90, 2048)] * 3
    assert "cleanup failed" in caplog.text
    assert "removed 1 files" in caplog.text


async def test_periodic_cleanup_needs_a_positive_interval(store: ImageStore) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        await store.run_periodic(0, None, None, asyncio.Event())


# -- Studio and the core -----------------------------------------------------------------------------


async def test_studio_stores_the_images_of_a_job(db: Database, root: Path, catalogue: Catalogue, clock: Clock) -> None:
    """A Studio with an ImageStore keeps every image it delivers, loadable afterwards."""
    store = ImageStore(db, root, clock=clock)
    studio = Studio(
        ImagesClient(MockProvider(), catalogue, default_model="gpt-image-2"), Ledger(db, clock=clock), store=store
    )
    outcome = await studio.generate(GenerateRequest(prompt="a fox", n=2, size="1024x1024"), Requester(user_id="u1"))
    assert len(files_under(root)) == 2
    for idx, produced in enumerate(outcome.result.images):
        assert await store.load(outcome.job_id, idx) == produced


@pytest.mark.parametrize("error", [OSError("read-only file system"), sqlite3.OperationalError("database is locked")])
async def test_studio_delivers_even_when_storing_fails(
    db: Database, root: Path, catalogue: Catalogue, error: Exception
) -> None:
    """Paid images are returned even if the store cannot keep them (the disk or the database failed)."""

    class Failing(ImageStore):
        async def save(self, job_id: int, images: Sequence[GeneratedImage]) -> None:
            raise error

    studio = Studio(
        ImagesClient(MockProvider(), catalogue, default_model="gpt-image-2"), Ledger(db), store=Failing(db, root)
    )
    outcome = await studio.generate(GenerateRequest(prompt="a fox"), Requester(user_id="u1"))
    assert len(outcome.result.images) == 1


async def test_open_core_stores_images_in_the_data_folder(tmp_path: Path) -> None:
    """The core's Studio saves into <data dir>/images."""
    settings = Settings(_env_file=None, provider="mock", data_dir=tmp_path / "data")
    async with open_core(settings) as core:
        assert core.image_store.root == tmp_path / "data" / "images"
        assert core.studio.store is core.image_store
        outcome = await core.studio.generate(GenerateRequest(prompt="a fox"), Requester(user_id="cli"))
        assert (await core.image_store.load(outcome.job_id, 0)).data == outcome.result.images[0].data


# -- concurrency ------------------------------------------------------------------------------------------


class Gate:
    """A stand-in for a blocking step in a worker thread: it says when it is entered and waits to be let go."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()

    def block(self) -> None:
        self.entered.set()
        # A safety net against a hung test, not a measurement: the test lets it go long before.
        assert self.go.wait(timeout=10), "never let go"

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 10), "never entered"


async def test_saves_run_side_by_side(
    store: ImageStore, ledger: Ledger, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that is still writing its files does not hold up another job's save."""
    first, second = Gate(), Gate()
    real = images_module._keep_all

    def keep_all(full: Callable[[str], Path], items: Sequence[GeneratedImage]) -> list[tuple[str, str]]:
        if items[0].data == RED:
            first.block()
        else:
            second.entered.set()
        return real(full, items)

    monkeypatch.setattr(images_module, "_keep_all", keep_all)
    red_job, green_job = await new_job(ledger), await new_job(ledger)
    red = asyncio.create_task(store.save(red_job, [image(RED)]))
    await first.wait_entered()
    await store.save(green_job, [image(GREEN)])  # finishes while the red save is still writing
    assert not red.done()
    first.go.set()
    await red
    assert [(r["job_id"], r["sha256"]) for r in await rows(db)] == [(red_job, sha(RED)), (green_job, sha(GREEN))]


async def test_cleanup_waits_for_saves_in_progress(
    store: ImageStore, ledger: Ledger, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cleanup starts only once the saves under way are done, and a save waits for a cleanup under way."""
    gate = Gate()
    real_keep, real_scan = images_module._keep_all, images_module._scan
    scans: list[int] = []

    def keep_all(full: Callable[[str], Path], items: Sequence[GeneratedImage]) -> list[tuple[str, str]]:
        gate.block()
        return real_keep(full, items)

    def scan(where: Path) -> list[images_module._OnDisk]:
        scans.append(len(files_under(where)))
        return real_scan(where)

    monkeypatch.setattr(images_module, "_keep_all", keep_all)
    monkeypatch.setattr(images_module, "_scan", scan)
    saving = asyncio.create_task(store.save(await new_job(ledger), [image(RED)]))
    await gate.wait_entered()
    cleaning = asyncio.create_task(store.cleanup(max_age_days=None, max_total_bytes=0))
    for _ in range(20):
        await asyncio.sleep(0)
    assert scans == []  # still waiting for the save
    gate.go.set()
    await saving
    report = await cleaning
    assert scans == [1]  # it saw the saved file, row and all, and removed it for the size limit
    assert report.deleted_files == 1


async def test_a_save_arriving_behind_a_waiting_cleanup_goes_after_it(
    store: ImageStore, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests are served in order, so a stream of saves cannot keep a cleanup out for ever."""
    gate = Gate()
    real_keep, real_scan = images_module._keep_all, images_module._scan
    order: list[str] = []

    def keep_all(full: Callable[[str], Path], items: Sequence[GeneratedImage]) -> list[tuple[str, str]]:
        if items[0].data == RED:
            gate.block()
        order.append(f"save {items[0].width}")
        return real_keep(full, items)

    def scan(where: Path) -> list[images_module._OnDisk]:
        order.append("cleanup")
        return real_scan(where)

    monkeypatch.setattr(images_module, "_keep_all", keep_all)
    monkeypatch.setattr(images_module, "_scan", scan)
    first = asyncio.create_task(store.save(await new_job(ledger), [image(RED, size=8)]))
    await gate.wait_entered()
    cleaning = asyncio.create_task(store.cleanup(max_age_days=None, max_total_bytes=None))
    await asyncio.sleep(0)
    later = asyncio.create_task(store.save(await new_job(ledger), [image(BLUE, size=16)]))
    for _ in range(20):
        await asyncio.sleep(0)
    assert order == []
    gate.go.set()
    await asyncio.gather(first, cleaning, later)
    assert order == ["save 8", "cleanup", "save 16"]


async def test_a_cancelled_cleanup_lets_waiting_saves_in(
    store: ImageStore, ledger: Ledger, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cleanup cancelled while it waits for its turn gives the turn to the saves behind it."""
    gate = Gate()
    real_keep = images_module._keep_all

    def keep_all(full: Callable[[str], Path], items: Sequence[GeneratedImage]) -> list[tuple[str, str]]:
        if items[0].data == RED:
            gate.block()
        return real_keep(full, items)

    monkeypatch.setattr(images_module, "_keep_all", keep_all)
    first = asyncio.create_task(store.save(await new_job(ledger), [image(RED)]))
    await gate.wait_entered()
    cleaning = asyncio.create_task(store.cleanup(max_age_days=None, max_total_bytes=None))
    await asyncio.sleep(0)
    green_job = await new_job(ledger)
    later = asyncio.create_task(store.save(green_job, [image(GREEN)]))
    await asyncio.sleep(0)
    cleaning.cancel()
    await later  # runs beside the red save, which is still writing
    assert not first.done()
    gate.go.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await cleaning
    assert await db.fetchval("SELECT COUNT(*) FROM images") == 2


async def test_upgrade_keeps_where_each_image_was_posted(tmp_path: Path, clock: Clock) -> None:
    """Images posted before migration 0007 are still found by their message after it."""
    path = tmp_path / "easel.db"
    async with await Database.open(path, migrations=shipped_migrations()[:6]) as old:
        job = await new_job(Ledger(old, clock=clock))
        await ImageStore(old, tmp_path / "images", clock=clock).save(job, [image(images.png(8, 8))])
        await old.execute("UPDATE images SET message_id = '555' WHERE job_id = ?", (job,))
    async with await Database.open(path) as db:
        store = ImageStore(db, tmp_path / "images", clock=clock)
        assert await store.find_by_message(555) == [(job, 0)]
