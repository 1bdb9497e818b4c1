"""The core service the bot and the CLI call: one priced, recorded job per generate, edit or vary.

    check the request  → refused: a 'rejected' job with the reason, nothing charged
    estimate its price → reserve it against every budget (refused: 'rejected', nothing charged)
    wait for its turn  → in the JobQueue, when there is one (cancelled while waiting: refunded, 'cancelled';
                         a 429 puts it back in line to try again later, still reserved)
    mark it running    → call the provider
    settle the actual cost and keep the images   | or refund (or keep an 'unknown' charge when the
                                                 |    provider may have billed) and re-raise

Callers get plain `JobOutcome`s and `EaselError`s; nothing here knows about Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bot import pricing
from bot.api.client import ImagesClient
from bot.api.types import (
    Completed,
    EditRequest,
    GeneratedImage,
    GenerateRequest,
    ImageResult,
    InputImage,
    PartialImage,
    StreamEvent,
    VaryRequest,
)
from bot.catalogue import ModelSpec
from bot.errors import EaselError, JobCancelled, QueueFull, RateLimited, StreamInterrupted
from bot.imaging.edits import prepare_edit, prepare_outpaint, prepare_vary
from bot.imaging.inputs import SquareMode
from bot.imaging.masks import Region
from bot.imaging.outpaint import Direction
from bot.queue import JobQueue, PositionHandler, QueuedJob, QueueUpdate, queued_jobs, requeue
from bot.store.ledger import BudgetStatus, JobDraft, JobKind, JobOptions, JobRecord, Ledger

log = logging.getLogger(__name__)

PartialHandler = Callable[[PartialImage], Awaitable[None]]
QueueHandler = Callable[[QueueUpdate], Awaitable[None]]
PREVIEWS = 2
"""Streamed previews asked for when a caller wants progress and did not say how many."""


async def _collect(stream: AsyncGenerator[StreamEvent, None], on_partial: PartialHandler) -> ImageResult:
    """Pass a stream's previews to `on_partial` and return its result."""
    async with contextlib.aclosing(stream):
        async for event in stream:
            if isinstance(event, Completed):
                return event.result
            await on_partial(event)
    raise StreamInterrupted("The image stream ended before the image was finished; try again.")


async def _report(on_queue: QueueHandler | None, update: QueueUpdate) -> None:
    if on_queue is not None:
        await on_queue(update)


def _reporter(on_queue: QueueHandler | None, job_id: int, note: str) -> PositionHandler | None:
    """The queue's position callback for a Studio caller: the job id added, and `note` while it waits."""
    if on_queue is None:
        return None
    handler = on_queue

    async def report(position: int) -> None:
        await handler(QueueUpdate(job_id, position, note if position else ""))

    return report


def _seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{max(round(seconds), 1)} s"
    return f"{round(seconds / 60)} min"


_T = TypeVar("_T")

NOT_RESUMABLE = "Easel restarted before this job could start and did not keep its input images; nothing was charged."


KEPT_OPTIONS = ("style", "background", "output_format", "output_compression", "moderation")
"""The request options a job keeps besides model, size, quality and n: what asking again needs."""
MAX_COST = 2**63 - 1
"""The largest cost (micro-dollars) SQLite's integers hold."""
PRIVATE = ("private", 1)
"""The pair in a job's options that marks a result shown only to its requester (not a request option)."""


def is_private(job: JobRecord | QueuedJob) -> bool:
    """True when `job`'s result was asked for privately (`Requester.private`)."""
    return PRIVATE in job.options


def kept_options(req: GenerateRequest | EditRequest) -> JobOptions:
    """The `KEPT_OPTIONS` a checked request sets, as sorted pairs for the job record."""
    found: list[tuple[str, str | int]] = []
    for name in KEPT_OPTIONS:
        value = getattr(req, name, None)
        if isinstance(value, str | int) and not isinstance(value, bool):
            found.append((name, value))
    return tuple(sorted(found))


def generate_again(job: JobRecord | QueuedJob, *, prompt: str | None = None) -> GenerateRequest:
    """The request that draws `job` again (a re-roll, a remix with `prompt`, a resume): everything it kept."""
    options = {name: value for name, value in job.options if name in KEPT_OPTIONS}
    return GenerateRequest(
        prompt=job.prompt if prompt is None else prompt,
        model=job.model,
        n=job.n,
        size=job.size,
        quality=job.quality,
        style=_text(options.get("style")),
        background=_text(options.get("background")),
        output_format=_text(options.get("output_format")),
        output_compression=_number(options.get("output_compression")),
        moderation=_text(options.get("moderation")),
    )


