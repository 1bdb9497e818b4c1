"""Spending reports from the ledger: per user, per server, per model, per day, top users, and CSV export.

Every figure comes from the append-only `ledger` table, whose rows only the schema's triggers write (see
migrations/0001_initial.sql), or from its rollups, in integer micro-dollars. All of a job's rows count
on the job's own UTC day (`ledger.day`), as the budgets count them, so a report and a budget never disagree
about a period.

What the sums mean, for the rows of one group (see `Spend`):

* **net** = reserve + charge − refund: what was spent. A settled job nets to its cost, a refunded job to
  nothing, and a job still holding its reservation to its estimate: that money is committed.
* **held** = reserve − refund: the reservations of jobs not finished yet. Every way a job finishes
  (settled, refunded, kept as unknown) writes one refund of exactly its estimate, so this is exact.
* **unknown**: the part of the charges kept for jobs whose cost is unknown (the provider may have billed a
  request that never answered); the schema marks those charge rows with a note.

Periods are half-open ranges of UTC days, `since <= day < until`; `None` leaves that end open.

Totals and breakdowns by server, model and day that are not narrowed to users read `spend_daily`
(migrations/0002_spend_daily.sql): the ledger summed per day, server and model by a trigger on every ledger
row, with the same sums and counts as the ledger's rows give, so they cost a few rows per day whatever the
ledger's size. The rankings of users read `spend_by_user` (migrations/0004_spend_by_user.sql), the same sums
per user, server and day. The rest about users reads the ledger through its covering index `ledger_by_user
(user_id, day, kind, amount)`; the table itself is read only for the unknown charges' notes (charge rows
only), for a column the index lacks (a one-user view by model) and for the CSV export. SQL is
built from fixed fragments; every value is a parameter.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from bot.store.db import Database
from bot.store.ledger import BudgetStatus, JobDraft, Ledger, utc_now

Column = Literal["day", "model", "guild_id", "user_id"]

_MAX_LISTED = 500
"""The most user ids one query lists as parameters (SQLite allows 32,766 in all)."""
_FIRST_DAY = "0000-00-00"
_LAST_DAY = "9999-99-99"
UNKNOWN_NOTE = "unknown:%"
"""LIKE pattern for the schema's note on the charge row of a job whose cost is unknown."""

CSV_COLUMNS = (
    "ledger_id",
    "at",
    "day",
    "job_id",
    "kind",
    "amount_micros",
    "amount_usd",
    "net_micros",
    "user_id",
    "guild_id",
    "model",
    "job_kind",
    "status",
    "cost_state",
    "note",
)
"""The CSV header. `amount_*` is the row as stored (never negative); `net_micros` is negative for refunds, so
its sum over any set of rows is their net spend."""


@dataclass(frozen=True, slots=True)
class Spend:
    """The ledger rows of one group summed by kind, in micro-dollars, and what follows from them."""

    reserved: int = 0
    """The reserve rows: every job's estimate."""
    charged: int = 0
    """The charge rows: settled costs, and the estimates kept for jobs whose cost is unknown."""
    refunded: int = 0
    """The refund rows: each finished job's estimate, released."""
    reserves: int = 0
    """How many reserve rows: one per job that reserved money (free and rejected jobs write none)."""
    charges: int = 0
    """How many charge rows: one per settled or unknown job."""
    refunds: int = 0
    """How many refund rows: one per finished job."""
    unknown: int = 0
    """The part of `charged` kept for jobs whose cost is unknown."""
    unknowns: int = 0
    """How many jobs those are."""

    @property
    def net(self) -> int:
        """What was spent: reserve + charge − refund, outstanding reservations included."""
        return self.reserved + self.charged - self.refunded

    @property
    def held(self) -> int:
        """Money still reserved by jobs that have not finished."""
        return self.reserved - self.refunded

    @property
    def jobs(self) -> int:
        """Jobs that reserved money, however they ended."""
        return self.reserves

    @property
    def refunded_jobs(self) -> int:
        """Jobs refunded whole: they failed or were cancelled and nothing was billed."""
        return self.refunds - self.charges

    @property
    def pending_jobs(self) -> int:
        """Jobs still holding their reservation."""
        return self.reserves - self.refunds

    def __add__(self, other: Spend) -> Spend:
        return Spend(
            self.reserved + other.reserved,
            self.charged + other.charged,
            self.refunded + other.refunded,
            self.reserves + other.reserves,
            self.charges + other.charges,
            self.refunds + other.refunds,
            self.unknown + other.unknown,
            self.unknowns + other.unknowns,
        )


