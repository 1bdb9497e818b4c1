"""Benchmark the spending ledger and print Markdown tables.

    python bench/ledger.py              # every case: about two minutes, a third of it filling 1,000,000 rows
    python bench/ledger.py --quick      # fewer pairs and a 200,000-row ledger
    python bench/ledger.py --profile    # and where the time goes: the SQL by part, cProfile of the loop
    python bench/ledger.py --schema 3   # the write path without the triggers added after 0003 (A/B their cost)

(a) reserve+settle pairs per second through `Ledger` (aiosqlite and the group-commit writer, as the bot
    runs them) with three budgets set (user/day, guild/month, global/month): one coroutine, then 64 and 256
    at once; next to them the same two statements on the stdlib sqlite3 with no asyncio, one transaction
    per statement and 256 pairs per transaction, the floor the Python layers add to.
(b) 1,000 concurrent reservations against a budget that fits exactly 10: exactly 10 must succeed.
(c) the reports (`bot.store.reports.Reports`, when present) over a ledger of 1,000,000 rows filled through
    the real triggers, and an equivalent plain SUM by model and day; bench/reports.py times every report.

Every database is new, in its own temporary folder. Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import io
import os
import platform
import pstats
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.errors import BudgetExceeded
from bot.store.db import Database, shipped_migrations
from bot.store.ledger import _INSERT_JOB, JobDraft, Ledger, iso

NOW = dt.datetime(2026, 11, 24, 10, 30, tzinfo=dt.UTC)
HUGE = 10**15  # limits no reservation reaches: the counters move, nothing is refused
ESTIMATE = 40_000
COST = 35_000
USERS = 1_000
GUILD = "g1"
PAIRS_TARGET = 5_000.0
REPORT_TARGET_MS = 200.0
# The statement Ledger.settle sends, for the raw sqlite3 comparison.
_SETTLE = (
    "UPDATE jobs SET status = 'succeeded', cost_state = 'settled', cost = ?, revised_prompt = ?, "
    "request_id = ?, credits = ?, finished_at = ? WHERE id = ? AND cost_state = 'reserved'"
)


SCHEMA: int | None = None
"""Drop the triggers added after this migration (--schema) from the write path's databases, to A/B their cost."""


async def open_schema(path: Path, *, ab: bool = True) -> Database:
    """A new database with the whole schema; with --schema N (and `ab`), without the triggers added after N.

    Dropping the later triggers, rather than stopping the migrations at N, keeps every column the code
    writes (0005 adds jobs.options) while taking away exactly what an A/B of the write path is about.
    """
    db = await Database.open(path)
    if ab and SCHEMA is not None:
        created = {
            m.version: set(re.findall(r"CREATE TRIGGER (\w+)", m.sql, flags=re.IGNORECASE))
            for m in shipped_migrations()
        }
        before = set().union(*(names for version, names in created.items() if version <= SCHEMA))
        for version, names in created.items():
            # A trigger a later migration only replaces (0006's jobs_reserve, say) stays, in its newest form:
            # dropping it would take away the budgets' bookkeeping itself, not what came after N.
            for name in sorted(names - before) if version > SCHEMA else ():
                await db.execute(f"DROP TRIGGER IF EXISTS {name}")
    return db


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextmanager
def fresh_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="easel-bench-") as tmp:
        yield Path(tmp) / "easel.db"


def drafts() -> list[JobDraft]:
    return [
        JobDraft(kind="generate", user_id=f"u{i}", guild_id=GUILD, model="gpt-image-2", prompt="a fox on a hill")
        for i in range(USERS)
    ]


async def open_with_budgets(path: Path, *, ab: bool = True) -> tuple[Database, Ledger]:
    db = await open_schema(path, ab=ab)
    ledger = Ledger(db, clock=lambda: NOW)
    await ledger.set_budget("user", "day", HUGE)
    await ledger.set_budget("guild", "month", HUGE, guild_id=GUILD)
    await ledger.set_budget("global", "month", HUGE)
    return db, ledger


# -- (a) reserve + settle pairs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairRun:
    rate: float  # pairs per second
    writes_per_commit: float | None  # for the group-commit writer