def _text(value: str | int | None) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: str | int | None) -> int | None:
    return value if isinstance(value, int) else None


@dataclass(slots=True)
class _Attempt:
    sent: bool = False
    """The provider may have the request now."""
    lost: bool = False
    """The ledger no longer held the job as queued: someone else resolved it, so it is not ours to refund."""


OUTPAINT_PROMPT = (
    "Extend the scene into the empty area so it continues the picture seamlessly: same style, lighting, "
    "perspective and subject matter; do not change the existing part."
)


class ResultStore(Protocol):
    """Somewhere to keep a job's images (the local image store)."""

    async def save(self, job_id: int, images: Sequence[GeneratedImage]) -> None: ...


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks, and where: the ids budgets and reports are kept by."""

    user_id: str
    guild_id: str = ""
    channel_id: str = ""
    roles: tuple[str, ...] = ()
    private: bool = False
    """The result is for the requester's eyes only: kept on the job (`PRIVATE`), so a job resumed after a
    restart is not posted where others see it."""


@dataclass(frozen=True, slots=True)
class Quote:
    """What a request would cost, and the budgets it would draw on (tightest first)."""

    model: str
    estimate: int
    budgets: tuple[BudgetStatus, ...]


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """A finished job: its id, the images and what they cost (micro-dollars)."""

    job_id: int
    result: ImageResult
    estimate: int
    cost: int
    notes: tuple[str, ...] = ()
    """Plain sentences about what was done to the inputs (a first frame used, padding, scaling)."""


@dataclass(frozen=True, slots=True)
class Plan:
    kind: JobKind
    spec: ModelSpec
    size: str
    quality: str
    n: int
    prompt: str
    estimate: int
    call: Callable[[], Awaitable[ImageResult]]
    options: JobOptions = ()
    """The request's other options that were set, kept on the job (see `KEPT_OPTIONS`)."""


PlanHandler = Callable[[Plan], Awaitable[None]]
"""Told a job's checked plan (what it will cost) before anything is reserved."""


