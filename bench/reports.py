"""Benchmark the spending reports over a ledger of 1,000,000 rows and print a Markdown table.

    python bench/reports.py                 # fill a fresh database in a temporary folder, time every report
    python bench/reports.py --keep DB       # fill DB (or reuse it when it already holds the rows) and keep it
    python bench/reports.py --rows 200000   # a smaller ledger
    python bench/reports.py --upgrade       # fill at schema 1 (no rollups), then time the upgrade's backfills
    python bench/reports.py --upgrade 3     # fill at schema 3 (no spend_by_user), then time its backfill

The rows are written through the real schema with its triggers active: jobs are inserted by
`INSERT INTO jobs ... SELECT ... FROM` a recursive CTE (the `jobs_reserve` trigger writes each reserve row
and moves the budget counters), then settled, refunded or kept as "unknown" by UPDATEs of `cost_state`
(the `jobs_settle` / `jobs_refund` triggers write the charge and refund rows). Each chunk of jobs is
inserted and resolved in one transaction, so a job's rows sit close together as they do in real life.
The data is deterministic: a year of jobs ending on NOW, 2,000 users with a skewed share of the work,
8 servers plus direct messages, 5 models; 80% settled, 12% refunded, 3% unknown, the rest still reserved.

Each report runs through `bot.store.reports.Reports` (aiosqlite, as the bot runs it); the table shows the
median of 5 runs after one warm-up, for this month (the CLI's default period) and for all time, and the
charts drawn from this month's and all time's rows. Before the table, a check that the `spend_daily`
rollup (migration 0002, which the reports without a user filter read) and the `spend_by_user` rollup
(migration 0004, which the rankings of users read) equal the ledger's own sums.
Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.charts import spend_per_day_png, top_users_png
from bot.store.db import Database, shipped_migrations
from bot.store.ledger import Ledger
from bot.store.reports import Reports, to_csv

NOW = dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.UTC)
DAYS = 365
USERS = 2_000
GUILDS = 8
CHUNK = 20_000
TARGET_MS = 200.0  # a report query
CHART_TARGET_MS = 300.0  # drawing a chart
HUGE = 10**15  # budget limits no reservation can reach: the counters move, nothing is refused

# One job: its id `i` decides everything through a cheap integer hash `h`, so a rerun writes the same rows.
_INSERT = """
WITH RECURSIVE seq(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM seq WHERE i < :last),
hashed(i, h) AS (SELECT i, (i * 2654435761) % 4294967296 FROM seq)
INSERT INTO jobs (id, kind, user_id, guild_id, roles, model, provider, size, quality, n, status, cost_state,
                  estimate, created_at)
SELECT i,
       CASE h % 10 WHEN 0 THEN 'edit' WHEN 1 THEN 'vary' ELSE 'generate' END,
       -- a skewed share: user k gets about (k+1)^2 - k^2 of every USERS^2 jobs, from the far end
       printf('%d', 900000000000000000 + :users - 1 - CAST(:users * ((h >> 8) % 65536) * ((h >> 8) % 65536)
              / 4294967296.0 AS INTEGER)),
       CASE WHEN h % 50 = 7 THEN '' ELSE printf('%d', 800000000000000000 + (h >> 4) % :guilds) END,
       '[]',
       CASE (h >> 12) % 10 WHEN 0 THEN 'dall-e-2' WHEN 1 THEN 'gpt-image-1-mini' WHEN 2 THEN 'gpt-image-1'
                           WHEN 3 THEN 'gpt-image-1.5' ELSE 'gpt-image-2' END,
       'openai', '1024x1024', 'medium', 1 + (h >> 16) % 2, 'queued', 'reserved',
       (16000 + ((h >> 20) % 8) * 9000) * (1 + (h >> 16) % 2),
       strftime('%Y-%m-%dT%H:%M:%fZ', :end, printf('-%f seconds', (:last_id - i) * :spacing))
FROM hashed
"""

# Resolve the chunk: by h % 100, 80 settled at 70-100% of the estimate, 12 refunded, 3 unknown, 5 left reserved.
_SETTLE = """
UPDATE jobs SET status = 'succeeded', cost_state = 'settled', cost = estimate * (70 + id % 31) / 100,
                finished_at = created_at
WHERE id BETWEEN :first AND :last AND (id * 2654435761) % 4294967296 % 100 < 80
"""
_REFUND = """
UPDATE jobs SET status = 'failed', cost_state = 'refunded', error_code = 'server_error', finished_at = created_at
WHERE id BETWEEN :first AND :last AND (id * 2654435761) % 4294967296 % 100 BETWEEN 80 AND 91
"""
_KEEP_UNKNOWN = """
UPDATE jobs SET status = 'failed', cost_state = 'unknown', cost = estimate, error_code = 'timeout',
                finished_at = created_at
