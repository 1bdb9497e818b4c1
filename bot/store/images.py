"""The local image store: every result image kept on disk by its sha256, so old results stay usable.

Files live under the data folder as `images/ab/cd/<sha256>.<ext>` (the first two byte pairs of the hash
as folders), so identical images are stored once however many jobs produced them. Each file is written
atomically: into a hidden temporary file in the same folder, flushed and fsynced, then renamed over the
final name, so a crash never leaves a half-written image under a real name. A file's name is always its
content's hash, and the `images` rows (one per job and index) are the record of what was made.

Discord's copy: once posted, the Discord layer calls `attach()` with the message and attachment. When the
local file is missing or corrupted (its hash no longer matches), `load()` fetches the attachment back, but
only from Discord's own CDN hosts, capped in bytes. Discord serves original attachments byte for byte, so
the hash normally matches and the copy is written back into the store. If it does not match (a proxy
re-encoded it), the image is still returned, since it is the same picture and good enough to vary or
recall, and a warning is logged; it is not written back, because a stored file's name must be its hash.
With neither a file nor a usable attachment, `load()` raises `ImageGone`, which says so in plain words.
Discord's attachment links are signed and expire; the Discord layer refreshes one by calling `attach()`
again with the URL of a freshly fetched message.

Retention (`cleanup()`, run periodically by `run_periodic()`): files whose rows are all older than the
age limit are removed, then the oldest files until the store fits its size limit. A file shared by
several rows goes only when the newest of them qualifies. Removed files leave their rows in place with
`path = NULL` (the rows are the record; `load()` can still fetch the image back from Discord). Leftover
temporary files and files no row refers to are removed once they are an hour old.

Saves and write-backs share the store and run side by side; a cleanup has it to itself, so within the
process a cleanup never removes a file a save has just decided to share. A second process (a CLI run
beside the bot) may still, rarely, save a row for a file the bot's cleanup is removing; `load()` then
treats it as missing and re-fetches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import secrets
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx

from bot.api.decode import describe
from bot.api.download import DEFAULT_MAX_DOWNLOAD, fetch_image, host_allowed
from bot.api.types import GeneratedImage
from bot.errors import ImageGone, ProviderUnavailable
from bot.store.db import Database
from bot.store.ledger import iso, utc_now

log = logging.getLogger(__name__)

DISCORD_HOSTS: tuple[str, ...] = ("cdn.discordapp.com", "media.discordapp.net")
"""The only hosts a stored image is ever fetched back from."""
TEMP_MAX_AGE = dt.timedelta(hours=1)
"""Temporary files, and files no row refers to, younger than this may belong to a save in progress."""

NO_RECORD = "Easel has no stored copy of that image; generate it again."

_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/svg+xml": "svg",
}
_CONTENT_NAME = re.compile(r"^[0-9a-f]{64}\.[a-z0-9]{1,10}$")
_TEMP_SUFFIX = ".tmp"
_SELECT_IMAGE = "SELECT * FROM images WHERE job_id = ? AND idx = ?"
_UPSERT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_IMAGES = (
    "INSERT INTO images (job_id, idx, sha256, path, bytes, width, height, mime, created_at) VALUES {rows} "
    "ON CONFLICT (job_id, idx) DO UPDATE SET "
    "sha256 = excluded.sha256, path = excluded.path, bytes = excluded.bytes, width = excluded.width, "
    "height = excluded.height, mime = excluded.mime"
)


def extension(mime: str) -> str:
    """The file extension for an image's mime type: png, jpg, webp, gif, svg, or a cleaned subtype."""
    known = _EXTENSIONS.get(mime.lower())
    if known:
        return known
    subtype = mime.lower().rpartition("/")[2].split(";")[0].split("+")[0]
    return re.sub(r"[^a-z0-9]", "", subtype)[:10] or "bin"


