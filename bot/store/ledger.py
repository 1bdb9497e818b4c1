"""Spending: reserve before the call, settle or refund after, budgets, and the crash rule.

The money rules themselves live in the schema's triggers (see migrations/0001_initial.sql): a reservation
is a single INSERT of the job that also writes its ledger row and moves every applicable budget's counter,
and it is undone whole when any budget would go over. This module names those steps and turns a refusal
into a `BudgetExceeded` that says which budget, how much is left and when it resets.

Crash rule (`recover()`, run at every start): a job still `running` may have reached the provider, which
may have billed it, so its estimate is kept as a charge marked "unknown" (cost_state 'unknown'); a job
still `queued` never reached the provider and is refunded in full, unless the caller resumes its queue.
Each of these is one guarded UPDATE, so running recovery twice never counts anything twice.

Only the bot runs recovery, and a CLI run (user `CLI_USER_ID`) may be working beside it: CLI jobs created
after `cli_since` are spared at start-up, and `recover_cli()` resolves the ones left past any CLI run's
longest possible life later (the bot calls it periodically). Otherwise a CLI job could be refunded under
its own feet and its charge lost when it settles.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bot.errors import BudgetExceeded, EaselError
from bot.pricing import format_usd
from bot.store.db import Database

JobKind = Literal["generate", "edit", "vary", "outpaint"]
Scope = Literal["user", "role", "guild", "global"]
Period = Literal["day", "week", "month", "all"]
PERIODS: tuple[Period, ...] = ("day", "week", "month", "all")
SCOPES: tuple[Scope, ...] = ("user", "role", "guild", "global")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    """The schema's timestamp form: 2026-11-24T10:00:00.000Z."""
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def period_bounds(period: Period, moment: dt.datetime) -> tuple[dt.date | None, dt.datetime | None]:
    """The first day of `period` containing `moment` (UTC) and when the next one starts; (None, None) for all."""
    day = moment.astimezone(dt.UTC).date()
    if period == "day":
        start, end = day, day + dt.timedelta(days=1)
    elif period == "week":
        start = day - dt.timedelta(days=day.weekday())
        end = start + dt.timedelta(days=7)
    elif period == "month":
        start = day.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
    else:
        return None, None
    return start, dt.datetime.combine(end, dt.time(), tzinfo=dt.UTC)


JobOptions = tuple[tuple[str, str | int], ...]
"""A request's other options as sorted (name, value) pairs, e.g. (("background", "transparent"),)."""


def options_json(options: JobOptions) -> str:
    if not options:  # most jobs: no need to build and encode an empty object on every reservation
        return "{}"
    return json.dumps(dict(options), sort_keys=True, separators=(",", ":"))


def parse_options(text: str | None) -> JobOptions:
    """The options column back as pairs; anything but strings and whole numbers is dropped."""
    loaded = json.loads(text) if text else {}
    if not isinstance(loaded, dict):
        return ()
    return tuple(
        sorted(
            (str(k), v)
            for k, v in loaded.items()
            if isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))
        )
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class JobDraft:
    """Who asks for what: everything a job record needs before it is priced."""

    kind: JobKind
    user_id: str
    model: str
    guild_id: str = ""
    channel_id: str = ""
    roles: tuple[str, ...] = ()
    provider: str = ""
    size: str | None = None
    quality: str | None = None
    n: int = 1
    prompt: str = ""
    parent_job: int | None = None
    parent_index: int | None = None
    options: JobOptions = ()
    """The request's other options that were set, as sorted (name, value) pairs: see `job_options`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    """One job as stored: what was asked, by whom, how it ended and what it cost (micro-dollars)."""

    id: int
    kind: JobKind
    user_id: str
    guild_id: str
    channel_id: str
    model: str
    size: str | None
    quality: str | None
    n: int
    prompt: str
    revised_prompt: str | None
    parent_job: int | None
    parent_index: int | None
    status: str
    cost_state: str
    estimate: int
    cost: int
    created_at: str
    options: JobOptions = ()


@dataclass(frozen=True, slots=True)
class Budget:
    id: int
    scope: Scope
    guild_id: str
    target_id: str
    period: Period
    limit: int


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget as it applies to one request: its limit, what is spent, what is left, when it resets."""

    budget: Budget
    spent: int
    resets_at: dt.datetime | None

    @property
    def remaining(self) -> int:
        return max(self.budget.limit - self.spent, 0)


