"""The job queue: who runs next, how many run at once, and the jobs a restart left waiting.

A job enters the queue after its money is reserved (status 'queued' in SQLite, so a restart cannot lose
it) and leaves it when it may call the provider. Scheduling rule, applied every time a slot frees up or a
job arrives:

    * a job may start only while fewer than `max_running` jobs run in all (the provider's rate), fewer than
      `per_user` run for its user and fewer than `per_guild` for its server (jobs outside a server have no
      server cap);
    * each user has one line, first come first served: only the job at the front of a user's line may start;
    * among the users whose front job may start, the slot goes to the user who has waited longest since
      their last start (a user who never started goes first, earliest arrival first). One user's ten jobs
      therefore take turns with everybody else's instead of going first.

Each waiting job's position is its place in that round-robin order (1 = next; 0 = starting now), reported
through `on_position` when it changes: at once for next in line and for the start, and otherwise at most
once every `report_every` seconds (the latest place when the interval is over). In a burst every start
moves hundreds of jobs up one place; waking each one's task for each step was most of the queue's cost on
the event loop (bench/bot.py). A waiting job can be cancelled (its waiter raises
`JobCancelled`); a running one cannot. A job the provider refused with 429 goes back to the front of its
user's line and waits `rate_limit_delay()` before it may start again, still cancellable.

The queue itself lives in memory; the durable part is the jobs table. `queued_jobs()` lists the jobs a
restart left waiting (kept reserved by `Ledger.recover(resume_queued=True)`), in the order they came, for
`Studio.resume()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bot.errors import JobCancelled, QueueFull, RateLimited
from bot.store.db import Database
from bot.store.ledger import JobKind, JobOptions, parse_options

log = logging.getLogger(__name__)

PositionHandler = Callable[[int], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]

RATE_LIMIT_TRIES = 5
"""Provider calls one job may make while the provider keeps answering 429."""
RATE_LIMIT_WAIT = 600.0
"""Most seconds from a job's first 429 until it gives up."""
REPORT_EVERY = 2.0
"""Least seconds between two reports of a waiting job's place, as Easel runs it (Discord edits are a courtesy)."""
RATE_LIMIT_BACKOFF = 5.0
"""First wait after a 429 that came without Retry-After; doubles on each further 429, at most a minute."""
TURN_MEMORY = 3600.0
"""Seconds a member's last start counts for their turn; an older one is forgotten (as if they never started)."""
TURNS_KEPT = 1024
"""Members' last starts kept before the ones older than `TURN_MEMORY` are forgotten."""


@dataclass(frozen=True, slots=True)
class QueueUpdate:
    """What a waiting job's caller is told: its place in line and, when something else holds it, why."""

    job_id: int
    position: int
    """1 = next in line, 2 = second, ...; 0 = starting now."""
    note: str = ""
    """A plain sentence when the job waits for more than its turn (e.g. the provider's rate limit)."""