NOTHING = Spend()


@dataclass(frozen=True, slots=True)
class GuildSpend:
    """One server's spend in a period; `guild_id` is '' for direct messages and the CLI."""

    guild_id: str
    spend: Spend


@dataclass(frozen=True, slots=True)
class ModelSpend:
    """One model's spend in a period."""

    model: str
    spend: Spend


@dataclass(frozen=True, slots=True)
class UserSpend:
    """One user's spend in a period."""

    user_id: str
    spend: Spend


@dataclass(frozen=True, slots=True)
class DaySpend:
    """One model's spend on one UTC day: one segment of the stacked chart."""

    day: dt.date
    model: str
    spend: Spend


@dataclass(frozen=True, slots=True)
class UserSummary:
    """One user's spend today, this month and all time (UTC days, everywhere), and their budgets."""

    user_id: str
    guild_id: str
    """The server whose budgets are listed ('' = the budgets that apply outside any server)."""
    as_of: dt.datetime
    """When the summary was made (UTC); `today` and `month` are the day and month containing it."""
    today: Spend
    month: Spend
    all_time: Spend
    budgets: tuple[BudgetStatus, ...]
    """Every budget that applies to the user's next request there, tightest first, with its reset time."""

    @property
    def day(self) -> dt.date:
        """The UTC day `today` covers."""
        return self.as_of.date()

    @property
    def month_start(self) -> dt.date:
        """The first day `month` covers."""
        return self.as_of.date().replace(day=1)


class CsvRow(NamedTuple):
    """One ledger row with its job, as exported; its fields are in the order the export's query selects them.

    A named tuple rather than a frozen dataclass: made straight from each result row, 22,000 of them take
    ~10 ms instead of ~50 (a frozen dataclass sets each field through `object.__setattr__`).
    """

    ledger_id: int
    at: str
    day: str
    job_id: int
    kind: str
    amount: int
    user_id: str
    guild_id: str
    model: str
    job_kind: str
    status: str
    cost_state: str
    note: str

    @property
    def net(self) -> int:
        """The row's effect on net spend: negative for refunds."""
        return -self.amount if self.kind == "refund" else self.amount


def usd_exact(micros: int) -> str:
    """Micro-dollars as an exact decimal for spreadsheets: 53_000 → "0.053000", -1 → "-0.000001"."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}.{fraction:06d}"


def to_csv(rows: Iterable[CsvRow]) -> str:
    """`rows` as CSV text (stdlib csv, "\\n" line ends) with a header line: see CSV_COLUMNS."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    usd = usd_exact
    writer.writerows((*r[:6], usd(r.amount), -r.amount if r.kind == "refund" else r.amount, *r[6:]) for r in rows)
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class _Where:
    """A period and optional filters as an SQL condition on `ledger` (alias `prefix`) and its parameters."""

    sql: str
    params: list[Any]
    users: bool = False
    """Whether it narrows to one or some users (only the ledger knows them)."""

    @classmethod
    def of(
        cls,
        since: dt.date | None,
        until: dt.date | None,
        *,
        guild_id: str | None = None,
        user_id: str | None = None,
        users: Sequence[str] | None = None,
        prefix: str = "",
    ) -> _Where:
        sql = f"{prefix}day >= ? AND {prefix}day < ?"
        params: list[Any] = [since.isoformat() if since else _FIRST_DAY, until.isoformat() if until else _LAST_DAY]
        if guild_id is not None:
            sql += f" AND {prefix}guild_id = ?"
            params.append(guild_id)
        if user_id is not None:
            sql += f" AND {prefix}user_id = ?"
            params.append(user_id)
        if users is not None:
            sql += f" AND {prefix}user_id IN ({', '.join('?' * len(users))})"
            params.extend(users)
        return cls(sql, params, users=user_id is not None or users is not None)


