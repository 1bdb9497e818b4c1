"""A process that dies by SIGKILL in the middle of a job; tests/test_crash.py runs it and inspects the ledger.

    python tests/crash_worker.py DB_PATH POINT

It opens the database, sets four budgets, finishes a few jobs one of each kind (settled under and over the
estimate, refunded, kept as 'unknown', rejected, refused by a budget), then takes one more job through
reserve → start → provider call → settle and kills itself with SIGKILL at POINT:

    before_reserve   nothing of the job is written yet
    after_reserve    the reservation is committed: the job is queued and reserved
    after_start      the job is committed as running
    during_call      while the pretend provider call (an asyncio.sleep) is pending
    after_settle     the settlement is committed
    mid_batch        hundreds of jobs going through the group-commit writer at once: killed while a write
                     transaction is open, with some jobs settled, some running, some queued and some not
                     yet written at all

Every "after" point kills only once the write has returned, and `Database.write` returns only after COMMIT.
Progress goes to stdout, one flushed line each: "DONE <id> <cost_state>", "REFUSED", "RESERVED <id>",
"STARTED <id>", "CALLING <id>", "SETTLED <id>", and last "KILL <point> ...". The process never exits
normally: reaching the end is a bug, reported with exit code 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bot.store.db as store_db
from bot.errors import BudgetExceeded, ProviderTimeout, ProviderUnavailable
from bot.store.db import Database
from bot.store.ledger import JobDraft, Ledger

POINTS = ("before_reserve", "after_reserve", "after_start", "during_call", "after_settle", "mid_batch")
NOW = dt.datetime(2026, 11, 24, 10, 30, tzinfo=dt.UTC)

CRASH_USER = "crash"
CRASH_ESTIMATE = 40_000
CRASH_COST = 30_000

# mid_batch: jobs arriving over ARRIVAL_S seconds, each waiting a little in the queue and in the "call";
# the kill comes once KILL_AFTER_SETTLED have settled and others are still queued and in their call.
MID_USER_PREFIX = "mid"
MID_JOBS = 600
MID_USERS = 40
MID_ESTIMATE = 40_000
MID_COST = 30_000
ARRIVAL_S = 0.5
KILL_AFTER_SETTLED = 60
KILL_DEADLINE_S = 10.0


def marker(*parts: object) -> None:
    sys.stdout.write(" ".join(map(str, parts)) + "\n")
    sys.stdout.flush()


def die(point: str, detail: str = "") -> None:
    """SIGKILL this process: no cleanup, no close, no flush of anything but what was already written."""
    marker("KILL", point, detail)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # the signal is delivered before this line runs


def draft(user: str, *, guild: str = "g1", roles: tuple[str, ...] = ()) -> JobDraft:
    return JobDraft(kind="generate", user_id=user, guild_id=guild, roles=roles, model="gpt-image-2", prompt="a fox")


async def set_budgets(ledger: Ledger) -> None:
    await ledger.set_budget("user", "day", 2_000_000)
    # One mid_batch user has a budget of their own that fits one of their jobs: refusals mid-batch.
    await ledger.set_budget("user", "day", MID_ESTIMATE, target_id=f"{MID_USER_PREFIX}0")
    await ledger.set_budget("role", "day", 5_000_000, guild_id="g1", target_id="artists")
    await ledger.set_budget("guild", "month", 50_000_000, guild_id="g1")
    await ledger.set_budget("global", "month", 100_000_000)


async def complete_jobs(ledger: Ledger) -> None:
    """One finished job of each kind, so the test can see that recovery leaves finished jobs alone."""
    cheap = await ledger.reserve(draft("alice", roles=("artists",)), 40_000)
    await ledger.start(cheap)
    await ledger.settle(cheap, 35_000, request_id="req_cheap")
    marker("DONE", cheap, "settled")

    dear = await ledger.reserve(draft("bob", guild="g2"), 40_000)
    await ledger.start(dear)
    await ledger.settle(dear, 52_000, request_id="req_dear")
    marker("DONE", dear, "settled")

    failed = await ledger.reserve(draft("alice"), 20_000)
    await ledger.start(failed)
    await ledger.fail(failed, ProviderUnavailable("down", code="server_error"), sent=True)
    marker("DONE", failed, "refunded")

    timed_out = await ledger.reserve(draft("carol", guild=""), 25_000)
    await ledger.start(timed_out)
    await ledger.fail(timed_out, ProviderTimeout("slow", maybe_billed=True), sent=True)
    marker("DONE", timed_out, "unknown")

    rejected = await ledger.reject(draft("dave"), code="invalid_option", message="no style here")
    marker("DONE", rejected, "free")

    try:
        await ledger.reserve(draft("erin"), 3_000_000)
    except BudgetExceeded:
        marker("REFUSED")


async def one_job(ledger: Ledger, point: str) -> None:
    """reserve → start → call → settle for one job, dying at `point`."""
    if point == "before_reserve":
        die(point)
    job = await ledger.reserve(draft(CRASH_USER, roles=("artists",)), CRASH_ESTIMATE)
    marker("RESERVED", job)
    if point == "after_reserve":
        die(point)
    await ledger.start(job)
    marker("STARTED", job)
    if point == "after_start":
        die(point)
    marker("CALLING", job)
    if point == "during_call":
        asyncio.get_running_loop().call_later(0.05, die, point)
        await asyncio.sleep(30)  # the provider call; the kill lands while it is pending
    else:
        await asyncio.sleep(0.01)
    await ledger.settle(job, CRASH_COST, request_id="req_crash")
    marker("SETTLED", job)
    if point == "after_settle":
        die(point)


class Progress:
    """How many mid_batch jobs are where, counted at exact points of each job's coroutine."""

    def __init__(self) -> None:
        self.waiting = 0  # reservation committed, start not yet asked for: certainly 'queued' in the file
        self.calling = 0  # start committed, settle not yet asked for: certainly 'running' in the file
        self.settled = 0


