"""Spending reports on a real SQLite file, with data written through the Ledger: exact sums per user,
server, model and day, UTC period boundaries, refunds, outstanding reservations, unknown charges, CSV,
the spend_daily and spend_by_user rollups (kept equal to the ledger, filled on upgrade, agreeing with a
plain ledger scan), and query plans that use the rollups' keys and the ledger's covering indexes."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections.abc import Awaitable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import bot.store.ledger as ledger_module
from bot.errors import BudgetExceeded
from bot.store.db import Database, shipped_migrations
from bot.store.ledger import JobDraft, Ledger
from bot.store.reports import (
    CSV_COLUMNS,
    NOTHING,
    DaySpend,
    GuildSpend,
    ModelSpend,
    Reports,
    Spend,
    UserSpend,
    _Where,
    to_csv,
    usd_exact,
)
from tests.conftest import NOW, Clock

NOV = dt.date(2026, 11, 1)
DEC = dt.date(2026, 12, 1)


@pytest.fixture
def ledger(db: Database, clock: Clock) -> Ledger:
    return Ledger(db, clock=clock)


@pytest.fixture
def reports(db: Database, ledger: Ledger, clock: Clock) -> Reports:
    return Reports(db, ledger, clock=clock)


def at(day: int, hour: int = 12, minute: int = 0, second: int = 0, month: int = 11) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, second, tzinfo=dt.UTC)


def draft(user: str, guild: str, model: str, roles: tuple[str, ...] = ()) -> JobDraft:
    return JobDraft(kind="generate", user_id=user, guild_id=guild, model=model, roles=roles)


async def job(ledger: Ledger, clock: Clock, when: dt.datetime, d: JobDraft, estimate: int) -> int:
    clock.now = when
    job_id = await ledger.reserve(d, estimate)
    clock.now = NOW
    return job_id


@pytest.fixture
async def world(ledger: Ledger, clock: Clock) -> dict[str, int]:
    """The jobs below, written through the ledger; the clock ends at NOW (2026-11-24 10:30 UTC).

    net per job, by (user, server, model, day):
      a  u1 g1 gpt-image-2  Oct 31 23:59:59  reserve 100k, settled 80k        →  80k (last month)
      b  u1 g1 gpt-image-1  Nov  1 00:00     reserve  50k, refunded          →   0
      c  u1 g2 gpt-image-2  Nov 23 23:59:59  reserve  40k, settled 45k after midnight → 45k on Nov 23
      d  u1 g1 gpt-image-2  Nov 24 00:00     reserve  30k, still reserved    →  30k (held)
      e  u1 '' dall-e-2     Nov 24 10:00     reserve  20k, kept as unknown   →  20k (unknown)
      f  u2 g1 gpt-image-2  Nov 10           reserve 200k, settled 150k      → 150k
      g  u2 g2 gpt-image-1  Nov 24 09:00     reserve  10k, settled 10k       →  10k
      h  u3 g2 gpt-image-1  Nov  5           reserve  60k, refunded          →   0
      and a rejected request by u3 (free: no ledger rows)
    """
    ids = {
        "a": await job(ledger, clock, at(31, 23, 59, 59, month=10), draft("u1", "g1", "gpt-image-2"), 100_000),
        "b": await job(ledger, clock, at(1, 0), draft("u1", "g1", "gpt-image-1"), 50_000),
        "c": await job(ledger, clock, at(23, 23, 59, 59), draft("u1", "g2", "gpt-image-2"), 40_000),
        "d": await job(ledger, clock, at(24, 0), draft("u1", "g1", "gpt-image-2"), 30_000),
        "e": await job(ledger, clock, at(24, 10), draft("u1", "", "dall-e-2"), 20_000),
        "f": await job(ledger, clock, at(10), draft("u2", "g1", "gpt-image-2"), 200_000),
        "g": await job(ledger, clock, at(24, 9), draft("u2", "g2", "gpt-image-1"), 10_000),
        "h": await job(ledger, clock, at(5), draft("u3", "g2", "gpt-image-1"), 60_000),
    }
    await ledger.reject(draft("u3", "g2", "gpt-image-2"), code="moderation", message="no")
    assert await ledger.settle(ids["a"], 80_000)
    assert await ledger.refund(ids["b"], code="server_error")
    clock.now = at(24, 0, 30)  # after midnight: the job's rows still count on its own day
    assert await ledger.settle(ids["c"], 45_000)
    clock.now = NOW
    assert await ledger.keep_unknown(ids["e"], code="timeout")
    assert await ledger.settle(ids["f"], 150_000)
    assert await ledger.settle(ids["g"], 10_000)
    assert await ledger.refund(ids["h"], code="server_error", status="cancelled")
    return ids


def nets(rows: list[Any], key: str) -> dict[str, int]:
    return {getattr(row, key): row.spend.net for row in rows}


async def rollup_matches(db: Database, table: str, keys: str) -> dict[tuple[str, str, str], tuple[int, ...]]:
    """`table` holds exactly the ledger's sums and counts by kind per `keys` (three columns); those sums."""
    rows = await db.fetchall(
        f"SELECT {keys}, "  # noqa: S608 (keys and table are this file's constants)
        "SUM(CASE kind WHEN 'reserve' THEN amount ELSE 0 END), "
        "SUM(CASE kind WHEN 'charge' THEN amount ELSE 0 END), "
        "SUM(CASE kind WHEN 'refund' THEN amount ELSE 0 END), "
        "SUM(CASE WHEN kind = 'charge' AND note LIKE 'unknown:%' THEN amount ELSE 0 END), "
        "SUM(kind = 'reserve'), SUM(kind = 'charge'), SUM(kind = 'refund'), "
        "SUM(kind = 'charge' AND note IS NOT NULL AND note LIKE 'unknown:%') "
        f"FROM ledger GROUP BY {keys}"
    )
    expected = {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}
    stored = {
        (r[0], r[1], r[2]): tuple(r[3:])
        for r in await db.fetchall(
            f"SELECT {keys}, reserved, charged, refunded, unknown, reserves, charges, refunds, unknowns FROM {table}"  # noqa: S608
        )
    }
    assert stored == expected
    return stored