async def ledger_pairs(concurrency: int, total: int) -> PairRun:
    """`total` reserve+settle pairs from `concurrency` coroutines through Ledger, in a new database."""
    with fresh_path() as path:
        db, ledger = await open_with_budgets(path)
        batches: list[int] = []
        # Batches are counted (a private hook: skipped if Database changes) to show how many writes share a commit.
        run_batch = getattr(db, "_run_batch", None)
        if run_batch is not None:

            async def counting(batch: list[Any]) -> None:
                batches.append(len(batch))
                await run_batch(batch)

            db._run_batch = counting  # type: ignore[method-assign]
        people = drafts()

        async def worker(first: int, count: int) -> None:
            for k in range(first, first + count):
                job = await ledger.reserve(people[k % USERS], ESTIMATE)
                await ledger.settle(job, COST)

        async def run(count: int) -> None:
            share, extra = divmod(count, concurrency)
            sizes = [share + (1 if c < extra else 0) for c in range(concurrency)]
            starts = [sum(sizes[:c]) for c in range(concurrency)]
            await asyncio.gather(*(worker(s, n) for s, n in zip(starts, sizes, strict=True)))

        await run(min(200, total))  # warm-up: caches, the writer task
        batches.clear()
        started = time.perf_counter()
        await run(total)
        took = time.perf_counter() - started
        if await db.fetchval("SELECT count(*) FROM jobs WHERE cost_state = 'reserved'"):
            raise RuntimeError("a pair was left unsettled")
        await db.close()
    return PairRun(total / took, sum(batches) / len(batches) if batches else None)


def raw_pairs(total: int, pairs_per_tx: int) -> float:
    """The same two statements on the stdlib sqlite3, no asyncio; pairs per second.

    `pairs_per_tx` = 0 commits every statement on its own (as the writer does for a lone coroutine).
    """
    with fresh_path() as path:

        async def create() -> None:
            db, _ = await open_with_budgets(path)
            await db.close()

        asyncio.run(create())
        conn = sqlite3.connect(path, isolation_level=None)
        for pragma in ("busy_timeout = 5000", "foreign_keys = ON", "temp_store = MEMORY", "synchronous = NORMAL"):
            conn.execute(f"PRAGMA {pragma}")
        now = iso(NOW)

        started = time.perf_counter()
        for k in range(total):
            if pairs_per_tx and k % pairs_per_tx == 0:
                conn.execute("BEGIN IMMEDIATE")
            job = conn.execute(_INSERT_JOB, _raw_params(f"u{k % USERS}", now)).lastrowid
            conn.execute(_SETTLE, (COST, None, None, None, now, job))
            if pairs_per_tx and (k % pairs_per_tx == pairs_per_tx - 1 or k == total - 1):
                conn.execute("COMMIT")
        took = time.perf_counter() - started
        conn.close()
    return total / took


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


# -- (b) the concurrent-overspend check ----------------------------------------------------------------------


async def overspend_check() -> tuple[int, int, int, float]:
    """1,000 concurrent reservations against a budget that fits exactly 10: (successes, refusals, net, s)."""
    with fresh_path() as path:
        db = await open_schema(path)
        ledger = Ledger(db, clock=lambda: NOW)
        await ledger.set_budget("user", "day", 10 * ESTIMATE)
        await ledger.set_budget("guild", "month", HUGE, guild_id=GUILD)
        await ledger.set_budget("global", "month", HUGE)
        one = drafts()[0]
        started = time.perf_counter()
        results = await asyncio.gather(*(ledger.reserve(one, ESTIMATE) for _ in range(1000)), return_exceptions=True)
        took = time.perf_counter() - started
        wins = sum(isinstance(r, int) for r in results)
        refused = sum(isinstance(r, BudgetExceeded) for r in results)
        net = await db.fetchval("SELECT SUM(CASE kind WHEN 'refund' THEN -amount ELSE amount END) FROM ledger")
        await db.close()
    return wins, refused, int(net or 0), took


# -- (c) reports over a large ledger ---------------------------------------------------------------------------

MODELS = ("gpt-image-2", "gpt-image-1", "gpt-image-1-mini", "dall-e-3", "dall-e-2")
DAYS = 365
CHUNK = 50_000

