"""The async face of `bot.imaging`: fitting and grids off the event loop, in a pool of worker processes.

Encoding and decoding big images in a thread still costs the event loop: the GIL comes back late and
the loop stalls for tens of milliseconds. `ImageWorkers` sends the work to a
`concurrent.futures.ProcessPoolExecutor` instead, one image per task so the workers share it out:

    async with ImageWorkers() as workers:  # or ImageWorkers(), await start() ... await close()
        fitted = await workers.fit(result.images, max_bytes=interaction.filesize_limit)
        preview = await workers.grid(result.images)
        fitted, preview = await workers.fit_and_grid(result.images)  # both, decoding each image once

Images that already fit never leave the process. Workers start from a "forkserver" process (forking the
bot itself, which runs threads, can deadlock a child) that has already imported Pillow and this
package, and `start()` brings every worker up before the first real job. `mode="thread"` runs the same
functions with `asyncio.to_thread`, for tests and small jobs. If a worker dies, the pool is rebuilt for
the next call and the job that saw it is finished in a thread, so a result is never lost to it.

As with any non-fork start method, each worker re-imports the program's main script (not a `-m`
package's `__main__`), so a script using `ImageWorkers` keeps its work under `if __name__ == "__main__":`.
The fork server is shared by the whole process; its preload list is set here, before it first starts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import Literal, Self, TypeVar

from PIL import Image

from bot.api.types import GeneratedImage
from bot.imaging.fit import (
    DISCORD_MAX_BYTES,
    DISCORD_MAX_FILES,
    FitResult,
    FittedFile,
    check_limits,
    decode,
    fit_decoded,
    fit_one,
    fits_as_is,
)
from bot.imaging.grid import Cell, cell_from_picture, compose_grid, make_grid, plan_grid, render_cell

log = logging.getLogger(__name__)

Mode = Literal["process", "thread"]
T = TypeVar("T")

_PRELOAD = ["PIL.Image", "PIL.JpegImagePlugin", "PIL.PngImagePlugin", "PIL.WebPImagePlugin", "bot.imaging.grid"]


class ImageWorkers:
    """A lazily started pool that fits and grids images without blocking the event loop.

    `max_workers` defaults to the number of CPUs. Close it (`await close()`, or use `async with`) so the
    worker processes exit; a closed instance refuses new work.
    """

    def __init__(self, *, max_workers: int | None = None, mode: Mode = "process") -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers or os.cpu_count() or 1
        self.mode: Mode = mode
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._executor else "idle"
        return f"ImageWorkers({self.mode}, {self.max_workers} workers, {state})"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Bring every worker process up now, so the first real job pays no start-up. Idempotent."""
        if self.mode == "thread":
            self._ensure_open()
            return
        executor = self._pool()
        loop = asyncio.get_running_loop()
        # Submitted together, before any worker is idle, each task makes the executor start one more process.
        await asyncio.gather(*(loop.run_in_executor(executor, _ready) for _ in range(self.max_workers)))

    async def close(self) -> None:
        """Stop the worker processes, waiting (off the loop) for running jobs to end. Idempotent."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    async def fit(
        self,
        images: Sequence[GeneratedImage],
        *,
        max_bytes: int = DISCORD_MAX_BYTES,
        max_files: int = DISCORD_MAX_FILES,
        stem: str = "easel",
    ) -> FitResult:
        """`bot.imaging.fit.fit_images`, with each image that needs re-encoding in its own task, in parallel."""
        self._ensure_open()
        check_limits(max_bytes, max_files)
        kept = images[:max_files]
        done: dict[int, tuple[FittedFile, int]] = {}
        work: dict[int, Callable[[], tuple[FittedFile, int]]] = {}
        for index, image in enumerate(kept):
            call = functools.partial(fit_one, image, max_bytes=max_bytes, index=index, stem=stem)
            if fits_as_is(image, max_bytes):
                done[index] = call()  # no decode, no encode: not worth a trip to a worker
            else:
                work[index] = call
        outcomes = await asyncio.gather(*(self._run(call) for call in work.values()))
        done.update(zip(work, outcomes, strict=True))
        files = tuple(done[index][0] for index in range(len(kept)))
        encodes = sum(count for _, count in done.values())
        return FitResult(files=files, encodes=encodes, omitted=len(images) - len(kept))

    async def grid(
        self, images: Sequence[GeneratedImage], *, max_edge: int = 1024, labels: bool = True
    ) -> GeneratedImage:
        """`bot.imaging.grid.make_grid`, decoding the images in parallel and composing them in one more task."""
        self._ensure_open()
        if len(images) == 1:
            return await self._run(functools.partial(make_grid, images, max_edge=max_edge, labels=labels))
        plan = plan_grid(images, max_edge=max_edge)
        cells = await asyncio.gather(
            *(self._run(functools.partial(render_cell, image, plan.cell_width, plan.cell_height)) for image in images)
        )
        return await self._run(functools.partial(compose_grid, plan, cells, labels=labels))

    async def fit_and_grid(
        self,
        images: Sequence[GeneratedImage],
        *,
        max_bytes: int = DISCORD_MAX_BYTES,
        max_files: int = DISCORD_MAX_FILES,
        stem: str = "easel",
        max_edge: int = 1024,
        labels: bool = True,
    ) -> tuple[FitResult, GeneratedImage]:
        """`fit` and a grid of the same (kept) images, decoding each image that needs re-encoding only once.

        Cheaper than `fit` and `grid` side by side whenever something is re-encoded: the worker that decodes
        an image for its file also shrinks it into its grid cell.
        """
        self._ensure_open()
        check_limits(max_bytes, max_files)
        kept = images[:max_files]
        plan = plan_grid(kept, max_edge=max_edge)
        cell_size = (plan.cell_width, plan.cell_height)
        done: dict[int, tuple[FittedFile, int]] = {}
        cell_work: dict[int, Callable[[], Cell]] = {}
        both_work: dict[int, Callable[[], tuple[tuple[FittedFile, int], Cell]]] = {}
        for index, image in enumerate(kept):
            if fits_as_is(image, max_bytes):
                done[index] = fit_one(image, max_bytes=max_bytes, index=index, stem=stem)
                cell_work[index] = functools.partial(render_cell, image, *cell_size)
            else:
                both_work[index] = functools.partial(
                    _fit_with_cell, image, max_bytes=max_bytes, index=index, stem=stem, cell_size=cell_size
                )
        # Re-encodes first: they are the longest tasks, so the pool finishes evenly.
        both, only_cells = await asyncio.gather(
            asyncio.gather(*(self._run(call) for call in both_work.values())),
            asyncio.gather(*(self._run(call) for call in cell_work.values())),
        )
        cells: dict[int, Cell] = dict(zip(cell_work, only_cells, strict=True))
        for index, (fitted, cell) in zip(both_work, both, strict=True):
            done[index] = fitted
            cells[index] = cell
        grid = await self._run(
            functools.partial(compose_grid, plan, [cells[i] for i in range(len(kept))], labels=labels)
        )
        files = tuple(done[index][0] for index in range(len(kept)))
        encodes = sum(count for _, count in done.values())
        return FitResult(files=files, encodes=encodes, omitted=len(images) - len(kept)), grid

    async def _run(self, call: Callable[[], T]) -> T:
        if self.mode == "thread":
            self._ensure_open()
            return await asyncio.to_thread(call)
        executor = self._pool()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, call)
        except BrokenProcessPool:
            log.warning("An image worker process died; finishing this job in a thread and restarting the pool.")
            if self._executor is executor:
                self._executor = None
                executor.shutdown(wait=False, cancel_futures=True)
            return await asyncio.to_thread(call)

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("ImageWorkers is closed")

    def _pool(self) -> ProcessPoolExecutor:
        self._ensure_open()
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.max_workers, mp_context=_context(), initializer=_initialise, initargs=(os.getpid(),)
            )
        return self._executor


def _context() -> BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Takes effect only if the fork server is not running yet; it then forks workers with these imported.
        context.set_forkserver_preload(_PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


def _fit_with_cell(
    image: GeneratedImage, *, max_bytes: int, index: int, stem: str, cell_size: tuple[int, int]
) -> tuple[tuple[FittedFile, int], Cell]:
    """Decode once; return the fitted file (and its encode count) and the image's grid cell."""
    decoded = decode(image.data)
    cell = cell_from_picture(decoded.picture, *cell_size)
    return fit_decoded(decoded, max_bytes=max_bytes, index=index, stem=stem), cell


OWNER_CHECK_SECONDS = 1.0
"""How often a worker checks that the process that started it is still alive."""


def _initialise(owner: int) -> None:
    """Runs once in each worker: register every Pillow plugin now rather than on the first image, and
    watch the owner, so a worker never outlives a bot that was killed (SIGKILL, OOM) without closing it."""
    Image.init()
    threading.Thread(target=_watch_owner, args=(owner,), name="easel-owner-watch", daemon=True).start()


def _watch_owner(owner: int) -> None:
    # The worker's parent is the fork server, not the bot, so the parent id says nothing: ask about the
    # bot's own process id. A worker blocked waiting for work would otherwise wait forever.
    while _alive(owner):
        time.sleep(OWNER_CHECK_SECONDS)
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process now has the id: treat as alive rather than guess
    return True


def _ready() -> int:
    return os.getpid()
