"""The spending ledger on a real SQLite file: reserve, settle, refund, budgets, the crash rule, concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bot.errors import BudgetExceeded, ConfigError, ProviderTimeout, ProviderUnavailable
from bot.store.db import Database, Migration, shipped_migrations
from bot.store.ledger import CLI_USER_ID, JobDraft, Ledger, Recovery, period_bounds
from tests.conftest import NOW, Clock


@pytest.fixture
def ledger(db: Database, clock: Clock) -> Ledger:
    return Ledger(db, clock=clock)


def draft(user: str = "u1", guild: str = "g1", roles: tuple[str, ...] = (), **extra: object) -> JobDraft:
    return JobDraft(kind="generate", user_id=user, guild_id=guild, roles=roles, model="gpt-image-2", **extra)  # type: ignore[arg-type]


async def net(db: Database, where: str = "1", params: tuple[object, ...] = ()) -> int:
    value = await db.fetchval(
        f"SELECT COALESCE(SUM(CASE kind WHEN 'refund' THEN -amount ELSE amount END), 0) FROM ledger WHERE {where}",  # noqa: S608 - test-only fixed fragments
        params,
    )
    return int(value)


async def counters_match_ledger(db: Database) -> None:
    """Every budget counter equals the net of the ledger rows of the jobs it covers."""
    rows = await db.fetchall(
        "SELECT jb.budget_id, jb.subject, jb.period_start, "
        "SUM(CASE l.kind WHEN 'refund' THEN -l.amount ELSE l.amount END) AS total "
        "FROM job_budgets jb JOIN ledger l ON l.job_id = jb.job_id GROUP BY 1, 2, 3"
    )
    expected = {(r["budget_id"], r["subject"], r["period_start"]): r["total"] for r in rows}
    stored = {
        (r["budget_id"], r["subject"], r["period_start"]): r["spent"]
        for r in await db.fetchall("SELECT * FROM budget_spend")
        if r["spent"] != 0 or (r["budget_id"], r["subject"], r["period_start"]) in expected
    }
    assert stored == expected


# -- the database -------------------------------------------------------------------------------------


async def test_pragmas_and_schema_version(db: Database) -> None:
    """WAL, NORMAL sync, foreign keys and a busy timeout are on; the schema is at the newest version."""
    assert (await db.fetchval("PRAGMA journal_mode")).lower() == "wal"
    assert await db.fetchval("PRAGMA synchronous") == 1
    assert await db.fetchval("PRAGMA foreign_keys") == 1
    assert await db.fetchval("PRAGMA busy_timeout") == 5000
    assert await db.version() == len(shipped_migrations())


async def test_data_folder_is_created(tmp_path: Path) -> None:
    """A missing data folder is made."""
    path = tmp_path / "a" / "b" / "easel.db"
    async with await Database.open(path):
        pass
    assert path.exists()


async def test_newer_database_is_refused(tmp_path: Path) -> None:
    """A database from a newer Easel is refused with a clear message, not touched."""
    path = tmp_path / "easel.db"
    async with await Database.open(path) as database:
        await database.execute("PRAGMA user_version = 99")
    with pytest.raises(ConfigError, match=r"written by a newer Easel \(schema 99"):
        await Database.open(path)


async def test_failed_migration_leaves_nothing(tmp_path: Path) -> None:
    """A migration that fails midway is rolled back whole, version included."""
    path = tmp_path / "easel.db"
    shipped = shipped_migrations()
    following = len(shipped) + 1
    broken = [*shipped, Migration(following, f"{following:04d}_broken.sql", "CREATE TABLE extra (x);\nNOT SQL;")]
    with pytest.raises(RuntimeError, match=rf"{following:04d}_broken\.sql failed"):
        await Database.open(path, migrations=broken)
    async with await Database.open(path) as database:
        assert await database.version() == len(shipped)
        assert await database.fetchval("SELECT count(*) FROM sqlite_master WHERE name = 'extra'") == 0


async def test_ledger_rows_are_append_only(ledger: Ledger, db: Database) -> None:
    """Ledger rows can be neither changed nor deleted."""
    await ledger.reserve(draft(), 1000)
    with pytest.raises(sqlite3.IntegrityError, match="never changed"):
        await db.execute("UPDATE ledger SET amount = 0")
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        await db.execute("DELETE FROM ledger")


async def test_negative_amounts_are_impossible(db: Database, ledger: Ledger) -> None:
    """The schema refuses negative money."""
    with pytest.raises(ValueError, match="negative"):
        await ledger.reserve(draft(), -1)
    job = await ledger.reserve(draft(), 10)
    with pytest.raises(sqlite3.IntegrityError):
        await db.execute("UPDATE jobs SET cost = -5 WHERE id = ?", (job,))


# -- reserve, settle, refund -----------------------------------------------------------------------------


async def test_reserve_then_settle(ledger: Ledger, db: Database) -> None:
    """Settling charges the actual cost and releases the reservation."""
    job = await ledger.reserve(draft(), 53_000)
    assert await net(db) == 53_000
    assert await ledger.start(job)
    assert await ledger.settle(job, 41_000, revised_prompt="a fox", request_id="req_1")
    assert await net(db) == 41_000
    kinds = [r["kind"] for r in await db.fetchall("SELECT kind FROM ledger WHERE job_id = ? ORDER BY id", (job,))]
    assert kinds == ["reserve", "charge", "refund"]
    row = await db.fetchone("SELECT * FROM jobs WHERE id = ?", (job,))
    assert row is not None
    assert (row["status"], row["cost_state"], row["cost"], row["revised_prompt"]) == (
        "succeeded",
        "settled",
        41_000,
        "a fox",
    )


async def test_actual_may_exceed_the_estimate(ledger: Ledger, db: Database) -> None:
    """A result that cost more than estimated is recorded at its real cost, even past the budget."""
    await ledger.set_budget("user", "day", 60_000)
    job = await ledger.reserve(draft(), 50_000)
    assert await ledger.settle(job, 70_000)
    assert await net(db) == 70_000
    await counters_match_ledger(db)


async def test_nothing_is_settled_twice(ledger: Ledger, db: Database) -> None:
    """A second settle or a refund after settling changes nothing."""
    job = await ledger.reserve(draft(), 1_000)
    assert await ledger.settle(job, 900)
    assert not await ledger.settle(job, 900)
    assert not await ledger.refund(job, code="late")
    assert await net(db) == 900
    with pytest.raises(sqlite3.IntegrityError, match=r"already final|set once"):
        await db.execute("UPDATE jobs SET cost_state = 'refunded' WHERE id = ?", (job,))


async def test_refund_on_failure(ledger: Ledger, db: Database) -> None:
    """A failed call gets its whole reservation back."""
    job = await ledger.reserve(draft(), 5_000)
    await ledger.start(job)
    await ledger.fail(job, ProviderUnavailable("down", code="server_error"), sent=True)
    assert await net(db) == 0
    row = await db.fetchone("SELECT status, cost_state, error_code FROM jobs WHERE id = ?", (job,))
    assert row is not None
    assert tuple(row) == ("failed", "refunded", "server_error")


async def test_timeout_that_may_have_billed_keeps_the_charge(ledger: Ledger, db: Database) -> None:
    """A read timeout after sending keeps the estimate as an 'unknown' charge."""
    job = await ledger.reserve(draft(), 5_000)
    await ledger.start(job)
    await ledger.fail(job, ProviderTimeout("slow", maybe_billed=True), sent=True)
    assert await net(db) == 5_000
    assert await db.fetchval("SELECT cost_state FROM jobs WHERE id = ?", (job,)) == "unknown"
    note = await db.fetchval("SELECT note FROM ledger WHERE job_id = ? AND kind = 'charge'", (job,))
    assert note.startswith("unknown")


async def test_rejection_costs_nothing_and_is_recorded(ledger: Ledger, db: Database) -> None:
    """A request refused before the call leaves a job with the reason and no ledger rows."""
    job = await ledger.reject(draft(prompt="nope"), code="invalid_option", message="gpt-image-2 takes no style.")
    row = await db.fetchone("SELECT status, cost_state, error_code, error_message FROM jobs WHERE id = ?", (job,))
    assert row is not None
    assert tuple(row) == ("rejected", "free", "invalid_option", "gpt-image-2 takes no style.")
    assert await db.fetchval("SELECT count(*) FROM ledger") == 0


# -- budgets -----------------------------------------------------------------------------------------------


async def test_budget_refusal_says_which_how_much_and_when(ledger: Ledger, db: Database) -> None:
    """Going over a budget names it, what is left and when it resets, and records nothing."""
    await ledger.set_budget("user", "day", 100_000)
    await ledger.reserve(draft(), 80_000)
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve(draft(), 53_000)
    error = caught.value
    assert (error.remaining, error.limit, error.scope, error.period) == (20_000, 100_000, "user", "day")
    assert error.resets_at == dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    assert str(error) == (
        "This request costs about $0.053, but your daily budget has $0.020 left of $0.100; "
        "it resets 2026-11-25 00:00 UTC."
    )
    assert await db.fetchval("SELECT count(*) FROM jobs") == 1
    await counters_match_ledger(db)


async def test_budget_frees_up_after_refund(ledger: Ledger) -> None:
    """A refunded reservation gives its room back."""
    await ledger.set_budget("user", "day", 10_000)
    job = await ledger.reserve(draft(), 10_000)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve(draft(), 1)
    await ledger.refund(job, code="cancelled", status="cancelled")
    await ledger.reserve(draft(), 10_000)


async def test_periods_reset(ledger: Ledger, clock: Clock) -> None:
    """A daily budget is fresh the next day; a monthly one only next month."""
    await ledger.set_budget("user", "day", 10_000)
    await ledger.set_budget("user", "month", 15_000)
    await ledger.reserve(draft(), 10_000)
    clock.now += dt.timedelta(days=1)
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve(draft(), 10_000)
    assert caught.value.period == "month"
    await ledger.reserve(draft(), 5_000)
    clock.now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    await ledger.reserve(draft(), 10_000)


async def test_refund_after_midnight_returns_money_to_the_charged_day(
    ledger: Ledger, db: Database, clock: Clock
) -> None:
    """All of a job's rows count on the job's day, so a late refund frees the day that was charged."""
    await ledger.set_budget("user", "day", 10_000)
    clock.now = dt.datetime(2026, 11, 24, 23, 59, tzinfo=dt.UTC)
    job = await ledger.reserve(draft(), 10_000)
    clock.now = dt.datetime(2026, 11, 25, 0, 1, tzinfo=dt.UTC)
    await ledger.refund(job, code="failed")
    assert {r["day"] for r in await db.fetchall("SELECT day FROM ledger")} == {"2026-11-24"}
    await counters_match_ledger(db)


async def test_user_budget_overrides_the_default(ledger: Ledger) -> None:
    """A user's own budget replaces the 'each user' default of the same place and period."""
    await ledger.set_budget("user", "day", 10_000)
    await ledger.set_budget("user", "day", 50_000, target_id="vip")
    await ledger.reserve(draft(user="vip"), 40_000)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve(draft(user="someone"), 20_000)