# Jobs `first`..`last`, spread evenly over the DAYS days ending on NOW, written through the jobs_reserve
# trigger (reserve rows, budget counters); then 85% settled, 10% refunded, 3% unknown, 2% left reserved,
# through the jobs_settle and jobs_refund triggers. About 2.86 ledger rows per job.
_FILL_INSERT = """
WITH RECURSIVE seq(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM seq WHERE i < :last)
INSERT INTO jobs (id, kind, user_id, guild_id, model, status, cost_state, estimate, created_at)
SELECT i, 'generate', 'u' || ((i * 7919) % 2000), CASE WHEN i % 10 = 0 THEN '' ELSE 'g' || (i % 8) END,
       CASE i % 5 WHEN 0 THEN 'gpt-image-2' WHEN 1 THEN 'gpt-image-1' WHEN 2 THEN 'gpt-image-1-mini'
                  WHEN 3 THEN 'dall-e-3' ELSE 'dall-e-2' END,
       'queued', 'reserved', 16000 + (i % 7) * 9000,
       strftime('%Y-%m-%dT%H:%M:%fZ', :end, printf('-%d seconds', (:jobs - i) * :spacing))
FROM seq
"""
_FILL_RESOLVE = (
    "UPDATE jobs SET status = 'succeeded', cost_state = 'settled', cost = estimate * (70 + id % 31) / 100 "
    "WHERE id BETWEEN :first AND :last AND id % 100 < 85",
    "UPDATE jobs SET status = 'failed', cost_state = 'refunded' WHERE id BETWEEN :first AND :last "
    "AND id % 100 BETWEEN 85 AND 94",
    "UPDATE jobs SET status = 'failed', cost_state = 'unknown', cost = estimate WHERE id BETWEEN :first AND :last "
    "AND id % 100 BETWEEN 95 AND 97",
)
ROWS_PER_JOB = 0.85 * 3 + 0.10 * 2 + 0.03 * 3 + 0.02 * 1


async def create_report_db(path: Path) -> None:
    # The reports read the rollups, so their ledger is always filled through every trigger.
    db, _ = await open_with_budgets(path, ab=False)
    await db.close()


def fill(path: Path, rows: int) -> tuple[int, float]:
    """About `rows` ledger rows through the triggers, CHUNK jobs per transaction; (rows, seconds)."""
    asyncio.run(create_report_db(path))
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("foreign_keys = ON", "temp_store = MEMORY", "synchronous = NORMAL"):
        conn.execute(f"PRAGMA {pragma}")
    jobs = round(rows / ROWS_PER_JOB)
    spacing = DAYS * 86_400 // jobs
    started = time.perf_counter()
    for first in range(1, jobs + 1, CHUNK):
        span = {"first": first, "last": min(first + CHUNK - 1, jobs)}
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_FILL_INSERT, {**span, "end": NOW.strftime("%Y-%m-%d %H:%M:%S"), "jobs": jobs, "spacing": spacing})
        for sql in _FILL_RESOLVE:
            conn.execute(sql, span)
        conn.execute("COMMIT")
        progress(f"  filled {span['last']:,} of {jobs:,} jobs")
    took = time.perf_counter() - started
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = int(conn.execute("SELECT count(*) FROM ledger").fetchone()[0])
    conn.close()
    return total, took


async def median_ms(call: Callable[[], Awaitable[object]], runs: int = 5) -> float:
    await call()  # warm-up
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def report_timings(path: Path) -> list[tuple[str, str, float]]:
    """(query, period, median ms) for the reports module (when present) and the plain SUM by model and day."""
    month = NOW.date().replace(day=1).isoformat()
    tomorrow = (NOW.date() + dt.timedelta(days=1)).isoformat()
    found: list[tuple[str, str, float]] = []
    async with await Database.open(path) as db:
        by_model_and_day = (
            "SELECT day, model, SUM(CASE kind WHEN 'refund' THEN -amount ELSE amount END) FROM ledger "
            "WHERE day >= ? AND day < ? GROUP BY day, model"
        )
        for label, first_day in (("this month", month), ("all time", "0000-00-00")):
            ms = await median_ms(lambda s=first_day: db.fetchall(by_model_and_day, (s, tomorrow)))  # type: ignore[misc]
            found.append(("plain SQL: SUM by day and model", label, ms))
        try:
            from bot.store.reports import Reports
        except ImportError:
            return found
        reports = Reports(db, Ledger(db, clock=lambda: NOW), clock=lambda: NOW)
        busiest = await db.fetchval("SELECT user_id FROM ledger GROUP BY user_id ORDER BY count(*) DESC LIMIT 1")
        end = NOW.date() + dt.timedelta(days=1)
        periods: list[tuple[str, dt.date | None]] = [("this month", NOW.date().replace(day=1)), ("all time", None)]
        found.append(
            (
                "Reports.user_summary (busiest user)",
                "today/month/all",
                await median_ms(lambda: reports.user_summary(busiest)),
            )
        )
        for label, since in periods:
            cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("Reports.totals", lambda s=since: reports.totals(s, end)),  # type: ignore[misc]
                ("Reports.by_model", lambda s=since: reports.by_model(s, end)),  # type: ignore[misc]
                ("Reports.by_day", lambda s=since: reports.by_day(s, end)),  # type: ignore[misc]
                ("Reports.by_guild", lambda s=since: reports.by_guild(s, end)),  # type: ignore[misc]
                ("Reports.top_users", lambda s=since: reports.top_users(s, end)),  # type: ignore[misc]
            ]
            for name, call in cases:
                found.append((name, label, await median_ms(call)))
    return found


