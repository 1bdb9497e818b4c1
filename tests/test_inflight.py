"""InFlight: a stop waits for the work in flight, up to its grace, and turns new work away meanwhile."""

from __future__ import annotations

import asyncio
import logging

import pytest

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


async def test_spawned_work_counts_from_the_moment_it_is_handed_over() -> None:
    in_flight = InFlight()
    release = asyncio.Event()
    finished: list[str] = []

    async def reactions() -> None:
        await release.wait()
        finished.append("reactions")

    in_flight.spawn(reactions(), name="reactions")
    # The task has not run yet, and a stop beginning now still waits for it.
    assert in_flight.running == 1
    drain = asyncio.create_task(in_flight.drain(grace=30))
    await asyncio.sleep(0)
    assert not drain.done()
    release.set()
    assert await drain is True
    assert finished == ["reactions"]
    assert in_flight.running == 0


async def test_a_spawned_failure_is_logged_and_still_counts_as_ended(caplog: pytest.LogCaptureFixture) -> None:
    in_flight = InFlight()

    async def broken() -> None:
        raise RuntimeError("boom")

    task = in_flight.spawn(broken(), name="reactions for job 7")
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert in_flight.running == 0
    assert await in_flight.drain(grace=0) is True
    failures = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert [record.getMessage() for record in failures] == ["reactions for job 7 failed"]
    assert failures[0].exc_info is not None
    assert "boom" in str(failures[0].exc_info[1])