async def test_role_budget_is_shared_by_its_members(ledger: Ledger) -> None:
    """Members of a role with a budget draw on one pool; others do not."""
    await ledger.set_budget("role", "day", 30_000, guild_id="g1", target_id="artists")
    await ledger.reserve(draft(user="a", roles=("artists",)), 20_000)
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve(draft(user="b", roles=("artists", "other")), 20_000)
    assert caught.value.scope == "role"
    await ledger.reserve(draft(user="c", roles=("other",)), 20_000)
    await ledger.reserve(draft(user="d", guild="g2", roles=("artists",)), 20_000)


async def test_guild_and_global_budgets(ledger: Ledger) -> None:
    """A server budget covers that server only; the global one covers everything."""
    await ledger.set_budget("guild", "month", 30_000, guild_id="g1")
    await ledger.set_budget("global", "all", 50_000)
    await ledger.reserve(draft(user="a"), 25_000)
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve(draft(user="b"), 10_000)
    assert caught.value.scope == "guild"
    await ledger.reserve(draft(user="b", guild="g2"), 20_000)
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve(draft(user="c", guild="g3"), 10_000)
    assert (caught.value.scope, caught.value.resets_at) == ("global", None)


async def test_new_budget_counts_what_was_already_spent(ledger: Ledger, db: Database) -> None:
    """A budget added mid-day starts from today's spending, not from zero."""
    job = await ledger.reserve(draft(), 30_000)
    await ledger.settle(job, 30_000)
    await ledger.set_budget("user", "day", 40_000)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve(draft(), 20_000)
    await counters_match_ledger(db)


