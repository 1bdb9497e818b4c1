"""The pacer: paced work spreads over turns of the event loop once a turn is past its budget."""

from __future__ import annotations

import asyncio

import pytest

from bot.pacing import Pacer, Slots, Urgent


class Clock:
    """A clock that moves only when the work below says it took time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def turns_between(pacer: Pacer, clock: Clock, jobs: int, cost: float, *, urgent: bool = False) -> list[int]:
    """Run `jobs` paced tasks costing `cost` s each; how many finished between two steps of a ticker."""
    finished = 0
    seen: list[int] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = 0
        while not done.is_set():
            seen.append(finished - last)
            last = finished
            await asyncio.sleep(0)
        seen.append(finished - last)

    async def job() -> None:
        nonlocal finished
        await pacer.turn(urgent=urgent)
        clock.now += cost  # the work of one task's first step
        finished += 1

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await asyncio.gather(*(job() for _ in range(jobs)))
    done.set()
    await ticking
    return [count for count in seen if count]


async def test_a_burst_is_spread_over_turns_within_the_budget() -> None:
    """Twenty 2 ms steps with a 5 ms budget: three a turn (0, 2 and 4 ms in), the ticker runs in between."""
    clock = Clock()
    pacer = Pacer(budget=0.005, clock=clock)
    counts = await turns_between(pacer, clock, jobs=20, cost=0.002)
    assert sum(counts) == 20
    assert max(counts) == 3
    assert len(counts) >= 7
    assert pacer.yields > 0


async def test_urgent_work_has_the_larger_budget() -> None:
    """1 ms steps with budgets of 2 ms and 5 ms (urgent): two a turn, or five when urgent."""
    clock = Clock()
    pacer = Pacer(budget=0.002, urgent_budget=0.005, clock=clock)
    assert max(await turns_between(pacer, clock, jobs=20, cost=0.001)) == 2
    assert max(await turns_between(pacer, clock, jobs=20, cost=0.001, urgent=True)) == 5


async def test_in_a_turn_past_the_budget_only_urgent_work_goes_on() -> None:
    clock = Clock()
    pacer = Pacer(budget=0.002, urgent_budget=0.005, clock=clock)
    order: list[str] = []

    async def work(name: str, urgent: bool) -> None:
        await pacer.turn(urgent=urgent)
        order.append(name)
        clock.now += 0.0015

    # In one turn: "a" starts the turn's clock, "b" finds it 1.5 ms old, the rest find it 3 ms old.
    await asyncio.gather(work("a", False), work("b", False), work("later", False), work("defer", True))
    assert order == ["a", "b", "defer", "later"]


async def test_cheap_work_runs_in_the_turn_it_arrives() -> None:
    """Work that stays inside the budget is never put off."""
    clock = Clock()
    pacer = Pacer(budget=0.005, clock=clock)
    counts = await turns_between(pacer, clock, jobs=20, cost=0.0001)
    assert counts == [20]
    assert pacer.yields == 0


async def test_a_new_turn_gets_a_new_budget() -> None:
    """A long turn does not hold back the work of the turns after it."""
    clock = Clock()
    pacer = Pacer(budget=0.005, clock=clock)
    await pacer.turn()
    clock.now += 1.0  # a slow turn
    await asyncio.sleep(0)  # the next turn
    await asyncio.sleep(0)
    before = pacer.yields
    await pacer.turn()
    assert pacer.yields == before


async def test_quiet_returns_at_once_when_nothing_is_urgent() -> None:
    pacer = Urgent()
    assert not pacer.busy
    await asyncio.wait_for(pacer.quiet(cap=30), timeout=1)


async def test_quiet_waits_until_every_urgent_piece_of_work_has_ended() -> None:
    pacer = Urgent()
    order: list[str] = []
    first, second = asyncio.Event(), asyncio.Event()

    async def post(name: str, release: asyncio.Event) -> None:
        async with pacer.urgent():
            await release.wait()
            order.append(name)

    async def react() -> None:
        await pacer.quiet(cap=30)
        order.append("reactions")

    posts = [asyncio.create_task(post("first", first)), asyncio.create_task(post("second", second))]
    await asyncio.sleep(0)
    assert pacer.busy
    waiting = asyncio.create_task(react())
    first.set()
    await asyncio.sleep(0.01)
    assert order == ["first"]
    second.set()
    await asyncio.gather(*posts, waiting)
    assert order == ["first", "second", "reactions"]
    assert not pacer.busy


async def test_quiet_gives_up_waiting_after_its_cap() -> None:
    """A bot that never goes quiet still adds its reactions, only later."""
    pacer = Urgent()
    never = asyncio.Event()

    async def post() -> None:
        async with pacer.urgent():
            await never.wait()

    busy = asyncio.create_task(post())
    await asyncio.sleep(0)
    await asyncio.wait_for(pacer.quiet(cap=0.01), timeout=5)
    assert pacer.busy
    busy.cancel()
    await asyncio.gather(busy, return_exceptions=True)
    assert not pacer.busy


async def test_slots_let_so_many_pieces_through_at_once_in_the_order_they_came() -> None:
    slots = Slots(2, patience=30)
    running: list[int] = []
    most = 0
    order: list[int] = []
    release = asyncio.Event()

    async def piece(number: int) -> None:
        nonlocal most
        async with slots.slot():
            order.append(number)
            running.append(number)
            most = max(most, len(running))
            await release.wait()
            running.remove(number)

    pieces = [asyncio.create_task(piece(number)) for number in range(5)]
    await asyncio.sleep(0.01)
    assert order == [0, 1]
    assert slots.taken == 2
    release.set()
    await asyncio.gather(*pieces)
    assert order == [0, 1, 2, 3, 4]
    assert most == 2
    assert slots.taken == 0
    assert slots.overflowed == 0


async def test_a_piece_that_waits_out_its_patience_goes_ahead_without_a_slot() -> None:
    """A slow Discord must not hold a defer back past the 3 s rule: past the patience it goes on its own."""
    slots = Slots(1, patience=0.01)
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with slots.slot():
            held.set()
            await release.wait()

    holding = asyncio.create_task(holder())
    await held.wait()
    async with slots.slot():
        assert slots.overflowed == 1
        assert slots.taken == 1, "the piece that went ahead holds no slot"
    release.set()
    await holding
    assert slots.taken == 0
    # The slot the holder gave back is free: the next piece takes it at once.
    async with slots.slot():
        assert slots.taken == 1
    assert slots.overflowed == 1


async def test_a_piece_that_fails_gives_its_slot_back() -> None:
    slots = Slots(1, patience=30)

    async def fails() -> None:
        async with slots.slot():
            raise RuntimeError("Discord said no")

    with pytest.raises(RuntimeError):
        await fails()
    assert slots.taken == 0

    async def next_piece() -> int:
        async with slots.slot():
            return slots.taken

    assert await asyncio.wait_for(next_piece(), timeout=1) == 1
    assert slots.overflowed == 0


async def three_in_line(
    slots: Slots, names: tuple[str, str, str], order: list[str], release: asyncio.Event
) -> list[asyncio.Task[None]]:
    """A holder of `slots`' one slot and two pieces waiting behind it, in that order; each notes its name in
    `order` once it holds the slot, then waits for `release`."""

    async def piece(name: str) -> None:
        async with slots.slot():
            order.append(name)
            await release.wait()

    holder = asyncio.create_task(piece(names[0]))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(piece(name)) for name in names[1:]]
    await asyncio.sleep(0)
    return [holder, *waiting]


async def test_a_piece_cancelled_in_line_takes_no_slot_and_the_next_one_gets_it() -> None:
    slots = Slots(1, patience=30)
    release = asyncio.Event()
    order: list[str] = []
    holder, cancelled, last = await three_in_line(slots, ("holder", "cancelled", "last"), order, release)
    cancelled.cancel()
    release.set()
    await asyncio.gather(holder, last)
    assert cancelled.cancelled()
    assert order == ["holder", "last"]
    assert slots.taken == 0
    assert slots.overflowed == 0


async def test_a_slot_handed_to_a_piece_as_it_is_cancelled_passes_on() -> None:
    """The holder leaves and the next in line is cancelled before it runs: the slot goes to the one after."""
    slots = Slots(1, patience=30)
    order: list[str] = []
    release = asyncio.Event()
    holder, unlucky, after = await three_in_line(slots, ("holder", "unlucky", "after"), order, release)
    release.set()
    # One turn: the holder wakes, leaves and hands its slot to `unlucky`, which has not run since.
    await asyncio.sleep(0)
    assert order == ["holder"]
    unlucky.cancel()
    await asyncio.wait_for(asyncio.gather(holder, after), timeout=1)
    assert unlucky.cancelled()
    assert order == ["holder", "after"]
    assert slots.taken == 0


async def test_a_piece_cancelled_as_the_urgent_work_ends_stays_cancelled() -> None:
    """The wait ends and the waiting task is cancelled before it runs again: the cancellation is not lost."""
    pacer = Urgent()
    release = asyncio.Event()
    went_on: list[str] = []

    async def react() -> None:
        await pacer.quiet(cap=30)
        went_on.append("reactions")

    async def post() -> None:
        async with pacer.urgent():
            await release.wait()
        waiting.cancel()  # in the same step that ended the urgent work: the waiter has not run since

    posting = asyncio.create_task(post())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(react())
    await asyncio.sleep(0)
    release.set()
    await posting
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled()
    assert went_on == []
