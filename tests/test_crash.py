"""Crash safety: a process killed (SIGKILL) anywhere in reserve → start → call → settle leaves books that the
next start's `Ledger.recover()` resolves by the crash rule, with nothing lost and nothing counted twice.

Each test runs tests/crash_worker.py in a subprocess that kills itself at a named point, then opens the
database here, as the next start of the bot would, and checks every job and ledger row before and after
recovery (run twice).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.store.db import Database
from bot.store.ledger import Ledger, Recovery
from tests.crash_worker import CRASH_COST, CRASH_ESTIMATE, CRASH_USER, MID_JOBS, MID_USER_PREFIX
from tests.test_ledger import counters_match_ledger

WORKER = Path(__file__).with_name("crash_worker.py")
WORKER_TIMEOUT_S = 30.0
NOTHING = Recovery(refunded=(), unknown=())


# -- running the worker -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Killed:
    """A worker that died by SIGKILL: its database and what it printed."""

    path: Path
    lines: list[str]

    def ids(self, word: str) -> list[int]:
        """The job ids of the lines "<word> <id>", in order."""
        return [int(line.split()[1]) for line in self.lines if line.split()[0] == word]

    @property
    def kill_line(self) -> str:
        """The "KILL <point> ..." line the worker printed just before it killed itself."""
        (line,) = [line for line in self.lines if line.startswith("KILL ")]
        return line

    @property
    def done(self) -> dict[int, str]:
        """The finished jobs it reported: id → cost_state."""
        return {int(p[1]): p[2] for p in (line.split() for line in self.lines) if p[0] == "DONE"}


async def kill_worker(folder: Path, point: str) -> Killed:
    """Run the worker until it kills itself at `point`; fail if it ends any other way."""
    path = folder / "easel.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        str(path),
        point,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), WORKER_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"the worker did not die within {WORKER_TIMEOUT_S} s at {point}")
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}: {err.decode(errors='replace')}"
    lines = out.decode().splitlines()
    assert lines, "the worker printed nothing"
    kills = [line for line in lines if line.startswith("KILL ")]
    # The kill comes from the database's thread; the event loop's thread may print a line or two more before
    # the signal lands (each of those writes was committed before its line), so the KILL line need not be last.
    assert len(kills) == 1, lines[-5:]
    assert kills[0].startswith(f"KILL {point}"), kills[0]
    # It never closed its connection: the write-ahead log is still there for the next open to replay.
    assert await asyncio.to_thread(Path(f"{path}-wal").exists)
    return Killed(path, lines)


# -- reading and checking the books -------------------------------------------------------------------------


@dataclass(frozen=True)
class Books:
    """Everything money-related in the file: the jobs, the ledger and the budget counters."""

    jobs: dict[int, dict[str, Any]]
    ledger: list[tuple[Any, ...]]
    counters: list[tuple[Any, ...]]

    def rows_of(self, job_id: int) -> list[tuple[str, int]]:
        return [(row[2], row[3]) for row in self.ledger if row[1] == job_id]

    def net(self, job_id: int | None = None) -> int:
        return sum(
            -row[3] if row[2] == "refund" else row[3] for row in self.ledger if job_id is None or row[1] == job_id
        )


async def read_books(db: Database) -> Books:
    jobs = {row["id"]: dict(row) for row in await db.fetchall("SELECT * FROM jobs ORDER BY id")}
    ledger = [tuple(row) for row in await db.fetchall("SELECT * FROM ledger ORDER BY id")]
    counters = [tuple(row) for row in await db.fetchall("SELECT * FROM budget_spend ORDER BY 1, 2, 3")]
    return Books(jobs, ledger, counters)


def expected_rows(job: dict[str, Any]) -> list[tuple[str, int]]:
    """The ledger rows a job in its cost_state must have, in order."""
    estimate, cost = job["estimate"], job["cost"]
    return {
        "free": [],
        "reserved": [("reserve", estimate)],
        "settled": [("reserve", estimate), ("charge", cost), ("refund", estimate)],
        "refunded": [("reserve", estimate), ("refund", estimate)],
        "unknown": [("reserve", estimate), ("charge", estimate), ("refund", estimate)],
    }[job["cost_state"]]


def expected_net(job: dict[str, Any]) -> int:
    """What a job in its cost_state has cost so far: its reservation, its charge, or nothing."""
    state = job["cost_state"]
    return int(job["cost"] if state == "settled" else job["estimate"] if state in ("reserved", "unknown") else 0)


async def check_books(db: Database) -> Books:
    """The file is sound and every job's ledger rows agree with its cost_state; the books as read."""
    assert await db.fetchval("PRAGMA integrity_check") == "ok"
    assert await db.fetchall("PRAGMA foreign_key_check") == []
    books = await read_books(db)
    by_job: defaultdict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for row in books.ledger:
        by_job[row[1]].append(row)
    assert by_job.keys() <= books.jobs.keys(), "ledger rows of jobs that do not exist"
    for job_id, job in books.jobs.items():
        assert books.rows_of(job_id) == expected_rows(job), f"job {job_id} ({job['cost_state']})"
        for row in by_job[job_id]:
            # user_id, guild_id, model and day are the job's own
            assert (row[4], row[5], row[6], row[8]) == (
                job["user_id"],
                job["guild_id"],
                job["model"],
                job["created_at"][:10],
            )
        if job["cost_state"] == "unknown":
            assert job["cost"] == job["estimate"]
            assert next(r[9] for r in by_job[job_id] if r[2] == "charge").startswith("unknown")
    assert books.net() == sum(expected_net(job) for job in books.jobs.values()), "something counted twice"
    await counters_match_ledger(db)
    return books


