"""The job queue: limits, round-robin fairness, positions, cancelling, 429s kept in line, and resuming.

The first half drives `JobQueue` directly with event-gated jobs; the second runs `Studio` over a real
ledger with a provider whose calls are held open by events, so every test is fast and deterministic.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import defaultdict
from pathlib import Path
from typing import ClassVar

import pytest

import bot.queue as queue_module
from bot.api.client import ImagesClient
from bot.api.mock import MockProvider
from bot.api.types import GeneratedImage, GenerateRequest, ImageResult, InputImage, VaryRequest
from bot.catalogue import Catalogue, ModelSpec
from bot.errors import JobCancelled, QueueFull, RateLimited
from bot.jobs import Requester, Studio
from bot.queue import JobQueue, QueueUpdate, queued_jobs, requeue
from bot.store.db import Database
from bot.store.ledger import JobDraft, Ledger
from tests import images
from tests.test_ledger import counters_match_ledger


async def settle(rounds: int = 30) -> None:
    """Let every ready task run until the queue is quiet."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Line:
    """Jobs entering one JobQueue; each holds its slot until `finish()`."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.started: list[int] = []
        self.running: set[int] = set()
        self.peak = 0
        self.positions: dict[int, list[int]] = defaultdict(list)
        self.gates: dict[int, asyncio.Event] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def submit(self, job_id: int, user: str, guild: str = "") -> None:
        gate = self.gates[job_id] = asyncio.Event()

        async def report(position: int) -> None:
            self.positions[job_id].append(position)

        async def body() -> None:
            async with self.queue.slot(job_id, user, guild, on_position=report):
                self.started.append(job_id)
                self.running.add(job_id)
                self.peak = max(self.peak, len(self.running))
                try:
                    await gate.wait()
                finally:
                    self.running.discard(job_id)

        self.tasks[job_id] = asyncio.create_task(body())

    async def finish(self, job_id: int) -> None:
        self.gates[job_id].set()
        await self.tasks[job_id]
        await settle()


def queue(max_running: int = 1, per_user: int = 10, per_guild: int = 10, **extra: object) -> JobQueue:
    return JobQueue(max_running=max_running, per_user=per_user, per_guild=per_guild, **extra)  # type: ignore[arg-type]


# -- the rule ---------------------------------------------------------------------------------------


async def test_never_more_than_max_running() -> None:
    """Eight jobs from eight users through two slots: two run at a time, and all of them finish."""
    line = Line(queue(max_running=2))
    for job in range(1, 9):
        line.submit(job, f"u{job}")
    await settle()
    assert line.running == {1, 2}
    for job in range(1, 9):
        await line.finish(job)
        assert len(line.running) <= 2
    assert line.peak == 2
    assert line.started == list(range(1, 9))
    assert (line.queue.running, line.queue.waiting) == (0, 0)


async def test_per_user_cap() -> None:
    """A user at their cap waits while another user's job takes the free slot."""
    line = Line(queue(max_running=4, per_user=2))
    for job in (1, 2, 3, 4):
        line.submit(job, "alice")
    line.submit(5, "bob")
    await settle()
    assert line.running == {1, 2, 5}
    await line.finish(1)
    assert line.running == {2, 3, 5}


async def test_per_guild_cap_and_direct_messages() -> None:
    """A server at its cap waits; a job outside any server is not held by it."""
    line = Line(queue(max_running=4, per_guild=2))
    line.submit(1, "a", "g1")
    line.submit(2, "b", "g1")
    line.submit(3, "c", "g1")
    line.submit(4, "d", "")
    await settle()
    assert line.running == {1, 2, 4}
    await line.finish(2)
    assert line.running == {1, 3, 4}


async def test_round_robin_lets_a_late_user_in_before_a_backlog() -> None:
    """Alice queues ten jobs, then Bob one: Bob's starts right after Alice's first, not after her tenth."""
    line = Line(queue(max_running=1))
    for job in range(1, 11):
        line.submit(job, "alice")
    await settle()
    line.submit(11, "bob")
    await settle()
    assert line.queue.position(11) == 1
    for job in [1, 11, *range(2, 11)]:
        await line.finish(job)
    assert line.started == [1, 11, *range(2, 11)]