async def rollup_matches_ledger(db: Database) -> dict[tuple[str, str, str], tuple[int, ...]]:
    """spend_daily holds exactly the ledger's sums and counts per (day, guild_id, model)."""
    return await rollup_matches(db, "spend_daily", "day, guild_id, model")


async def reports_match_ledger(reports: Reports) -> None:
    """Every report the rollup answers equals the same report summed from the ledger rows."""
    periods = [(None, None), (NOV, DEC), (dt.date(2026, 10, 31), NOV), (dt.date(2026, 11, 24), None), (DEC, None)]
    for since, until in periods:
        for guild in (None, "", "g1", "g2", "nowhere"):
            where = _Where.of(since, until, guild_id=guild)
            for keys in ((), ("guild_id",), ("model",), ("day", "model"), ("day",)):
                rolled, summed = await reports._rolled(keys, where), await reports._from_ledger(keys, where)
                assert rolled == summed, (since, until, guild, keys)


# -- Spend ----------------------------------------------------------------------------------------------


def test_spend_arithmetic() -> None:
    """net, held and the job counts follow from the sums by kind; Spends add up."""
    # Three jobs: one settled (est 100, cost 80), one refunded (est 50), one still reserved (est 30).
    spend = Spend(reserved=180, charged=80, refunded=150, reserves=3, charges=1, refunds=2)
    assert (spend.net, spend.held, spend.jobs) == (110, 30, 3)
    assert (spend.refunded_jobs, spend.pending_jobs) == (1, 1)
    assert spend + NOTHING == spend
    assert (spend + spend).net == 220
    assert NOTHING.net == NOTHING.jobs == 0


def test_usd_exact() -> None:
    assert usd_exact(53_000) == "0.053000"
    assert usd_exact(12_345_678) == "12.345678"
    assert usd_exact(0) == "0.000000"
    assert usd_exact(-1) == "-0.000001"


# -- one user -------------------------------------------------------------------------------------------


async def test_user_summary_today_month_all_time(reports: Reports, world: dict[str, int]) -> None:
    """Today and this month are UTC days of the jobs; refunds count nothing; held and unknown are kept apart."""
    summary = await reports.user_summary("u1")
    assert summary.day == dt.date(2026, 11, 24)
    assert summary.month_start == NOV
    # today: d (30k held) + e (20k unknown)
    assert (summary.today.net, summary.today.jobs, summary.today.held) == (30_000 + 20_000, 2, 30_000)
    assert (summary.today.unknown, summary.today.unknowns) == (20_000, 1)
    # this month: b (refunded: 0) + c (45k, settled after midnight but counted on Nov 23) + d + e
    assert (summary.month.net, summary.month.jobs, summary.month.refunded_jobs) == (95_000, 4, 1)
    assert summary.month.charged == 45_000 + 20_000
    # all time adds a (Oct 31 23:59:59 UTC: last month)
    assert (summary.all_time.net, summary.all_time.jobs, summary.all_time.pending_jobs) == (175_000, 5, 1)
    assert (summary.all_time.unknown, summary.all_time.unknowns) == (20_000, 1)


