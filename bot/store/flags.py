"""Flags: members marking a result for the moderators (the 🚩 reaction), one flag per member and job.

The store only records; the moderation workflow (cases, review, actions) is built on `recent` and
`for_job`. A member flagging the same job again is not an error: `add` answers False and nothing changes.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from bot.store.db import Database
from bot.store.ledger import iso, utc_now

_SELECT = "SELECT id, job_id, message_id, channel_id, guild_id, user_id, reason, created_at FROM flags "


@dataclass(frozen=True, slots=True)
class Flag:
    """One member's flag on one job."""

    id: int
    job_id: int
    message_id: str
    channel_id: str
    guild_id: str
    user_id: str
    reason: str
    created_at: str


def _flag(row: sqlite3.Row) -> Flag:
    return Flag(
        id=int(row["id"]),
        job_id=int(row["job_id"]),
        message_id=row["message_id"],
        channel_id=row["channel_id"],
        guild_id=row["guild_id"],
        user_id=row["user_id"],
        reason=row["reason"],
        created_at=row["created_at"],
    )


class Flags:
    """The `flags` table over one Database."""

    def __init__(self, db: Database, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.db = db
        self._clock = clock

    async def add(
        self,
        job_id: int,
        user_id: int | str,
        *,
        message_id: int | str = "",
        channel_id: int | str = "",
        guild_id: int | str = "",
        reason: str = "",
    ) -> bool:
        """Record that `user_id` flagged `job_id`; False when that member had already flagged it.

        A job that does not exist raises sqlite3.IntegrityError (the foreign key).
        """
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO flags (job_id, message_id, channel_id, guild_id, user_id, reason, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, user_id) DO NOTHING",
                (job_id, str(message_id), str(channel_id), str(guild_id), str(user_id), reason, iso(self._clock())),
            )
            # Not the cursor's lastrowid: after an ignored insert it still holds an earlier insert's row id.
            row = await tx.fetchone("SELECT changes()")
        return row is not None and int(row[0]) == 1

    async def for_job(self, job_id: int) -> list[Flag]:
        """Every flag on one job, oldest first."""
        rows = await self.db.fetchall(_SELECT + "WHERE job_id = ? ORDER BY id", (job_id,))
        return [_flag(row) for row in rows]

    async def recent(self, guild_id: int | str, limit: int = 25) -> list[Flag]:
        """The newest flags in one server (guild_id '' for outside servers), newest first."""
        if limit < 1:
            return []
        rows = await self.db.fetchall(
            _SELECT + "WHERE guild_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
            (str(guild_id), limit),
        )
        return [_flag(row) for row in rows]