async def spent(db: Database, budget_id: int, subject: str = "u1") -> int:
    """A budget counter's value today (0 when it has none)."""
    value = await db.fetchval(
        "SELECT spent FROM budget_spend WHERE budget_id = ? AND subject = ?", (budget_id, subject)
    )
    return int(value or 0)


async def test_removing_a_members_own_budget_mid_flight_leaves_the_default_alone(ledger: Ledger, db: Database) -> None:
    """Three jobs reserved under a member's own $5 budget; the admin removes it; the jobs are refunded. The
    refunds go nowhere (the counter they were reserved on is gone), not into the "each user" default's
    counter, which then still holds the member to $1."""
    default = await ledger.set_budget("user", "day", 1_000_000)
    own = await ledger.set_budget("user", "day", 5_000_000, target_id="u1")
    jobs = [await ledger.reserve(draft(), 1_000_000) for _ in range(3)]
    assert await ledger.remove_budget(own.id)
    for job in jobs:
        await ledger.refund(job, code="failed")

    assert await spent(db, default.id) == 0
    job = await ledger.reserve(draft(), 1_000_000)
    await ledger.settle(job, 1_000_000)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve(draft(), 1_000_000)


async def test_a_budget_that_reuses_a_removed_ones_id_is_not_refunded_for_it(ledger: Ledger, db: Database) -> None:
    """SQLite may give a new budget the id of the one just removed: the jobs reserved on the old one do not
    move the new one's counter when they end."""
    old = await ledger.set_budget("user", "day", 5_000_000)
    job = await ledger.reserve(draft(), 1_000_000)
    assert await ledger.remove_budget(old.id)
    new = await ledger.set_budget("user", "day", 9_000_000, target_id="u2")  # u2's own: not the job's
    assert new.id == old.id
    await ledger.refund(job, code="failed")
    assert await spent(db, new.id, subject="u1") == 0


