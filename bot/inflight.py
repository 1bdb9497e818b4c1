"""Work in flight that a clean stop lets finish: replies being made, results being posted.

A stop (SIGTERM, Ctrl-C) closes the HTTP client and the database. Closing them under a reply that is
still uploading its images loses the message although the job is paid for, so the bot first calls
`drain()`: from then on `closing` is true (new work is turned away with a sentence), and it waits, up to
a limit, until every `track()`ed piece of work has ended. Work still going at the limit is left to the
close; queued jobs it cuts off stay reserved for the next start (see `bot.store.ledger.Ledger.recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

log = logging.getLogger(__name__)


class InFlight:
    """A count of work in flight, and a way to wait until there is none."""

    def __init__(self) -> None:
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = False
        """True once a stop has begun: start nothing new."""

    @property
    def running(self) -> int:
        return self._running

    @contextlib.asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        """Count the enclosed work as in flight until it ends, however it ends."""
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
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
            await asyncio.wait_for(self.idle(), grace)
        except TimeoutError:
            log.warning("stopping: %d repl(ies) still in flight after %.0f s; closing anyway", self._running, grace)
            return False
        return True