CLI_USER_ID = "cli"
"""The user id the command line's own jobs run as."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """What `recover()` did."""

    refunded: tuple[int, ...]
    unknown: tuple[int, ...]


def describe_budget(budget: Budget) -> str:
    """Plain words for a budget, e.g. "your daily budget" or "the server's monthly budget"."""
    when = {"day": "daily", "week": "weekly", "month": "monthly", "all": "total"}[budget.period]
    match budget.scope:
        case "user":
            return f"your {when} budget"
        case "role":
            return f"the {when} budget of role {budget.target_id}"
        case "guild":
            return f"this server's {when} budget"
        case _:
            return f"the bot's {when} budget"


_INSERT_JOB = (
    "INSERT INTO jobs (kind, user_id, guild_id, channel_id, roles, model, provider, size, quality, n, prompt, "
    "parent_job, parent_index, status, cost_state, estimate, created_at, error_code, error_message, finished_at, "
    "options) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


_ANY_BUDGET = "SELECT EXISTS (SELECT 1 FROM budgets)"
_APPLYING_BUDGETS = (
    "SELECT b.*, COALESCE(s.spent, 0) AS spent FROM job_budgets AS jb "
    "JOIN budgets AS b ON b.id = jb.budget_id "
    "LEFT JOIN budget_spend AS s ON s.budget_id = jb.budget_id AND s.subject = jb.subject "
    "AND s.period_start = jb.period_start WHERE jb.job_id = ?"
)


def _probe_budgets(conn: sqlite3.Connection, params: tuple[object, ...]) -> list[sqlite3.Row]:
    """The budgets applying to a job with `params`, with what each has spent; runs on the connection's thread."""
    if not conn.execute(_ANY_BUDGET).fetchone()[0]:
        return []
    conn.execute("BEGIN")
    try:
        job_id = conn.execute(_INSERT_JOB, params).lastrowid
        rows: list[sqlite3.Row] = conn.execute(_APPLYING_BUDGETS, (job_id,)).fetchall()
    finally:
        conn.execute("ROLLBACK")
    return rows