async def mid_batch(ledger: Ledger) -> None:
    """Many jobs through the group-commit writer at once, killed while a write transaction is open."""
    rnd = random.Random(1124)
    progress = Progress()

    async def job(i: int) -> None:
        await asyncio.sleep(rnd.uniform(0, ARRIVAL_S))
        try:
            job_id = await ledger.reserve(draft(f"{MID_USER_PREFIX}{i % MID_USERS}"), MID_ESTIMATE)
        except BudgetExceeded:
            marker("REFUSED")
            return
        marker("RESERVED", job_id)
        progress.waiting += 1
        await asyncio.sleep(rnd.uniform(0, 0.02))
        progress.waiting -= 1
        await ledger.start(job_id)
        marker("STARTED", job_id)
        progress.calling += 1
        await asyncio.sleep(rnd.uniform(0.005, 0.05))
        progress.calling -= 1
        await ledger.settle(job_id, MID_COST)
        marker("SETTLED", job_id)
        progress.settled += 1

    real_batch = store_db._apply_batch

    def dying_batch(conn: sqlite3.Connection, statements: list[tuple[str, Any]]) -> list[int | Exception]:
        """The writer's batch, on the connection's thread; once the moment has come, half of it and then death.

        Deciding on the thread, where the batch runs, makes the kill land inside the writer's own open
        transaction every time, rather than whenever a poll from the event loop happens to see one open.
        """
        ready = progress.settled >= KILL_AFTER_SETTLED and progress.waiting > 0 and progress.calling > 0
        if not ready:
            return real_batch(conn, statements)
        conn.execute("BEGIN IMMEDIATE")
        for sql, params in statements[: max(1, len(statements) // 2)]:
            with contextlib.suppress(sqlite3.Error):  # a refused reservation, as in the real batch: undone alone
                conn.execute(sql, params)
        die(
            "mid_batch",
            f"in_transaction={int(conn.in_transaction)} batch={len(statements)} waiting={progress.waiting} "
            f"calling={progress.calling} settled={progress.settled}",
        )
        return []

    # (`_apply_batch` is private; this worker is the test's, and wants the kill inside the writer's transaction.)
    store_db._apply_batch = dying_batch
    tasks = [asyncio.create_task(job(i)) for i in range(MID_JOBS)]
    await asyncio.wait(tasks, timeout=KILL_DEADLINE_S)
    die("deadline", "the jobs never reached a batch with some queued, some running and some settled")


async def main(path: str, point: str) -> None:
    db = await Database.open(path)
    ledger = Ledger(db, clock=lambda: NOW)
    await set_budgets(ledger)
    await complete_jobs(ledger)
    if point == "mid_batch":
        await mid_batch(ledger)
    else:
        await one_job(ledger, point)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in POINTS:
        sys.exit(f"usage: crash_worker.py DB_PATH {{{','.join(POINTS)}}}")
    asyncio.run(main(sys.argv[1], sys.argv[2]))
    sys.stderr.write("the worker reached its end without being killed\n")
    sys.exit(3)