async def test_turns_alternate_between_users() -> None:
    """Two users with backlogs take turns, each in their own order."""
    line = Line(queue(max_running=1))
    for job in (1, 2, 3):
        line.submit(job, "alice")
    for job in (4, 5, 6):
        line.submit(job, "bob")
    await settle()
    while line.running:
        await line.finish(next(iter(line.running)))
    assert line.started == [1, 4, 2, 5, 3, 6]


async def test_the_queue_forgets_long_idle_members_and_keeps_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of members each served once leave no entry each behind: past `TURNS_KEPT`, the last starts
    older than `TURN_MEMORY` go, while a recent one still counts for the turn order."""
    monkeypatch.setattr(queue_module, "TURNS_KEPT", 3)
    now = [0.0]
    line = Line(queue(max_running=1, clock=lambda: now[0]))
    for job, user in enumerate(["u1", "u2", "u3"], start=1):
        line.submit(job, user)
        await settle()
        await line.finish(job)
    now[0] = queue_module.TURN_MEMORY + 10
    line.submit(4, "carol")  # carol starts at once, the fourth entry: the three old ones are forgotten
    await settle()
    assert set(line.queue._turns) == {"carol"}
    # The rule still holds: carol (started just now) waits behind dave, who never started.
    line.submit(5, "carol")
    line.submit(6, "dave")
    await settle()
    for job in (4, 6, 5):
        await line.finish(job)
    assert line.started == [1, 2, 3, 4, 6, 5]


async def test_positions_count_down_to_zero() -> None:
    """Each waiting job hears its place whenever it changes, one step at a time, ending with 0 (starting)."""
    line = Line(queue(max_running=1))
    for job in (1, 2, 3, 4):
        line.submit(job, "alice")
    await settle()
    assert dict(line.positions) == {1: [0], 2: [1], 3: [2], 4: [3]}
    for job in (1, 2, 3, 4):
        await line.finish(job)
    assert dict(line.positions) == {1: [0], 2: [1, 0], 3: [2, 1, 0], 4: [3, 2, 1, 0]}


async def test_positions_follow_the_round_robin_order() -> None:
    """A newcomer's job goes ahead of a backlog's later jobs, and their positions say so."""
    line = Line(queue(max_running=1))
    for job in (1, 2, 3):
        line.submit(job, "alice")
    await settle()
    line.submit(4, "bob")
    await settle()
    assert [line.queue.position(job) for job in (1, 2, 3, 4)] == [0, 2, 3, 1]
    assert (line.positions[2], line.positions[3], line.positions[4]) == ([1, 2], [2, 3], [1])


class HeldNaps:
    """The queue's sleep and clock: each sleep waits for `release()`, then moves the clock on by its length."""

    def __init__(self) -> None:
        self.now = 0.0
        self.delays: list[float] = []
        self._go = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await self._go.wait()
        self._go.clear()
        self.now += seconds

    def release(self) -> None:
        self._go.set()


async def test_a_new_place_waits_for_the_interval_but_next_in_line_and_the_start_do_not() -> None:
    """With `report_every`, a job moving up hears its latest place once the interval is over, not each step."""
    naps = HeldNaps()
    line = Line(queue(max_running=1, report_every=2.0, clock=naps.clock, sleep=naps))
    for job, user in zip((1, 2, 3, 4, 5), "abcde", strict=True):
        line.submit(job, user)
    await settle()
    assert dict(line.positions) == {1: [0], 2: [1], 3: [2], 4: [3], 5: [4]}

    await line.finish(1)
    assert dict(line.positions) == {1: [0], 2: [1, 0], 3: [2, 1], 4: [3], 5: [4]}
    assert naps.delays == [2.0], "one wait for every held report"
    await line.finish(2)
    assert (line.positions[3], line.positions[4], line.positions[5]) == ([2, 1, 0], [3, 1], [4])

    naps.release()
    await settle()
    assert line.positions[5] == [4, 2], "the place it has now, not the steps it missed"
    for job in (3, 4, 5):
        await line.finish(job)
    assert line.positions[5] == [4, 2, 1, 0]


