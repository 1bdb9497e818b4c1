"""Flags on a real SQLite file: one per member and job, listed per job and per server, newest first."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from bot.store.db import Database, shipped_migrations
from bot.store.flags import Flags
from bot.store.ledger import JobDraft, Ledger

START = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


async def _job(db: Database, user: str = "100", guild: str = "1") -> int:
    return await Ledger(db).reserve(JobDraft(kind="generate", user_id=user, guild_id=guild, model="gpt-image-1"), 0)


async def test_a_member_flags_a_job_once(db: Database) -> None:
    """The second flag by the same member is refused with False and leaves one row; another member's counts."""
    flags = Flags(db, clock=Clock())
    job = await _job(db)
    assert await flags.add(job, 7, message_id=55, channel_id=66, guild_id=1, reason="🚩 reaction")
    # An insert elsewhere in between: an ignored insert must not borrow its row id and look successful.
    await _job(db)
    assert not await flags.add(job, 7, message_id=55, channel_id=66, guild_id=1)
    assert await flags.add(job, "8", guild_id="1")
    found = await flags.for_job(job)
    assert [(f.user_id, f.message_id, f.channel_id, f.guild_id, f.reason) for f in found] == [
        ("7", "55", "66", "1", "🚩 reaction"),
        ("8", "", "", "1", ""),
    ]
    assert found[0].created_at == "2026-11-24T10:00:01.000Z"


async def test_recent_is_per_server_newest_first_and_limited(db: Database) -> None:
    flags = Flags(db, clock=Clock())
    jobs = [await _job(db) for _ in range(3)]
    other = await _job(db, guild="2")
    for job in jobs:
        await flags.add(job, 7, guild_id=1)
    await flags.add(other, 7, guild_id=2)
    recent = await flags.recent(1, limit=2)
    assert [f.job_id for f in recent] == [jobs[2], jobs[1]]
    assert [f.job_id for f in await flags.recent("2")] == [other]
    assert await flags.recent(1, limit=0) == []
    assert await flags.recent(3) == []


async def test_a_flag_needs_a_real_job(db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        await Flags(db).add(999, 7)
    assert await Flags(db).for_job(999) == []


async def test_an_older_database_gains_the_flags_table(tmp_path: Path) -> None:
    """A database made before the flags migration upgrades in place, keeping its jobs."""
    path = tmp_path / "old.db"
    migrations = shipped_migrations()
    flags_version = next(m.version for m in migrations if m.name.endswith("_flags.sql"))
    old = await Database.open(path, migrations=[m for m in migrations if m.version < flags_version])
    # Written as that schema knew jobs: today's Ledger writes columns added since.
    job = await old.execute(
        "INSERT INTO jobs (kind, user_id, guild_id, model, cost_state, estimate, created_at) "
        "VALUES ('generate', '100', '1', 'gpt-image-1', 'reserved', 0, '2026-11-24T00:00:00.000Z')"
    )
    await old.close()
    new = await Database.open(path)
    try:
        assert await new.version() == len(migrations)
        assert await Flags(new).add(job, 7)
        index = await new.fetchval("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'flags_by_guild'")
        assert index == "flags_by_guild"
    finally:
        await new.close()
