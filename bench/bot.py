"""Benchmark the bot end to end: a real EaselBot on simcord's simulated Discord, with the mock provider.

    python bench/bot.py              # 200-interaction burst, 20 single jobs, 100 jobs at 2 s latency (~1 min)
    python bench/bot.py --quick      # 50-interaction burst, 5 single jobs, the same 100 jobs
    python bench/bot.py --profile    # also: each case's time by piece, GC pauses, slowest loop callbacks
    python bench/bot.py --discord loopback   # Discord over real HTTP and a websocket, in another process
    python bench/bot.py --repeat 3   # each case three times, on a fresh bot each: every run's figure, and
                                     # how many runs met the target (this machine's speed swings a lot)

The bot runs as in production (`workers="process"`, every extension, commands synced, data in a temporary
folder), with the mock provider, whose drawing runs in two processes of its own (`DrawingProcesses`: a
real provider draws on its own machines, not under the bot's GIL). Discord is one of two fakes:

- `simcord` (the default): simcord's simulated Discord on the bot's own event loop, as the tests use it.
  Its work (routing, copying state) counts as the bot's, and a burst reaches the bot one interaction per
  turn of the loop.
- `loopback`: the fake the smoke tests use (`tests/fakes/discord_server.py`), in a process of its own. The
  bot talks to it over real HTTP and a real gateway websocket, so its process does what it does in
  production and no more; a burst arrives as fast as the socket carries it.

Every figure is real wall time (`time.perf_counter`, CLOCK_MONOTONIC, the same clock in every process):
simcord's virtual clock is left alone, and the mock provider's latency runs on a real timer. See
bench/README.md.

Heavy imports (discord.py, simcord, the bot) happen inside functions, not at the top: each image worker
process re-imports this script, and should carry no more than the bot's own workers do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import cProfile
import functools
import gc
import io
import itertools
import logging
import math
import os
import platform
import pstats
import resource
import statistics
import sys
import tempfile
import threading
import time
import types
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if TYPE_CHECKING:
    import simcord

    from bot.api.mock import MockProvider
    from bot.app import EaselBot
    from bot.config import Settings

MiB = 1024 * 1024
SIZE = "1024x1024"
DONE_TIMEOUT = 900.0
"""Seconds a case may take before the bench gives up on it."""
SCRIPT = str(Path(__file__).resolve())
REAL_MONOTONIC = time.monotonic
"""The real clock, taken before simcord replaces `time.monotonic` with its virtual one."""


STAND_IN_NICE = 10
"""The niceness of the processes standing in for other machines (the fake Discord, the mock's drawing):
on this machine they share the bot's CPUs, so they take only the CPU time the bot leaves them first."""

BENCH_TOKEN = "bench-token"  # noqa: S105 (the fake Discord's, not a secret)
LABELS = {
    "loopback": "the loopback fake (tests/fakes/discord_server.py) in its own process, over HTTP and a websocket",
    "simcord": "simcord, on the bot's own event loop",
}


@dataclass(frozen=True)
class Options:
    quick: bool = False
    profile: bool = False
    discord: str = "simcord"
    """"simcord" (in this process) or "loopback" (the fake in its own process, over HTTP and a websocket)."""
    only: str | None = None
    """One case ("burst", "single" or "throughput"), or every case."""
    repeat: int = 1
    """Runs of each case, each on a fresh bot; the table shows every run's figure and how many passed."""
    callbacks: str = "keepalive"
    """How commands answered from their frame send their callback: "keepalive" (`bot.keepalive`, as the bot
    does) or "aiohttp" (discord.py's session, as the bot does behind a proxy): the A/B for the lean client."""


# --- measuring ----------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    """The `share` quantile (0-1) of `values`, by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(share * len(ordered))))
    return ordered[rank - 1]


@dataclass
class Probe:
    """Timestamps per interaction (dispatched, deferred, finished), per job, and per piece of a job."""

    dispatched: dict[int, float] = field(default_factory=dict)
    deferred: dict[int, float] = field(default_factory=dict)
    finished: dict[int, float] = field(default_factory=dict)
    provider: dict[int, float] = field(default_factory=dict)
    """Interaction id → seconds the provider took for its job (`ImageResult.provider_ms`)."""
    job_of: dict[int, int] = field(default_factory=dict)
    waited: dict[int, float] = field(default_factory=dict)
    """Job id → seconds between asking the JobQueue for a slot and getting it."""
    parsed: dict[int, float] = field(default_factory=dict)
    """Interaction id → when discord.py built its `Interaction` from the INTERACTION_CREATE frame."""
    defer_called: dict[int, float] = field(default_factory=dict)
    """Interaction id → when the command called `InteractionResponse.defer`."""
    defer_written: dict[int, float] = field(default_factory=dict)
    """Interaction id → when aiohttp had written the type-5 callback into its socket (loopback only)."""
    loop_cpu: list[float] = field(default_factory=list)
    """The loop thread's CPU time (`time.thread_time`) at the first parse and at each defer written."""
    failed: set[int] = field(default_factory=set)
    pieces: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    """Label → the wall time of every call of that piece (see `instrumented`)."""
    expected: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def finish(self, interaction_id: int, *, ok: bool) -> None:
        self.finished[interaction_id] = time.perf_counter()
        if not ok:
            self.failed.add(interaction_id)
        if len(self.finished) >= self.expected:
            self.done.set()

    def defer(self, ids: Sequence[int]) -> list[float]:
        """Seconds from INTERACTION_CREATE to the type-5 callback reaching (fake) Discord."""
        return [self.deferred[i] - self.dispatched[i] for i in ids if i in self.deferred]

    def defer_parts(self, ids: Sequence[int]) -> list[list[float]]:
        """The time to defer in four parts: sent → parsed → `defer` called → written → received."""
        stamps = (self.dispatched, self.parsed, self.defer_called, self.defer_written, self.deferred)
        every = [i for i in ids if all(i in stamp for stamp in stamps)]
        return [[later[i] - earlier[i] for i in every] for earlier, later in itertools.pairwise(stamps)]

    def arrival_busy(self) -> tuple[float, float] | None:
        """Wall and loop CPU seconds from the first frame parsed to the last defer written (loopback only)."""
        if not self.parsed or not self.defer_written or len(self.loop_cpu) < 2:
            return None
        return max(self.defer_written.values()) - min(self.parsed.values()), self.loop_cpu[-1] - self.loop_cpu[0]

    def total(self, interaction_id: int) -> float:
        """Seconds from INTERACTION_CREATE to the end of `Renderer.run`: the result is posted and recorded."""
        return self.finished[interaction_id] - self.dispatched[interaction_id]

    def wait(self, interaction_id: int) -> float:
        job = self.job_of.get(interaction_id)
        return self.waited.get(job, 0.0) if job is not None else 0.0

    def done_ok(self, ids: Sequence[int]) -> list[int]:
        return [i for i in ids if i in self.finished and i not in self.failed and i in self.provider]

    def overheads(self, ids: Sequence[int]) -> list[float]:
        """Per successful job: its total time, less the provider's time and its wait for a queue slot."""
        return [self.total(i) - self.provider[i] - self.wait(i) for i in self.done_ok(ids)]


class StampedLog(list):  # type: ignore[type-arg]
    """simcord's HTTP log, kept empty: it notes when each interaction's type-5 ("thinking…") callback arrives."""

    def __init__(self, probe: Probe) -> None:
        super().__init__()
        self._probe = probe
        self.requests = 0

    def append(self, entry: Any) -> None:
        now = time.perf_counter()
        self.requests += 1
        if entry.method == "POST" and entry.path.endswith("/callback") and (entry.json or {}).get("type") == 5:
            # /interactions/{id}/{token}/callback
            self._probe.deferred.setdefault(int(entry.path.split("/")[2]), now)


class NullLog(list):  # type: ignore[type-arg]
    """simcord's transcript, kept empty."""

    def append(self, entry: Any) -> None:
        pass


class ForgetfulBlobs(dict):  # type: ignore[type-arg]
    """simcord's fake CDN, counting what is uploaded instead of keeping it (Discord keeps it, not the bot)."""

    uploaded = 0

    def __setitem__(self, url: str, data: bytes) -> None:
        self.uploaded += len(data)


class LagMeter:
    """The longest the event loop went without running a 1 ms ticker, less the 1 ms."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_at = 0.0
        """Seconds from `start` to the end of the worst gap."""
        self.gaps: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._started = 0.0

    async def _tick(self) -> None:
        last = time.perf_counter()
        while self._running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gap = now - last - 0.001
            self.gaps.append(gap)
            if gap > self.worst:
                self.worst, self.worst_at = gap, now - self._started
            last = now

    def describe(self) -> str:
        """The worst lag, and when it ended."""
        return f"{ms(self.worst)} ({self.worst_at:.2f} s in)"

    def start(self) -> None:
        self._running = True
        self._started = time.perf_counter()
        self._task = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        self._running = False
        if self._task is not None:
            await self._task


class LoopWatch:
    """For --profile: the event loop's slowest callbacks, and every pause of the garbage collector."""

    def __init__(self) -> None:
        self.slow: list[tuple[float, str]] = []
        self.pauses: dict[int, list[float]] = defaultdict(list)
        self._began = 0.0
        self.turns: list[tuple[float, int, dict[str, list[float]]]] = []
        """The longest turns of the loop: callbacks' total time, how many ran, and their time by kind."""
        self._turn: dict[str, list[float]] = defaultdict(list)

    def _collecting(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._began)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        original = asyncio.events.Handle._run
        slow = self.slow

        def run(handle: asyncio.Handle) -> None:
            what = _describe(handle)
            start = time.perf_counter()
            try:
                original(handle)
            finally:
                took = time.perf_counter() - start
                self._turn[what].append(took)
                if took > 0.005:
                    slow.append((took, what + _suspended_at(handle)))

        loop = asyncio.get_running_loop()
        original_turn = loop._run_once  # type: ignore[attr-defined]

        def one_turn() -> None:
            self._turn = defaultdict(list)
            original_turn()
            busy = sum(sum(times) for times in self._turn.values())
            if busy > 0.01:
                self.turns.append((busy, sum(len(times) for times in self._turn.values()), self._turn))
                self.turns = sorted(self.turns, key=lambda turn: turn[0], reverse=True)[:3]

        asyncio.events.Handle._run = run  # type: ignore[method-assign,assignment]
        loop._run_once = one_turn  # type: ignore[attr-defined]
        gc.callbacks.append(self._collecting)
        try:
            yield
        finally:
            gc.callbacks.remove(self._collecting)
            asyncio.events.Handle._run = original  # type: ignore[method-assign]
            del loop._run_once  # type: ignore[attr-defined]

    def summary(self) -> list[str]:
        lines = []
        for generation in sorted(self.pauses):
            pauses = self.pauses[generation]
            lines.append(
                f"- GC generation {generation}: {len(pauses)} collections, longest {ms(max(pauses))}, "
                f"median {ms(statistics.median(pauses))}"
            )
        worst = sorted(self.slow, reverse=True)[:5]
        if worst:
            lines.append("- slowest event-loop callbacks: " + "; ".join(f"{ms(took)} {what}" for took, what in worst))
        for busy, count, kinds in self.turns:
            top = sorted(kinds.items(), key=lambda kind: sum(kind[1]), reverse=True)[:4]
            lines.append(
                f"- a turn of {ms(busy)} ({count} callbacks): "
                + "; ".join(f"{len(times)} × {what}, {ms(sum(times))}" for what, times in top)
            )
        return lines


def _describe(handle: asyncio.Handle) -> str:
    """What a loop callback runs: a task's coroutine, or the function (unwrapped from simcord's tracking)."""
    callback = getattr(handle, "_callback", None)
    callback = getattr(callback, "__simcord_original_callback__", callback)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        where = _resumes_at(coro)
        return f"step of {getattr(coro, '__qualname__', type(coro).__name__)}" + (f" from {where}" if where else "")
    return str(getattr(callback, "__qualname__", type(callback).__name__))


def _suspended_at(handle: asyncio.Handle) -> str:
    """For a task's step that has just run: " to <where it waits now>", or "" once done (or not a task)."""
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)
    if not isinstance(owner, asyncio.Task) or owner.done():
        return ""
    where = _resumes_at(owner.get_coro())
    return f" to {where}" if where else ""