async def test_user_summary_at_period_edges(reports: Reports, world: dict[str, int], clock: Clock) -> None:
    """Just after midnight on the 1st, 'today' and 'this month' start empty; just before, they end."""
    clock.now = dt.datetime(2026, 11, 1, 0, 0, tzinfo=dt.UTC)
    first = await reports.user_summary("u1")
    assert (first.today.net, first.today.jobs) == (0, 1)  # b was refunded
    assert first.month.jobs == 4  # the whole of November's days, b to e
    clock.now = dt.datetime(2026, 10, 31, 23, 59, 59, tzinfo=dt.UTC)
    last = await reports.user_summary("u1")
    assert (last.today.net, last.month.net) == (80_000, 80_000)
    assert last.all_time.net == 175_000  # all time is everything recorded, whatever the clock says


async def test_user_summary_of_a_stranger(reports: Reports, world: dict[str, int]) -> None:
    """A user with no jobs has nothing everywhere (a rejected request is free)."""
    summary = await reports.user_summary("nobody")
    assert summary.today == summary.month == summary.all_time == NOTHING
    rejected_only = await reports.user_summary("u3")
    assert (rejected_only.all_time.jobs, rejected_only.all_time.net, rejected_only.all_time.refunded_jobs) == (1, 0, 1)


async def test_user_summary_lists_budgets_with_reset_times(
    reports: Reports, ledger: Ledger, world: dict[str, int]
) -> None:
    """The budgets that apply in the given server and roles, tightest first, with what is left and when."""
    await ledger.set_budget("user", "day", 1_000_000)
    await ledger.set_budget("guild", "month", 300_000, guild_id="g1")
    await ledger.set_budget("role", "week", 5_000_000, guild_id="g1", target_id="artists")
    await ledger.set_budget("guild", "month", 1, guild_id="g2")  # another server's: not listed
    summary = await reports.user_summary("u1", guild_id="g1", roles=("artists",))
    found = {(s.budget.scope, s.budget.period): (s.spent, s.remaining, s.resets_at) for s in summary.budgets}
    assert found == {
        # the server's month so far: b (0) + d (30k) + f (150k)
        ("guild", "month"): (180_000, 120_000, dt.datetime(2026, 12, 1, tzinfo=dt.UTC)),
        # u1 today, everywhere: d + e
        ("user", "day"): (50_000, 950_000, dt.datetime(2026, 11, 25, tzinfo=dt.UTC)),
        # no job was made with the role
        ("role", "week"): (0, 5_000_000, dt.datetime(2026, 11, 30, tzinfo=dt.UTC)),
    }
    assert [s.budget.scope for s in summary.budgets] == ["guild", "user", "role"]
    outside = await reports.user_summary("u1")
    assert [(s.budget.scope, s.budget.period) for s in outside.budgets] == [("user", "day")]


# -- over a period --------------------------------------------------------------------------------------


async def test_totals(reports: Reports, world: dict[str, int]) -> None:
    """November: every job but a; all time adds a; filters narrow to one server or user."""
    november = await reports.totals(NOV, DEC)
    assert november.net == 95_000 + 160_000 + 0
    assert (november.held, november.unknown, november.unknowns) == (30_000, 20_000, 1)
    assert (november.jobs, november.refunded_jobs, november.pending_jobs) == (7, 2, 1)
    assert (await reports.totals(None, None)).net == 335_000
    assert (await reports.totals(NOV, DEC, guild_id="g1")).net == 30_000 + 150_000
    assert (await reports.totals(NOV, DEC, guild_id="")).net == 20_000
    assert (await reports.totals(None, None, user_id="u1")).net == 175_000
    assert (await reports.totals(NOV, DEC, guild_id="g2", user_id="u1")).net == 45_000
    assert await reports.totals(DEC, None) == NOTHING


async def test_period_bounds_are_utc_days_half_open(reports: Reports, world: dict[str, int]) -> None:
    """since is included, until is not: Oct 31 23:59:59 belongs to October, Nov 24 00:00 to the 24th."""
    assert (await reports.totals(dt.date(2026, 10, 31), NOV)).net == 80_000
    assert (await reports.totals(dt.date(2026, 11, 24), dt.date(2026, 11, 25))).net == 30_000 + 20_000 + 10_000
    assert (await reports.totals(dt.date(2026, 11, 23), dt.date(2026, 11, 24))).net == 45_000
    assert (await reports.totals(None, NOV)).net == 80_000