@dataclass(frozen=True)
class Recovered:
    before: Books
    after: Books
    report: Recovery


async def recover_twice(db: Database, *, resume_queued: bool = False) -> Recovered:
    """Run recovery as a restart would, check it followed the rule job by job, then run it again."""
    before = await check_books(db)
    left = {i: j for i, j in before.jobs.items() if j["cost_state"] == "reserved"}
    running = {i for i, j in left.items() if j["status"] == "running"}
    queued = {i for i, j in left.items() if j["status"] == "queued"}
    assert running | queued == left.keys(), "a reserved job that is neither queued nor running"

    report = await Ledger(db).recover(resume_queued=resume_queued)
    after = await check_books(db)

    assert set(report.unknown) == running
    assert set(report.refunded) == (set() if resume_queued else queued)
    assert after.jobs.keys() == before.jobs.keys()
    for job_id, old in before.jobs.items():
        new = after.jobs[job_id]
        if job_id in running:
            assert (new["status"], new["cost_state"], new["cost"]) == ("failed", "unknown", old["estimate"])
            assert new["error_code"] == "interrupted"
        elif job_id in queued and not resume_queued:
            assert (new["status"], new["cost_state"], new["cost"]) == ("cancelled", "refunded", 0)
            assert new["error_code"] == "interrupted"
        else:
            assert new == old, f"recovery changed job {job_id}"
    stuck = [j for j in after.jobs.values() if j["cost_state"] == "reserved"]
    if resume_queued:
        assert {j["id"] for j in stuck} == queued
    else:
        assert stuck == []
    # Only new rows were added; running jobs' charges replace their reservations, queued ones give theirs back.
    assert after.ledger[: len(before.ledger)] == before.ledger
    released = 0 if resume_queued else sum(before.jobs[i]["estimate"] for i in queued)
    assert after.net() == before.net() - released

    again = await Ledger(db).recover(resume_queued=resume_queued)
    assert again == NOTHING
    assert await check_books(db) == after
    return Recovered(before, after, report)