def content_path(sha256: str, mime: str) -> str:
    """Where an image lives in the store, relative to its root and in POSIX form: `ab/cd/<sha256>.<ext>`."""
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}.{extension(mime)}"


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of `data`; CPU-bound on large images, so call it through `asyncio.to_thread`."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class CleanupReport:
    """What one `cleanup()` did: files removed and bytes freed, and what the store holds afterwards."""

    deleted_files: int
    freed_bytes: int
    kept_files: int
    kept_bytes: int = 0


@dataclass(frozen=True, slots=True)
class _OnDisk:
    """One file found under the store's root."""

    rel: str
    size: int
    mtime: float


# -- file work, run in worker threads -------------------------------------------------------------------


def _write_atomic(target: Path, data: bytes, *, replace: bool) -> bool:
    """Write `data` to `target` through a temporary file and a rename; False when it was already there.

    Unless `replace`, a file already at `target` with the same size is taken as this content (the name is
    its hash) and left alone.
    """
    if not replace:
        try:
            if target.stat().st_size == len(data):
                return False
        except FileNotFoundError:
            pass
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")
    try:
        with temp.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_folder(target.parent)
    return True


def _keep_all(full: Callable[[str], Path], images: Sequence[GeneratedImage]) -> list[tuple[str, str]]:
    """Hash and write every image (see `_write_atomic`); the (sha256, relative path) of each, in order."""
    kept: list[tuple[str, str]] = []
    for image in images:
        sha = sha256_hex(image.data)
        rel = content_path(sha, image.mime)
        _write_atomic(full(rel), image.data, replace=False)
        kept.append((sha, rel))
    return kept


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable, where the system allows opening folders (not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _read_verified(target: Path, sha256: str) -> bytes | None:
    """The bytes at `target` when they hash to `sha256`; None when missing, unreadable or corrupted."""
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("image store: cannot read %s (%s)", target, exc.strerror or exc)
        return None
    if sha256_hex(data) != sha256:
        log.warning("image store: %s is corrupted (its content no longer matches its hash)", target)
        return None
    return data


def _scan(root: Path) -> list[_OnDisk]:
    """Every regular file under `root`, with its size and modification time."""
    found: list[_OnDisk] = []
    if not root.is_dir():
        return found
    for folder, _dirs, files in os.walk(root):
        for name in files:
            full = Path(folder, name)
            try:
                info = full.stat()
            except OSError:
                continue
            found.append(_OnDisk(full.relative_to(root).as_posix(), info.st_size, info.st_mtime))
    return found


def _unlink_all(root: Path, rels: Iterable[str]) -> list[str]:
    """Remove the files at `rels`; the ones actually removed."""
    removed: list[str] = []
    for rel in rels:
        try:
            (root / rel).unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("image store: cannot remove %s (%s)", rel, exc.strerror or exc)
            continue
        removed.append(rel)
    return removed


def _is_temp(rel: str) -> bool:
    name = rel.rpartition("/")[2]
    return name.startswith(".") and name.endswith(_TEMP_SUFFIX)


def _is_content(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) == 3 and _CONTENT_NAME.match(parts[2]) is not None and parts[2].startswith(parts[0] + parts[1])


# -- the store --------------------------------------------------------------------------------------------


class _SharedLock:
    """An asyncio readers-writer lock: many holders share it, or one holds it alone.

    Requests are served in the order they come, so a waiting exclusive holder lets no later shared one
    pass it: a steady stream of saves cannot starve a cleanup.
    """

    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._waiting: deque[tuple[bool, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """Hold the lock together with other shared holders."""
        await self._acquire(exclusive=False)
        try:
            yield
        finally:
            self._release(exclusive=False)

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the lock alone."""
        await self._acquire(exclusive=True)
        try:
            yield
        finally:
            self._release(exclusive=True)

    def _free_for(self, exclusive: bool) -> bool:
        return not self._exclusive and not (exclusive and self._shared)

    def _take(self, exclusive: bool) -> None:
        if exclusive:
            self._exclusive = True
        else:
            self._shared += 1

    async def _acquire(self, *, exclusive: bool) -> None:
        if not self._waiting and self._free_for(exclusive):
            self._take(exclusive)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((exclusive, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release(exclusive)  # granted just as it was cancelled: hand it on
            else:
                self._grant()  # a cancelled exclusive request may have held shared ones back
            raise

    def _release(self, exclusive: bool) -> None:
        if exclusive:
            self._exclusive = False
        else:
            self._shared -= 1
        self._grant()

    def _grant(self) -> None:
        while self._waiting:
            exclusive, turn = self._waiting[0]
            if turn.done():
                self._waiting.popleft()
                continue
            if not self._free_for(exclusive):
                return
            self._waiting.popleft()
            self._take(exclusive)
            turn.set_result(None)
            if exclusive:
                return


class ImageStore:
    """Result images on disk by sha256, with their rows in the `images` table; see the module docstring."""

    def __init__(
        self,
        db: Database,
        root: Path,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        max_fetch_bytes: int = DEFAULT_MAX_DOWNLOAD,
    ) -> None:
        """`root` is the store's folder (the data folder's `images`); `http` fetches images back from Discord."""
        self.db = db
        self.root = root
        self._http = http
        self._clock = clock
        self._max_fetch_bytes = max_fetch_bytes
        self._lock = _SharedLock()

    def __repr__(self) -> str:
        return f"ImageStore({str(self.root)!r})"

    def _full(self, rel: str) -> Path:
        """The absolute path of a stored relative path; ValueError for one that would leave the root."""
        pure = PurePosixPath(rel)
        if pure.is_absolute() or not pure.parts or any(part in ("..", "") for part in pure.parts):
            raise ValueError(f"not a path inside the image store: {rel!r}")
        return self.root.joinpath(*pure.parts)

    # -- saving ------------------------------------------------------------------------------------------

    async def save(self, job_id: int, images: Sequence[GeneratedImage]) -> None:
        """Keep a job's images: each file written once (by content), then the job's rows in one transaction.

        Saving the same job again replaces its rows' image facts and keeps what `attach()` recorded.
        """
        if not images:
            return
        created = iso(self._clock())
        async with self._lock.shared():
            kept = await asyncio.to_thread(_keep_all, self._full, images)
            params: list[object] = []
            for idx, (image, (sha, rel)) in enumerate(zip(images, kept, strict=True)):
                params += (job_id, idx, sha, rel, len(image.data), image.width, image.height, image.mime, created)
            # One statement for all the rows, so they commit together, sharing the group commit with others.
            await self.db.write(_UPSERT_IMAGES.format(rows=", ".join([_UPSERT_ROW] * len(images))), params)

    async def attach(
        self,
        job_id: int,
        idx: int,
        *,
        message_id: int | str,
        attachment_id: int | str,
        attachment_url: str,
    ) -> bool:
        """Record where Discord holds image `idx` of a job once posted; False when there is no such image.

        Call it again with a fresh URL when Discord's signed link has expired.
        """
        # Both go to the group-commit writer together and usually share its commit. The post row (where the
        # image was posted, for that message's reactions; images.message_id is only the latest copy) is
        # written only for an image that exists.
        changed, _ = await asyncio.gather(
            self.db.write(
                "UPDATE images SET message_id = ?, attachment_id = ?, attachment_url = ? WHERE job_id = ? AND idx = ?",
                (str(message_id), str(attachment_id), attachment_url, job_id, idx),
            ),
            self.db.write(
                "INSERT OR IGNORE INTO posts (message_id, job_id, idx) "
                "SELECT ?, job_id, idx FROM images WHERE job_id = ? AND idx = ?",
                (str(message_id), job_id, idx),
            ),
        )
        return changed == 1

    async def find_by_message(self, message_id: int | str) -> list[tuple[int, int]]:
        """The (job id, index) of every image posted in one Discord message, in order (an image posted again
        elsewhere, alone by its U button, stays found under the first message too)."""
        rows = await self.db.fetchall(
            "SELECT job_id, idx FROM posts WHERE message_id = ? ORDER BY job_id, idx", (str(message_id),)
        )
        return [(int(row["job_id"]), int(row["idx"])) for row in rows]

    # -- loading -----------------------------------------------------------------------------------------

    async def load(self, job_id: int, idx: int) -> GeneratedImage:
        """Image `idx` of a job, from disk, or fetched back from its Discord attachment; else ImageGone."""
        row = await self.db.fetchone(_SELECT_IMAGE, (job_id, idx))
        if row is None:
            raise ImageGone(NO_RECORD)
        sha: str = row["sha256"]
        if row["path"] is not None:
            try:
                target = self._full(row["path"])
            except ValueError:
                log.warning("image store: job %d image %d has an invalid path %r", job_id, idx, row["path"])
            else:
                data = await asyncio.to_thread(_read_verified, target, sha)
                if data is not None:
                    return self._image(row, data)
        data = await self._refetch(row)
        if data is None:
            raise ImageGone()
        fetched_sha = await asyncio.to_thread(sha256_hex, data)
        if fetched_sha != sha:
            log.warning(
                "image store: job %d image %d: Discord's copy differs from the original (sha256 %s, not %s); "
                "using it without storing it",
                job_id,
                idx,
                fetched_sha[:12],
                sha[:12],
            )
            try:
                return await asyncio.to_thread(describe, data)
            except ProviderUnavailable:
                raise ImageGone() from None
        await self._write_back(row, data)
        return self._image(row, data)

    @staticmethod
    def _image(row: sqlite3.Row, data: bytes) -> GeneratedImage:
        return GeneratedImage(data=data, mime=row["mime"], width=int(row["width"]), height=int(row["height"]))

    async def _refetch(self, row: sqlite3.Row) -> bytes | None:
        """The image's bytes from its Discord attachment; None when there is none or it cannot be fetched."""
        url: str | None = row["attachment_url"]
        where = f"job {row['job_id']} image {row['idx']}"
        if not url:
            log.info("image store: %s is missing and was never posted on Discord", where)
            return None
        if self._http is None:
            log.info("image store: %s is missing and this store cannot fetch from Discord", where)
            return None
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            parsed = None
        if parsed is None or parsed.scheme != "https" or not host_allowed(parsed.host, DISCORD_HOSTS):
            log.warning("image store: %s: its attachment link is not on Discord's CDN; not fetching it", where)
            return None
        try:
            data = await fetch_image(self._http, url, allowed_hosts=DISCORD_HOSTS, max_bytes=self._max_fetch_bytes)
        except ProviderUnavailable as exc:
            log.warning("image store: %s: fetching it back from Discord failed: %s", where, exc)
            return None
        log.info("image store: %s fetched back from Discord (%d bytes)", where, len(data))
        return data

    async def _write_back(self, row: sqlite3.Row, data: bytes) -> None:
        """Store a re-fetched image again and point its rows (and other path-less rows of it) at the file."""
        rel: str = row["path"] or content_path(row["sha256"], row["mime"])
        try:
            target = self._full(rel)
        except ValueError:
            rel = content_path(row["sha256"], row["mime"])
            target = self._full(rel)
        async with self._lock.shared():
            try:
                await asyncio.to_thread(_write_atomic, target, data, replace=True)
                async with self.db.transaction() as tx:
                    await tx.execute(
                        "UPDATE images SET path = ? WHERE job_id = ? AND idx = ?", (rel, row["job_id"], row["idx"])
                    )
                    await tx.execute(
                        "UPDATE images SET path = ? WHERE sha256 = ? AND mime = ? AND path IS NULL",
                        (rel, row["sha256"], row["mime"]),
                    )
            except (OSError, sqlite3.Error) as exc:
                # The caller still gets the image; only the local copy is missing, as before.
                log.warning("image store: cannot store job %d image %d again (%s)", row["job_id"], row["idx"], exc)

    # -- retention ---------------------------------------------------------------------------------------

    async def cleanup(self, *, max_age_days: float | None, max_total_bytes: int | None) -> CleanupReport:
        """Apply the retention limits (None: no limit); see the module docstring for the rules."""
        if max_age_days is not None and max_age_days < 0:
            raise ValueError("max_age_days must not be negative")
        if max_total_bytes is not None and max_total_bytes < 0:
            raise ValueError("max_total_bytes must not be negative")
        async with self._lock.exclusive():
            return await self._cleanup(max_age_days, max_total_bytes)

    async def _cleanup(self, max_age_days: float | None, max_total_bytes: int | None) -> CleanupReport:
        now = self._clock()
        # The rows first, then the disk: a file saved in between is then young, never taken for an orphan.
        rows = await self.db.fetchall(
            "SELECT path, MAX(created_at) AS newest FROM images WHERE path IS NOT NULL GROUP BY path"
        )
        newest: dict[str, str] = {str(row["path"]): str(row["newest"]) for row in rows}
        on_disk = await asyncio.to_thread(_scan, self.root)
        young = (now - TEMP_MAX_AGE).timestamp()

        stray: list[_OnDisk] = []
        files: dict[str, _OnDisk] = {}
        for item in on_disk:
            if _is_temp(item.rel):
                if item.mtime < young:
                    stray.append(item)
            elif _is_content(item.rel):
                if item.rel in newest:
                    files[item.rel] = item
                elif item.mtime < young:
                    stray.append(item)
                else:
                    files[item.rel] = item  # a save in progress: counts towards the size, not deletable yet

        deleted = 0
        freed = 0
        removed = await asyncio.to_thread(_unlink_all, self.root, [item.rel for item in stray])
        sizes = {item.rel: item.size for item in stray}
        deleted += len(removed)
        freed += sum(sizes[rel] for rel in removed)

        dangling = [rel for rel in newest if rel not in files]
        if dangling:
            log.info("image store: %d stored images were missing from disk; their rows now say so", len(dangling))
            await self._forget(dangling)

        doomed: list[str] = []
        if max_age_days is not None:
            cutoff = iso(now - dt.timedelta(days=max_age_days))
            doomed = [rel for rel in files if rel in newest and newest[rel] < cutoff]
        chosen = set(doomed)
        total = sum(item.size for rel, item in files.items() if rel not in chosen)
        if max_total_bytes is not None and total > max_total_bytes:
            for rel in sorted((r for r in files if r in newest and r not in chosen), key=lambda r: (newest[r], r)):
                if total <= max_total_bytes:
                    break
                doomed.append(rel)
                total -= files[rel].size

        if doomed:
            # The rows let go of the files first: a crash in between leaves orphans, which the next run removes.
            await self._forget(doomed)
            removed = await asyncio.to_thread(_unlink_all, self.root, doomed)
            deleted += len(removed)
            freed += sum(files[rel].size for rel in removed)
            for rel in removed:
                del files[rel]
        return CleanupReport(
            deleted_files=deleted,
            freed_bytes=freed,
            kept_files=len(files),
            kept_bytes=sum(item.size for item in files.values()),
        )

    async def _forget(self, rels: Sequence[str]) -> None:
        """Set `path = NULL` on every row whose file is at one of `rels`."""
        async with self.db.transaction() as tx:
            for rel in rels:
                await tx.execute("UPDATE images SET path = NULL WHERE path = ?", (rel,))

    async def run_periodic(
        self,
        interval_s: float,
        max_age_days: float | None,
        max_total_bytes: int | None,
        stop: asyncio.Event,
    ) -> None:
        """Clean up now and then every `interval_s` seconds until `stop` is set; errors are logged, not raised."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        while not stop.is_set():
            try:
                report = await self.cleanup(max_age_days=max_age_days, max_total_bytes=max_total_bytes)
            except Exception:
                log.exception("image store: cleanup failed; trying again in %g s", interval_s)
            else:
                level = logging.INFO if report.deleted_files else logging.DEBUG
                log.log(
                    level,
                    "image store: removed %d files (%.1f MB); %d files (%.1f MB) kept",
                    report.deleted_files,
                    report.freed_bytes / 1_048_576,
                    report.kept_files,
                    report.kept_bytes / 1_048_576,
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):  # not wait_for, which on 3.11 can lose a cancellation
                    await stop.wait()