def _resumes_at(coro: Any) -> str | None:
    """Where a suspended task goes on from: the innermost await in Easel's own code (bot/, cogs/)."""
    found = None
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        if frame.f_code.co_filename.startswith(OWN_CODE):
            found = f"{frame.f_code.co_qualname}:{frame.f_lineno}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return found


OWN_CODE = tuple(str(Path(SCRIPT).parents[1] / part) for part in ("bot", "cogs"))


def _descendants(root: int) -> list[int]:
    """`root` and every process below it, from /proc (just `root` off Linux)."""
    parents: dict[int, list[int]] = defaultdict(list)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [root]
    for name in entries:
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        parents[int(stat.rsplit(")", 1)[1].split()[1])].append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, ()))
    return found


def _kib(pid: int, name: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler:
    """Every 100 ms, in a thread: this process's RSS, and the PSS of it and its image workers together.

    PSS (proportional set size) splits the pages forked workers share among them, so the sum is what the
    processes use together; a sum of RSS counts the shared libraries once per worker.
    """

    def __init__(self) -> None:
        self.peak_rss = 0
        self.peak_tree_pss = 0
        self.peak_tree_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pids: list[int] = []

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, _kib(os.getpid(), "status", "VmRSS:") * 1024)
        self.peak_tree_pss = max(self.peak_tree_pss, sum(_kib(p, "smaps_rollup", "Pss:") for p in self._pids) * 1024)
        self.peak_tree_rss = max(self.peak_tree_rss, sum(_kib(p, "status", "VmRSS:") for p in self._pids) * 1024)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.sample()

    def start(self, exclude: Sequence[int] = ()) -> None:
        # The pool's processes are all up once the bot has started (and stay, unless one dies).
        self._pids = [pid for pid in _descendants(os.getpid()) if pid not in exclude]
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    @property
    def processes(self) -> int:
        return len(self._pids)