WHERE id BETWEEN :first AND :last AND (id * 2654435761) % 4294967296 % 100 BETWEEN 92 AND 94
"""

# Rows per job: 80% x 3 + 12% x 2 + 3% x 3 + 5% x 1 = 2.78 on average.
ROWS_PER_JOB = 2.78


def fill(path: Path, rows: int, *, schema: int | None = None) -> tuple[int, float]:
    """Write about `rows` ledger rows (exactly, with a last top-up of reserved jobs); rows and seconds taken.

    `schema` stops the migrations at that version (the database is filled as an older Easel would).
    """
    asyncio.run(_create(path, schema))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA cache_size = -262144")  # 256 MiB while filling; the reports run with the defaults
    started = time.perf_counter()
    jobs = int(rows / ROWS_PER_JOB)
    end = NOW.strftime("%Y-%m-%d %H:%M:%S")
    spacing = DAYS * 86_400 / jobs
    first = 1
    written = 0
    while first <= jobs:
        last = min(first + CHUNK - 1, jobs)
        params: dict[str, Any] = {"first": first, "last": last}
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            _INSERT, {**params, "users": USERS, "guilds": GUILDS, "end": end, "last_id": jobs, "spacing": spacing}
        )
        conn.execute(_SETTLE, params)
        conn.execute(_REFUND, params)
        conn.execute(_KEEP_UNKNOWN, params)
        conn.execute("COMMIT")
        written = conn.execute("SELECT max(id) FROM ledger").fetchone()[0]
        print(f"\rfilling: {written:,} ledger rows", end="", file=sys.stderr, flush=True)
        first = last + 1
    short = rows - written
    if short > 0:  # reserved jobs (one row each) on the last day bring the count to exactly `rows`
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            _INSERT,
            {
                "first": jobs + 1,
                "last": jobs + short,
                "users": USERS,
                "guilds": GUILDS,
                "end": end,
                "last_id": jobs + short,
                "spacing": 1.0,
            },
        )
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    took = time.perf_counter() - started
    total = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
    conn.close()
    print(file=sys.stderr)
    return int(total), took


async def _create(path: Path, schema: int | None = None) -> None:
    """The real schema, and budgets so that every reservation moves counters as it would in use."""
    async with await Database.open(path, migrations=shipped_migrations()[:schema]) as db:
        ledger = Ledger(db, clock=lambda: NOW)
        await ledger.set_budget("global", "month", HUGE)
        await ledger.set_budget("user", "day", HUGE)
        for g in range(GUILDS):
            await ledger.set_budget("guild", "month", HUGE, guild_id=str(800000000000000000 + g))


async def _upgrade(path: Path) -> float:
    """Open the database with every migration, as a newer Easel would; seconds taken."""
    started = time.perf_counter()
    async with await Database.open(path):
        return time.perf_counter() - started


# The rollup's rows that differ from the ledger's sums per (day, guild_id, model), both ways.
_ROLLUP_MISMATCHES = """
WITH summed AS (
    SELECT day, guild_id, model,
           SUM(CASE kind WHEN 'reserve' THEN amount ELSE 0 END) AS reserved,
           SUM(CASE kind WHEN 'charge' THEN amount ELSE 0 END) AS charged,
           SUM(CASE kind WHEN 'refund' THEN amount ELSE 0 END) AS refunded,
           SUM(CASE WHEN kind = 'charge' AND note LIKE 'unknown:%' THEN amount ELSE 0 END) AS unknown,
           SUM(kind = 'reserve') AS reserves, SUM(kind = 'charge') AS charges, SUM(kind = 'refund') AS refunds,
           SUM(CASE WHEN kind = 'charge' AND note LIKE 'unknown:%' THEN 1 ELSE 0 END) AS unknowns
    FROM ledger GROUP BY day, guild_id, model
), stored AS (
    SELECT day, guild_id, model, reserved, charged, refunded, unknown, reserves, charges, refunds, unknowns
    FROM spend_daily
)
SELECT (SELECT count(*) FROM (SELECT * FROM summed EXCEPT SELECT * FROM stored))
     + (SELECT count(*) FROM (SELECT * FROM stored EXCEPT SELECT * FROM summed)),
       (SELECT count(*) FROM spend_daily)
"""


def check_rollup(path: Path) -> str:
    """Whether spend_daily and spend_by_user equal the ledger's sums, and their sizes."""
    conn = sqlite3.connect(path)
    found = []
    try:
        for table, keys in (("spend_daily", "day, guild_id, model"), ("spend_by_user", "user_id, guild_id, day")):
            sql = _ROLLUP_MISMATCHES.replace("day, guild_id, model", keys).replace("spend_daily", table)
            mismatches, size = conn.execute(sql).fetchone()
            verdict = "equals the ledger's sums" if mismatches == 0 else f"{mismatches} rows DIFFER from the ledger"
            found.append(f"{table}: {size:,} rows, {verdict}")
    finally:
        conn.close()
    return "; ".join(found)


