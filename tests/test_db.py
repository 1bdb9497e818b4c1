"""The one connection's access rules: one hand-off per use, many in line at once, transactions never interleaved."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.store.db import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with await Database.open(tmp_path / "easel.db") as database:
        await database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        yield database


def watch_hand_offs(db: Database, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the functions handed to the connection's thread, and the most waiting there at once."""
    seen = {"calls": 0, "in_line": 0, "most_in_line": 0}
    real: Callable[..., Awaitable[object]] = db._conn._execute

    async def counted(fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        seen["calls"] += 1
        seen["in_line"] += 1
        seen["most_in_line"] = max(seen["most_in_line"], seen["in_line"])
        try:
            return await real(fn, *args, **kwargs)
        finally:
            seen["in_line"] -= 1

    monkeypatch.setattr(db._conn, "_execute", counted)
    return seen


async def test_reads_are_one_hand_off_each_and_queue_together(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty reads at once: each one call on the thread, all in line together instead of one at a time."""
    await db.execute("INSERT INTO t (v) VALUES ('a')")
    seen = watch_hand_offs(db, monkeypatch)
    rows = await asyncio.gather(*(db.fetchone("SELECT v FROM t WHERE id = 1") for _ in range(20)))
    assert [row["v"] for row in rows if row is not None] == ["a"] * 20
    assert seen["calls"] == 20
    assert seen["most_in_line"] == 20


async def test_execute_and_fetchall_are_one_hand_off(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = watch_hand_offs(db, monkeypatch)
    assert await db.execute("INSERT INTO t (v) VALUES ('a'), ('b')") > 0
    assert [row["v"] for row in await db.fetchall("SELECT v FROM t ORDER BY id")] == ["a", "b"]
    assert seen["calls"] == 2
    assert not db._conn.in_transaction


@pytest.mark.parametrize("on_thread", [True, False], ids=["one-hand-off", "public-calls"])
async def test_a_read_waits_for_an_open_transaction(db: Database, on_thread: bool) -> None:
    """A read asked for while a transaction of several statements is open runs after it, seeing it whole."""
    db.batch_on_thread = on_thread
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t (v) VALUES ('first')")
        reader = asyncio.create_task(db.fetchall("SELECT v FROM t ORDER BY id"))
        writer = asyncio.create_task(db.write("INSERT INTO t (v) VALUES ('later')"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not reader.done()
        assert not writer.done()
        await tx.execute("INSERT INTO t (v) VALUES ('second')")
    # Asked for first, so it runs first once the transaction is over: both rows, the later write not yet.
    assert [row["v"] for row in await reader] == ["first", "second"]
    await writer
    assert [row["v"] for row in await db.fetchall("SELECT v FROM t ORDER BY id")] == ["first", "second", "later"]


async def test_a_rolled_back_scratch_is_never_seen(db: Database) -> None:
    """Rows a scratch transaction writes and rolls back are invisible to reads asked for meanwhile."""
    async with db.scratch() as tx:
        await tx.execute("INSERT INTO t (v) VALUES ('ghost')")
        reader = asyncio.create_task(db.fetchval("SELECT COUNT(*) FROM t"))
        await asyncio.sleep(0)
    assert await reader == 0


async def test_call_runs_a_function_on_the_connection(db: Database) -> None:
    def two_statements(conn: sqlite3.Connection, value: str) -> int:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])

    assert await db.call(two_statements, "x") == 1
    db.batch_on_thread = False
    with pytest.raises(RuntimeError, match="on_thread"):
        await db.call(two_statements, "y")


async def test_a_failing_read_raises_and_the_connection_goes_on(db: Database) -> None:
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await db.fetchone("SELECT * FROM missing")
    assert await db.fetchval("SELECT COUNT(*) FROM t") == 0
    assert not db._conn.in_transaction