class Ledger:
    """Reservations, settlements, refunds and budgets over one Database."""

    def __init__(self, db: Database, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.db = db
        self._clock = clock

    # -- the life of a job ---------------------------------------------------------------------------

    def _job_params(
        self,
        draft: JobDraft,
        *,
        status: str,
        cost_state: str,
        estimate: int,
        error: tuple[str, str] | None = None,
    ) -> tuple[object, ...]:
        now = iso(self._clock())
        return (
            draft.kind,
            draft.user_id,
            draft.guild_id,
            draft.channel_id,
            json.dumps(list(draft.roles)),
            draft.model,
            draft.provider,
            draft.size,
            draft.quality,
            draft.n,
            draft.prompt,
            draft.parent_job,
            draft.parent_index,
            status,
            cost_state,
            estimate,
            now,
            error[0] if error else None,
            error[1] if error else None,
            now if error else None,
            options_json(draft.options),
        )

    async def reserve(self, draft: JobDraft, estimate: int) -> int:
        """Record the job and reserve `estimate` against every budget that applies; the job id.

        Raises BudgetExceeded (and records nothing) when any budget would go over.
        """
        if estimate < 0:
            raise ValueError("an estimate cannot be negative")
        params = self._job_params(draft, status="queued", cost_state="reserved", estimate=estimate)
        try:
            return await self.db.write(_INSERT_JOB, params)
        except sqlite3.IntegrityError as exc:
            if "within_budget" not in str(exc):
                raise
        raise await self._refusal(draft, estimate)

    async def reject(self, draft: JobDraft, *, code: str, message: str) -> int:
        """Record a request refused before any money moved (validation, moderation, budget); the job id."""
        params = self._job_params(draft, status="rejected", cost_state="free", estimate=0, error=(code, message))
        return await self.db.write(_INSERT_JOB, params)

    async def start(self, job_id: int) -> bool:
        """Mark a queued job running, just before its request goes out; False when it is no longer queued."""
        changed = await self.db.write(
            "UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
            (iso(self._clock()), job_id),
        )
        return changed == 1

    async def settle(
        self,
        job_id: int,
        cost: int,
        *,
        revised_prompt: str | None = None,
        request_id: str | None = None,
        credits: float | None = None,
    ) -> bool:
        """Charge the actual `cost` (which may exceed the estimate) and release the reservation.

        False when the job's cost was already final (nothing is charged twice).
        """
        if cost < 0:
            raise ValueError("a cost cannot be negative")
        changed = await self.db.write(
            "UPDATE jobs SET status = 'succeeded', cost_state = 'settled', cost = ?, revised_prompt = ?, "
            "request_id = ?, credits = ?, finished_at = ? WHERE id = ? AND cost_state = 'reserved'",
            (cost, revised_prompt, request_id, credits, iso(self._clock()), job_id),
        )
        return changed == 1

    async def refund(
        self,
        job_id: int,
        *,
        code: str,
        message: str = "",
        status: Literal["failed", "cancelled"] = "failed",
        request_id: str | None = None,
    ) -> bool:
        """Release the whole reservation of a job that produced nothing; False when already final."""
        changed = await self.db.write(
            "UPDATE jobs SET status = ?, cost_state = 'refunded', error_code = ?, error_message = ?, "
            "request_id = COALESCE(?, request_id), finished_at = ? WHERE id = ? AND cost_state = 'reserved'",
            (status, code, message, request_id, iso(self._clock()), job_id),
        )
        return changed == 1

    async def keep_unknown(self, job_id: int, *, code: str, message: str = "") -> bool:
        """Keep the estimate as the cost of a job the provider may have billed without answering."""
        changed = await self.db.write(
            "UPDATE jobs SET status = 'failed', cost_state = 'unknown', cost = estimate, error_code = ?, "
            "error_message = ?, finished_at = ? WHERE id = ? AND cost_state = 'reserved'",
            (code, message, iso(self._clock()), job_id),
        )
        return changed == 1

    async def fail(self, job_id: int, error: EaselError | None, *, sent: bool) -> None:
        """Resolve a failed job by the rule: refund, unless the provider may have billed (then 'unknown')."""
        code = (error.code if error and error.code else type(error).__name__ if error else "error") or "error"
        message = error.message if error else ""
        if sent and getattr(error, "maybe_billed", False):
            await self.keep_unknown(job_id, code=code, message=message)
        else:
            await self.refund(job_id, code=code, message=message, request_id=error.request_id if error else None)

    async def recover(self, *, resume_queued: bool = False, cli_since: dt.datetime | None = None) -> Recovery:
        """Resolve jobs a dead process left behind (see the module docstring); safe to run repeatedly.

        CLI jobs created at or after `cli_since` are left alone: a CLI run may still be working on them.
        """
        sql = "SELECT id, status FROM jobs WHERE cost_state = 'reserved' AND status IN ('queued', 'running')"
        params: tuple[object, ...] = ()
        if cli_since is not None:
            sql += " AND NOT (user_id = ? AND created_at >= ?)"
            params = (CLI_USER_ID, iso(cli_since))
        return await self._resolve(await self.db.fetchall(sql, params), resume_queued=resume_queued)

    async def recover_cli(self, before: dt.datetime) -> Recovery:
        """Resolve CLI jobs created before `before` and still unfinished: no CLI run lives that long."""
        rows = await self.db.fetchall(
            "SELECT id, status FROM jobs WHERE cost_state = 'reserved' AND status IN ('queued', 'running') "
            "AND user_id = ? AND created_at < ?",
            (CLI_USER_ID, iso(before)),
        )
        return await self._resolve(rows, resume_queued=False)

    async def _resolve(self, rows: list[sqlite3.Row], *, resume_queued: bool) -> Recovery:
        refunded: list[int] = []
        unknown: list[int] = []
        for row in rows:
            if row["status"] == "running":
                if await self.keep_unknown(
                    row["id"], code="interrupted", message="Easel stopped while the provider was working on it."
                ):
                    unknown.append(row["id"])
            elif not resume_queued and await self.refund(
                row["id"], code="interrupted", message="Easel stopped before the request was sent.", status="cancelled"
            ):
                refunded.append(row["id"])
        return Recovery(refunded=tuple(refunded), unknown=tuple(unknown))

    async def job(self, job_id: int) -> JobRecord | None:
        """The stored job `job_id`, or None when there is no such job."""
        row = await self.db.fetchone(
            "SELECT id, kind, user_id, guild_id, channel_id, model, size, quality, n, prompt, revised_prompt, "
            "parent_job, parent_index, status, cost_state, estimate, cost, created_at, options FROM jobs WHERE id = ?",
            (job_id,),
        )
        if row is None:
            return None
        return JobRecord(
            id=int(row["id"]),
            kind=row["kind"],
            user_id=row["user_id"],
            guild_id=row["guild_id"],
            channel_id=row["channel_id"],
            model=row["model"],
            size=row["size"],
            quality=row["quality"],
            n=int(row["n"]),
            prompt=row["prompt"],
            revised_prompt=row["revised_prompt"],
            parent_job=None if row["parent_job"] is None else int(row["parent_job"]),
            parent_index=None if row["parent_index"] is None else int(row["parent_index"]),
            status=row["status"],
            cost_state=row["cost_state"],
            estimate=int(row["estimate"]),
            cost=int(row["cost"]),
            created_at=row["created_at"],
            options=parse_options(row["options"]),
        )

    # -- budgets -------------------------------------------------------------------------------------

    async def set_budget(
        self, scope: Scope, period: Period, limit: int, *, guild_id: str = "", target_id: str = ""
    ) -> Budget:
        """Create a budget, or change the limit of the one with the same scope, place, target and period."""
        if limit < 0:
            raise ValueError("a budget limit cannot be negative")
        if scope == "guild":
            target_id = guild_id
        if scope == "global":
            guild_id = target_id = ""
        await self.db.execute(
            "INSERT INTO budgets (scope, guild_id, target_id, period, limit_micros, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, guild_id, target_id, period) "
            "DO UPDATE SET limit_micros = excluded.limit_micros",
            (scope, guild_id, target_id, period, limit, iso(self._clock())),
        )
        row = await self.db.fetchone(
            "SELECT * FROM budgets WHERE scope = ? AND guild_id = ? AND target_id = ? AND period = ?",
            (scope, guild_id, target_id, period),
        )
        assert row is not None  # noqa: S101 - just written
        return _budget(row)

    async def remove_budget(self, budget_id: int) -> bool:
        return await self.db.execute("DELETE FROM budgets WHERE id = ?", (budget_id,)) == 1

    async def budgets(self) -> list[Budget]:
        rows = await self.db.fetchall("SELECT * FROM budgets ORDER BY scope, guild_id, target_id, period")
        return [_budget(row) for row in rows]

    async def budget_status(self, draft: JobDraft) -> list[BudgetStatus]:
        """Every budget that would apply to `draft` now, with what is spent and left, tightest first.

        With no budget at all (checked on every call, so one set by another process counts at once) it
        asks nothing more; otherwise the schema's own view says which apply, through a job row that is
        rolled back. Either way it is one call on the connection's thread.
        """
        params = self._job_params(draft, status="rejected", cost_state="free", estimate=0)
        db = self.db
        if db.on_thread:
            rows = await db.call(_probe_budgets, params)
        elif not await db.fetchval(_ANY_BUDGET):
            rows = []
        else:
            async with db.scratch() as tx:
                job_id = await tx.execute(_INSERT_JOB, params)
                rows = await tx.fetchall(_APPLYING_BUDGETS, (job_id,))
        now = self._clock()
        found = [BudgetStatus(_budget(row), int(row["spent"]), period_bounds(row["period"], now)[1]) for row in rows]
        return sorted(found, key=lambda s: s.remaining)

    async def _refusal(self, draft: JobDraft, estimate: int) -> BudgetExceeded:
        statuses = await self.budget_status(draft)
        over = [s for s in statuses if s.spent + estimate > s.budget.limit]
        # If others' spending changed in between, still name the tightest budget.
        candidates = over or statuses
        return budget_exceeded(candidates[0] if candidates else None, estimate)


def _budget(row: sqlite3.Row) -> Budget:
    return Budget(
        id=int(row["id"]),
        scope=row["scope"],
        guild_id=row["guild_id"],
        target_id=row["target_id"],
        period=row["period"],
        limit=int(row["limit_micros"]),
    )


def budget_exceeded(status: BudgetStatus | None, estimate: int) -> BudgetExceeded:
    """The error for a refused reservation, in plain words."""
    if status is None:
        return BudgetExceeded("This request would go over a spending budget.", estimate=estimate)
    what = describe_budget(status.budget)
    resets = f"; it resets {status.resets_at.strftime('%Y-%m-%d %H:%M UTC')}" if status.resets_at is not None else ""
    return BudgetExceeded(
        f"This request costs about {format_usd(estimate)}, but {what} has {format_usd(status.remaining)} "
        f"left of {format_usd(status.budget.limit)}{resets}.",
        estimate=estimate,
        remaining=status.remaining,
        limit=status.budget.limit,
        scope=status.budget.scope,
        period=status.budget.period,
        resets_at=status.resets_at,
    )