async def test_by_guild(reports: Reports, world: dict[str, int]) -> None:
    rows = await reports.by_guild(NOV, DEC)
    assert rows == sorted(rows, key=lambda r: -r.spend.net)
    assert nets(rows, "guild_id") == {"g1": 180_000, "g2": 55_000, "": 20_000}
    assert [r.guild_id for r in rows] == ["g1", "g2", ""]
    assert isinstance(rows[0], GuildSpend)
    assert next(r for r in rows if r.guild_id == "").spend.unknown == 20_000
    assert nets(await reports.by_guild(None, None), "guild_id")["g1"] == 260_000


async def test_by_model(reports: Reports, world: dict[str, int]) -> None:
    rows = await reports.by_model(NOV, DEC)
    assert [(r.model, r.spend.net) for r in rows] == [
        ("gpt-image-2", 225_000),
        ("dall-e-2", 20_000),
        ("gpt-image-1", 10_000),
    ]
    assert isinstance(rows[0], ModelSpend)
    dall_e = rows[1].spend
    assert (dall_e.unknown, dall_e.unknowns, dall_e.charged) == (20_000, 1, 20_000)
    assert rows[2].spend.refunded_jobs == 2
    assert nets(await reports.by_model(NOV, DEC, guild_id="g1"), "model") == {"gpt-image-2": 180_000, "gpt-image-1": 0}
    assert nets(await reports.by_model(NOV, DEC, user_id="u1"), "model") == {
        "gpt-image-2": 75_000,
        "dall-e-2": 20_000,
        "gpt-image-1": 0,
    }
    assert await reports.by_model(DEC, None) == []


async def test_by_day(reports: Reports, world: dict[str, int]) -> None:
    """One row per day and model, in order; the job settled after midnight counts on its own day."""
    rows = await reports.by_day(NOV, DEC)
    assert all(isinstance(r, DaySpend) for r in rows)
    assert [(r.day.day, r.model, r.spend.net) for r in rows] == [
        (1, "gpt-image-1", 0),
        (5, "gpt-image-1", 0),
        (10, "gpt-image-2", 150_000),
        (23, "gpt-image-2", 45_000),
        (24, "dall-e-2", 20_000),
        (24, "gpt-image-1", 10_000),
        (24, "gpt-image-2", 30_000),
    ]
    mine = await reports.by_day(dt.date(2026, 11, 24), dt.date(2026, 11, 25), user_id="u1")
    assert [(r.model, r.spend.net, r.spend.held) for r in mine] == [
        ("dall-e-2", 20_000, 0),
        ("gpt-image-2", 30_000, 30_000),
    ]
    g2 = await reports.by_day(NOV, DEC, guild_id="g2")
    assert sum(r.spend.net for r in g2) == 55_000


async def test_top_users(reports: Reports, world: dict[str, int]) -> None:
    """Largest first; a user whose every job was refunded still appears, last; limits and servers apply."""
    rows = await reports.top_users(NOV, DEC)
    assert all(isinstance(r, UserSpend) for r in rows)
    assert [(r.user_id, r.spend.net) for r in rows] == [("u2", 160_000), ("u1", 95_000), ("u3", 0)]
    assert rows[1].spend == (await reports.user_summary("u1")).month
    assert [r.user_id for r in await reports.top_users(NOV, DEC, limit=2)] == ["u2", "u1"]
    assert await reports.top_users(NOV, DEC, limit=0) == []
    in_g2 = await reports.top_users(NOV, DEC, guild_id="g2")
    assert [(r.user_id, r.spend.net, r.spend.jobs) for r in in_g2] == [
        ("u1", 45_000, 1),
        ("u2", 10_000, 1),
        ("u3", 0, 1),
    ]
    assert [r.user_id for r in await reports.top_users(None, None)] == ["u1", "u2", "u3"]
    assert await reports.top_users(DEC, None) == []


async def test_every_breakdown_adds_up_to_the_totals(reports: Reports, world: dict[str, int], db: Database) -> None:
    """Per server, model, day and user, the groups add up to the period's totals and to the raw ledger."""
    raw = await db.fetchval(
        "SELECT SUM(CASE kind WHEN 'refund' THEN -amount ELSE amount END) FROM ledger WHERE day >= ? AND day < ?",
        ("2026-11-01", "2026-12-01"),
    )
    total = await reports.totals(NOV, DEC)
    assert total.net == raw
    for rows in (
        await reports.by_guild(NOV, DEC),
        await reports.by_model(NOV, DEC),
        await reports.by_day(NOV, DEC),
        await reports.top_users(NOV, DEC, limit=100),
    ):
        combined = NOTHING
        for row in rows:
            combined += row.spend
        assert combined == total