def busy_share(seconds: float = 1.0) -> float | None:
    """The share of all CPUs busy over the next `seconds`, from /proc/stat (None off Linux)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (busy1 - busy0) / max(1, total1 - total0)


# --- hooks (bench only: they time what the bot does, never change it) ---------------------------------------


@contextlib.contextmanager
def multiprocessing_on_the_real_clock() -> Iterator[None]:
    """Give `multiprocessing.connection` the real `time.monotonic` while simcord runs.

    simcord replaces `time.monotonic` process-wide and, for code running as the bot, returns its virtual
    clock, which stands still. `multiprocessing.connection.wait(timeout=0)` then never times out, so when
    the process pool starts its second worker, `Process.start()` polls the first one forever (100% CPU, no
    progress): `EaselBot(workers="process")` cannot start under simcord 3.2.1 without this.
    """
    import multiprocessing.connection as connection

    clock = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("__")})
    clock.monotonic = REAL_MONOTONIC
    namespace = vars(connection)
    original = namespace["time"]
    namespace["time"] = clock
    try:
        yield
    finally:
        namespace["time"] = original


def _timed(stack: contextlib.ExitStack, owner: Any, name: str, into: list[float]) -> None:
    """Wrap the coroutine function `owner.name` to append each call's wall time to `into`; undone by `stack`."""
    original = getattr(owner, name)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - start)

    setattr(owner, name, wrapper)
    stack.callback(setattr, owner, name, original)


@contextlib.contextmanager
def instrumented(probe: Probe) -> Iterator[None]:
    """Time every /imagine job through `Renderer.run` and the queue, and each step of a job."""
    import aiohttp
    import discord

    import bot.keepalive as keepalive
    import cogs.render
    from bot.imaging.pool import ImageWorkers
    from bot.queue import JobQueue
    from bot.store.images import ImageStore
    from bot.store.ledger import Ledger
    from cogs.first import FirstAnswers
    from cogs.render import Renderer

    with contextlib.ExitStack() as stack:
        original_run = Renderer.run

        async def run(self: Renderer, interaction: Any, who: Any, work: Any, **options: Any) -> Any:
            async def measured(on_partial: Any) -> Any:
                outcome = await work(on_partial)
                probe.provider[interaction.id] = outcome.result.provider_ms / 1000
                probe.job_of[interaction.id] = outcome.job_id
                return outcome

            message = None
            try:
                message = await original_run(self, interaction, who, measured, **options)
                return message
            finally:
                probe.finish(interaction.id, ok=message is not None)

        Renderer.run = run  # type: ignore[method-assign]
        stack.callback(setattr, Renderer, "run", original_run)

        original_slot = JobQueue.slot

        @contextlib.asynccontextmanager
        async def slot(self: JobQueue, job_id: int, *args: Any, **kwargs: Any) -> AsyncIterator[None]:
            start = time.perf_counter()
            async with original_slot(self, job_id, *args, **kwargs):
                probe.waited[job_id] = probe.waited.get(job_id, 0.0) + time.perf_counter() - start
                yield

        JobQueue.slot = slot  # type: ignore[method-assign]
        stack.callback(setattr, JobQueue, "slot", original_slot)

        original_defer = discord.InteractionResponse.defer

        async def defer(self: discord.InteractionResponse[Any], *args: Any, **kwargs: Any) -> Any:
            probe.defer_called.setdefault(self._parent.id, time.perf_counter())
            return await original_defer(self, *args, **kwargs)

        discord.InteractionResponse.defer = functools.wraps(original_defer)(defer)  # type: ignore[method-assign]
        stack.callback(setattr, discord.InteractionResponse, "defer", original_defer)

        # When the callback's bytes are in the socket: the loopback fake's own turns come after that. Callbacks go
        # through aiohttp (behind a proxy, or --callbacks aiohttp) or the bot's own kept-alive client.
        def written(path: str) -> None:
            parts = path.split("/")
            if len(parts) > 4 and parts[-4] == "interactions" and parts[-1] == "callback":
                probe.defer_written.setdefault(int(parts[-3]), time.perf_counter())
                probe.loop_cpu.append(time.thread_time())

        original_write = aiohttp.ClientRequest.write_bytes

        async def write_bytes(self: aiohttp.ClientRequest, *args: Any, **kwargs: Any) -> None:
            await original_write(self, *args, **kwargs)
            written(self.url.path)

        aiohttp.ClientRequest.write_bytes = write_bytes  # type: ignore[method-assign]
        stack.callback(setattr, aiohttp.ClientRequest, "write_bytes", original_write)
        original_send = keepalive._Connection.send

        def send(self: keepalive._Connection, request: bytes) -> asyncio.Future[keepalive.Answer]:
            sent = original_send(self, request)
            written(request.split(b" ", 2)[1].decode("ascii"))
            return sent

        keepalive._Connection.send = send  # type: ignore[method-assign]
        stack.callback(setattr, keepalive._Connection, "send", original_send)

        original_parse = FirstAnswers.parse

        def parse(self: FirstAnswers, data: Any) -> None:
            probe.parsed.setdefault(int(data["id"]), time.perf_counter())
            if not probe.loop_cpu:
                probe.loop_cpu.append(time.thread_time())
            original_parse(self, data)

        FirstAnswers.parse = parse  # type: ignore[method-assign]
        stack.callback(setattr, FirstAnswers, "parse", original_parse)

        original_ack = FirstAnswers._ack

        async def ack(self: FirstAnswers, interaction_id: int, *args: Any) -> bool:
            probe.defer_called.setdefault(interaction_id, time.perf_counter())
            return await original_ack(self, interaction_id, *args)

        FirstAnswers._ack = ack  # type: ignore[method-assign]
        stack.callback(setattr, FirstAnswers, "_ack", original_ack)

        for owner, name, label in (
            (discord.InteractionResponse, "defer", "defer (type-5 callback)"),
            (Renderer, "announce", "announce: budget status + progress edit"),
            (Ledger, "reserve", "ledger: reserve"),
            (Ledger, "start", "ledger: start"),
            (Ledger, "settle", "ledger: settle"),
            (ImageStore, "save", "image store: save (hash, write + fsync, rows)"),
            (ImageWorkers, "fit_and_grid", "fit + grid (process pool)"),
            (ImageWorkers, "fit", "fit (process pool)"),
            (Ledger, "job", "ledger: job lookup"),
            (Renderer, "_result_embed", "result embed (budget status)"),
            (Renderer, "_send", "upload: edit_original_response"),
            (Renderer, "_attach", "image store: attach (a write per image)"),
            (cogs.render, "add_result_reactions", "add 🔁 and 🚩"),
        ):
            _timed(stack, owner, name, probe.pieces[label])
        yield


