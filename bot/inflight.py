"""Work in flight that a clean stop lets finish: replies being made, results being posted.

A stop (SIGTERM, Ctrl-C) closes the HTTP client and the database. Closing them under a reply that is
still uploading its images loses the message although the job is paid for, so the bot first calls
`drain()`: from then on `closing` is true (new work is turned away with a sentence), and it waits, up to
a limit, until every `track()`ed piece of work has ended. Work still going at the limit is left to the
close; queued jobs it cuts off stay reserved for the next start (see `bot.store.ledger.Ledger.recover`).

Work that should not hold up its caller (a result's reactions, added after the result is posted) is
`spawn()`ed: it is counted from the moment it is handed over, before its task first runs, so a stop that
begins in between still waits for it; and its failure is logged, never lost with an unwatched task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class InFlight:
    """A count of work in flight, and a way to wait until there is none."""

    def __init__(self) -> None:
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = False
        """True once a stop has begun: start nothing new."""
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def running(self) -> int:
        return self._running

    @contextlib.asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        """Count the enclosed work as in flight until it ends, however it ends."""
        self._begin()
        try:
            yield
        finally:
            self._end()

    def spawn(self, work: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run `work` as a task of its own, counted as in flight from now until it ends; a failure is logged."""
        self._begin()
        task = asyncio.get_running_loop().create_task(work, name=name)
        # The loop holds only a weak reference to a task: this set keeps it alive until it is done.
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)
        return task

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._end()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("%s failed", task.get_name(), exc_info=error)

    def _begin(self) -> None:
        self._running += 1
        self._idle.clear()

    def _end(self) -> None:
        self._running -= 1
        if self._running == 0:
            self._idle.set()

    async def idle(self) -> None:
        """Return once nothing is in flight (at once if nothing is)."""
        await self._idle.wait()

    async def drain(self, grace: float) -> bool:
        """Turn new work away, then wait up to `grace` seconds for the work in flight; True if it all ended."""
        self.closing = True
        if self._running == 0:
            return True
        log.info("stopping: waiting up to %.0f s for %d repl(ies) in flight", grace, self._running)
        try:
            async with asyncio.timeout(grace):  # not wait_for, which on 3.11 can lose a cancellation
                await self.idle()
        except TimeoutError:
            log.warning("stopping: %d repl(ies) still in flight after %.0f s; closing anyway", self._running, grace)
            return False
        return True