async def _time(call: Callable[[], Awaitable[object]], runs: int = 5) -> float:
    await call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def measure(path: Path) -> list[tuple[str, str, float]]:
    """Time every report for this month and for all time, and the two charts."""
    async with await Database.open(path) as db:
        reports = Reports(db, Ledger(db, clock=lambda: NOW), clock=lambda: NOW)
        busiest = str(await db.fetchval("SELECT user_id FROM ledger GROUP BY user_id ORDER BY count(*) DESC LIMIT 1"))
        guild = "800000000000000000"
        month = NOW.date().replace(day=1)
        tomorrow = NOW.date() + dt.timedelta(days=1)
        cases: list[tuple[str, str, Callable[[], Awaitable[object]]]] = [
            ("user_summary (busiest user)", "today / month / all", partial(reports.user_summary, busiest)),
        ]
        for label, since in (("this month", month), ("all time", None)):
            cases += [
                ("totals", label, partial(reports.totals, since, tomorrow)),
                ("by_guild", label, partial(reports.by_guild, since, tomorrow)),
                ("by_model", label, partial(reports.by_model, since, tomorrow)),
                ("by_model, one guild", label, partial(reports.by_model, since, tomorrow, guild_id=guild)),
                ("by_model, busiest user", label, partial(reports.by_model, since, tomorrow, user_id=busiest)),
                ("by_day (x model)", label, partial(reports.by_day, since, tomorrow)),
                ("by_day, one guild", label, partial(reports.by_day, since, tomorrow, guild_id=guild)),
                ("top_users", label, partial(reports.top_users, since, tomorrow)),
                ("top_users, one guild", label, partial(reports.top_users, since, tomorrow, guild_id=guild)),
                ("csv_rows, busiest user", label, partial(reports.csv_rows, since, tomorrow, user_id=busiest)),
            ]
        cases.append(("csv_rows + to_csv, everyone", "this month", partial(_csv, reports, month, tomorrow)))
        days = await reports.by_day(month, tomorrow)
        top = await reports.top_users(month, tomorrow)
        year = await reports.by_day(None, tomorrow)
        cases += [
            ("chart: spend per day", "this month", partial(asyncio.to_thread, spend_per_day_png, days)),
            ("chart: spend per day", "all time", partial(asyncio.to_thread, spend_per_day_png, year)),
            ("chart: top users", "this month", partial(asyncio.to_thread, top_users_png, top)),
        ]
        results = []
        for name, period, call in cases:
            ms = await _time(call)
            print(f"{name:32} {period:22} {ms:8.1f} ms", file=sys.stderr)
            results.append((name, period, ms))
        return results


async def _csv(reports: Reports, since: dt.date, until: dt.date) -> str:
    return to_csv(await reports.csv_rows(since, until))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="database file to fill (or reuse) and keep")
    parser.add_argument(
        "--upgrade",
        type=int,
        nargs="?",
        const=1,
        metavar="SCHEMA",
        help="fill at SCHEMA (default 1), then time the upgrade to the newest schema",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "easel.db"
        if path.exists():
            total = sqlite3.connect(path).execute("SELECT count(*) FROM ledger").fetchone()[0]
            print(f"reusing {path}: {total:,} ledger rows", file=sys.stderr)
            fill_note = "reused"
        else:
            total, took = fill(path, args.rows, schema=args.upgrade)
            fill_note = f"{took:.1f} s" + (f" at schema {args.upgrade}" if args.upgrade else "")
            if args.upgrade:
                upgraded = asyncio.run(_upgrade(path))
                fill_note += f"; upgrade to schema {len(shipped_migrations())} (backfills): {upgraded:.1f} s"
        results = asyncio.run(measure(path))
        rollup = check_rollup(path)
        size = path.stat().st_size / 1_048_576
    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {platform.machine()}; "
        f"{total:,} ledger rows ({size:.0f} MiB); filling: {fill_note}; {rollup}\n"
    )
    print("| report | period | median | target |")
    print("|---|---|---:|---|")
    for name, period, ms in results:
        if name.startswith("csv_rows + to_csv"):
            print(f"| {name} | {period} | {ms:.1f} ms | bulk export, reported |")
            continue
        target = CHART_TARGET_MS if name.startswith("chart") else TARGET_MS
        print(f"| {name} | {period} | {ms:.1f} ms | ≤ {target:.0f} ms {'ok' if ms <= target else 'OVER'} |")


if __name__ == "__main__":
    main()