@contextlib.contextmanager
def dispatch_only(env: simcord.Env) -> Iterator[None]:
    """Make simcord's actor verbs return as soon as INTERACTION_CREATE is emitted, without settling.

    Each verb still yields to the loop once, so a burst arrives as back-to-back gateway events that the
    bot's tasks interleave with, not as one block the loop cannot break.
    """

    async def no_settle(**_options: Any) -> None:
        await asyncio.sleep(0)

    env._settle_internal = no_settle  # type: ignore[method-assign]
    try:
        yield
    finally:
        del env._settle_internal


async def real_sleep(seconds: float) -> None:
    """asyncio.sleep on a timer simcord does not virtualise: the mock provider's latency, in real time.

    simcord ties a bot's timers to its virtual clock, which a timer's real deadline moves only once the
    whole bot is idle; with 100 jobs in flight that would stretch every wait by the other jobs' work.
    Scheduled from an empty context, the timer is the event loop's own.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    handle = contextvars.Context().run(loop.call_later, seconds, wake)
    try:
        await future
    finally:
        handle.cancel()


class RenderCache:
    """Memoise the mock's drawing (`bot.api.mock._render`), so a second pass spends only the latency.

    A real provider draws on its own machines. The mock's drawing runs in `DrawingProcesses`, out of the
    bot's GIL, but still on this machine's 2 CPUs (~45 ms of CPU a 1024² image), which would be most of
    what a 100-job case measures.
    """

    def __init__(self) -> None:
        self.misses = 0
        self._store: dict[tuple[Any, ...], Any] = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import bot.api.mock as mock

        original = mock._render

        def render(job: Any, index: int, partials: int) -> Any:
            key = (job, index, partials)
            if key not in self._store:
                self.misses += 1
                self._store[key] = original(job, index, partials)
            return self._store[key]

        mock._render = render
        try:
            yield
        finally:
            mock._render = original


class DrawingProcesses:
    """Make the mock provider draw in processes of its own, as a real provider draws on its own machines.

    The mock draws in threads of the bot's process, holding the GIL ~45 ms a 1024² image: the event loop
    would wait for the GIL behind each drawing, which no real provider costs the bot. Here each drawing
    (`bot.api.mock._render`) runs in a small process pool instead; the mock's threads only wait for it.
    The pool's processes are the provider's machines: their memory is not counted as the bot's, and they run
    at a lower priority (`STAND_IN_NICE`), as does the loopback fake Discord.
    """

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers
        self.pids: list[int] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import bot.api.mock as mock

        original = mock._render
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_stand_in) as pool:
            started = [pool.submit(_worker_pid) for _ in range(self.workers * 4)]
            self.pids = sorted({future.result() for future in started})

            def render(job: Any, index: int, partials: int) -> Any:
                return pool.submit(_draw, job, index, partials).result()

            mock._render = render
            try:
                yield
            finally:
                mock._render = original


def _draw(job: Any, index: int, partials: int) -> Any:
    """In a drawing process: the mock's own drawing (`_render` is not replaced there)."""
    import bot.api.mock as mock

    return mock._render(job, index, partials)


def _stand_in() -> None:
    """In a process that stands in for another machine: give the bot's processes the CPU first."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no os.nice (Windows)
        os.nice(STAND_IN_NICE)


def _worker_pid() -> int:
    time.sleep(0.05)  # long enough for every worker of the pool to start and take one
    return os.getpid()


# --- running the bot ------------------------------------------------------------------------------------------


def bench_settings(data_dir: Path, **fields: Any) -> Settings:
    from pydantic import SecretStr

    from bot.config import Settings

    values: dict[str, Any] = {
        "discord_token": SecretStr(BENCH_TOKEN),
        "provider": "mock",
        "data_dir": data_dir,
        **fields,
    }
    return Settings(_env_file=None, **values)


def core_with(provider: MockProvider) -> Callable[[Settings], contextlib.AbstractAsyncContextManager[Any]]:
    """The bot's core as in production (crash recovery included), with `provider` as the image provider."""
    from bot.services import open_core

    @contextlib.asynccontextmanager
    async def open_services(settings: Settings) -> AsyncIterator[Any]:
        async with open_core(settings, recover=True) as core:
            core.images.provider = provider
            yield core

    return open_services


class World:
    """A running bot, the Discord it talks to, and members to ask it: one per seat, each in a server."""

    def __init__(self, bot: EaselBot, probe: Probe) -> None:
        self.bot = bot
        self.probe = probe

    async def slash_all(self, command: str, calls: Sequence[tuple[int, dict[str, Any]]]) -> list[int]:
        """Each (seat, options) runs /`command` once, back to back; returns the interactions' ids."""
        raise NotImplementedError

    async def collect(self) -> None:
        """Fill in what only Discord's side knows (dispatch and defer times) once the interactions are done."""

    async def settle(self) -> None:
        """Wait until the bot has nothing left to do for the interactions so far."""
        raise NotImplementedError

    def uploaded(self) -> int:
        """Bytes the bot uploaded to (fake) Discord."""
        raise NotImplementedError

    def others(self) -> list[int]:
        """Processes below this one that are not the bot's (their memory is not counted)."""
        return []