# -- the tests -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "final", "net"),
    [
        ("before_reserve", None, 0),
        ("after_reserve", ("cancelled", "refunded"), 0),
        ("after_start", ("failed", "unknown"), CRASH_ESTIMATE),
        ("during_call", ("failed", "unknown"), CRASH_ESTIMATE),
        ("after_settle", ("succeeded", "settled"), CRASH_COST),
    ],
)
async def test_job_killed_at(tmp_path: Path, point: str, final: tuple[str, str] | None, net: int) -> None:
    """A job killed at each point ends by the crash rule; finished jobs stay as they were; the books balance."""
    killed = await kill_worker(tmp_path, point)
    async with await Database.open(killed.path) as db:
        result = await recover_twice(db)
    before, after = result.before, result.after

    assert set(killed.done.values()) == {"settled", "refunded", "unknown", "free"}
    for job_id, state in killed.done.items():
        assert after.jobs[job_id]["cost_state"] == state
        assert after.jobs[job_id] == before.jobs[job_id]
    assert not [j for j in after.jobs.values() if j["user_id"] == "erin"], "a refused reservation left a job"

    crash = [j for j in after.jobs.values() if j["user_id"] == CRASH_USER]
    if final is None:
        assert crash == []
        assert result.report == NOTHING
        return
    (job,) = crash
    assert killed.ids("RESERVED") == [job["id"]]
    assert (job["status"], job["cost_state"]) == final
    assert after.net(job["id"]) == net
    expected_report = {
        "refunded": Recovery(refunded=(job["id"],), unknown=()),
        "unknown": Recovery(refunded=(), unknown=(job["id"],)),
        "settled": NOTHING,
    }[final[1]]
    assert result.report == expected_report


async def test_killed_mid_batch(tmp_path: Path) -> None:
    """Killed inside a group commit: acknowledged writes survive, the open batch vanishes, the rule settles the rest."""
    killed = await kill_worker(tmp_path, "mid_batch")
    assert "in_transaction=1" in killed.kill_line, "the kill did not land inside a write transaction"
    async with await Database.open(killed.path) as db:
        result = await recover_twice(db)
    before, after = result.before, result.after

    mid = {i: j for i, j in before.jobs.items() if j["user_id"].startswith(MID_USER_PREFIX)}
    reserved, started, settled = (set(killed.ids(word)) for word in ("RESERVED", "STARTED", "SETTLED"))
    # Some reservations committed, others (the open batch, the late arrivals) left no trace at all.
    assert reserved <= mid.keys()
    assert 0 < len(mid) < MID_JOBS
    # Every acknowledged write is there, at least as far along as it was acknowledged.
    state = {i: (j["status"], j["cost_state"]) for i, j in mid.items()}
    for job_id in settled:
        assert state[job_id] == ("succeeded", "settled")
    for job_id in started - settled:
        assert state[job_id] in {("running", "reserved"), ("succeeded", "settled")}
    for job_id in reserved - started:
        assert state[job_id] in {("queued", "reserved"), ("running", "reserved"), ("succeeded", "settled")}
    # The kill caught jobs in every stage, and each ended by the rule.
    assert {"queued", "running", "succeeded"} <= {status for status, _ in state.values()}
    final = {(after.jobs[i]["status"], after.jobs[i]["cost_state"]) for i in mid}
    assert final <= {("succeeded", "settled"), ("failed", "unknown"), ("cancelled", "refunded")}
    assert len(final) == 3


@pytest.mark.parametrize("point", ["after_reserve", "mid_batch"])
async def test_resume_queued_keeps_reservations(tmp_path: Path, point: str) -> None:
    """With resume_queued, queued jobs keep their reservation and can still run and settle once."""
    killed = await kill_worker(tmp_path, point)
    async with await Database.open(killed.path) as db:
        result = await recover_twice(db, resume_queued=True)
        queued = sorted(i for i, j in result.after.jobs.items() if j["cost_state"] == "reserved")
        assert queued, "no queued job to resume"
        assert result.report.refunded == ()
        ledger = Ledger(db)
        for job_id in queued:
            assert result.after.jobs[job_id]["status"] == "queued"
            assert result.after.rows_of(job_id) == [("reserve", result.after.jobs[job_id]["estimate"])]
            assert await ledger.start(job_id)
            assert await ledger.settle(job_id, CRASH_COST)
            assert not await ledger.settle(job_id, CRASH_COST)
        books = await check_books(db)
        assert await ledger.recover() == NOTHING
    for job_id in queued:
        assert books.net(job_id) == CRASH_COST
    assert not [j for j in books.jobs.values() if j["cost_state"] == "reserved"]
