"""InFlight: a stop waits for the work in flight, up to its grace, and turns new work away meanwhile."""

from __future__ import annotations

import asyncio

from bot.inflight import InFlight


async def test_drain_waits_for_work_in_flight() -> None:
    in_flight = InFlight()
    release = asyncio.Event()
    finished: list[str] = []

    async def reply() -> None:
        async with in_flight.track():
            await release.wait()
            finished.append("reply")

    task = asyncio.create_task(reply())
    await asyncio.sleep(0)
    assert in_flight.running == 1
    drain = asyncio.create_task(in_flight.drain(grace=30))
    await asyncio.sleep(0)
    assert in_flight.closing
    assert not drain.done()
    release.set()
    assert await drain is True
    assert finished == ["reply"]
    await task
    assert in_flight.running == 0


async def test_drain_gives_up_after_its_grace() -> None:
    in_flight = InFlight()
    stuck = asyncio.Event()

    async def reply() -> None:
        async with in_flight.track():
            await stuck.wait()

    task = asyncio.create_task(reply())
    await asyncio.sleep(0)
    assert await in_flight.drain(grace=0.01) is False
    assert in_flight.running == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert in_flight.running == 0


async def test_failed_work_still_counts_as_ended() -> None:
    in_flight = InFlight()

    async def broken() -> None:
        async with in_flight.track():
            raise RuntimeError("boom")

    await asyncio.gather(broken(), return_exceptions=True)
    assert in_flight.running == 0
    assert await in_flight.drain(grace=0) is True
