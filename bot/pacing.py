"""Pacing: keep each turn of the event loop short when a burst makes many tasks ready at once.

asyncio runs, in one turn, every callback that was ready when the turn began, and nothing else meanwhile.
When two hundred interactions arrive together, each one's first step (discord.py parsing it, the guard,
the defer's request) lands in the same turn or two: ~40 ms each on bench/bot.py's loopback Discord, during
which no heartbeat, timer or other member's click runs. The same happens when a hundred jobs finish
together and each builds and uploads its result.

`Pacer.turn()` is awaited at the start of such work. While the current turn is younger than the budget
it returns at once; once the turn is older, it yields to the next turn and asks again there. The work
then spreads over several short turns, in the order it arrived, and everything else gets in between.
Nothing waits for a timer, so an idle bot pays one clock reading per call.

Urgent work (the gateway reading its frames, the defers) has a larger budget, 5 ms against 2 ms: in a turn
that other work has already made long, it still goes on, and the rest waits. Measured on bench/bot.py's
loopback Discord, three interleaved rounds: one 5 ms budget for everything lagged 22-31 ms at worst in the
burst and 24-33 ms in the 100 × 2 s case; 2 ms for everything made the burst's defers slower without
clearly better lags; 2 ms with 5 ms for urgent work lagged 12-22 and 22-25 ms with the defers' p99 at 39-54 ms.

Work becomes ready together wherever many waits end at once, so the turns are taken there: each
command's first step (the tree's check), the defer, the estimate edit, a job's reservation, start, call
and the provider's answer (`Studio.pace`: a group commit ends many reservations and starts at once), a
result's building and its upload, and its reactions.

Some work also goes before other work. A defer answers Discord's 3 s rule, and posting a result is
what the member is waiting for; a reply's work after its defer can wait a little, and a result's
reactions can wait longer (Discord lets a bot add about one reaction per quarter second per channel, and
the result is usable without them). So the pacer keeps two kinds of urgent work, `defers` and
`results`: each an `Urgent` count, whose `quiet()` returns once none of that kind is going on, or after
`QUIET_CAP` seconds at the most. When two hundred interactions arrive together, their defers (paced
too) go out over short turns first, and the replies' follow-up work starts once they are all out,
instead of between them; when a hundred results go out together, their reactions follow them.

Most commands are acknowledged straight from their gateway frame (`cogs.first`), before discord.py
builds them; those acknowledgements count as `defers` from the moment the frame is read, and the frames
are built once none is on its way. The others defer through `Renderer.defer`.

The defers themselves go out a few at a time (`Pacer.callbacks`, a `Slots`): each is an HTTP request,
and one that finds no idle keep-alive connection opens a new one. Sixteen at a time take over the
connections the ones before them leave behind, instead of two hundred opening two hundred; one that
waits a quarter of a second goes ahead on a connection of its own, so a slow Discord never stretches
the 3 s rule.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from bot.inflight import InFlight

T = TypeVar("T")

CALLBACK_SLOTS = 16
"""Defers on their way to Discord at once; more wait for one to finish and take its warm connection."""
CALLBACK_PATIENCE = 0.25
"""Seconds a defer waits for a slot before it goes ahead on a new connection of its own."""
TURN_BUDGET = 0.002
"""Seconds of one loop turn that paced work may start in; later work waits for the next turn."""
URGENT_BUDGET = 0.005
"""The same for urgent work (the gateway's frames, the defers): it goes on in turns other work has left."""
QUIET_CAP = 2.0
"""Seconds at most that work waiting for a quiet moment waits, however busy the bot stays."""


class Urgent:
    """A count of urgent work of one kind, and a way for other work to wait until there is none."""

    def __init__(self) -> None:
        self._going = InFlight()

    @property
    def busy(self) -> bool:
        """True while urgent work of this kind is going on."""
        return self._going.running > 0

    def spawn(self, work: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run `work` as a task of its own, urgent from now (before the task first runs) until it ends."""
        return self._going.spawn(work, name=name)

    def urgent(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Count the enclosed work as urgent: work waiting in `quiet()` goes after it."""
        return self._going.track()

    async def quiet(self, cap: float = QUIET_CAP) -> None:
        """Return once no urgent work of this kind is going on (at once if none is), or after `cap` s at most."""
        if not self.busy:
            return
        # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that comes as the wait ends.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(cap):
                await self._going.idle()


class Slots:
    """At most `size` pieces of work at once; one that has waited `patience` seconds goes ahead anyway.

    For the defers of a burst: each is an HTTP request, and one that finds no idle keep-alive connection
    opens a new one (on Discord, a TCP and TLS handshake on the loop). A few at a time reuse the
    connections the previous ones leave behind; the patience keeps a slow Discord from holding up the
    3 s rule, since past it a defer opens a connection as it would without slots.
    """

    def __init__(self, size: int, patience: float) -> None:
        self.size = size
        self.patience = patience
        self.taken = 0
        """Slots held now."""
        self.overflowed = 0
        """Pieces that went ahead without a slot, having waited out the patience."""
        # A future and a timer for each waiting piece: a semaphore behind `wait_for` costs a task each, and in a
        # burst nearly every defer waits.
        self._line: collections.deque[asyncio.Future[bool]] = collections.deque()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the enclosed work, or go ahead without one after `patience` seconds."""
        held = await self._take()
        try:
            yield
        finally:
            if held:
                self._give_back()

    async def _take(self) -> bool:
        """True once this piece holds a slot; False once it has waited out the patience without one."""
        if self.taken < self.size and not self._line:
            self.taken += 1
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._line.append(waiter)
        timer = loop.call_later(self.patience, _give_up, waiter)
        try:
            held = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._give_back()  # handed a slot just as it was cancelled: the next in line has it
            raise
        finally:
            timer.cancel()
        if not held:
            self.overflowed += 1
        return held

    def _give_back(self) -> None:
        """Hand the slot straight to the first piece still waiting, or free it."""
        while self._line:
            waiter = self._line.popleft()
            if not waiter.done():  # not given up, not cancelled
                waiter.set_result(True)
                return
        self.taken -= 1


def _give_up(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Pacer:
    """Spreads paced work over turns of the running event loop; one per bot, shared by every cog."""

    def __init__(
        self,
        budget: float = TURN_BUDGET,
        urgent_budget: float = URGENT_BUDGET,
        clock: Callable[[], float] = time.perf_counter,
        callback_slots: int = CALLBACK_SLOTS,
        callback_patience: float = CALLBACK_PATIENCE,
    ) -> None:
        self.budget = budget
        self.urgent_budget = urgent_budget
        self._clock = clock
        self._began: float | None = None
        self.yields = 0
        """Times work was put off to a later turn (for the bench and the logs)."""
        self.defers = Urgent()
        """Defers on their way: a reply's work after its defer, and reactions, wait for them."""
        self.results = Urgent()
        """Results being posted: reactions wait for them."""
        self.callbacks = Slots(callback_slots, callback_patience)
        """Defers on their way to Discord: a few at a time, on the connections the previous ones used."""

    async def turn(self, *, urgent: bool = False) -> None:
        """Return once this turn of the loop has room for more work (at once, unless it is already long);
        `urgent` work has the larger `urgent_budget`."""
        budget = self.urgent_budget if urgent else self.budget
        while True:
            now = self._clock()
            if self._began is None:
                # The first paced work of this turn: the turn's clock starts, and stops at the next turn.
                self._began = now
                asyncio.get_running_loop().call_soon(self._next_turn)
                return
            if now - self._began < budget:
                return
            self.yields += 1
            await asyncio.sleep(0)

    def _next_turn(self) -> None:
        self._began = None