_NET = "SUM(CASE kind WHEN 'refund' THEN -amount ELSE amount END)"

# spend_daily's columns are named as Spend's fields.
_SPEND_FIELDS = tuple(field.name for field in dataclasses.fields(Spend))
_ROLLED = ", ".join(f"SUM({field}) AS {field}" for field in _SPEND_FIELDS)


# Each of Spend's fields over all time, this month and today, for user_summary.
_SUMMARY_SUMS = ", ".join(
    f"SUM({field}) AS {field}, "
    f"SUM(CASE WHEN day >= :month AND day < :next_month THEN {field} ELSE 0 END) AS month_{field}, "
    f"SUM(CASE WHEN day = :today THEN {field} ELSE 0 END) AS today_{field}"
    for field in _SPEND_FIELDS
)


class Reports:
    """Read-only spending reports over one Database; `ledger` answers which budgets apply to a user."""

    def __init__(self, db: Database, ledger: Ledger, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.db = db
        self.ledger = ledger
        self._clock = clock

    to_csv = staticmethod(to_csv)

    # -- one user --------------------------------------------------------------------------------------

    async def user_summary(self, user_id: str, *, guild_id: str = "", roles: Sequence[str] = ()) -> UserSummary:
        """`user_id`'s spend today, this month and all time, and the budgets that apply to them in `guild_id`.

        The spend counts everywhere the user spent (every server, direct messages, the CLI), as their own
        budgets without a server do; `guild_id` and `roles` (the user's role ids there) choose which
        server's budgets are listed.
        """
        now = self._clock().astimezone(dt.UTC)
        today = now.date()
        month, next_month = today.replace(day=1), (today.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        periods = {
            "user": user_id,
            "today": today.isoformat(),
            "month": month.isoformat(),
            "next_month": next_month.isoformat(),
        }
        # One pass over the user's stretch of spend_by_user (a row per server and day), summed three ways.
        row = await self.db.fetchone(
            f"SELECT {_SUMMARY_SUMS} FROM spend_by_user WHERE user_id = :user",  # noqa: S608 - fixed fragments
            periods,
        )
        spends = {
            prefix: Spend(**{field: int(row[f"{prefix}{field}"] or 0) if row else 0 for field in _SPEND_FIELDS})
            for prefix in ("today_", "month_", "")
        }
        draft = JobDraft(kind="generate", user_id=user_id, guild_id=guild_id, roles=tuple(roles), model="")
        budgets = await self.ledger.budget_status(draft)
        return UserSummary(
            user_id=user_id,
            guild_id=guild_id,
            as_of=now,
            today=spends["today_"],
            month=spends["month_"],
            all_time=spends[""],
            budgets=tuple(budgets),
        )

    # -- over a period ---------------------------------------------------------------------------------

    async def totals(
        self,
        since: dt.date | None,
        until: dt.date | None,
        *,
        guild_id: str | None = None,
        user_id: str | None = None,
    ) -> Spend:
        """Everything spent in the period (in one server, by one user, when given)."""
        where = _Where.of(since, until, guild_id=guild_id, user_id=user_id)
        if not where.users:
            return (await self._rolled((), where)).get((), NOTHING)
        # One user's rows: grouping by (day, kind) follows ledger_by_user's order, so SQLite sums as it reads.
        rows = await self.db.fetchall(
            f"SELECT kind, SUM(amount) AS total, COUNT(*) AS n FROM ledger WHERE {where.sql} GROUP BY day, kind",  # noqa: S608 - fixed fragments
            where.params,
        )
        unknown = await self._unknown((), where)
        by_kind: dict[str, tuple[int, int]] = {}
        for row in rows:
            total, n = by_kind.get(row["kind"], (0, 0))
            by_kind[row["kind"]] = (total + row["total"], n + row["n"])
        return _spend(by_kind, unknown.get(())) if by_kind else NOTHING

    async def by_guild(self, since: dt.date | None, until: dt.date | None) -> list[GuildSpend]:
        """Spend per server in the period, largest first ('' = direct messages and the CLI)."""
        found = await self._grouped(("guild_id",), _Where.of(since, until))
        rows = [GuildSpend(key[0], spend) for key, spend in found.items()]
        return sorted(rows, key=lambda r: (-r.spend.net, r.guild_id))

    async def by_model(
        self,
        since: dt.date | None,
        until: dt.date | None,
        *,
        guild_id: str | None = None,
        user_id: str | None = None,
    ) -> list[ModelSpend]:
        """Spend per model in the period (in one server, by one user, when given), largest first."""
        found = await self._grouped(("model",), _Where.of(since, until, guild_id=guild_id, user_id=user_id))
        rows = [ModelSpend(key[0], spend) for key, spend in found.items()]
        return sorted(rows, key=lambda r: (-r.spend.net, r.model))

    async def by_day(
        self,
        since: dt.date | None,
        until: dt.date | None,
        *,
        guild_id: str | None = None,
        user_id: str | None = None,
    ) -> list[DaySpend]:
        """Spend per day and model in the period, by day then model; days without any rows are absent."""
        found = await self._grouped(("day", "model"), _Where.of(since, until, guild_id=guild_id, user_id=user_id))
        rows = [DaySpend(dt.date.fromisoformat(key[0]), key[1], spend) for key, spend in found.items()]
        return sorted(rows, key=lambda r: (r.day, r.model))

    async def top_users(
        self,
        since: dt.date | None,
        until: dt.date | None,
        *,
        guild_id: str | None = None,
        limit: int = 10,
    ) -> list[UserSpend]:
        """The `limit` users who spent most in the period (in one server, when given), largest first.

        Users whose rows all net to nothing (every job refunded) still count: they appear after the rest.
        """
        if limit < 1:
            return []
        where = _Where.of(since, until, guild_id=guild_id)
        # The ranking reads one number per spend_by_user row, in key order (a group per user, no sort of the
        # rows); summing all eight columns for every row instead takes twice as long.
        ranked = await self.db.fetchall(
            f"SELECT user_id, SUM(reserved + charged - refunded) AS net FROM spend_by_user WHERE {where.sql} "  # noqa: S608 - fixed fragments
            "GROUP BY user_id ORDER BY net DESC, user_id LIMIT ?",
            [*where.params, limit],
        )
        users = [str(row["user_id"]) for row in ranked]
        if not users:
            return []
        # The details of the ranked users only, each from their own stretch of the key; a long list is
        # cheaper as everyone's than as an IN (...).
        narrow = _Where.of(since, until, guild_id=guild_id, users=users if len(users) <= _MAX_LISTED else None)
        rows = await self.db.fetchall(
            f"SELECT user_id, {_ROLLED} FROM spend_by_user WHERE {narrow.sql} GROUP BY user_id",  # noqa: S608 - fixed fragments
            narrow.params,
        )
        found = {str(row["user_id"]): Spend(**{field: int(row[field]) for field in _SPEND_FIELDS}) for row in rows}
        return [UserSpend(user, found[user]) for user in users]

    async def _grouped(self, keys: tuple[Column, ...], where: _Where) -> dict[tuple[str, ...], Spend]:
        """Spend grouped by `keys` (fixed column names) over the ledger rows `where` selects.

        Read from the rollup when neither the filter nor the keys involve users, else from the ledger.
        """
        if where.users or "user_id" in keys:
            return await self._from_ledger(keys, where)
        return await self._rolled(keys, where)

    async def _rolled(self, keys: tuple[Column, ...], where: _Where) -> dict[tuple[str, ...], Spend]:
        """`_grouped` from spend_daily, for a `where` on days and server only: a few rows per day."""
        cols = ", ".join(keys)
        rows = await self.db.fetchall(
            f"SELECT {cols}{', ' if keys else ''}{_ROLLED} FROM spend_daily "  # noqa: S608 - fixed fragments
            f"WHERE {where.sql}{f' GROUP BY {cols}' if keys else ''}",
            where.params,
        )
        # An aggregate without GROUP BY gives one row even when nothing matches: of NULLs.
        return {
            tuple(str(row[k]) for k in keys): Spend(**{field: int(row[field]) for field in _SPEND_FIELDS})
            for row in rows
            if row["reserves"] is not None
        }

    async def _from_ledger(self, keys: tuple[Column, ...], where: _Where) -> dict[tuple[str, ...], Spend]:
        """`_grouped` from the ledger rows, through its indexes."""
        cols = "".join(f"{key}, " for key in keys)
        rows = await self.db.fetchall(
            f"SELECT {cols}kind, SUM(amount) AS total, COUNT(*) AS n FROM ledger "  # noqa: S608 - fixed fragments
            f"WHERE {where.sql} GROUP BY {cols}kind",
            where.params,
        )
        unknown = await self._unknown(keys, where)
        sums: dict[tuple[str, ...], dict[str, tuple[int, int]]] = {}
        for row in rows:
            sums.setdefault(tuple(str(row[k]) for k in keys), {})[row["kind"]] = (row["total"], row["n"])
        return {key: _spend(by_kind, unknown.get(key)) for key, by_kind in sums.items()}

    async def _unknown(self, keys: tuple[Column, ...], where: _Where) -> dict[tuple[str, ...], tuple[int, int]]:
        """The unknown charges among the rows `where` selects, grouped by `keys`: (micros, jobs) per group."""
        cols = "".join(f"{key}, " for key in keys)
        group = f" GROUP BY {', '.join(keys)}" if keys else ""
        # The index narrows to the period's charge rows; only those are read from the table for their note.
        rows = await self.db.fetchall(
            f"SELECT {cols}SUM(amount) AS total, COUNT(*) AS n FROM ledger "  # noqa: S608 - fixed fragments
            f"WHERE {where.sql} AND kind = 'charge' AND note LIKE ?{group}",
            [*where.params, UNKNOWN_NOTE],
        )
        return {tuple(str(row[k]) for k in keys): (row["total"], row["n"]) for row in rows if row["n"]}

    # -- export ----------------------------------------------------------------------------------------

    async def csv_rows(
        self,
        since: dt.date | None,
        until: dt.date | None,
        *,
        guild_id: str | None = None,
        user_id: str | None = None,
    ) -> list[CsvRow]:
        """The period's ledger rows with their job (in one server, by one user, when given), by day then id."""
        where = _Where.of(since, until, guild_id=guild_id, user_id=user_id, prefix="l.")
        rows = await self.db.fetchall(
            "SELECT l.id, l.at, l.day, l.job_id, l.kind, l.amount, l.user_id, l.guild_id, l.model, "  # noqa: S608 - fixed fragments
            "j.kind, j.status, j.cost_state, COALESCE(l.note, '') "
            f"FROM ledger AS l JOIN jobs AS j ON j.id = l.job_id WHERE {where.sql} ORDER BY l.day, l.id",
            where.params,
        )
        return list(map(CsvRow._make, rows))


def _spend(by_kind: dict[str, tuple[int, int]], unknown: tuple[int, int] | None) -> Spend:
    """A Spend from {kind: (micros, rows)} and the unknown charges' (micros, jobs)."""
    reserve = by_kind.get("reserve", (0, 0))
    charge = by_kind.get("charge", (0, 0))
    refund = by_kind.get("refund", (0, 0))
    return Spend(
        reserved=int(reserve[0] or 0),
        charged=int(charge[0] or 0),
        refunded=int(refund[0] or 0),
        reserves=int(reserve[1] or 0),
        charges=int(charge[1] or 0),
        refunds=int(refund[1] or 0),
        unknown=int(unknown[0] or 0) if unknown else 0,
        unknowns=int(unknown[1] or 0) if unknown else 0,
    )