class SimcordWorld(World):
    """simcord's simulated Discord on the bot's own event loop."""

    def __init__(
        self, env: simcord.Env, bot: EaselBot, probe: Probe, seats: list[tuple[simcord.MemberActor, Any]]
    ) -> None:
        super().__init__(bot, probe)
        self.env = env
        self.seats = seats

    async def slash_all(self, command: str, calls: Sequence[tuple[int, dict[str, Any]]]) -> list[int]:
        before = set(self.probe.dispatched)
        with dispatch_only(self.env):
            for seat, options in calls:
                member, channel = self.seats[seat % len(self.seats)]
                await member.slash(channel, command, **options)
        return [i for i in self.probe.dispatched if i not in before]

    async def settle(self) -> None:
        await self.env.settle(timeout=60.0)

    def uploaded(self) -> int:
        blobs = self.env.backend.cdn._blobs
        return blobs.uploaded if isinstance(blobs, ForgetfulBlobs) else sum(len(blob) for blob in blobs.values())


class LoopbackWorld(World):
    """The loopback fake Discord in a process of its own; the bot reaches it over HTTP and a websocket."""

    def __init__(
        self, bot: EaselBot, probe: Probe, control: Any, fake_pid: int, seats: list[tuple[int, int, int]]
    ) -> None:
        super().__init__(bot, probe)
        self.control = control
        self.fake_pid = fake_pid
        self.seats = seats
        """(user id, server id, channel id) of each member."""
        self._uploaded = 0

    async def slash_all(self, command: str, calls: Sequence[tuple[int, dict[str, Any]]]) -> list[int]:
        body = {
            "command": command,
            "calls": [
                dict(zip(("user_id", "guild_id", "channel_id"), self.seats[seat % len(self.seats)], strict=True))
                | {"options": options}
                for seat, options in calls
            ],
        }
        answer = await self.control.post("/_bench/slash", json=body)
        answer.raise_for_status()
        return [int(i) for i in answer.json()["ids"]]

    async def collect(self) -> None:
        answer = await self.control.get("/_bench/stats")
        answer.raise_for_status()
        stats = answer.json()
        for key, stamps in (("dispatched", self.probe.dispatched), ("deferred", self.probe.deferred)):
            for interaction, at in stats[key].items():
                stamps.setdefault(int(interaction), at)
        self._uploaded = stats["uploaded"]
        if stats["unhandled"]:
            raise RuntimeError(f"the fake had no route for what the bot asked: {stats['unhandled'][:5]}")

    async def settle(self) -> None:
        await self.bot.in_flight.idle()
        await asyncio.sleep(0.05)  # the last reactions' answers

    def uploaded(self) -> int:
        return self._uploaded

    def others(self) -> list[int]:
        return _descendants(self.fake_pid)


@contextlib.asynccontextmanager
async def running_bot(
    provider: MockProvider, options: Options, *, users: int, guilds: int, **caps: int
) -> AsyncIterator[World]:
    """A production-like EaselBot (process pool, every extension) with `users` members over `guilds` servers."""
    opened = simcord_bot if options.discord == "simcord" else loopback_bot
    with tempfile.TemporaryDirectory(prefix="easel-bench-") as folder:
        async with opened(provider, Path(folder) / "data", users=users, guilds=guilds, **caps) as world:
            with instrumented(world.probe):
                # The gateway holds the frame parser it was given at start: hand it the instrumented one.
                world.bot.first_answers.uninstall()
                world.bot.first_answers.install()
                world.bot.first_answers.keepalive = options.callbacks == "keepalive"
                yield world
            await world.settle()


@contextlib.asynccontextmanager
async def simcord_bot(
    provider: MockProvider, data: Path, *, users: int, guilds: int, **caps: int
) -> AsyncIterator[World]:
    import simcord

    from bot.app import EaselBot

    bot = EaselBot(bench_settings(data, **caps), workers="process", open_services=core_with(provider))
    probe = Probe()
    try:
        async with simcord.run(bot, settle_timeout=60.0) as env:
            # Start the database writer from here, not from a handler (see tests/bot_discord/test_imagine.py).
            await bot.core.db.write("SELECT 1")
            # What simcord keeps for tests (logs, every uploaded file) is not the bot's memory: drop it.
            env.backend.http_requests = StampedLog(probe)
            env.backend.transcript = NullLog()
            env.backend.cdn._blobs = ForgetfulBlobs()
            env._register_dispatch_observer(lambda record: probe.dispatched.setdefault(record.id, time.perf_counter()))
            seats = []
            for g in range(guilds):
                guild = env.create_guild(f"Guild {g}")
                channel = guild.create_text_channel("art")
                for u in range(g, users, guilds):
                    seats.append((guild.add_member(env.create_user(f"user{u}")), channel))
            yield SimcordWorld(env, bot, probe, seats)
    finally:
        await bot.close()


@contextlib.asynccontextmanager
async def loopback_bot(
    provider: MockProvider, data: Path, *, users: int, guilds: int, **caps: int
) -> AsyncIterator[World]:
    import discord
    import httpx

    from bot.app import EaselBot, point_at

    fake = await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        "--serve-fake",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    if fake.stdin is None or fake.stdout is None:
        raise RuntimeError("the fake Discord's process has no pipes")
    bases = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    bot: EaselBot | None = None
    try:
        port = int((await asyncio.wait_for(fake.stdout.readline(), 30.0)).decode())
        point_at(f"http://127.0.0.1:{port}/api/v10", f"ws://127.0.0.1:{port}/gateway")
        bot = EaselBot(bench_settings(data, **caps), workers="process", open_services=core_with(provider))
        await bot.login(BENCH_TOKEN)
        running = asyncio.create_task(bot.connect(reconnect=False))
        await asyncio.wait_for(bot.wait_until_ready(), 60.0)
        ids = itertools.count(1_000_000)
        seats = []
        for g in range(guilds):
            guild, channel = next(ids), next(ids)
            seats += [(next(ids), guild, channel) for _ in range(g, users, guilds)]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60.0) as control:
            # httpx's first request imports and connects (~40 ms on the loop): not the bot's time to measure.
            (await control.get("/_bench/stats")).raise_for_status()
            yield LoopbackWorld(bot, Probe(), control, fake.pid, seats)
        await bot.close()
        await running
    finally:
        if bot is not None and not bot.is_closed():
            await bot.close()
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = bases
        fake.stdin.close()
        try:
            await asyncio.wait_for(fake.wait(), 10.0)
        except TimeoutError:
            fake.kill()
            await fake.wait()