async def test_empty_database(reports: Reports) -> None:
    assert await reports.totals(None, None) == NOTHING
    assert await reports.by_guild(None, None) == []
    assert await reports.by_day(None, None) == []
    assert await reports.top_users(None, None) == []
    assert await reports.csv_rows(None, None) == []
    assert (await reports.user_summary("u1")).budgets == ()


# -- the rollup ---------------------------------------------------------------------------------------


async def mixed_jobs(ledger: Ledger, clock: Clock, count: int, seed: int) -> int:
    """`count` jobs over two months, four servers (and none) and three models, settled for less or more than
    their estimate, refunded, kept as unknown, left reserved or rejected; some settled a day later. How many
    reservations a budget refused."""
    rng = random.Random(seed)
    refused = 0
    for _ in range(count):
        when = dt.datetime(2026, 10, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randrange(61 * 86_400))
        d = draft(f"u{rng.randrange(5)}", rng.choice(["", "g1", "g2", "g3"]), rng.choice(["m1", "m2", "dall-e-2"]))
        fate = rng.choice(["settle", "settle", "refund", "unknown", "reserved", "reject", "zero"])
        if fate == "reject":
            await ledger.reject(d, code="moderation", message="no")
            continue
        try:
            job_id = await job(ledger, clock, when, d, 0 if fate == "zero" else rng.randrange(1, 200_000))
        except BudgetExceeded:
            refused += 1
            continue
        clock.now = when + dt.timedelta(hours=rng.choice([0, 1, 30]))  # sometimes after the job's own day
        if fate in ("settle", "zero"):
            assert await ledger.settle(job_id, rng.randrange(0, 250_000))
        elif fate == "refund":
            assert await ledger.refund(job_id, code="server_error")
        elif fate == "unknown":
            assert await ledger.keep_unknown(job_id, code="timeout")
        clock.now = NOW
    clock.now = NOW
    return refused


async def test_rollup_equals_the_ledger(
    reports: Reports, ledger: Ledger, clock: Clock, db: Database, world: dict[str, int]
) -> None:
    """After any mix of reservations, settlements, refunds and unknown charges (and refused reservations,
    which leave nothing), spend_daily holds the ledger's sums, and the reports read from it say what the
    ledger rows say."""
    assert len(await rollup_matches_ledger(db)) == 8  # the world's jobs: one group each
    await ledger.set_budget("user", "day", 150_000, target_id="u4")
    assert await mixed_jobs(ledger, clock, 150, seed=1) > 0
    groups = await rollup_matches_ledger(db)
    assert len(groups) > 50
    assert sum(g[7] for g in groups.values()) == await db.fetchval(
        "SELECT count(*) FROM jobs WHERE cost_state = 'unknown'"
    )
    await reports_match_ledger(reports)
    # A ledger row written by anyone (an admin's script) is counted too: the trigger is on the ledger itself.
    await db.execute(
        "INSERT INTO ledger (job_id, kind, amount, user_id, guild_id, model, at, day, note) "
        "VALUES (?, 'charge', 7, 'u1', 'g9', 'm9', '2026-11-02T00:00:00.000Z', '2026-11-02', 'unknown: by hand')",
        (world["d"],),
    )
    await rollup_matches_ledger(db)
    assert (await reports.by_guild(NOV, DEC))[-1] == GuildSpend(
        "g9", Spend(charged=7, charges=1, unknown=7, unknowns=1)
    )


def write_jobs_without_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make Ledger write jobs as it did before migration 0005 added jobs.options (undo before upgrading)."""
    monkeypatch.setattr(
        ledger_module, "_INSERT_JOB", ledger_module._INSERT_JOB.replace(", options)", ")", 1).replace(", ?)", ")", 1)
    )
    with_options = Ledger._job_params
    monkeypatch.setattr(Ledger, "_job_params", lambda self, *args, **kwargs: with_options(self, *args, **kwargs)[:-1])


async def test_upgrade_fills_the_rollup(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database made before spend_daily existed gets it filled from its ledger on upgrade, then kept up."""
    path = tmp_path / "easel.db"
    write_jobs_without_options(monkeypatch)
    async with await Database.open(path, migrations=shipped_migrations()[:1]) as old:
        assert await old.version() == 1
        await mixed_jobs(Ledger(old, clock=clock), clock, 120, seed=2)
        assert await old.fetchval("SELECT count(*) FROM sqlite_master WHERE name = 'spend_daily'") == 0
        before = await old.fetchval("SELECT count(*) FROM ledger")
    monkeypatch.undo()
    async with await Database.open(path) as db:
        assert await db.version() == len(shipped_migrations())
        assert await db.fetchval("SELECT count(*) FROM ledger") == before > 100
        ledger = Ledger(db, clock=clock)
        reports = Reports(db, ledger, clock=clock)
        assert len(await rollup_matches_ledger(db)) > 40
        await reports_match_ledger(reports)
        await mixed_jobs(ledger, clock, 40, seed=3)
        await rollup_matches_ledger(db)
        await reports_match_ledger(reports)