async def test_a_budget_added_mid_flight_takes_on_the_jobs_in_flight(ledger: Ledger, db: Database) -> None:
    """A job reserved under the default; the member then gets an own budget; the job is refunded: both
    counters go back to nothing (the default's no longer keeps the reservation for ever)."""
    default = await ledger.set_budget("user", "day", 1_000_000)
    job = await ledger.reserve(draft(), 600_000)
    own = await ledger.set_budget("user", "day", 5_000_000, target_id="u1")
    assert (await spent(db, default.id), await spent(db, own.id)) == (600_000, 600_000)
    await ledger.refund(job, code="failed")
    assert (await spent(db, default.id), await spent(db, own.id)) == (0, 0)
    # Settling a job in flight moves the counters by the difference, on each budget it was reserved on.
    job = await ledger.reserve(draft(), 500_000)
    await ledger.set_budget("global", "day", 10_000_000)
    await ledger.settle(job, 700_000)
    assert await spent(db, own.id) == 700_000
    assert await spent(db, 3, subject="") == 700_000
    assert await db.fetchval("SELECT COUNT(*) FROM job_reservations") == 0


async def test_upgrade_notes_the_reservations_of_jobs_in_flight(tmp_path: Path, clock: Clock) -> None:
    """A job reserved before migration 0006 ends after it: its refund still reaches the counter it was
    reserved on (the upgrade writes down the in-flight jobs' counters)."""
    path = tmp_path / "easel.db"
    async with await Database.open(path, migrations=shipped_migrations()[:5]) as old:
        budget = await Ledger(old, clock=clock).set_budget("user", "day", 1_000_000)
        job = await Ledger(old, clock=clock).reserve(draft(), 400_000)
    async with await Database.open(path) as db:
        assert await db.fetchval("SELECT COUNT(*) FROM job_reservations WHERE job_id = ?", (job,)) == 1
        assert await spent(db, budget.id) == 400_000
        await Ledger(db, clock=clock).refund(job, code="failed")
        assert await spent(db, budget.id) == 0
        await counters_match_ledger(db)