async def test_without_an_interval_every_step_is_reported_at_once() -> None:
    """`report_every=0` (the default) reports each change; nothing waits on the queue's sleep."""
    naps = HeldNaps()
    line = Line(queue(max_running=1, clock=naps.clock, sleep=naps))
    for job, user in zip((1, 2, 3), "abc", strict=True):
        line.submit(job, user)
    await settle()
    await line.finish(1)
    assert line.positions[3] == [2, 1]
    assert naps.delays == []
    for job in (2, 3):
        await line.finish(job)


async def test_a_failing_position_report_does_not_cost_the_job_its_turn(caplog: pytest.LogCaptureFixture) -> None:
    """A progress message that cannot be edited is logged; the job still runs."""
    jobs = queue(max_running=1)

    async def broken(position: int) -> None:
        raise RuntimeError("message deleted")

    async with jobs.slot(1, "alice", on_position=broken):
        assert jobs.running == 1
    assert "reporting its place in line failed" in caplog.text


async def test_cancel_a_waiting_job() -> None:
    """Cancelling takes a waiting job out (JobCancelled), moves the others up, and leaves running ones alone."""
    line = Line(queue(max_running=1))
    for job in (1, 2, 3):
        line.submit(job, "alice")
    await settle()
    assert line.queue.cancel(2)
    await settle()
    with pytest.raises(JobCancelled, match=r"Cancelled; nothing was charged\."):
        await line.tasks[2]
    assert line.positions[3] == [2, 1]
    assert not line.queue.cancel(1), "a running job cannot be cancelled"
    assert not line.queue.cancel(2), "nor one already cancelled"
    assert not line.queue.cancel(99)
    await line.finish(1)
    await line.finish(3)
    assert line.started == [1, 3]


async def test_a_caller_that_stops_waiting_leaves_the_line() -> None:
    """A task cancelled while it waits is removed; one cancelled while it runs frees its slot."""
    line = Line(queue(max_running=1))
    for job in (1, 2, 3):
        line.submit(job, "alice")
    await settle()
    line.tasks[2].cancel()
    line.tasks[1].cancel()
    await settle()
    assert line.started == [1, 3]
    assert (line.queue.running, line.queue.waiting) == (1, 0)


async def test_a_delayed_job_waits_at_the_front_and_can_be_cancelled() -> None:
    """A job back from a 429 goes first in its user's line once its delay passes; cancelling stops the wait."""
    naps: list[float] = []
    wake = asyncio.Event()

    async def nap(seconds: float) -> None:
        naps.append(seconds)
        await wake.wait()

    line = Line(queue(max_running=1, sleep=nap))
    line.submit(1, "alice")
    line.submit(2, "alice")
    await settle()
    await line.finish(1)  # job 2 runs; a retried job 10 arrives at the front of alice's line, delayed
    order: list[int] = []

    async def retried() -> None:
        async with line.queue.slot(10, "alice", front=True, delay=30):
            order.append(10)

    line.submit(3, "alice")
    task = asyncio.create_task(retried())
    await settle()
    assert naps == [30]
    assert [line.queue.position(job) for job in (10, 3)] == [1, 2]
    await line.finish(2)
    assert order == [], "still in its delay: nobody jumps it, nothing starts"
    assert line.queue.running == 0
    wake.set()
    await task
    assert order == [10]
    await settle()
    assert line.started[-1] == 3

    # A delayed job can be cancelled while it sleeps.
    wake.clear()
    delayed = asyncio.create_task(retried())
    await settle()
    assert line.queue.cancel(10)
    with pytest.raises(JobCancelled):
        await delayed
    await line.finish(3)


def test_admission_cap() -> None:
    """A user with as many jobs waiting as allowed is refused at once; withdrawing makes room."""
    jobs = queue(max_waiting_per_user=2)
    jobs.admit("alice")
    jobs.admit("alice")
    with pytest.raises(QueueFull, match="You already have 2 requests waiting") as caught:
        jobs.admit("alice")
    assert caught.value.code == "queue_full"
    jobs.admit("bob")
    jobs.withdraw("alice")
    jobs.admit("alice")