async def test_upgrade_of_an_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "easel.db"
    async with await Database.open(path, migrations=shipped_migrations()[:1]):
        pass
    async with await Database.open(path) as db:
        assert await rollup_matches_ledger(db) == {}


# -- CSV --------------------------------------------------------------------------------------------------


async def test_csv_round_trips(reports: Reports, world: dict[str, int]) -> None:
    """The CSV parses back with the csv module into the same rows; its net column sums to the totals."""
    rows = await reports.csv_rows(NOV, DEC)
    text = to_csv(rows)
    assert Reports.to_csv(rows) == text
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert tuple(parsed[0]) == CSV_COLUMNS
    assert len(parsed) == len(rows) == 3 * 4 + 2 * 2 + 1  # settled/unknown 3 rows, refunded 2, reserved 1
    assert sum(int(r["net_micros"]) for r in parsed) == (await reports.totals(NOV, DEC)).net
    for row, back in zip(rows, parsed, strict=True):
        assert int(back["ledger_id"]) == row.ledger_id
        assert int(back["amount_micros"]) == row.amount
        assert Decimal(back["amount_usd"]) * 1_000_000 == row.amount
        assert int(back["net_micros"]) == (-row.amount if back["kind"] == "refund" else row.amount)
        assert (back["user_id"], back["guild_id"], back["model"], back["note"]) == (
            row.user_id,
            row.guild_id,
            row.model,
            row.note,
        )
    assert [r.day for r in rows] == sorted(r.day for r in rows)
    unknown = [r for r in parsed if r["cost_state"] == "unknown"]
    assert [(r["kind"], r["status"], r["job_kind"]) for r in unknown] == [
        ("reserve", "failed", "generate"),
        ("charge", "failed", "generate"),
        ("refund", "failed", "generate"),
    ]
    assert unknown[1]["note"].startswith("unknown:")
    assert {r["day"] for r in parsed} <= {f"2026-11-{d:02d}" for d in range(1, 31)}


async def test_csv_filters(reports: Reports, world: dict[str, int]) -> None:
    mine = await reports.csv_rows(None, None, user_id="u1")
    assert {r.user_id for r in mine} == {"u1"}
    assert sum(r.net for r in mine) == 175_000
    g2 = await reports.csv_rows(NOV, DEC, guild_id="g2", user_id="u1")
    assert {(r.job_id, r.kind) for r in g2} == {(world["c"], "reserve"), (world["c"], "charge"), (world["c"], "refund")}
    assert to_csv([]) == ",".join(CSV_COLUMNS) + "\n"


# -- query plans ------------------------------------------------------------------------------------------


async def recorded(
    db: Database, monkeypatch: pytest.MonkeyPatch, calls: list[Awaitable[object]]
) -> list[tuple[str, Any]]:
    """The report queries (SQL and parameters) that running `calls` sends, leaving out the budget lookups."""
    seen: list[tuple[str, Any]] = []
    fetchall, fetchone = db.fetchall, db.fetchone

    async def record_all(sql: str, params: Any = ()) -> Any:
        seen.append((sql, params))
        return await fetchall(sql, params)

    async def record_one(sql: str, params: Any = ()) -> Any:
        seen.append((sql, params))
        return await fetchone(sql, params)

    with monkeypatch.context() as patch:
        patch.setattr(db, "fetchall", record_all)
        patch.setattr(db, "fetchone", record_one)
        for call in calls:
            await call
    return [
        (sql, params)
        for sql, params in seen
        if any(f"FROM {t}" in sql for t in ("ledger", "spend_daily", "spend_by_user"))
    ]


async def plans_of(db: Database, queries: list[tuple[str, Any]]) -> dict[str, list[str]]:
    return {
        sql: [row["detail"] for row in await db.fetchall(f"EXPLAIN QUERY PLAN {sql}", params)]
        for sql, params in queries
    }


