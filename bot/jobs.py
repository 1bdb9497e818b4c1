"""The core service the bot and the CLI call: one priced, recorded job per generate, edit or vary.

    check the request  → refused: a 'rejected' job with the reason, nothing charged
    estimate its price → reserve it against every budget (refused: 'rejected', nothing charged)
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
from bot.errors import EaselError, StreamInterrupted
from bot.imaging.edits import prepare_edit, prepare_outpaint, prepare_vary
from bot.imaging.inputs import SquareMode
from bot.imaging.masks import Region
from bot.imaging.outpaint import Direction
from bot.store.ledger import BudgetStatus, JobDraft, JobKind, Ledger

log = logging.getLogger(__name__)

PartialHandler = Callable[[PartialImage], Awaitable[None]]
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


_T = TypeVar("_T")

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


class Studio:
    """Runs image jobs through the ledger: every request priced, reserved, settled or refunded."""

    def __init__(
        self,
        images: ImagesClient,
        ledger: Ledger,
        *,
        store: ResultStore | None = None,
        credit_usd: float = 0.0,
    ) -> None:
        self.images = images
        self.ledger = ledger
        self.store = store
        self._credit_usd = credit_usd
        self._background: set[asyncio.Future[bool]] = set()

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
    ) -> JobOutcome:
        """Check, reserve, call, then settle or refund; the outcome or the EaselError that stopped it."""
        try:
            plan = make_plan()
        except EaselError as error:
            await self._rejected(dataclasses.replace(fallback, parent_job=parent[0] if parent else None), error)
            raise
        draft = self._draft(plan, who, parent)
        reserving = asyncio.ensure_future(self.ledger.reserve(draft, plan.estimate))
        try:
            job_id = await asyncio.shield(reserving)
        except EaselError as error:
            await self._rejected(draft, error)
            raise
        except asyncio.CancelledError:
            # The reservation may still commit after we stop waiting: give it back as soon as it does.
            reserving.add_done_callback(self._refund_abandoned)
            raise
        sent = False
        try:
            await self.ledger.start(job_id)
            sent = True
            result = await plan.call()
        except EaselError as error:
            await self.ledger.fail(job_id, error, sent=sent)
            raise
        except asyncio.CancelledError:
            # Stopped while the provider had the request: like a crash at that moment, it may have billed.
            if sent:
                await self.ledger.keep_unknown(job_id, code="cancelled", message="Stopped while the images were made.")
            else:
                await self.ledger.refund(job_id, code="cancelled", status="cancelled")
            raise
        except Exception:
            # A bug on our side, not an answer from the provider: give the money back, keep the trace.
            await self.ledger.refund(job_id, code="internal", message="Easel failed before the images arrived.")
            raise
        cost = self._cost(plan, result)
        await self.ledger.settle(
            job_id, cost, revised_prompt=result.revised_prompt, request_id=result.request_id, credits=result.credits
        )
        if self.store is not None:
            try:
                await self.store.save(job_id, result.images)
            except Exception:
                # The images were paid for: deliver them even if the local copy could not be kept (disk, database).
                log.exception("job %d: could not store its images", job_id)
        return JobOutcome(job_id=job_id, result=result, estimate=plan.estimate, cost=cost)

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
            return pricing.credits_to_micros(result.credits, self._credit_usd)
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
    ) -> JobOutcome:
        """Images from a prompt; `on_partial` receives streamed previews when the model streams."""
        req = dataclasses.replace(req, user=who.user_id)
        if on_partial is not None and req.partial_images is None:
            req = dataclasses.replace(req, partial_images=PREVIEWS)
        fallback = self._fallback("generate", who, req.model, req.prompt, req.n)
        plan = functools.partial(self.plan_generate, req, on_partial=on_partial)
        return await self.run(plan, who, fallback=fallback, parent=parent)

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
    ) -> JobOutcome:
        """Edit the uploaded image(s): prepared for the model, masked by `region`, the mask upload or transparency."""
        req = dataclasses.replace(req, user=who.user_id)
        fallback = self._fallback("edit", who, req.model, req.prompt, req.n)
        spec = await self._model(req.model, fallback)
        uploads = [image.data for image in req.images]
        mask = req.mask.data if req.mask else None
        ready = await self._prepared(
            fallback, lambda: prepare_edit(uploads, spec, mask=mask, region=region, square=square)
        )
        req = dataclasses.replace(req, images=ready.images, mask=ready.mask)
        outcome = await self.run(lambda: self.plan_edit(req), who, fallback=fallback, parent=parent)
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
        parent: tuple[int, int] | None = None,
    ) -> JobOutcome:
        """Zoom out by `factor` or pan in `direction`, painting the new area."""
        instruction = prompt or OUTPAINT_PROMPT
        fallback = self._fallback("outpaint", who, model, instruction, 1)
        spec = await self._model(model, fallback)
        ready = await self._prepared(
            fallback, lambda: prepare_outpaint(image.data, spec, factor=factor, direction=direction)
        )
        req = EditRequest(
            prompt=instruction, images=ready.images, mask=ready.mask, model=spec.name, size=ready.size, user=who.user_id
        )
        outcome = await self.run(lambda: self.plan_edit(req, kind="outpaint"), who, fallback=fallback, parent=parent)
        return dataclasses.replace(outcome, notes=ready.notes)

    async def vary(self, req: VaryRequest, who: Requester, *, parent: tuple[int, int] | None = None) -> JobOutcome:
        """Variations of the uploaded image, through the variations endpoint or edit."""
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
        outcome = await self.run(lambda: self.plan_vary(req), who, fallback=fallback, parent=parent)
        return dataclasses.replace(outcome, notes=notes)

    async def _model(self, name: str | None, fallback: JobDraft) -> ModelSpec:
        try:
            return self.images.model(name)
        except EaselError as error:
            await self._rejected(fallback, error)
            raise