async def burst(world: World, count: int, prompt: Callable[[int], str], **options: Any) -> list[int]:
    """`count` /imagine, one per member in turn, back to back; returns once every result is posted."""
    probe = world.probe
    probe.expected = len(probe.finished) + count
    probe.done.clear()
    ids = await world.slash_all("imagine", [(i, {"prompt": prompt(i), **options}) for i in range(count)])
    await asyncio.wait_for(probe.done.wait(), DONE_TIMEOUT)
    await world.collect()
    return ids


# --- the loopback fake's process ------------------------------------------------------------------------------


def serve_fake() -> None:
    """`--serve-fake`: run the loopback fake Discord, print its port, and stop when stdin closes.

    Two control routes besides Discord's: POST /_bench/slash dispatches a list of slash commands back to
    back; GET /_bench/stats returns when each was dispatched and deferred, and the bytes uploaded.
    """
    from aiohttp import web

    from tests.fakes.discord_server import FakeDiscord

    async def main() -> None:
        routes = web.RouteTableDef()
        fake: FakeDiscord

        @routes.post("/_bench/slash")
        async def slash(request: web.Request) -> web.Response:
            body = await request.json()
            ids = []
            for call in body["calls"]:
                interaction, _ = await fake.slash_command(
                    body["command"],
                    call["options"],
                    user_id=call["user_id"],
                    guild_id=call["guild_id"],
                    channel_id=call["channel_id"],
                )
                ids.append(interaction)
            return web.json_response({"ids": ids})

        @routes.get("/_bench/stats")
        async def stats(_request: web.Request) -> web.Response:
            deferred: dict[str, float] = {}
            for call in fake.calls("POST", r"/interactions/\d+/[^/]+/callback"):
                if isinstance(call.json, dict) and call.json.get("type") == 5:
                    deferred.setdefault(call.path.split("/")[2], call.at)
            return web.json_response(
                {
                    "dispatched": fake.dispatched,
                    "deferred": deferred,
                    "uploaded": fake.uploaded_bytes,
                    "unhandled": [f"{c.method} {c.path}" for c in fake.unhandled],
                }
            )

        async with FakeDiscord(
            token=BENCH_TOKEN, keep_uploads=False, heartbeat_interval_ms=41_250, routes=routes
        ) as fake:
            print(fake.port, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    _stand_in()
    asyncio.run(main())


# --- cases ------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    measured: str
    target: str = "—"
    ok: bool | None = None
    passed: tuple[int, int] | None = None
    """With --repeat: (runs that met the target, runs); `ok` only when every run did."""

    def cells(self) -> list[str]:
        verdict = "—" if self.ok is None else "pass" if self.ok else "**FAIL**"
        if self.passed is not None and self.ok is not None:
            verdict += f" ({self.passed[0]} of {self.passed[1]} runs)"
        return [self.case, self.measured, self.target, verdict]


def merged(runs: Sequence[Result]) -> Result:
    """One table for several runs of a case: each row's figures side by side, and how many runs passed."""
    if len(runs) == 1 or len({len(run.rows) for run in runs}) != 1:
        return Result(rows=[row for run in runs for row in run.rows], notes=[n for run in runs for n in run.notes])
    rows = []
    for same in zip(*(run.rows for run in runs), strict=True):
        verdicts = [row.ok for row in same if row.ok is not None]
        rows.append(
            Row(
                same[0].case,
                " · ".join(row.measured for row in same),
                same[0].target,
                all(verdicts) if verdicts else None,
                (sum(verdicts), len(verdicts)) if verdicts else None,
            )
        )
    return Result(rows=rows, notes=[note for run in runs for note in run.notes])


@dataclass
class Result:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Markdown printed after the table with --profile."""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:,.0f} ms"


def mib(size: int) -> str:
    return f"{size / MiB:.0f} MiB"


def breakdown(title: str, probe: Probe, ids: Sequence[int]) -> str:
    """Where the jobs' time went: every piece's total over the jobs, its longest call, its calls per job."""
    done = probe.done_ok(ids)
    jobs = len(done)
    providers = [probe.provider[i] for i in done]
    lines = [
        f"{title} ({jobs} jobs; pieces nest, and overlap when jobs run together):",
        "",
        "| piece | per job (mean) | longest call | calls per job |",
        "|---|---:|---:|---:|",
        f"| whole job: INTERACTION_CREATE → result posted | {ms(statistics.mean(probe.total(i) for i in done))} | "
        f"{ms(max(probe.total(i) for i in done))} | 1 |",
        f"| provider (`provider_ms`, preview edits included) | {ms(statistics.mean(providers))} | "
        f"{ms(max(providers))} | 1 |",
        f"| wait for a queue slot | {ms(statistics.mean(probe.wait(i) for i in done))} | "
        f"{ms(max(probe.wait(i) for i in done))} | 1 |",
    ]
    for label, times in probe.pieces.items():
        if times:
            lines.append(f"| {label} | {ms(sum(times) / jobs)} | {ms(max(times))} | {len(times) / jobs:.1f} |")
    overheads = probe.overheads(done)
    lines.append(
        f"| **bot overhead** (whole − provider − queue wait) | **{ms(statistics.mean(overheads))}** | "
        f"{ms(max(overheads))} | |"
    )
    return "\n".join(lines)


def defer_rows(probe: Probe, ids: Sequence[int]) -> list[Row]:
    """The time to defer by part, and the loop's CPU over the arrival: loopback only (simcord has no socket)."""
    rows = []
    parts = probe.defer_parts(ids)
    if all(parts):
        rows.append(
            Row(
                "… time to defer by part, p50 / p99: the fake sends → the bot reads the frame → the "
                "acknowledgement starts → the callback is in the socket → the fake reads it",
                " → ".join(f"{ms(statistics.median(part))} / {ms(percentile(part, 0.99))}" for part in parts),
            )
        )
    arrival = probe.arrival_busy()
    if arrival is not None:
        rows.append(
            Row(
                "… the bot's loop from the first frame parsed to the last defer written: wall / CPU",
                f"{ms(arrival[0])} / {ms(arrival[1])}",
            )
        )
    return rows


async def _profile_arrival(profiler: cProfile.Profile, probe: Probe, count: int) -> None:
    """Profile the loop from the first frame to the last defer written (the burst's arrival)."""
    profiler.enable()
    while len(probe.defer_written) < count:  # noqa: ASYNC110 - the stamps come from a patched aiohttp method
        await asyncio.sleep(0.001)
    profiler.disable()


async def burst_case(count: int, drawing: DrawingProcesses, options: Options) -> Result:
    """`count` /imagine (n=4, 1024²) from distinct members in one burst, production caps, the mock drawing."""
    from bot.api.mock import MockProvider

    print(f"burst: {count} × /imagine n=4 {SIZE}...", file=sys.stderr)
    lag, memory, watch = LagMeter(), MemorySampler(), LoopWatch()
    guilds = 10
    async with running_bot(MockProvider(), options, users=count, guilds=guilds) as world:
        memory.start(exclude=world.others() + drawing.pids)
        with watch.watching() if options.profile else contextlib.nullcontext():
            lag.start()

            # The arrival ends with the last callback written into a socket: loopback only (simcord has none).
            arrival = cProfile.Profile() if options.profile and options.discord == "loopback" else None
            watcher = asyncio.create_task(_profile_arrival(arrival, world.probe, count)) if arrival else None
            start = time.perf_counter()
            ids = await burst(world, count, lambda i: f"burst {i}: a red fox in the snow", n=4, size=SIZE)
            wall = time.perf_counter() - start
            if watcher:
                await watcher
            await lag.stop()
        memory.stop()
        probe = world.probe
        uploaded = world.uploaded()
        first = world.bot.first_answers
        early = f"{first.answered} / {first.fell_back} / {first.connections_opened}"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    defers = probe.defer(ids)
    overheads = probe.overheads(ids)
    failed = len(probe.failed)
    p99 = percentile(defers, 0.99)
    name = f"burst: {count} × /imagine (n=4, {SIZE}), {count} members in {guilds} servers, default caps"
    result = Result(
        rows=[
            Row(f"{name}: every result posted", f"{wall:.1f} s, {failed} failed", "no failure", failed == 0),
            Row("… time to defer, p50", ms(statistics.median(defers))),
            Row("… time to defer, p99", ms(p99), "≤ 50 ms", p99 <= 0.05),
            Row("… time to defer, max", ms(max(defers))),
            *defer_rows(probe, ids),
            *(
                [Row(f"… answered from the frame / fell back / connections opened ({options.callbacks})", early)]
                if options.discord == "loopback"
                else []
            ),
            Row(
                "… bot overhead per job (less provider and queue wait), median / p90",
                f"{ms(statistics.median(overheads))} / {ms(percentile(overheads, 0.9))}",
            ),
            Row("… event loop, worst lag", lag.describe(), "≤ 25 ms", lag.worst <= 0.025),
            Row("… event loop, lag at p99.9 of 1 ms ticks", ms(percentile(lag.gaps, 0.999))),
            Row(
                "… peak RSS, bot process (ru_maxrss)",
                f"{mib(rss)} (sampled: {mib(memory.peak_rss)})",
                "≤ 250 MiB",
                rss <= 250 * MiB,
            ),
            Row(
                f"… peak memory, bot + image workers ({memory.processes} processes, sum of PSS)",
                f"{mib(memory.peak_tree_pss)} (sum of RSS: {mib(memory.peak_tree_rss)})",
                "≤ 250 MiB",
                memory.peak_tree_pss <= 250 * MiB,
            ),
            Row("… uploaded to Discord (the fake counts it, keeps none of it)", mib(uploaded)),
        ]
    )
    if options.profile:
        if arrival:
            out = io.StringIO()
            pstats.Stats(arrival, stream=out).sort_stats("cumulative").print_stats(45)
            result.notes.append(
                f"cProfile of the burst's arrival (first frame to last defer written), by cumulative time:"
                f"\n\n```\n{_trim(out.getvalue())}```"
            )
        result.notes.append(breakdown(f"Burst of {count}: where the time went", probe, ids))
        result.notes.append("\n".join(["Burst, event loop:", "", *watch.summary()]))
    return result


async def single_case(count: int, options: Options) -> Result:
    """`count` /imagine (n=4, 1024²) one after another on an idle bot, without latency."""
    from bot.api.mock import MockProvider

    print(f"one at a time: {count} × /imagine n=4 {SIZE}...", file=sys.stderr)
    result = Result()
    async with running_bot(MockProvider(), options, users=1, guilds=1) as world:
        probe = world.probe
        await burst(world, 1, lambda _: "warm-up: a red fox", n=4, size=SIZE)
        await world.settle()
        for times in probe.pieces.values():
            times.clear()
        ids: list[int] = []
        for i in range(count):
            ids += await burst(world, 1, functools.partial(single_prompt, i), n=4, size=SIZE)
            await world.settle()
        overheads = probe.overheads(ids)
        failed = len([i for i in ids if i in probe.failed])
        median = statistics.median(overheads)
        result.rows += [
            Row(
                f"one at a time: {count} × /imagine (n=4, {SIZE}), no latency: bot overhead per job, median / max",
                f"{ms(median)} / {ms(max(overheads))}" + (f", {failed} failed" if failed else ""),
                "≤ 100 ms",
                median <= 0.1 and not failed,
            ),
            Row(
                "… the provider's time (the mock drawing 4 images), median",
                ms(statistics.median(probe.provider[i] for i in ids)),
            ),
            Row("… time to defer, median", ms(statistics.median(probe.defer(ids)))),
        ]
        if options.profile:
            result.notes.append(breakdown("One job at a time: where the time went", probe, ids))
            print("cProfile of one more job...", file=sys.stderr)
            profiler = cProfile.Profile()
            profiler.enable()
            await burst(world, 1, lambda _: "profiled: a red fox", n=4, size=SIZE)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
            result.notes.append(
                f"cProfile of one job, event loop thread, by own time:\n\n```\n{_trim(out.getvalue())}```"
            )
    return result


def single_prompt(job: int, _index: int) -> str:
    return f"single {job}: a red fox in the snow"


def _trim(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join([line for line in lines[:start] if "function calls" in line] + lines[start:]).rstrip() + "\n"


async def throughput_case(count: int, latency: float, options: Options) -> Result:
    """`count` jobs at `latency` s each with caps that let them all run at once: drawn, then pre-drawn."""
    from bot.api.mock import MockProvider

    caps = {"max_running": count, "max_per_guild": count}
    cache = RenderCache()
    result = Result()
    with cache.installed():
        for drawn in (True, False):
            what = "the mock drawing every image" if drawn else "images pre-drawn (provider = latency only)"
            print(f"{count} jobs at {latency:g} s, {what}...", file=sys.stderr)
            lag, watch = LagMeter(), LoopWatch()
            provider = MockProvider(latency=latency, sleep=real_sleep)
            async with running_bot(provider, options, users=count, guilds=1, **caps) as world:
                misses = cache.misses
                profiler = cProfile.Profile() if options.profile and not drawn else None
                with watch.watching() if profiler else contextlib.nullcontext():
                    if profiler:
                        profiler.enable()
                    lag.start()
                    start = time.perf_counter()
                    ids = await burst(world, count, lambda i: f"throughput {i}: a fox", size=SIZE)
                    wall = time.perf_counter() - start
                    # The results' reactions follow once none is being posted; the lag counts them too.
                    await asyncio.wait_for(world.bot.in_flight.idle(), DONE_TIMEOUT)
                    reacted = time.perf_counter() - start
                    await lag.stop()
                    if profiler:
                        profiler.disable()
                probe = world.probe
                misses = cache.misses - misses
            failed = len(probe.failed)
            name = (
                f"{count} × /imagine (n=1, {SIZE}) at {latency:g} s latency, "
                f"EASEL_MAX_RUNNING={count}, EASEL_MAX_PER_GUILD={count}, {what}: every result posted"
            )
            if drawn:
                result.rows.append(Row(name, f"{wall:.2f} s" + (f", {failed} failed" if failed else "")))
                result.rows.append(Row("… every result's 🔁 and 🚩 added", f"{reacted:.2f} s"))
                continue
            defers, overheads = probe.defer(ids), probe.overheads(ids)
            result.rows += [
                Row(
                    name,
                    f"{wall:.2f} s"
                    + (f", {failed} failed" if failed else "")
                    + (f" ({misses} drawn)" if misses else ""),
                    f"≤ {latency + 0.5:g} s",
                    wall <= latency + 0.5 and not failed,
                ),
                Row("… every result's 🔁 and 🚩 added", f"{reacted:.2f} s"),
                Row("… time to defer, p50 / p99", f"{ms(statistics.median(defers))} / {ms(percentile(defers, 0.99))}"),
                Row(
                    "… bot overhead per job (total − provider), median / max",
                    f"{ms(statistics.median(overheads))} / {ms(max(overheads))}",
                ),
                Row("… event loop, worst lag", lag.describe(), "≤ 25 ms", lag.worst <= 0.025),
            ]
            if options.profile:
                result.notes.append(
                    breakdown(f"{count} jobs at {latency:g} s, pre-drawn: where the time went", probe, ids)
                )
                result.notes.append("\n".join([f"{count} jobs at {latency:g} s, event loop:", "", *watch.summary()]))
                if profiler:
                    out = io.StringIO()
                    stats = pstats.Stats(profiler, stream=out)
                    stats.sort_stats("tottime").print_stats(20)
                    result.notes.append(
                        f"cProfile of {count} jobs at {latency:g} s, pre-drawn, event loop thread, by own time:"
                        f"\n\n```\n{_trim(out.getvalue())}```"
                    )
    return result


CASES = ("burst", "single", "throughput")
"""The cases, in the order they run; `--only` picks one."""


async def run(options: Options) -> Result:
    everything = Result()
    drawing = DrawingProcesses()
    with multiprocessing_on_the_real_clock(), drawing.installed():
        cases: dict[str, Callable[[], Awaitable[Result]]] = {
            "burst": lambda: burst_case(50 if options.quick else 200, drawing, options),
            "single": lambda: single_case(5 if options.quick else 20, options),
            "throughput": lambda: throughput_case(100, 2.0, options),
        }
        for name in CASES:
            if options.only not in (None, name):
                continue
            part = merged([await cases[name]() for _ in range(options.repeat)])
            everything.rows += part.rows
            everything.notes += part.notes
    return everything


def table(rows: Sequence[Row]) -> str:
    header = ["case", "measured", "target", "result"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 50-interaction burst and 5 single jobs")
    parser.add_argument("--profile", action="store_true", help="also: time by piece, GC pauses, slow callbacks")
    parser.add_argument(
        "--discord",
        choices=("simcord", "loopback"),
        default="simcord",
        help="Discord: simcord in the bot's process (default), or the loopback fake in its own process",
    )
    parser.add_argument("--only", choices=CASES, help="run this case alone")
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="run each case N times, each on a fresh bot (default 1)"
    )
    parser.add_argument(
        "--callbacks",
        choices=("keepalive", "aiohttp"),
        default="keepalive",
        help="loopback: send early callbacks on the bot's kept-alive client (default, as the bot does) or through "
        "discord.py's aiohttp session (as behind a proxy)",
    )
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        serve_fake()
        return
    if args.repeat < 1:
        parser.error("--repeat takes a count of 1 or more")
    options = Options(
        quick=args.quick,
        profile=args.profile,
        discord=args.discord,
        only=args.only,
        repeat=args.repeat,
        callbacks=args.callbacks,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("discord").setLevel(logging.ERROR)  # no voice support, no guilds intent: as intended

    import discord
    import PIL
    import simcord

    load_before = os.getloadavg()[0]
    before = busy_share()
    from bot.app import new_event_loop

    # The bot's own event loop (uvloop) on the loopback fake; asyncio's for simcord, which needs its timer heap,
    # and for --profile, whose loop watch hooks into its turns.
    factory = new_event_loop if options.discord == "loopback" and not options.profile else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        loop_name = type(runner.get_loop()).__module__.split(".")[0]
        result = runner.run(run(options))
    after = busy_share()
    print(
        f"Python {platform.python_version()}, discord.py {discord.__version__}, simcord {simcord.__version__}, "
        f"Pillow {PIL.__version__}, {os.cpu_count()} CPUs, {platform.machine()}, {loop_name}'s event loop"
        + f" · Discord: {LABELS[options.discord]}"
    )
    if before is not None and after is not None:
        # Other processes inflate every time below; a quiet machine shows a few percent here.
        print(f"CPU busy with other work: {before:.0%} just before the run, {after:.0%} just after.")
    print(f"Load average (1 min) before the run: {load_before:.2f}.")
    print()
    print(table(result.rows))
    for note in result.notes:
        print()
        print(note)
    failed = [row.case for row in result.rows if row.ok is False]
    if failed:
        print(f"\n{len(failed)} target(s) missed.")


if __name__ == "__main__":
    main()