async def test_budget_status_lists_remaining_and_resets(ledger: Ledger) -> None:
    """Before paying, a user can see every budget that applies, tightest first."""
    await ledger.set_budget("user", "day", 100_000)
    await ledger.set_budget("guild", "month", 1_000_000, guild_id="g1")
    await ledger.reserve(draft(), 90_000)
    statuses = await ledger.budget_status(draft())
    assert [(s.budget.scope, s.remaining) for s in statuses] == [("user", 10_000), ("guild", 910_000)]
    assert statuses[1].resets_at == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


async def test_changing_a_limit_keeps_the_counter(ledger: Ledger) -> None:
    """Raising a limit lets the next request through without losing what was spent."""
    await ledger.set_budget("user", "day", 10_000)
    await ledger.reserve(draft(), 10_000)
    await ledger.set_budget("user", "day", 15_000)
    await ledger.reserve(draft(), 5_000)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve(draft(), 1)


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("day", dt.date(2026, 11, 24), dt.datetime(2026, 11, 25, tzinfo=dt.UTC)),
        ("week", dt.date(2026, 11, 23), dt.datetime(2026, 11, 30, tzinfo=dt.UTC)),
        ("month", dt.date(2026, 11, 1), dt.datetime(2026, 12, 1, tzinfo=dt.UTC)),
        ("all", None, None),
    ],
)
def test_period_bounds(period: str, start: dt.date | None, end: dt.datetime | None) -> None:
    """Periods start at UTC midnight, on Mondays, and on the 1st."""
    assert period_bounds(period, NOW) == (start, end)  # type: ignore[arg-type]


async def test_week_bounds_match_the_schema(ledger: Ledger, db: Database, clock: Clock) -> None:
    """The schema's week start agrees with Python's for every day of a fortnight."""
    await ledger.set_budget("user", "week", 10**9)
    for offset in range(14):
        clock.now = NOW + dt.timedelta(days=offset)
        await ledger.reserve(draft(), 1)
    starts = {r["period_start"] for r in await db.fetchall("SELECT period_start FROM budget_spend")}
    expected = {str(period_bounds("week", NOW + dt.timedelta(days=o))[0]) for o in range(14)}
    assert starts == expected


# -- concurrency and the crash rule -----------------------------------------------------------------------


async def test_concurrent_reservations_never_overspend(ledger: Ledger, db: Database) -> None:
    """1,000 concurrent reservations against a budget that fits exactly 10: exactly 10 succeed."""
    await ledger.set_budget("user", "day", 100_000)
    results = await asyncio.gather(*(ledger.reserve(draft(), 10_000) for _ in range(1000)), return_exceptions=True)
    assert sum(isinstance(r, int) for r in results) == 10
    assert sum(isinstance(r, BudgetExceeded) for r in results) == 990
    assert await net(db) == 100_000
    await counters_match_ledger(db)


async def test_two_connections_never_overspend(tmp_path: Path) -> None:
    """Two processes' worth of connections on one file still respect the budget."""
    path = tmp_path / "easel.db"
    first, second = await Database.open(path), await Database.open(path)
    try:
        one, two = Ledger(first), Ledger(second)
        await one.set_budget("global", "day", 50_000)
        calls: list[Callable[[], object]] = []
        for i in range(100):
            target = one if i % 2 else two
            calls.append(target.reserve(draft(user=f"u{i}"), 10_000))  # type: ignore[arg-type]
        results = await asyncio.gather(*calls, return_exceptions=True)  # type: ignore[call-overload]
        assert sum(isinstance(r, int) for r in results) == 5
        assert await net(first) == 50_000
    finally:
        await first.close()
        await second.close()


