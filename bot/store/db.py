"""The process's one SQLite connection (aiosqlite): pragmas, versioned migrations, serialised access.

Every connection sets WAL, `synchronous=NORMAL`, `foreign_keys=ON` and a busy timeout. Migrations are the
numbered files in `migrations/` (`0001_initial.sql`, ...); each runs in its own `BEGIN IMMEDIATE`
transaction together with its `PRAGMA user_version`, so a failed migration leaves nothing behind. A
database written by a newer Easel is refused rather than guessed at.

Statements from different coroutines share one connection, which runs everything on its own thread in the
order it was handed over. Most uses are one hand-off: a read, a write, a group-committed batch of writes,
or a function run on that thread (`call`); they go straight to the thread, so many can be in line at once
and the thread never waits for the event loop between them (under load, waiting for a turn of the loop
before each statement was most of a job's time in the database). A transaction made of several hand-offs
(`transaction()`, `scratch()`) holds the connection's asyncio lock from its BEGIN to its end, and while it
does, every other use waits for the lock, so nothing is ever interleaved with its statements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite

from bot.errors import ConfigError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
WAL_CHECKPOINT_PAGES = 10_000
# Writes that arrive while a commit is under way share the next one; this caps one transaction's size.
WRITE_BATCH = 256
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

Params = Sequence[Any] | dict[str, Any]
_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def shipped_migrations() -> list[Migration]:
    """The migration files shipped in the package, in order."""
    folder = resources.files("bot.store").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration files must be numbered 0001, 0002, ... without gaps: {versions}")
    return found


class Database:
    """One aiosqlite connection with Easel's pragmas and schema; use `open()` and `close()`."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()
        self._pending: list[_Write] = []
        self._writer: asyncio.Task[None] | None = None
        self.batch_on_thread = True
        """Run each use as one call on the connection's thread (False: through aiosqlite's public calls only)."""

    def __repr__(self) -> str:
        return f"Database({self.path!r})"

    @classmethod
    async def open(cls, path: Path | str, *, migrations: Iterable[Migration] | None = None) -> Database:
        """Connect to `path` (":memory:" works too), set the pragmas and bring the schema up to date."""
        target = str(path)
        if target != ":memory:":
            folder = Path(target).parent
            try:
                await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"EASEL_DATA_DIR: cannot create {folder} ({exc.strerror})", variable="EASEL_DATA_DIR"
                ) from None
        try:
            conn = await aiosqlite.connect(target, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(f"EASEL_DATA_DIR: cannot open the database {target} ({exc})") from None
        conn.row_factory = sqlite3.Row
        db = cls(conn, target)
        try:
            await db._pragmas()
            await db._migrate(list(migrations) if migrations is not None else shipped_migrations())
        except BaseException:
            await conn.close()
            raise
        return db

    async def close(self) -> None:
        """Finish the writes already asked for, then close the connection."""
        if self._writer is not None:
            await self._writer
            self._writer = None
        async with self._lock:
            await self._conn.close()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _pragmas(self) -> None:
        await self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await self._conn.execute("PRAGMA foreign_keys = ON")
        # The budget triggers build small temporary b-trees; on disk they cost more than the rest together.
        await self._conn.execute("PRAGMA temp_store = MEMORY")
        # Checkpoint the WAL every ~40 MB instead of every ~4 MB: fewer stalls on the write path
        # (measured: about +10% reservations per second), at the cost of a larger -wal file.
        await self._conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        if self.path != ":memory:":
            row = await (await self._conn.execute("PRAGMA journal_mode = WAL")).fetchone()
            if row is None or str(row[0]).lower() != "wal":
                log.warning("database %s: WAL mode unavailable, using %s", self.path, row[0] if row else "?")
            # NORMAL is durable in WAL mode except for the last transactions before a power cut.
            await self._conn.execute("PRAGMA synchronous = NORMAL")

    async def version(self) -> int:
        row = await (await self._conn.execute("PRAGMA user_version")).fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self, migrations: list[Migration]) -> None:
        current = await self.version()
        newest = migrations[-1].version if migrations else 0
        if current > newest:
            raise ConfigError(
                f"The database {self.path} was written by a newer Easel (schema {current}; this version knows "
                f"up to {newest}): upgrade Easel or point EASEL_DATA_DIR at another folder.",
                variable="EASEL_DATA_DIR",
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            log.info("database %s: applying %s", self.path, migration.name)
            # executescript() commits first and runs everything as given, so the script carries its own
            # transaction: the schema change and the version number commit together or not at all.
            script = f"BEGIN IMMEDIATE;\n{migration.sql}\nPRAGMA user_version = {migration.version};\nCOMMIT;"
            try:
                await self._conn.executescript(script)
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    await self._conn.execute("ROLLBACK")
                raise RuntimeError(f"database migration {migration.name} failed: {exc}") from exc

    # -- access --------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """`BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` on any error; nobody else uses the connection meanwhile."""
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self._conn)
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def scratch(self) -> AsyncIterator[Transaction]:
        """A transaction that is always rolled back: for asking the schema about rows that must not stay."""
        async with self._lock:
            await self._conn.execute("BEGIN")
            try:
                yield Transaction(self._conn)
            finally:
                await self._conn.execute("ROLLBACK")

    async def write(self, sql: str, params: Params = ()) -> int:
        """One statement through the group-commit writer; like `execute`, but many writers share commits.

        Statements that arrive together run in one transaction, each on its own: a statement that fails
        (a constraint, a trigger's RAISE(ABORT)) is undone alone and raises here, the others commit. The
        call returns only once its statement is committed.
        """
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(_Write(sql, params, done))
        # The writer runs only while there is work, so an idle bot has no task waiting forever.
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name=f"easel-db-writer:{self.path}")
        return await done

    async def _drain(self) -> None:
        """Commit batches until nothing is pending; between the last check and the end nothing can slip in."""
        while self._pending:
            batch = self._pending[:WRITE_BATCH]
            del self._pending[:WRITE_BATCH]
            await self._run_batch(batch)

    async def _run_batch(self, batch: list[_Write]) -> None:
        statements = [(item.sql, item.params) for item in batch]
        try:
            results: list[int | Exception] = await self._apply(statements)
        except Exception as exc:  # the writer must outlive any one batch
            log.exception("database %s: a batch of %d writes failed", self.path, len(batch))
            results = [exc for _ in batch]
        for item, outcome in zip(batch, results, strict=True):
            if item.done.cancelled():
                continue
            if isinstance(outcome, BaseException):
                item.done.set_exception(outcome)
            else:
                item.done.set_result(outcome)

    @property
    def on_thread(self) -> bool:
        """Whether `call` is available: aiosqlite's way to run a function on its thread is there and wanted."""
        return self.batch_on_thread and callable(getattr(self._conn, "_execute", None)) and self._raw() is not None

    def _raw(self) -> sqlite3.Connection | None:
        raw = getattr(self._conn, "_conn", None)
        return raw if isinstance(raw, sqlite3.Connection) else None

    async def call(
        self, fn: Callable[Concatenate[sqlite3.Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Run `fn(connection, *args)` on the connection's thread, in order with every other use; its result.

        One hand-off however much `fn` does (which is most of the cost of a small statement), and nothing
        else runs on the connection meanwhile. `fn` must leave no transaction open. Needs `on_thread`:
        aiosqlite has no public call for this, so its `_execute` is pinned by the version range in
        pyproject.toml, and every caller has a tested fallback through the public calls.
        """
        if not self.on_thread:
            raise RuntimeError("Database.call needs aiosqlite's thread hand-off (on_thread)")
        runner: Callable[..., Awaitable[_T]] = self._conn._execute
        raw = self._raw()
        if self._lock.locked():  # a transaction of several hand-offs is open: wait until it ends
            async with self._lock:
                return await runner(fn, raw, *args, **kwargs)
        # Handed over before the first await, so it is in line ahead of any BEGIN that comes after.
        return await runner(fn, raw, *args, **kwargs)

    async def _apply(self, statements: list[tuple[str, Params]]) -> list[int | Exception]:
        """Run a batch in one transaction."""
        if self.on_thread:
            # One hand-off for the whole batch instead of one per statement.
            return await self.call(_apply_batch, statements)
        async with self._lock:
            return await self._apply_in_steps(statements)

    async def _apply_in_steps(self, statements: list[tuple[str, Params]]) -> list[int | Exception]:
        """`_apply` through aiosqlite's public calls, a hand-off per statement; the lock is held by the caller."""
        outcomes: list[int | Exception] = []
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
            tx = Transaction(self._conn)
            for sql, params in statements:
                try:
                    outcomes.append(await tx.execute(sql, params))
                except Exception as exc:  # handed back to the statement's caller
                    outcomes.append(exc)
                    if not self._conn.in_transaction:
                        raise
            await self._conn.execute("COMMIT")
        except Exception as exc:  # every caller in the batch gets it
            with contextlib.suppress(sqlite3.Error):
                await self._conn.execute("ROLLBACK")
            return [exc for _ in statements]
        return outcomes

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One statement, committed on its own; the number of rows it changed (or the new row id for INSERT)."""
        if self.on_thread:
            return await self.call(_execute, sql, params)
        async with self._lock:
            return await Transaction(self._conn).execute(sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        if self.on_thread:
            return await self.call(_fetchone, sql, params)
        async with self._lock:
            return await Transaction(self._conn).fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        if self.on_thread:
            return await self.call(_fetchall, sql, params)
        async with self._lock:
            return await Transaction(self._conn).fetchall(sql, params)

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]


def _apply_batch(conn: sqlite3.Connection, statements: list[tuple[str, Params]]) -> list[int | Exception]:
    """BEGIN IMMEDIATE, each statement on its own (a failing one is undone alone), COMMIT; runs on the db thread.

    A statement that fails, or whose parameters cannot even be bound (an int too large for SQLite), gives
    its own error; anything that ends the whole transaction rolls it back and fails every statement.
    """
    outcomes: list[int | Exception] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for sql, params in statements:
            try:
                cursor = conn.execute(sql, params)
                outcomes.append(_outcome(sql, cursor))
            except Exception as exc:  # handed back to the statement's caller
                outcomes.append(exc)
                if not conn.in_transaction:
                    # SQLite gave up the whole transaction (I/O error, disk full): nothing committed.
                    raise
        conn.execute("COMMIT")
    except Exception as exc:  # every caller in the batch gets it
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        return [exc for _ in statements]
    return outcomes


def _execute(conn: sqlite3.Connection, sql: str, params: Params) -> int:
    return _outcome(sql, conn.execute(sql, params))


def _fetchone(conn: sqlite3.Connection, sql: str, params: Params) -> sqlite3.Row | None:
    cursor = conn.execute(sql, params)
    try:
        row: sqlite3.Row | None = cursor.fetchone()
        return row
    finally:
        cursor.close()


def _fetchall(conn: sqlite3.Connection, sql: str, params: Params) -> list[sqlite3.Row]:
    return conn.execute(sql, params).fetchall()


def _outcome(sql: str, cursor: sqlite3.Cursor | aiosqlite.Cursor) -> int:
    """The new row's id for an INSERT that inserted (0 when it did nothing), else the rows changed."""
    if sql.lstrip()[:6].upper() == "INSERT":
        # lastrowid keeps an earlier insert's id when ON CONFLICT DO NOTHING inserted nothing.
        return int(cursor.lastrowid or 0) if cursor.rowcount > 0 else 0
    return int(cursor.rowcount)


@dataclass(frozen=True, slots=True)
class _Write:
    sql: str
    params: Params
    done: asyncio.Future[int]


class Transaction:
    """Statements inside `Database.transaction()`."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        cursor = await self._conn.execute(sql, params)
        return _outcome(sql, cursor)

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        cursor = await self._conn.execute(sql, params)
        row: sqlite3.Row | None = await cursor.fetchone()
        await cursor.close()
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        rows = await self._conn.execute_fetchall(sql, params)
        return list(rows)