# -- profiling (--profile) -------------------------------------------------------------------------------------


def profile_loop(concurrency: int, total: int) -> str:
    """cProfile of `total` pairs from `concurrency` coroutines: the event-loop thread (SQLite runs in another)."""
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(ledger_pairs(concurrency, total))
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
    stats.print_stats(8)
    text = out.getvalue()
    return text[text.index("ncalls") :].rstrip()


def raw_breakdown(total: int) -> list[tuple[str, str]]:
    """Where the SQL time goes, on the stdlib sqlite3: per statement, per commit, per index."""
    found: list[tuple[str, str]] = []
    ledger_indexes = ["DROP INDEX ledger_by_day", "DROP INDEX ledger_by_user", "DROP INDEX ledger_by_job"]
    job_indexes = ["DROP INDEX jobs_by_user", "DROP INDEX jobs_by_status"]
    # Automatic checkpoints are off except in the last case, so that the WAL's size counts every page written.
    no_checkpoints = ["PRAGMA wal_autocheckpoint = 0"]
    cases: list[tuple[str, int, list[str], bool]] = [
        ("256 pairs per transaction, as shipped", 256, no_checkpoints, True),
        ("256 pairs per transaction, no budgets", 256, no_checkpoints, False),
        ("256 pairs per transaction, without the 3 ledger indexes", 256, no_checkpoints + ledger_indexes, True),
        (
            "256 pairs per transaction, without those and jobs_by_user/status",
            256,
            no_checkpoints + ledger_indexes + job_indexes,
            True,
        ),
        ("a commit per statement, as shipped", 0, no_checkpoints, True),
        ("a commit per statement, with automatic checkpoints (the default)", 0, [], True),
    ]
    for label, per_tx, changes, budgets in cases:
        with fresh_path() as path:

            async def create(with_budgets: bool = budgets) -> None:
                if with_budgets:
                    db, _ = await open_with_budgets(path)
                else:
                    db = await open_schema(path)
                await db.close()

            asyncio.run(create())
            conn = sqlite3.connect(path, isolation_level=None)
            for pragma in ("foreign_keys = ON", "temp_store = MEMORY", "synchronous = NORMAL"):
                conn.execute(f"PRAGMA {pragma}")
            for sql in changes:
                conn.execute(sql)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            now = iso(NOW)
            inserting = settling = 0.0
            count = total if per_tx else total // 4
            started = time.perf_counter()
            for k in range(count):
                if per_tx and k % per_tx == 0:
                    conn.execute("BEGIN IMMEDIATE")
                a = time.perf_counter()
                job = conn.execute(_INSERT_JOB, _raw_params(f"u{k % USERS}", now)).lastrowid
                b = time.perf_counter()
                conn.execute(_SETTLE, (COST, None, None, None, now, job))
                inserting += b - a
                settling += time.perf_counter() - b
                if per_tx and (k % per_tx == per_tx - 1 or k == count - 1):
                    conn.execute("COMMIT")
            took = time.perf_counter() - started
            commits = -(-count // per_tx) if per_tx else 2 * count
            frames = (Path(f"{path}-wal").stat().st_size - 32) // (4096 + 24)
            conn.close()
        pages = f"; {frames / commits:.1f} WAL pages per commit" if changes[:1] == no_checkpoints else ""
        found.append(
            (
                f"sqlite3: {label}",
                f"{1e6 * took / count:.0f} µs/pair (reserve {1e6 * inserting / count:.0f}, settle "
                f"{1e6 * settling / count:.0f}){pages}",
            )
        )
    return found


def _raw_params(user: str, now: str) -> tuple[object, ...]:
    """The parameters Ledger.reserve binds to _INSERT_JOB."""
    who = ("generate", user, GUILD, "", "[]", "gpt-image-2", "", None, None, 1, "a fox on a hill")
    return (*who, None, None, "queued", "reserved", ESTIMATE, now, None, None, None, "{}")


# -- main --------------------------------------------------------------------------------------------------


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer pairs, a 200,000-row ledger")
    parser.add_argument("--profile", action="store_true", help="also show where the time goes")
    parser.add_argument("--rows", type=int, help="ledger rows for the reports (default 1,000,000)")
    parser.add_argument(
        "--schema",
        type=int,
        help="drop the triggers added after this migration from the write path (default: keep all)",
    )
    args = parser.parse_args()
    global SCHEMA
    SCHEMA = args.schema
    runs = 1 if args.quick else 3
    sequential, concurrent = (1_000, 5_000) if args.quick else (3_000, 20_000)
    rows = args.rows or (200_000 if args.quick else 1_000_000)

    load_before = load()
    table: list[tuple[str, str, str]] = []

    progress("(a) reserve+settle pairs")
    for concurrency, total in ((1, sequential), (64, concurrent), (256, concurrent)):
        results = [asyncio.run(ledger_pairs(concurrency, total)) for _ in range(runs)]
        rate = statistics.median(r.rate for r in results)
        per_commit = statistics.median(r.writes_per_commit or float("nan") for r in results)
        verdict = "ok" if rate >= PAIRS_TARGET else "UNDER"
        progress(f"  {concurrency} coroutine(s): {rate:,.0f} pairs/s, {per_commit:.1f} writes per commit")
        table.append(
            (
                f"Ledger reserve+settle, {concurrency} coroutine{'s' if concurrency > 1 else ''} "
                f"({total:,} pairs, {per_commit:.1f} writes/commit)",
                f"{rate:,.0f} pairs/s ({1e6 / rate:.0f} µs/pair)",
                f"≥ {PAIRS_TARGET:,.0f}/s {verdict}",
            )
        )
    for per_tx, label in ((0, "a commit per statement"), (256, "256 pairs per transaction")):
        rate = median_of(runs, lambda p=per_tx: raw_pairs(sequential if p == 0 else concurrent, p))  # type: ignore[misc]
        progress(f"  raw sqlite3, {label}: {rate:,.0f} pairs/s")
        table.append(
            (
                f"stdlib sqlite3, same SQL, no asyncio, {label}",
                f"{rate:,.0f} pairs/s ({1e6 / rate:.0f} µs/pair)",
                "floor",
            )
        )

    progress("(b) concurrent-overspend check")
    wins, refused, net, took = asyncio.run(overspend_check())
    ok = wins == 10 and refused == 990 and net == 10 * ESTIMATE
    table.append(
        (
            "1,000 concurrent reservations, budget fits 10",
            f"{wins} succeeded, {refused} refused, net {net:,} µ$ in {took * 1000:.0f} ms",
            f"exactly 10: {'pass' if ok else 'FAIL'}",
        )
    )

    progress(f"(c) reports over {rows:,} ledger rows")
    with fresh_path() as path:
        total, fill_s = fill(path, rows)
        size = path.stat().st_size / 1_048_576
        timings = asyncio.run(report_timings(path))
    table.append(
        (
            f"fill {total:,} ledger rows through the triggers ({size:.0f} MiB)",
            f"{fill_s:.1f} s ({total / fill_s:,.0f} rows/s)",
            "reported",
        )
    )
    for name, period, ms in timings:
        table.append(
            (
                f"{name}, {period}",
                f"{ms:.1f} ms",
                f"≤ {REPORT_TARGET_MS:.0f} ms {'ok' if ms <= REPORT_TARGET_MS else 'OVER'}",
            )
        )
    if not any(name.startswith("Reports.") for name, _, _ in timings):
        table.append(("bot.store.reports", "n/a: the module is not there", ""))

    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs, "
        f"{platform.machine()}; load average before {load_before}, after {load()}\n"
    )
    print("| case | result | target |")
    print("|---|---|---|")
    for case, result, target in table:
        print(f"| {case} | {result} | {target} |")

    if args.profile:
        progress("profiling")
        breakdown = raw_breakdown(concurrent // 2)
        print("\n| where the time goes | measured |")
        print("|---|---|")
        for case, result in breakdown:
            print(f"| {case} | {result} |")
        for concurrency, total in ((1, sequential), (256, concurrent)):
            print(f"\ncProfile, event-loop thread, {concurrency} coroutine(s), {total:,} pairs (top by own time):\n")
            print("```")
            print(profile_loop(concurrency, total))
            print("```")


if __name__ == "__main__":
    main()