async def test_recovery_rule(ledger: Ledger, db: Database) -> None:
    """After a crash: running jobs keep their estimate as 'unknown', queued ones are refunded; twice is a no-op."""
    queued = await ledger.reserve(draft(), 1_000)
    running = await ledger.reserve(draft(), 2_000)
    await ledger.start(running)
    done = await ledger.reserve(draft(), 3_000)
    await ledger.settle(done, 3_000)
    report = await ledger.recover()
    assert (report.refunded, report.unknown) == ((queued,), (running,))
    assert await net(db) == 5_000
    again = await ledger.recover()
    assert (again.refunded, again.unknown) == ((), ())
    assert await net(db) == 5_000
    await counters_match_ledger(db)


async def test_recovery_can_leave_queued_jobs_for_the_queue(ledger: Ledger) -> None:
    """With resume_queued, queued jobs keep their reservation for the queue to run."""
    queued = await ledger.reserve(draft(), 1_000)
    report = await ledger.recover(resume_queued=True)
    assert report.refunded == ()
    assert await ledger.start(queued)


async def test_recovery_spares_a_cli_run_that_may_still_be_going(ledger: Ledger, db: Database, clock: Clock) -> None:
    """The bot starting beside a CLI run leaves the CLI's young jobs alone; recover_cli resolves them once stale."""
    old_cli = await ledger.reserve(draft(user=CLI_USER_ID), 1_000)
    await ledger.start(old_cli)
    clock.now += dt.timedelta(minutes=30)
    young_cli = await ledger.reserve(draft(user=CLI_USER_ID), 2_000)
    await ledger.start(young_cli)
    queued_cli = await ledger.reserve(draft(user=CLI_USER_ID), 4_000)
    bot_job = await ledger.reserve(draft(), 8_000)
    report = await ledger.recover(cli_since=clock.now - dt.timedelta(minutes=10))
    assert (report.refunded, report.unknown) == ((bot_job,), (old_cli,))
    # The CLI run finishes its jobs: nothing was refunded under it, so its charge is recorded.
    assert await ledger.settle(young_cli, 1_500)
    assert await net(db, "job_id = ?", (young_cli,)) == 1_500
    # A CLI run that died leaves a queued job; once no CLI run can still own it, it is refunded.
    assert await ledger.recover_cli(clock.now - dt.timedelta(minutes=10)) == Recovery(refunded=(), unknown=())
    clock.now += dt.timedelta(minutes=30)
    stale = await ledger.recover_cli(clock.now - dt.timedelta(minutes=10))
    assert (stale.refunded, stale.unknown) == ((queued_cli,), ())
    await counters_match_ledger(db)


@pytest.mark.parametrize("on_thread", [True, False], ids=["batch-on-thread", "statement-by-statement"])
async def test_group_commit_undoes_only_the_failing_statement(tmp_path: Path, on_thread: bool) -> None:
    """Writes sharing one commit: a refused one raises alone, the others commit (both writer paths)."""
    async with await Database.open(tmp_path / "easel.db") as database:
        database.batch_on_thread = on_thread
        ledger = Ledger(database, clock=Clock())
        await ledger.set_budget("user", "day", 50_000)
        results = await asyncio.gather(
            *(ledger.reserve(draft(user="u1"), 10_000) for _ in range(8)),
            *(ledger.reserve(draft(user="u2"), 10_000) for _ in range(3)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, int) for r in results[:8]) == 5
        assert all(isinstance(r, int) for r in results[8:])
        assert await net(database) == 80_000
        await counters_match_ledger(database)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "INSERT INTO jobs (kind, user_id, model, cost_state, estimate, created_at) "
            "VALUES ('generate', 'u', 'm', 'settled', 5, '2026-11-24T00:00:00.000Z')",
            "starts free or reserved",
        ),
        ("UPDATE jobs SET cost_state = 'unknown' WHERE id = 1", "cost is set once"),
        ("UPDATE jobs SET cost = 7 WHERE id = 1", "cost is set once"),
        ("UPDATE jobs SET cost = 1 WHERE id = 2", "cost is set once"),
    ],
)
async def test_schema_refuses_money_shortcuts(ledger: Ledger, db: Database, sql: str, message: str) -> None:
    """Writes that would bypass the money rules are refused by the schema itself."""
    await ledger.reserve(draft(), 5_000)
    settled = await ledger.reserve(draft(), 5_000)
    await ledger.settle(settled, 4_000)
    with pytest.raises(sqlite3.IntegrityError, match=message):
        await db.execute(sql)
    await counters_match_ledger(db)