def test_rate_limit_policy() -> None:
    """Retry-After is followed; without it the wait doubles; it gives up after the tries or the time cap."""
    now = [0.0]
    jobs = queue(rate_limit_tries=5, rate_limit_wait=600, clock=lambda: now[0])
    assert jobs.rate_limit_delay(RateLimited("busy", retry_after=7), tries=1, since=0) == 7
    assert [jobs.rate_limit_delay(RateLimited("busy"), tries=t, since=0) for t in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert jobs.rate_limit_delay(RateLimited("busy"), tries=5, since=0) is None
    now[0] = 590
    assert jobs.rate_limit_delay(RateLimited("busy", retry_after=20), tries=2, since=0) is None


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        JobQueue(max_running=0, per_user=1, per_guild=1)


# -- through the Studio, on a real ledger ------------------------------------------------------------

ALICE = Requester(user_id="alice", guild_id="g1", channel_id="c1")
BOB = Requester(user_id="bob", guild_id="g1", channel_id="c1")
REQ = GenerateRequest(prompt="a fox", quality="low", size="1024x1024")


class Held(MockProvider):
    """A billing provider whose calls wait for `release(prompt)` (or `open`), counting how many run at once."""

    name = "stub"

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.gates: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.running = 0
        self.peak = 0
        self.calls: list[str] = []
        self.failures: list[Exception] = []
        """Raised by the next calls, in order, before any waiting."""

    def release(self, prompt: str) -> None:
        self.gates[prompt].set()

    async def generate(self, spec: ModelSpec, req: GenerateRequest) -> ImageResult:
        self.calls.append(req.prompt)
        if self.failures:
            raise self.failures.pop(0)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            waits = [asyncio.ensure_future(self.open.wait()), asyncio.ensure_future(self.gates[req.prompt].wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
        finally:
            self.running -= 1
        image = GeneratedImage(images.png(16, 16), "image/png", 16, 16)
        return ImageResult(images=(image,), model=spec.name, provider=self.name)


class Naps:
    """The queue's sleep: records each delay and advances the queue's clock by it, without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.delays: list[float] = []
        self.statuses: list[str] = []
        self.db: Database | None = None

    def clock(self) -> float:
        return self.now

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.db is not None:
            self.statuses.append(await self.db.fetchval("SELECT status FROM jobs ORDER BY id DESC LIMIT 1"))
        self.now += seconds


@pytest.fixture
def provider() -> Held:
    return Held()


@pytest.fixture
def naps() -> Naps:
    return Naps()


def make_studio(db: Database, catalogue: Catalogue, provider: MockProvider, jobs: JobQueue | None) -> Studio:
    return Studio(ImagesClient(provider, catalogue, default_model="gpt-image-2"), Ledger(db), queue=jobs)


async def row(db: Database, job_id: int) -> dict[str, object]:
    found = await db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
    assert found is not None
    return dict(found)


async def net(db: Database) -> int:
    return int(
        await db.fetchval("SELECT COALESCE(SUM(CASE kind WHEN 'refund' THEN -amount ELSE amount END), 0) FROM ledger")
    )


async def charged(db: Database) -> int:
    return int(await db.fetchval("SELECT COALESCE(SUM(cost), 0) FROM jobs"))


async def wait_for(condition: object, rounds: int = 200) -> None:
    """Let the writer thread and the tasks work until `condition()` holds."""
    for _ in range(rounds):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


async def test_studio_respects_the_global_limit(db: Database, catalogue: Catalogue, provider: Held) -> None:
    """Six users' jobs through three slots: the provider never has more than three at once; all settle."""
    jobs = queue(max_running=3)
    studio = make_studio(db, catalogue, provider, jobs)
    await studio.ledger.set_budget("global", "day", 10_000_000)
    who = [Requester(user_id=f"u{i}", guild_id="g1") for i in range(6)]
    tasks = [asyncio.create_task(studio.generate(REQ, w)) for w in who]
    await wait_for(lambda: provider.running == 3 and jobs.waiting == 3)
    provider.open.set()
    outcomes = await asyncio.gather(*tasks)
    assert provider.peak == 3
    assert [(await row(db, o.job_id))["status"] for o in outcomes] == ["succeeded"] * 6
    assert await net(db) == sum(o.cost for o in outcomes) > 0
    await counters_match_ledger(db)


async def test_a_queued_job_takes_its_turns_inside_its_slot(db: Database, catalogue: Catalogue, provider: Held) -> None:
    """With a queue, the turn after the reservation comes before the job asks for a slot; the turns before the
    start and the call come once it has its slot; the turn after the answer once the slot is free again."""
    jobs = queue(max_running=1)
    studio = make_studio(db, catalogue, provider, jobs)
    seen: list[tuple[int, int]] = []

    async def pace() -> None:
        seen.append((jobs.running, provider.running))

    studio.pace = pace
    provider.open.set()
    outcome = await studio.generate(REQ, ALICE)
    assert seen == [(0, 0), (1, 0), (1, 0), (0, 0)], "before the slot, twice in it before the call, then after it"
    assert (await row(db, outcome.job_id))["status"] == "succeeded"


async def test_studio_round_robin(db: Database, catalogue: Catalogue, provider: Held) -> None:
    """Alice's ten jobs, then Bob's one: Bob's is the second to reach the provider."""
    jobs = queue(max_running=1)
    studio = make_studio(db, catalogue, provider, jobs)
    tasks = [
        asyncio.create_task(studio.generate(dataclasses.replace(REQ, prompt=f"alice {i}"), ALICE)) for i in range(10)
    ]
    await wait_for(lambda: jobs.waiting == 9)
    tasks.append(asyncio.create_task(studio.generate(dataclasses.replace(REQ, prompt="bob"), BOB)))
    await wait_for(lambda: jobs.waiting == 10)
    provider.open.set()
    await asyncio.gather(*tasks)
    assert provider.calls[:3] == ["alice 0", "bob", "alice 1"]
    assert provider.peak == 1


async def test_studio_reports_the_place_in_line(db: Database, catalogue: Catalogue, provider: Held) -> None:
    """on_queue hears the job id and each new place, down to 0 when it starts."""
    jobs = queue(max_running=1)
    studio = make_studio(db, catalogue, provider, jobs)
    heard: list[QueueUpdate] = []

    async def listen(update: QueueUpdate) -> None:
        heard.append(update)

    first = asyncio.create_task(studio.generate(dataclasses.replace(REQ, prompt="first"), ALICE))
    await wait_for(lambda: provider.running == 1)
    second = asyncio.create_task(studio.generate(REQ, ALICE, on_queue=listen))
    await wait_for(lambda: jobs.waiting == 1 and heard)
    provider.open.set()
    outcome = await second
    await first
    assert heard == [QueueUpdate(outcome.job_id, 1), QueueUpdate(outcome.job_id, 0)]


async def test_cancel_while_waiting_refunds_in_full(db: Database, catalogue: Catalogue, provider: Held) -> None:
    """❌ on a waiting job: JobCancelled, status cancelled, the reservation returned; the others go on."""
    jobs = queue(max_running=1)
    studio = make_studio(db, catalogue, provider, jobs)
    await studio.ledger.set_budget("user", "day", 10_000_000)
    running = asyncio.create_task(studio.generate(dataclasses.replace(REQ, prompt="running"), ALICE))
    await wait_for(lambda: provider.running == 1)
    waiting = asyncio.create_task(studio.generate(dataclasses.replace(REQ, prompt="waiting"), ALICE))
    after = asyncio.create_task(studio.generate(dataclasses.replace(REQ, prompt="after"), ALICE))
    await wait_for(lambda: jobs.waiting == 2)
    assert not studio.cancel(1), "the running job cannot be cancelled"
    assert studio.cancel(2)
    with pytest.raises(JobCancelled, match=r"Cancelled; nothing was charged\."):
        await waiting
    cancelled = await row(db, 2)
    assert (cancelled["status"], cancelled["cost_state"], cancelled["error_code"]) == (
        "cancelled",
        "refunded",
        "cancelled",
    )
    assert "waiting" not in provider.calls
    provider.open.set()
    outcomes = [await running, await after]
    assert await net(db) == sum(o.cost for o in outcomes) == await charged(db)
    await counters_match_ledger(db)


async def test_a_cancelled_caller_gets_a_refund(db: Database, catalogue: Catalogue, provider: Held) -> None:
    """A caller task cancelled while its job waits leaves a cancelled, refunded job (nothing was sent)."""
    jobs = queue(max_running=1)
    studio = make_studio(db, catalogue, provider, jobs)
    running = asyncio.create_task(studio.generate(dataclasses.replace(REQ, prompt="running"), ALICE))
    await wait_for(lambda: provider.running == 1)
    waiting = asyncio.create_task(studio.generate(dataclasses.replace(REQ, prompt="waiting"), BOB))
    await wait_for(lambda: jobs.waiting == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert ((await row(db, 2))["status"], (await row(db, 2))["cost_state"]) == ("cancelled", "refunded")
    provider.open.set()
    await running
    assert jobs.waiting == jobs.running == 0


async def test_rate_limited_job_stays_queued_and_says_so(
    db: Database, catalogue: Catalogue, provider: Held, naps: Naps
) -> None:
    """A 429 puts the job back in line (queued in the database) with a note; the retry succeeds, charged once."""
    jobs = queue(max_running=1, sleep=naps, clock=naps.clock)
    naps.db = db
    studio = make_studio(db, catalogue, provider, jobs)
    heard: list[QueueUpdate] = []

    async def listen(update: QueueUpdate) -> None:
        heard.append(update)

    provider.failures = [RateLimited("Too many requests.", retry_after=12)]
    provider.open.set()
    outcome = await studio.generate(REQ, ALICE, on_queue=listen)
    assert provider.calls == ["a fox", "a fox"]
    assert naps.delays == [12]
    assert naps.statuses == ["queued"], "while it waits out the 429 the job is queued, not running"
    notes = [update.note for update in heard if update.note]
    assert notes == ["The image service is busy; your request stays in line and tries again in 12 s (try 2 of 5)."]
    assert heard[0] == QueueUpdate(outcome.job_id, 0)
    assert heard[-1] == QueueUpdate(outcome.job_id, 0)
    job = await row(db, outcome.job_id)
    assert (job["status"], job["cost_state"], job["cost"]) == ("succeeded", "settled", outcome.cost)
    assert outcome.cost > 0
    assert await db.fetchval("SELECT count(*) FROM ledger WHERE job_id = ? AND kind = 'charge'", (outcome.job_id,)) == 1
    assert await net(db) == outcome.cost
    await counters_match_ledger(db)


async def test_repeated_429s_give_up_and_refund(db: Database, catalogue: Catalogue, provider: Held, naps: Naps) -> None:
    """Past the cap of tries, the job fails with RateLimited and its reservation comes back."""
    jobs = queue(max_running=1, sleep=naps, clock=naps.clock, rate_limit_tries=3)
    studio = make_studio(db, catalogue, provider, jobs)
    await studio.ledger.set_budget("user", "day", 10_000_000)
    provider.failures = [RateLimited("Too many requests.") for _ in range(3)]
    with pytest.raises(RateLimited):
        await studio.generate(REQ, ALICE)
    assert len(provider.calls) == 3
    assert naps.delays == [5, 10]
    job = await row(db, 1)
    assert (job["status"], job["cost_state"], job["error_code"]) == ("failed", "refunded", "RateLimited")
    assert await net(db) == 0
    assert jobs.running == jobs.waiting == 0
    await counters_match_ledger(db)


async def test_429s_stop_at_the_time_cap(db: Database, catalogue: Catalogue, provider: Held, naps: Naps) -> None:
    """Long Retry-After answers end the retries once the next wait would pass the time cap."""
    jobs = queue(max_running=1, sleep=naps, clock=naps.clock, rate_limit_wait=600)
    studio = make_studio(db, catalogue, provider, jobs)
    provider.failures = [RateLimited("Too many requests.", retry_after=400) for _ in range(3)]
    with pytest.raises(RateLimited):
        await studio.generate(REQ, ALICE)
    assert naps.delays == [400]
    assert len(provider.calls) == 2
    assert (await row(db, 1))["cost_state"] == "refunded"


async def test_queue_full_is_refused_for_free(db: Database, catalogue: Catalogue, provider: Held) -> None:
    """Beyond the waiting cap a new request is rejected at once: recorded, nothing reserved, never sent."""
    jobs = queue(max_running=1, max_waiting_per_user=2)
    studio = make_studio(db, catalogue, provider, jobs)
    tasks = [asyncio.create_task(studio.generate(dataclasses.replace(REQ, prompt="first"), ALICE))]
    await wait_for(lambda: provider.running == 1)
    tasks += [asyncio.create_task(studio.generate(dataclasses.replace(REQ, prompt=f"w{i}"), ALICE)) for i in (1, 2)]
    await wait_for(lambda: jobs.waiting == 2)
    with pytest.raises(QueueFull):
        await studio.generate(dataclasses.replace(REQ, prompt="one too many"), ALICE)
    refused = await row(db, 4)
    assert (refused["status"], refused["cost_state"], refused["error_code"]) == ("rejected", "free", "queue_full")
    bob = asyncio.create_task(studio.generate(REQ, BOB))
    await wait_for(lambda: jobs.waiting == 3)
    provider.open.set()
    await asyncio.gather(*tasks, bob)
    assert "one too many" not in provider.calls
    assert await net(db) == await charged(db)
    assert jobs.waiting_for("alice") == 0


async def test_a_refused_reservation_gives_back_its_place(db: Database, catalogue: Catalogue, provider: Held) -> None:
    """A request over budget does not keep counting against the user's waiting cap."""
    jobs = queue(max_running=1, max_waiting_per_user=1)
    studio = make_studio(db, catalogue, provider, jobs)
    await studio.ledger.set_budget("user", "day", 1)
    with pytest.raises(Exception, match="budget"):
        await studio.generate(REQ, ALICE)
    assert jobs.waiting_for("alice") == 0


async def test_without_a_queue_nothing_changes(db: Database, catalogue: Catalogue, provider: Held) -> None:
    """A Studio without a queue calls at once; a 429 fails the job and refunds it; cancel finds nothing."""
    studio = make_studio(db, catalogue, provider, None)
    provider.failures = [RateLimited("Too many requests.")]
    with pytest.raises(RateLimited):
        await studio.generate(REQ, ALICE)
    assert (await row(db, 1))["cost_state"] == "refunded"
    provider.open.set()
    assert (await studio.generate(REQ, ALICE)).cost > 0
    assert not studio.cancel(2)


# -- resuming after a restart ----------------------------------------------------------------------------


def draft(kind: str = "generate", user: str = "alice", prompt: str = "a fox") -> JobDraft:
    return JobDraft(
        kind=kind,  # type: ignore[arg-type]
        user_id=user,
        guild_id="g1",
        channel_id="c1",
        roles=("r1",),
        model="gpt-image-2",
        provider="stub",
        size="1024x1024",
        quality="low",
        prompt=prompt,
    )


async def test_resume_after_restart(tmp_path: Path, catalogue: Catalogue, provider: Held) -> None:
    """Jobs queued when the process died stay reserved, run under their reservation, and are charged once."""
    path = tmp_path / "easel.db"
    async with await Database.open(path) as before:
        ledger = Ledger(before)
        await ledger.set_budget("user", "day", 10_000_000)
        first = await ledger.reserve(draft(prompt="first"), 50_000)
        running = await ledger.reserve(draft(prompt="in flight"), 40_000)
        await ledger.start(running)
        edit = await ledger.reserve(draft(kind="edit", prompt="a hat"), 30_000)
        second = await ledger.reserve(draft(user="bob", prompt="second"), 20_000)

    async with await Database.open(path) as db:
        ledger = Ledger(db)
        recovery = await ledger.recover(resume_queued=True)
        assert (recovery.refunded, recovery.unknown) == ((), (running,))
        studio = make_studio(db, catalogue, provider, queue(max_running=2))
        waiting = await studio.queued()
        assert [job.job_id for job in waiting] == [first, edit, second]
        assert waiting[0].roles == ("r1",)
        assert waiting[0].estimate == 50_000
        provider.open.set()
        results = await asyncio.gather(*(studio.resume(job) for job in waiting), return_exceptions=True)
        done, refused, other = results
        assert isinstance(refused, JobCancelled)
        assert "did not keep its input images" in refused.message
        assert [getattr(o, "cost", None) for o in (done, other)] == [50_000, 20_000]
        assert provider.calls == ["first", "second"]
        states = {r["id"]: (r["status"], r["cost_state"]) for r in await db.fetchall("SELECT * FROM jobs")}
        assert states == {
            first: ("succeeded", "settled"),
            running: ("failed", "unknown"),
            edit: ("cancelled", "refunded"),
            second: ("succeeded", "settled"),
        }
        assert await studio.queued() == []
        # Resuming again charges nothing twice: the job is no longer queued.
        with pytest.raises(JobCancelled, match="no longer waiting"):
            await studio.resume(waiting[0])
        assert len(provider.calls) == 2
        assert await net(db) == 50_000 + 40_000 + 20_000
        await counters_match_ledger(db)


async def test_resume_refuses_a_job_already_running_here(db: Database, catalogue: Catalogue, provider: Held) -> None:
    """The same job cannot be resumed twice at once in one process."""
    studio = make_studio(db, catalogue, provider, queue(max_running=1))
    job_id = await studio.ledger.reserve(draft(), 1_000)
    (job,) = await queued_jobs(db)
    task = asyncio.create_task(studio.resume(job))
    await wait_for(lambda: provider.running == 1)
    with pytest.raises(ValueError, match="already running"):
        await studio.resume(job)
    provider.open.set()
    assert (await task).job_id == job_id
    assert (await row(db, job_id))["cost_state"] == "settled"


async def test_requeue_only_moves_a_running_reserved_job(db: Database) -> None:
    """The 429 step changes status only, and only for a job that is running with its money reserved."""
    ledger = Ledger(db)
    job_id = await ledger.reserve(draft(), 1_000)
    assert not await requeue(db, job_id)
    await ledger.start(job_id)
    assert await requeue(db, job_id)
    assert ((await row(db, job_id))["status"], (await row(db, job_id))["started_at"]) == ("queued", None)
    await ledger.settle(job_id, 1_000)
    assert not await requeue(db, job_id)
    assert await net(db) == 1_000


async def test_mock_vary_still_works_with_a_queue(db: Database, catalogue: Catalogue) -> None:
    """The other verbs go through the queue too."""
    studio = make_studio(db, catalogue, MockProvider(), queue(max_running=1))
    outcome = await studio.vary(VaryRequest(image=InputImage(images.png(64, 64))), ALICE)
    assert (await row(db, outcome.job_id))["status"] == "succeeded"


# -- cost of a start or an end ------------------------------------------------------------------------


async def test_positions_in_one_pass_match_each_jobs_own() -> None:
    """The one-pass positions the queue reports equal `position()` job by job, through a random backlog."""
    rng = random.Random(5)
    line = Line(queue(max_running=3, per_user=2, per_guild=3))
    for job in range(1, 61):
        line.submit(job, f"u{rng.randrange(8)}", f"g{rng.randrange(3)}")
        if job % 7 == 0:
            await settle()
    await settle()
    while line.running:
        waiting = [job for job in line.tasks if job not in line.running and not line.tasks[job].done()]
        for job in waiting:
            own = line.queue.position(job)
            assert own is not None
            assert own > 0
            assert line.positions[job][-1] == own
        await line.finish(rng.choice(sorted(line.running)))
    assert all(task.done() for task in line.tasks.values())
    assert all(reports[-1] == 0 for reports in line.positions.values())


async def test_a_start_wakes_only_the_granted_job_and_the_listeners() -> None:
    """Jobs that do not listen for their place stay asleep when another job starts or ends."""

    class Watched(JobQueue):
        woken: ClassVar[list[list[int]]] = []

        def _dispatch(self) -> None:
            super()._dispatch()
            self.woken.append(sorted(job for job, waiter in self._jobs.items() if waiter.wake.is_set()))

    jobs = Watched(max_running=1, per_user=1, per_guild=1)
    gates = {job: asyncio.Event() for job in (1, 2, 3, 4)}
    heard: list[int] = []

    async def listen(position: int) -> None:
        heard.append(position)

    async def run(job: int, user: str, listener: bool) -> None:
        async with jobs.slot(job, user, on_position=listen if listener else None):
            await gates[job].wait()

    tasks = [
        asyncio.create_task(run(1, "a", False)),
        asyncio.create_task(run(2, "b", False)),
        asyncio.create_task(run(3, "c", False)),
        asyncio.create_task(run(4, "d", True)),
    ]
    await settle()
    assert heard == [3]
    jobs.woken.clear()
    gates[1].set()
    await settle()
    assert jobs.position(2) == 0
    assert jobs.woken == [[2, 4]]  # job 3 moved up too, but nobody listens for it
    assert heard == [3, 2]
    for job in (2, 3, 4):
        gates[job].set()
        await settle()
    await asyncio.gather(*tasks)
    assert heard == [3, 2, 1, 0]