class Studio:
    """Runs image jobs through the ledger: every request priced, reserved, settled or refunded."""

    def __init__(
        self,
        images: ImagesClient,
        ledger: Ledger,
        *,
        store: ResultStore | None = None,
        credit_usd: float = 0.0,
        queue: JobQueue | None = None,
    ) -> None:
        self.images = images
        self.ledger = ledger
        self.store = store
        self.queue = queue
        self._credit_usd = credit_usd
        self._background: set[asyncio.Future[bool]] = set()
        self._active: set[int] = set()
        self.pace: Callable[[], Awaitable[None]] | None = None
        """Awaited after a job's reservation, before its start, before its call and after the provider's
        answer, so that jobs finishing a step together (one group commit, answers arriving at once) go on
        over several turns of the event loop instead of one long one. The bot sets it to its pacer."""

    @property
    def billable(self) -> bool:
        """False for the mock provider, whose placeholders cost nothing."""
        return self.images.provider.name != "mock"

    def _price(self, spec: ModelSpec, *, size: str, quality: str, n: int, prompt: str, inputs: int = 0) -> int:
        if not self.billable:
            return 0
        return pricing.estimate(spec, size=size, quality=quality, n=n, prompt=prompt, input_images=inputs)

    # -- plans: check and price, no side effects --------------------------------------------------

    def plan_generate(self, req: GenerateRequest, *, on_partial: PartialHandler | None = None) -> Plan:
        if on_partial is not None and req.partial_images is None:
            # Previews only where the model streams; asking a non-streaming model for them is an error.
            model = self.images.catalogue.find(req.model or self.images.default_model)
            if model is not None and model.streaming and model.partial_images_max > 0:
                req = dataclasses.replace(req, partial_images=min(PREVIEWS, model.partial_images_max))
        spec, checked = self.images.check_generate(req)
        size, quality = checked.size or spec.default_size, checked.quality or spec.default_quality
        return Plan(
            kind="generate",
            spec=spec,
            size=size,
            quality=quality,
            n=checked.n,
            prompt=checked.prompt,
            estimate=self._price(spec, size=size, quality=quality, n=checked.n, prompt=checked.prompt),
            options=kept_options(checked),
            call=(
                (lambda: _collect(self.images.generate_stream(req), on_partial))
                if on_partial is not None and spec.streaming
                else (lambda: self.images.generate(req))
            ),
        )

    def plan_edit(self, req: EditRequest, *, kind: JobKind = "edit") -> Plan:
        spec, checked = self.images.check_edit(req)
        size, quality = checked.size or spec.default_size, checked.quality or spec.default_quality
        return Plan(
            kind=kind,
            spec=spec,
            size=size,
            quality=quality,
            n=checked.n,
            prompt=checked.prompt,
            estimate=self._price(
                spec, size=size, quality=quality, n=checked.n, prompt=checked.prompt, inputs=len(checked.images)
            ),
            options=kept_options(checked),
            call=lambda: self.images.edit(req),
        )

    def plan_vary(self, req: VaryRequest) -> Plan:
        spec, checked, edit = self.images.vary_plan(req)
        size = checked.size or spec.default_size
        quality = (edit.quality if edit else None) or spec.default_quality
        prompt = edit.prompt if edit else (checked.prompt or "")
        return Plan(
            kind="vary",
            spec=spec,
            size=size,
            quality=quality,
            n=checked.n,
            prompt=checked.prompt or "",
            estimate=self._price(spec, size=size, quality=quality, n=checked.n, prompt=prompt, inputs=1 if edit else 0),
            call=lambda: self.images.vary(req),
        )

    # -- quotes and runs --------------------------------------------------------------------------------

    def _draft(self, plan: Plan, who: Requester, parent: tuple[int, int] | None) -> JobDraft:
        return JobDraft(
            kind=plan.kind,
            user_id=who.user_id,
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            roles=who.roles,
            model=plan.spec.name,
            provider=self.images.provider.name,
            size=plan.size,
            quality=plan.quality,
            n=plan.n,
            prompt=plan.prompt,
            parent_job=parent[0] if parent else None,
            parent_index=parent[1] if parent else None,
            options=tuple(sorted((*plan.options, PRIVATE))) if who.private else plan.options,
        )

    async def quote(self, plan: Plan, who: Requester) -> Quote:
        """The estimate and the budgets that apply, for showing before anything is spent."""
        budgets = await self.ledger.budget_status(self._draft(plan, who, None))
        return Quote(model=plan.spec.name, estimate=plan.estimate, budgets=tuple(budgets))

    async def _rejected(self, draft: JobDraft, error: EaselError) -> None:
        await self.ledger.reject(draft, code=error.code or type(error).__name__, message=error.message)

    async def run(
        self,
        make_plan: Callable[[], Plan],
        who: Requester,
        *,
        fallback: JobDraft,
        parent: tuple[int, int] | None = None,
        on_queue: QueueHandler | None = None,
        on_plan: PlanHandler | None = None,
    ) -> JobOutcome:
        """Check, reserve, wait for a slot, call, then settle or refund; the outcome or the EaselError that stopped it.

        `on_queue` hears the job's place in line (and why it waits, after a 429) while it waits; `on_plan`
        hears the checked plan (its estimate) before anything is reserved.
        """
        try:
            plan = make_plan()
        except EaselError as error:
            await self._rejected(dataclasses.replace(fallback, parent_job=parent[0] if parent else None), error)
            raise
        if on_plan is not None:
            await on_plan(plan)
        draft = self._draft(plan, who, parent)
        if self.queue is not None:
            try:
                self.queue.admit(who.user_id)
            except QueueFull as error:
                await self._rejected(draft, error)
                raise
        reserving = asyncio.ensure_future(self.ledger.reserve(draft, plan.estimate))
        job_id: int | None = None
        try:
            job_id = await asyncio.shield(reserving)
        except EaselError as error:
            await self._rejected(draft, error)
            raise
        except asyncio.CancelledError:
            # The reservation may still commit after we stop waiting: give it back as soon as it does.
            reserving.add_done_callback(self._refund_abandoned)
            raise
        finally:
            if job_id is None and self.queue is not None:
                self.queue.withdraw(who.user_id)
        await self._paced()  # one group commit ends many reservations at once
        return await self._execute(job_id, plan, who, on_queue=on_queue, admitted=True)

    async def _execute(
        self, job_id: int, plan: Plan, who: Requester, *, on_queue: QueueHandler | None, admitted: bool = False
    ) -> JobOutcome:
        """A reserved job to its end: its turn, the call, then settle, or refund (or keep an unknown charge)."""
        attempt = _Attempt()
        self._active.add(job_id)
        try:
            result = await self._call(job_id, plan, who, attempt, on_queue=on_queue, admitted=admitted)
        except JobCancelled as error:
            if not attempt.lost:
                await self.ledger.refund(job_id, code="cancelled", message=error.message, status="cancelled")
            raise
        except EaselError as error:
            await self.ledger.fail(job_id, error, sent=attempt.sent)
            raise
        except asyncio.CancelledError:
            # Stopped while the provider had the request: like a crash at that moment, it may have billed.
            if attempt.sent:
                await self.ledger.keep_unknown(job_id, code="cancelled", message="Stopped while the images were made.")
            elif not attempt.lost:
                await self.ledger.refund(job_id, code="cancelled", status="cancelled")
            raise
        except Exception:
            # A bug on our side, not an answer from the provider: give the money back, keep the trace.
            if not attempt.lost:
                await self.ledger.refund(job_id, code="internal", message="Easel failed before the images arrived.")
            raise
        finally:
            self._active.discard(job_id)
        await self._paced()
        cost = self._cost(plan, result)
        # Settling (a ledger write) and keeping the images (hashing and writing files, then their rows) wait
        # on different things, so they go on together; the rows often share the settlement's commit.
        settled, _ = await asyncio.gather(
            self.ledger.settle(
                job_id, cost, revised_prompt=result.revised_prompt, request_id=result.request_id, credits=result.credits
            ),
            self._keep(job_id, result),
            return_exceptions=True,
        )
        if isinstance(settled, BaseException):
            await self._unsettled(job_id, settled)
            cost = plan.estimate
        return JobOutcome(job_id=job_id, result=result, estimate=plan.estimate, cost=cost)

    async def _unsettled(self, job_id: int, error: BaseException) -> None:
        """The images arrived, and are paid for, but their charge could not be written (another writer held
        the database past its timeout, say): they are still delivered, and the charge is kept as unknown (or,
        failing that too, left to the next start's crash rule, which does the same)."""
        log.error("job %d: the images arrived but their charge could not be written", job_id, exc_info=error)
        try:
            await self.ledger.keep_unknown(job_id, code="unsettled", message="The charge could not be written.")
        except Exception:
            log.exception("job %d: nor could the estimate be kept; the next start resolves it", job_id)

    async def _keep(self, job_id: int, result: ImageResult) -> None:
        """Save the images in the store; a failure is logged, never raised: they are paid for and delivered."""
        if self.store is None:
            return
        try:
            await self.store.save(job_id, result.images)
        except Exception:
            log.exception("job %d: could not store its images", job_id)

    async def _call(
        self,
        job_id: int,
        plan: Plan,
        who: Requester,
        attempt: _Attempt,
        *,
        on_queue: QueueHandler | None,
        admitted: bool,
    ) -> ImageResult:
        """Mark the job running and call the provider: at once without a queue, else in its turn.

        With a queue, a 429 gives the slot back and puts the job at the front of its user's line, queued
        again (nothing was billed), until the queue's rate-limit policy says to give up.
        """
        queue = self.queue
        if queue is None:
            await _report(on_queue, QueueUpdate(job_id, 0))
            await self._start(job_id, attempt)
            return await plan.call()
        tries, delay, note = 1, 0.0, ""
        since: float | None = None
        while True:
            async with queue.slot(
                job_id,
                who.user_id,
                who.guild_id,
                on_position=_reporter(on_queue, job_id, note),
                front=tries > 1,
                delay=delay,
                admitted=admitted and tries == 1,
            ):
                await self._start(job_id, attempt)
                try:
                    return await plan.call()
                except RateLimited as error:
                    since = queue.clock() if since is None else since
                    wait = queue.rate_limit_delay(error, tries=tries, since=since)
                    if wait is None:
                        raise
                    # Turned away unserved: nothing was billed, so the job waits again with its money reserved.
                    await requeue(self.ledger.db, job_id)
                    attempt.sent = False
            tries, delay = tries + 1, wait
            note = (
                f"The image service is busy; your request stays in line and tries again in {_seconds(wait)} "
                f"(try {tries} of {queue.rate_limit_tries})."
            )
            log.info("job %d: rate limited, retrying in %.1f s (try %d)", job_id, wait, tries)

    async def _paced(self) -> None:
        if self.pace is not None:
            await self.pace()

    async def _start(self, job_id: int, attempt: _Attempt) -> None:
        """Mark the job running, with a paced turn before (many start together) and after (before the call)."""
        await self._paced()
        if not await self.ledger.start(job_id):
            attempt.lost = True
            raise JobCancelled("This job is no longer waiting to run; it was cancelled or has already finished.")
        attempt.sent = True
        await self._paced()

    # -- the queue --------------------------------------------------------------------------------------

    def cancel(self, job_id: int) -> bool:
        """Cancel a job still waiting for its turn (it ends 'cancelled', fully refunded); False once it runs."""
        return self.queue.cancel(job_id) if self.queue is not None else False

    async def queued(self) -> list[QueuedJob]:
        """Jobs a restart left queued with their money reserved, oldest first, for `resume()`."""
        return await queued_jobs(self.ledger.db)

    async def resume(
        self,
        job: QueuedJob,
        *,
        on_partial: PartialHandler | None = None,
        on_queue: QueueHandler | None = None,
    ) -> JobOutcome:
        """Run a job reserved before a restart, under its original reservation (never charged twice).

        Generate jobs are rebuilt from their record (`generate_again`: prompt, model, size, quality, n and
        the kept options). Edits, outpaints and variations need input images that were never stored: they
        are refunded ('cancelled') and raise JobCancelled saying so.
        """
        if job.job_id in self._active:
            raise ValueError(f"job {job.job_id} is already running in this process")
        if job.kind != "generate":
            await self.ledger.refund(job.job_id, code="interrupted", message=NOT_RESUMABLE, status="cancelled")
            raise JobCancelled(NOT_RESUMABLE)
        req = dataclasses.replace(generate_again(job), user=job.user_id)
        try:
            plan = self.plan_generate(req, on_partial=on_partial)
        except EaselError as error:
            # The model or option is gone since (catalogue change): refund, the request never went out.
            await self.ledger.fail(job.job_id, error, sent=False)
            raise
        who = Requester(
            user_id=job.user_id,
            guild_id=job.guild_id,
            channel_id=job.channel_id,
            roles=job.roles,
            private=is_private(job),
        )
        # The reservation made before the restart is what settles; prices may have changed since.
        return await self._execute(job.job_id, dataclasses.replace(plan, estimate=job.estimate), who, on_queue=on_queue)

    def _refund_abandoned(self, reserving: asyncio.Future[int]) -> None:
        if reserving.cancelled() or reserving.exception() is not None:
            return
        job_id = reserving.result()
        task = asyncio.ensure_future(self.ledger.refund(job_id, code="cancelled", status="cancelled"))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _cost(self, plan: Plan, result: ImageResult) -> int:
        if result.mock or not self.billable:
            return 0
        if result.credits is not None:
            credits = result.credits
            cost = pricing.credits_to_micros(credits, self._credit_usd) if math.isfinite(credits) else -1
            if not 0 <= cost <= MAX_COST:
                # A provider's bug, not a price: the estimate is what the job was reserved at.
                log.warning("the provider reported %r credits; charging the estimate instead", credits)
                return plan.estimate
            return cost
        return pricing.actual(plan.spec, usage=result.usage, estimate=plan.estimate)

    # -- the three verbs -------------------------------------------------------------------------------

    def _fallback(self, kind: JobKind, who: Requester, model: str | None, prompt: str, n: int) -> JobDraft:
        """The job record for a request refused before its model was even resolved."""
        return JobDraft(
            kind=kind,
            user_id=who.user_id,
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            roles=who.roles,
            model=model or self.images.default_model,
            provider=self.images.provider.name,
            n=max(n, 1),
            prompt=prompt,
        )

    async def generate(
        self,
        req: GenerateRequest,
        who: Requester,
        *,
        parent: tuple[int, int] | None = None,
        on_partial: PartialHandler | None = None,
        on_queue: QueueHandler | None = None,
    ) -> JobOutcome:
        """Images from a prompt; `on_partial` receives streamed previews when the model streams."""
        req = dataclasses.replace(req, user=who.user_id)
        fallback = self._fallback("generate", who, req.model, req.prompt, req.n)
        plan = functools.partial(self.plan_generate, req, on_partial=on_partial)
        return await self.run(plan, who, fallback=fallback, parent=parent, on_queue=on_queue)

    async def _prepared(self, fallback: JobDraft, work: Callable[[], _T]) -> _T:
        """Run input preparation in a thread; a refusal is recorded as a rejected job and re-raised."""
        try:
            return await asyncio.to_thread(work)
        except EaselError as error:
            await self._rejected(fallback, error)
            raise

    async def edit(
        self,
        req: EditRequest,
        who: Requester,
        *,
        region: Region | None = None,
        square: SquareMode = "pad",
        parent: tuple[int, int] | None = None,
        on_queue: QueueHandler | None = None,
        on_plan: PlanHandler | None = None,
    ) -> JobOutcome:
        """Edit the uploaded image(s): prepared for the model, masked by `region`, the mask upload or transparency.

        `on_plan` hears the plan once the uploads are prepared (converted, padded), so its estimate is the
        one reserved."""
        req = dataclasses.replace(req, user=who.user_id)
        fallback = self._fallback("edit", who, req.model, req.prompt, req.n)
        spec = await self._model(req.model, fallback)
        uploads = [image.data for image in req.images]
        mask = req.mask.data if req.mask else None
        ready = await self._prepared(
            fallback, lambda: prepare_edit(uploads, spec, mask=mask, region=region, square=square)
        )
        req = dataclasses.replace(req, images=ready.images, mask=ready.mask)
        outcome = await self.run(
            lambda: self.plan_edit(req), who, fallback=fallback, parent=parent, on_queue=on_queue, on_plan=on_plan
        )
        return dataclasses.replace(outcome, notes=ready.notes)

    async def outpaint(
        self,
        image: InputImage,
        who: Requester,
        *,
        prompt: str = "",
        factor: float | None = None,
        direction: Direction | None = None,
        model: str | None = None,
        quality: str | None = None,
        parent: tuple[int, int] | None = None,
        on_queue: QueueHandler | None = None,
        on_plan: PlanHandler | None = None,
    ) -> JobOutcome:
        """Zoom out by `factor` or pan in `direction`, painting the new area (at `quality`: the source's, so a
        low-quality image is not extended at the model's dearest default)."""
        instruction = prompt or OUTPAINT_PROMPT
        fallback = self._fallback("outpaint", who, model, instruction, 1)
        spec = await self._model(model, fallback)
        ready = await self._prepared(
            fallback, lambda: prepare_outpaint(image.data, spec, factor=factor, direction=direction)
        )
        req = EditRequest(
            prompt=instruction,
            images=ready.images,
            mask=ready.mask,
            model=spec.name,
            size=ready.size,
            quality=quality if quality in spec.qualities else None,
            user=who.user_id,
        )
        outcome = await self.run(
            lambda: self.plan_edit(req, kind="outpaint"),
            who,
            fallback=fallback,
            parent=parent,
            on_queue=on_queue,
            on_plan=on_plan,
        )
        return dataclasses.replace(outcome, notes=ready.notes)

    async def vary(
        self,
        req: VaryRequest,
        who: Requester,
        *,
        parent: tuple[int, int] | None = None,
        on_queue: QueueHandler | None = None,
        on_plan: PlanHandler | None = None,
    ) -> JobOutcome:
        """Variations of the uploaded image, through the variations endpoint or edit (`on_plan`: as for edit)."""
        req = dataclasses.replace(req, user=who.user_id)
        fallback = self._fallback("vary", who, req.model, req.prompt or "", req.n)
        try:
            spec = self.images.vary_model(req.model)
        except EaselError as error:
            await self._rejected(fallback, error)
            raise
        upload = req.image.data
        image, notes = await self._prepared(fallback, lambda: prepare_vary(upload, spec))
        req = dataclasses.replace(req, image=image, model=spec.name)
        outcome = await self.run(
            lambda: self.plan_vary(req), who, fallback=fallback, parent=parent, on_queue=on_queue, on_plan=on_plan
        )
        return dataclasses.replace(outcome, notes=notes)

    async def _model(self, name: str | None, fallback: JobDraft) -> ModelSpec:
        try:
            return self.images.model(name)
        except EaselError as error:
            await self._rejected(fallback, error)
            raise