async def test_a_write_that_cannot_be_bound_fails_alone(db: Database, ledger: Ledger) -> None:
    """A parameter SQLite cannot store fails that write only; the writer goes on and no transaction is left open."""
    with pytest.raises(OverflowError):
        await db.write("UPDATE jobs SET prompt = ? WHERE id = 0", (2**64,))
    assert await ledger.reserve(draft(), 10) > 0
    assert not db._conn.in_transaction


# -- budget status: one call on the connection's thread ---------------------------------------------


def count_thread_calls(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every function handed to the connection's thread from now on."""
    calls: list[object] = []
    real: Callable[..., Awaitable[object]] = db._conn._execute

    async def counted(fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        calls.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(db._conn, "_execute", counted)
    return calls


async def test_budget_status_is_one_thread_call_and_leaves_nothing(
    ledger: Ledger, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With budgets or without, asking costs one hand-off to the connection's thread and writes nothing."""
    calls = count_thread_calls(db, monkeypatch)
    assert await ledger.budget_status(draft()) == []
    assert len(calls) == 1
    monkeypatch.undo()
    await ledger.set_budget("user", "day", 100_000)
    calls = count_thread_calls(db, monkeypatch)
    (status,) = await ledger.budget_status(draft())
    assert (status.budget.scope, status.remaining) == ("user", 100_000)
    assert len(calls) == 1
    monkeypatch.undo()
    assert await db.fetchval("SELECT COUNT(*) FROM jobs") == 0
    assert not db._conn.in_transaction


async def test_budget_status_sees_budgets_set_and_removed_through_the_ledger(ledger: Ledger) -> None:
    """No budget, then one, then none again: each answer is current."""
    assert await ledger.budget_status(draft()) == []
    budget = await ledger.set_budget("guild", "month", 500_000, guild_id="g1")
    assert [s.budget for s in await ledger.budget_status(draft())] == [budget]
    assert await ledger.remove_budget(budget.id)
    assert await ledger.budget_status(draft()) == []


async def test_budget_status_sees_budgets_another_process_sets(ledger: Ledger, db: Database, clock: Clock) -> None:
    """A budget set by `python -m bot budget set` beside the bot (another connection) counts at once."""
    assert await ledger.budget_status(draft()) == []
    other = await Database.open(db.path)
    try:
        cli = Ledger(other, clock=clock)
        budget = await cli.set_budget("user", "day", 70_000)
        assert [s.budget.id for s in await ledger.budget_status(draft())] == [budget.id]
        await cli.remove_budget(budget.id)
        assert await ledger.budget_status(draft()) == []
    finally:
        await other.close()


async def test_budget_status_statement_by_statement_gives_the_same(ledger: Ledger, db: Database) -> None:
    """Without the one-call path (Database.batch_on_thread off) the answers are the same."""
    await ledger.set_budget("user", "day", 100_000)
    await ledger.set_budget("global", "month", 5_000_000)
    await ledger.reserve(draft(), 40_000)
    together = await ledger.budget_status(draft())
    other_user = await ledger.budget_status(draft(user="u2"))
    assert [s.remaining for s in together] == [60_000, 4_960_000]
    db.batch_on_thread = False
    assert await ledger.budget_status(draft()) == together
    assert await ledger.budget_status(draft(user="u2")) == other_user
    await ledger.remove_budget(together[0].budget.id)
    await ledger.remove_budget(together[1].budget.id)
    assert await ledger.budget_status(draft()) == []
    assert await db.fetchval("SELECT COUNT(*) FROM jobs") == 1