@dataclass(eq=False)
class _Waiter:
    job_id: int
    user_id: str
    guild_id: str
    seq: int
    on_position: PositionHandler | None
    ready: bool = True
    granted: bool = False
    cancelled: bool = False
    position: int = 0
    """Its place in line as of the last dispatch; kept only for waiters with `on_position`."""
    reported: int | None = None
    """The place last passed to `on_position`, and when (the queue's clock)."""
    reported_at: float = -math.inf
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class JobQueue:
    """Fair, capped admission to the provider; see the module docstring for the rule."""

    def __init__(
        self,
        *,
        max_running: int,
        per_user: int,
        per_guild: int,
        max_waiting_per_user: int | None = None,
        rate_limit_tries: int = RATE_LIMIT_TRIES,
        rate_limit_wait: float = RATE_LIMIT_WAIT,
        report_every: float = 0.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(max_running, per_user, per_guild) < 1:
            raise ValueError("queue limits must be at least 1")
        if max_waiting_per_user is not None and max_waiting_per_user < 1:
            raise ValueError("max_waiting_per_user must be at least 1 (a new job counts as waiting until it starts)")
        self.max_running = max_running
        self.per_user = per_user
        self.per_guild = per_guild
        self.max_waiting_per_user = max_waiting_per_user
        self.rate_limit_tries = rate_limit_tries
        self.rate_limit_wait = rate_limit_wait
        self.report_every = report_every
        """Least seconds between two reports of a job's place, next in line and the start aside (0: every change)."""
        self.clock = clock
        self._sleep = sleep
        self._lines: dict[str, deque[_Waiter]] = {}
        self._jobs: dict[int, _Waiter] = {}
        self._pending: Counter[str] = Counter()
        self._running = 0
        self._user_running: Counter[str] = Counter()
        self._guild_running: Counter[str] = Counter()
        self._turns: dict[str, tuple[float, int]] = {}
        self._seq = 0
        self._listening = 0  # waiters in line with an `on_position`
        self._catch_up: asyncio.Future[None] | None = None  # wakes the reports `report_every` held back

    def __repr__(self) -> str:
        return f"JobQueue(running={self._running}/{self.max_running}, waiting={self.waiting})"

    # -- looking ----------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def waiting_for(self, user_id: str) -> int:
        """Jobs of `user_id` waiting (or being admitted), not yet running."""
        return len(self._lines.get(user_id, ())) + self._pending[user_id]

    def position(self, job_id: int) -> int | None:
        """The job's place in line (1 = next), 0 once it runs, None when the queue does not hold it."""
        waiter = self._jobs.get(job_id)
        if waiter is None:
            return None
        return 0 if waiter.granted else self._position(waiter)

    # -- admission ----------------------------------------------------------------------------------

    def admit(self, user_id: str) -> None:
        """Count a new job of `user_id` as waiting, or raise QueueFull when they already have enough waiting.

        Call it before reserving the job's money, then pass `admitted=True` to `slot()`, or `withdraw()` if
        the job never gets there (its reservation was refused).
        """
        cap = self.max_waiting_per_user
        if cap is not None and self.waiting_for(user_id) >= cap:
            raise QueueFull(
                f"You already have {cap} request{'s' if cap != 1 else ''} waiting; "
                "ask again once one of them has started."
            )
        self._pending[user_id] += 1

    def withdraw(self, user_id: str) -> None:
        """Undo an `admit()` whose job will not enter the queue."""
        if self._pending[user_id] > 0:
            self._pending[user_id] -= 1
        if self._pending[user_id] == 0:
            del self._pending[user_id]

    @contextlib.asynccontextmanager
    async def slot(
        self,
        job_id: int,
        user_id: str,
        guild_id: str = "",
        *,
        on_position: PositionHandler | None = None,
        front: bool = False,
        delay: float = 0.0,
        admitted: bool = False,
    ) -> AsyncIterator[None]:
        """Wait for the job's turn, hold a running slot inside the block, free it on the way out.

        `front` puts the job at the front of its user's line (a job coming back after a 429) and `delay`
        keeps it from starting for that many seconds. Raises JobCancelled if `cancel()` removes it first.
        `on_position` failures are logged, never fatal: a lost progress message does not cost the job its turn.
        """
        if admitted:
            self.withdraw(user_id)
        if job_id in self._jobs:
            raise ValueError(f"job {job_id} is already in the queue")
        self._seq += 1
        waiter = _Waiter(job_id, user_id, guild_id, self._seq, on_position, ready=delay <= 0)
        line = self._lines.setdefault(user_id, deque())
        if front:
            line.appendleft(waiter)
        else:
            line.append(waiter)
        self._jobs[job_id] = waiter
        if on_position is not None:
            self._listening += 1
        timer = asyncio.ensure_future(self._sleep(delay)) if delay > 0 else None
        try:
            self._dispatch()
            await self._wait(waiter, timer)
        except BaseException:
            if waiter.granted:
                self._release(waiter)
            else:
                self._remove(waiter)
            raise
        finally:
            if timer is not None and not timer.done():
                timer.cancel()
        try:
            yield
        finally:
            self._release(waiter)

    def cancel(self, job_id: int) -> bool:
        """Take a waiting job out of line (its `slot()` raises JobCancelled); False if it runs or is unknown."""
        waiter = self._jobs.get(job_id)
        if waiter is None or waiter.granted or waiter.cancelled:
            return False
        waiter.cancelled = True
        self._remove(waiter)
        return True

    def rate_limit_delay(self, error: RateLimited, *, tries: int, since: float) -> float | None:
        """Seconds before a job the provider refused with 429 `tries` times (the first at clock time `since`)
        may try again; None when it has tried `rate_limit_tries` times or would wait past `rate_limit_wait`."""
        if tries >= self.rate_limit_tries:
            return None
        if error.retry_after is not None and error.retry_after >= 0:
            delay = float(error.retry_after)
        else:
            delay = min(RATE_LIMIT_BACKOFF * 2 ** (tries - 1), 60.0)
        if self.clock() + delay - since > self.rate_limit_wait:
            return None
        return delay

    # -- the rule -----------------------------------------------------------------------------------

    def _turn(self, user_id: str, head: _Waiter) -> tuple[float, int]:
        """Sort key of a user's turn: when they last started (never: first), then who came first."""
        return self._turns.get(user_id, (-math.inf, head.seq))

    def _may_start(self, waiter: _Waiter) -> bool:
        return (
            waiter.ready
            and self._user_running[waiter.user_id] < self.per_user
            and (not waiter.guild_id or self._guild_running[waiter.guild_id] < self.per_guild)
        )

    def _dispatch(self) -> None:
        """Start every job the rule allows now, then wake the waiters whose place in line changed.

        Only the jobs granted a slot and the waiters that report their place are woken, so a start or
        an end costs the same however many jobs wait without listening.
        """
        while self._running < self.max_running:
            chosen = min(
                (line[0] for line in self._lines.values() if self._may_start(line[0])),
                key=lambda head: self._turn(head.user_id, head),
                default=None,
            )
            if chosen is None:
                break
            self._grant(chosen)
        if self._listening:
            now = self.clock()
            for waiter, position in self._positions():
                if waiter.on_position is not None and waiter.position != position:
                    waiter.position = position
                    self._wake_to_report(waiter, now)

    def _report_due(self, waiter: _Waiter, now: float) -> float | None:
        """When `waiter` may report its new place: None for at once, else the queue's clock time."""
        if waiter.position <= 1 or waiter.reported is None:
            return None
        due = waiter.reported_at + self.report_every
        return None if now >= due else due

    def _wake_to_report(self, waiter: _Waiter, now: float) -> None:
        due = self._report_due(waiter, now)
        if due is None:
            waiter.wake.set()
        elif self._catch_up is None:
            # Reports are held back in the order they were made, so the earliest held one is due first.
            self._catch_up = asyncio.ensure_future(self._report_held(due - now))

    async def _report_held(self, delay: float) -> None:
        """After `delay`, wake the waiters whose held-back report is due; come back for the rest."""
        try:
            await self._sleep(delay)
        finally:
            self._catch_up = None
        now = self.clock()
        for waiter in list(self._jobs.values()):
            if not waiter.granted and waiter.on_position is not None and waiter.position != waiter.reported:
                self._wake_to_report(waiter, now)

    def _positions(self) -> Iterator[tuple[_Waiter, int]]:
        """Every waiting job with its `_position`, in one pass over the lines instead of one per job.

        A job at index i of its user's line has ahead of it: from every user, min(their line, i) jobs,
        plus one more from each user whose turn comes first and whose line is longer than i.
        """
        longest = max((len(line) for line in self._lines.values()), default=0)
        longer = [0] * longest  # longer[i]: users whose line is longer than i
        for line in self._lines.values():
            for i in range(len(line)):
                longer[i] += 1
        before = [0] * longest  # like `longer`, over the users whose turn comes before this one's
        lines = sorted(self._lines.items(), key=lambda item: self._turn(item[0], item[1][0]))
        for _user_id, line in lines:
            ahead = 0  # sum of min(len, i) over every user
            for i, waiter in enumerate(line):
                yield waiter, ahead + before[i] + 1
                ahead += longer[i]
            for i in range(len(line)):
                before[i] += 1

    def _grant(self, waiter: _Waiter) -> None:
        line = self._lines[waiter.user_id]
        line.popleft()
        if not line:
            del self._lines[waiter.user_id]
        if waiter.on_position is not None:
            self._listening -= 1
        waiter.granted = True
        self._seq += 1
        now = self.clock()
        self._turns[waiter.user_id] = (now, self._seq)
        if len(self._turns) > TURNS_KEPT:
            self._forget_turns(now - TURN_MEMORY)
        self._running += 1
        self._user_running[waiter.user_id] += 1
        if waiter.guild_id:
            self._guild_running[waiter.guild_id] += 1
        waiter.wake.set()

    def _forget_turns(self, before: float) -> None:
        """Forget the last starts older than `before` of members with nothing waiting or running: a bot that
        served thousands of members keeps no entry for each, and a member an hour idle goes first anyway."""
        stale = [
            user
            for user, (started, _) in self._turns.items()
            if started < before and user not in self._lines and not self._user_running[user]
        ]
        for user in stale:
            del self._turns[user]

    def _release(self, waiter: _Waiter) -> None:
        if self._jobs.get(waiter.job_id) is not waiter:
            return
        del self._jobs[waiter.job_id]
        self._running -= 1
        self._user_running[waiter.user_id] -= 1
        if not self._user_running[waiter.user_id]:
            del self._user_running[waiter.user_id]
        if waiter.guild_id:
            self._guild_running[waiter.guild_id] -= 1
            if not self._guild_running[waiter.guild_id]:
                del self._guild_running[waiter.guild_id]
        self._dispatch()

    def _remove(self, waiter: _Waiter) -> None:
        if self._jobs.get(waiter.job_id) is not waiter:
            return
        del self._jobs[waiter.job_id]
        line = self._lines.get(waiter.user_id)
        if line is not None and waiter in line:
            line.remove(waiter)
            if not line:
                del self._lines[waiter.user_id]
            if waiter.on_position is not None:
                self._listening -= 1
        waiter.wake.set()
        self._dispatch()

    def _position(self, waiter: _Waiter) -> int:
        """1 + the waiting jobs the round-robin order puts before `waiter` (caps and pauses aside)."""
        line = self._lines[waiter.user_id]
        index = line.index(waiter)
        own = self._turn(waiter.user_id, line[0])
        ahead = index
        for user_id, other in self._lines.items():
            if user_id != waiter.user_id:
                # Every user gets one job per round; users whose turn comes first also get this round's.
                rounds = index + (1 if self._turn(user_id, other[0]) < own else 0)
                ahead += min(len(other), rounds)
        return ahead + 1

    async def _wait(self, waiter: _Waiter, timer: asyncio.Future[None] | None) -> None:
        while True:
            waiter.wake.clear()
            if waiter.cancelled:
                raise JobCancelled()
            if timer is not None and timer.done():
                timer.result()
                timer = None
                waiter.ready = True
                self._dispatch()
                continue
            if waiter.granted:
                break
            now = self.clock()
            if (
                waiter.on_position is not None
                and waiter.position != waiter.reported
                and self._report_due(waiter, now) is None
            ):
                waiter.reported, waiter.reported_at = waiter.position, now
                await self._report(waiter, waiter.position)
                continue
            if timer is None:
                await waiter.wake.wait()
                continue
            woken: asyncio.Future[Any] = asyncio.ensure_future(waiter.wake.wait())
            try:
                await asyncio.wait({woken, timer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
        await self._report(waiter, 0)

    async def _report(self, waiter: _Waiter, position: int) -> None:
        if waiter.on_position is None:
            return
        try:
            await waiter.on_position(position)
        except Exception:
            log.exception("job %d: reporting its place in line failed", waiter.job_id)


# -- durability -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedJob:
    """A job the database holds as queued with its money reserved: what a restart left waiting."""

    job_id: int
    kind: JobKind
    user_id: str
    guild_id: str
    channel_id: str
    roles: tuple[str, ...]
    model: str
    size: str | None
    quality: str | None
    n: int
    prompt: str
    estimate: int
    created_at: str
    parent_job: int | None = None
    parent_index: int | None = None
    options: JobOptions = ()


async def queued_jobs(db: Database) -> list[QueuedJob]:
    """Every queued, reserved job, oldest first (created_at, then id): the order to resume them in."""
    rows = await db.fetchall(
        "SELECT * FROM jobs WHERE status = 'queued' AND cost_state = 'reserved' ORDER BY created_at, id"
    )
    return [
        QueuedJob(
            job_id=int(row["id"]),
            kind=row["kind"],
            user_id=row["user_id"],
            guild_id=row["guild_id"],
            channel_id=row["channel_id"],
            roles=tuple(str(role) for role in json.loads(row["roles"])),
            model=row["model"],
            size=row["size"],
            quality=row["quality"],
            n=int(row["n"]),
            prompt=row["prompt"],
            estimate=int(row["estimate"]),
            created_at=row["created_at"],
            parent_job=row["parent_job"],
            parent_index=row["parent_index"],
            options=parse_options(row["options"]),
        )
        for row in rows
    ]


async def requeue(db: Database, job_id: int) -> bool:
    """Mark a running job queued again after the provider refused it unserved (429); no money moves.

    False when the job is no longer running with its money reserved. (A status change only; the
    schema's money triggers watch cost_state, which stays 'reserved'.)
    """
    changed = await db.write(
        "UPDATE jobs SET status = 'queued', started_at = NULL "
        "WHERE id = ? AND status = 'running' AND cost_state = 'reserved'",
        (job_id,),
    )
    return changed == 1