async def test_period_reports_read_the_rollup_by_its_key(
    reports: Reports, world: dict[str, int], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Totals and breakdowns by server, model and day that are not about users read only spend_daily, one
    range of its primary key, whatever the period; never the ledger."""
    queries = await recorded(
        db,
        monkeypatch,
        [
            reports.totals(NOV, DEC),
            reports.totals(None, None),
            reports.totals(NOV, DEC, guild_id="g1"),
            reports.by_guild(None, None),
            reports.by_model(None, None),
            reports.by_model(NOV, DEC, guild_id="g1"),
            reports.by_day(NOV, DEC),
            reports.by_day(None, None, guild_id=""),
        ],
    )
    assert len(queries) == 8  # one query each
    plans = await plans_of(db, queries)
    assert len(plans) == 7  # the same SQL for any period: one per report and filter
    for sql, details in plans.items():
        assert "FROM spend_daily" in sql
        reads = [d for d in details if d.startswith(("SCAN", "SEARCH"))]
        assert reads == ["SEARCH spend_daily USING PRIMARY KEY (day>? AND day<?)"], (sql, details)


async def test_queries_use_the_covering_indexes(
    reports: Reports, world: dict[str, int], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every report query about users, except the rankings (which read spend_by_user), reads the ledger
    through one of its indexes (never a scan of the table), and one user's rows through the covering
    ledger_by_user."""
    queries = await recorded(
        db,
        monkeypatch,
        [
            reports.totals(NOV, DEC, user_id="u1"),
            reports.totals(None, None, guild_id="g1", user_id="u1"),
            reports.by_model(NOV, DEC, user_id="u1"),
            reports.by_day(NOV, DEC, user_id="u1"),
            reports.csv_rows(NOV, DEC, user_id="u1"),
            reports.csv_rows(NOV, DEC),
        ],
    )
    plans = await plans_of(db, queries)
    assert len(plans) >= 10
    for sql, details in plans.items():
        assert "spend_daily" not in sql
        reads = [d for d in details if d.startswith(("SCAN ledger", "SEARCH ledger", "SCAN l ", "SEARCH l "))]
        assert reads, (sql, details)
        for detail in reads:
            assert "INDEX ledger_by_" in detail, (sql, details)
    found = [d for details in plans.values() for d in details]
    assert any("ledger_by_day (day>? AND day<?)" in d for d in found)  # the whole export
    assert any("COVERING INDEX ledger_by_user (user_id=?" in d for d in found)


async def test_top_users_beyond_the_listing_limit(
    reports: Reports, ledger: Ledger, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long ranking gets its details from one query over everyone, in the same order."""
    for n in range(6):
        job_id = await job(ledger, clock, at(3), draft(f"user{n}", "g1", "gpt-image-2"), 1_000 * (n + 1))
        await ledger.settle(job_id, 1_000 * (n + 1))
    short = await reports.top_users(NOV, DEC, limit=6)
    monkeypatch.setattr("bot.store.reports._MAX_LISTED", 2)
    assert await reports.top_users(NOV, DEC, limit=6) == short
    assert [r.user_id for r in short] == [f"user{n}" for n in reversed(range(6))]


# -- the per-user rollup ------------------------------------------------------------------------------


async def user_rollup_matches_ledger(db: Database) -> dict[tuple[str, str, str], tuple[int, ...]]:
    """spend_by_user holds exactly the ledger's sums and counts per (user_id, guild_id, day)."""
    return await rollup_matches(db, "spend_by_user", "user_id, guild_id, day")


async def scanned_top_users(
    db: Database, since: dt.date | None, until: dt.date | None, guild: str | None
) -> list[UserSpend]:
    """The ranking summed from the ledger rows themselves, with no rollup: every user with rows, by net."""
    where = _Where.of(since, until, guild_id=guild)
    rows = await db.fetchall(f"SELECT user_id, kind, amount, note FROM ledger WHERE {where.sql}", where.params)  # noqa: S608
    sums: dict[str, dict[str, int]] = {}
    for row in rows:
        s = sums.setdefault(
            row["user_id"],
            dict.fromkeys(
                ("reserved", "charged", "refunded", "reserves", "charges", "refunds", "unknown", "unknowns"), 0
            ),
        )
        total, count = {
            "reserve": ("reserved", "reserves"),
            "charge": ("charged", "charges"),
            "refund": ("refunded", "refunds"),
        }[row["kind"]]
        s[total] += row["amount"]
        s[count] += 1
        if row["kind"] == "charge" and (row["note"] or "").startswith("unknown:"):
            s["unknown"] += row["amount"]
            s["unknowns"] += 1
    found = [UserSpend(user, Spend(**s)) for user, s in sums.items()]
    return sorted(found, key=lambda r: (-r.spend.net, r.user_id))


async def top_users_match_a_ledger_scan(reports: Reports, db: Database) -> None:
    periods = [(None, None), (NOV, DEC), (dt.date(2026, 10, 31), NOV), (dt.date(2026, 11, 24), None), (DEC, None)]
    for since, until in periods:
        for guild in (None, "", "g1", "g2", "nowhere"):
            expected = await scanned_top_users(db, since, until, guild)
            assert await reports.top_users(since, until, guild_id=guild, limit=1_000) == expected, (since, until, guild)
            assert await reports.top_users(since, until, guild_id=guild, limit=2) == expected[:2]


async def summaries_match_the_ledger(reports: Reports, db: Database) -> None:
    """Every user's summary (today, this month, all time) equals the sums of their own ledger rows."""
    today = NOW.date()
    for user in await db.fetchall("SELECT DISTINCT user_id FROM ledger"):
        summary = await reports.user_summary(user[0])
        for spend, since, until in (
            (summary.all_time, None, None),
            (summary.month, NOV, DEC),
            (summary.today, today, today + dt.timedelta(days=1)),
        ):
            summed = await reports._from_ledger((), _Where.of(since, until, user_id=user[0]))
            assert spend == summed.get((), NOTHING), (user[0], since)


async def test_user_rollup_equals_the_ledger(
    reports: Reports, ledger: Ledger, clock: Clock, db: Database, world: dict[str, int]
) -> None:
    """After reservations, settlements (for less, for more, after midnight), refunds, unknown charges,
    refused and free jobs, and a row written by hand, spend_by_user holds the ledger's sums, and every
    ranking equals one summed from the ledger rows."""
    assert len(await user_rollup_matches_ledger(db)) == 8  # the world's jobs: one (user, server, day) each
    await top_users_match_a_ledger_scan(reports, db)
    await ledger.set_budget("user", "day", 150_000, target_id="u4")
    assert await mixed_jobs(ledger, clock, 150, seed=4) > 0
    groups = await user_rollup_matches_ledger(db)
    assert len(groups) > 50
    await top_users_match_a_ledger_scan(reports, db)
    await db.execute(
        "INSERT INTO ledger (job_id, kind, amount, user_id, guild_id, model, at, day, note) "
        "VALUES (?, 'charge', 7, 'u9', 'g1', 'm9', '2026-11-02T00:00:00.000Z', '2026-11-02', 'unknown: by hand')",
        (world["d"],),
    )
    await user_rollup_matches_ledger(db)
    assert (await reports.top_users(NOV, DEC, guild_id="g1", limit=100))[-1] == UserSpend(
        "u9", Spend(charged=7, charges=1, unknown=7, unknowns=1)
    )
    await top_users_match_a_ledger_scan(reports, db)
    await summaries_match_the_ledger(reports, db)


async def test_upgrade_fills_the_user_rollup(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database at schema 3 (spend_daily, no spend_by_user) gets spend_by_user filled from its ledger on
    upgrade, then kept up by the trigger."""
    path = tmp_path / "easel.db"
    write_jobs_without_options(monkeypatch)
    async with await Database.open(path, migrations=shipped_migrations()[:3]) as old:
        await mixed_jobs(Ledger(old, clock=clock), clock, 120, seed=5)
        assert await old.fetchval("SELECT count(*) FROM sqlite_master WHERE name = 'spend_by_user'") == 0
    monkeypatch.undo()
    async with await Database.open(path) as db:
        assert await db.version() == len(shipped_migrations())
        ledger = Ledger(db, clock=clock)
        reports = Reports(db, ledger, clock=clock)
        assert len(await user_rollup_matches_ledger(db)) > 40
        await top_users_match_a_ledger_scan(reports, db)
        await summaries_match_the_ledger(reports, db)
        await mixed_jobs(ledger, clock, 40, seed=6)
        await user_rollup_matches_ledger(db)
        await top_users_match_a_ledger_scan(reports, db)
        await summaries_match_the_ledger(reports, db)


async def test_user_reports_read_the_user_rollup(
    reports: Reports, world: dict[str, int], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """top_users, in every server or one, and user_summary read spend_by_user, never the ledger."""
    queries = await recorded(
        db,
        monkeypatch,
        [
            reports.top_users(NOV, DEC),
            reports.top_users(None, None, guild_id="g1", limit=3),
            reports.user_summary("u1", guild_id="g1"),
        ],
    )
    assert len(queries) == 5  # a ranking, then the ranked users' details; one summary
    for sql, details in (await plans_of(db, queries)).items():
        assert "FROM spend_by_user" in sql
        reads = [d for d in details if d.startswith(("SCAN", "SEARCH"))]
        assert reads, (sql, details)
        assert all("spend_by_user" in d for d in reads), (sql, details)
