"""Showing results in Discord: progress, live previews, the result message, and failures in one sentence.

`Renderer` is shared by /imagine and the buttons. A reply always goes the same way: the "thinking…"
placeholder is edited into progress ("Estimated cost $0.21 · you have $1.79 left today"), while the job
waits its turn into its place in line with a Cancel button (`cogs.cancel`), then into streamed previews (at
most one every 2 s, sent without holding up the stream), and finally into the result: every image as its own
attachment (at most ten), fitted to the upload limit off the event loop, and no grid. Discord shows two to
ten attachments of one message as a gallery, in their order, and shows an attachment the embed references
only inside the embed: so a single image is the embed's image, and several stay plain attachments (a grid
beside them would only show every image twice). The embed has the prompt, the revised prompt, model, size,
quality, the actual cost, the tightest budget left and when it resets, and any notes; a variation (or zoom,
or pan) names the image it came from and shows the prompt it all started from. The footer names the job,
once, with the reactions' hint ("Job #12 · React 🔁 to vary image 1 · 🚩 to report it"; just "Job #12" on a
private result, which gets no reactions). Then come the priced buttons, each saying what it does
(`cogs.buttons`). Where Discord holds each image is then recorded in the image store, so old buttons can
fetch it back.

An interaction token lives 15 minutes. A result that arrives later (checked against `interaction.created_at`
with a margin, or learnt from Discord's refusal) is posted in the channel with the member's mention instead,
or sent by direct message when the reply was private. Every failure is one sentence from
`cogs.errors.friendly`, shown only to the member who asked.

Everything is paced (`bot.pacing`): when a burst arrives or many jobs finish together, each defer
(`Renderer.defer`), each reply's start and each result's building and upload wait for a turn of the
event loop with room, so the bot stays responsive meanwhile. Defers go first: they answer Discord's 3 s
rule, so a reply's work after its defer waits until no defer is on its way (2 s at most). A result is done
once it is posted: its reactions are added afterwards, in a task of their own (still counted as in flight
for a clean stop), once no defer is on its way and no other result is being posted, so they never hold up
anyone's reply.

A command marked `cogs.first.ACK_FIRST` is usually answered from its gateway frame before it runs:
`Renderer.defer` then finds it answered and returns at once (or defers the usual way, if that answer failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import io
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot.api.types import EditRequest, GeneratedImage, InputImage, PartialImage, VaryRequest
from bot.config import Settings
from bot.errors import EaselError, ImageGone
from bot.imaging.fit import DISCORD_MAX_BYTES, DISCORD_MAX_FILES, FittedFile
from bot.imaging.outpaint import Direction, plan_geometry
from bot.imaging.pool import ImageWorkers
from bot.inflight import InFlight
from bot.jobs import (
    OUTPAINT_PROMPT,
    JobOutcome,
    PartialHandler,
    Plan,
    PlanHandler,
    QueueHandler,
    Quote,
    Requester,
    Studio,
    generate_again,
)
from bot.pacing import Pacer
from bot.pricing import format_usd
from bot.queue import QueueUpdate
from bot.store.images import ImageStore, extension
from bot.store.ledger import BudgetStatus, JobDraft, JobRecord, Ledger, describe_budget
from cogs.allowance import EditAllowance, allowance
from cogs.buttons import NO_JOB, PAN_ARROWS, ZOOM_FACTORS, Prices, image_view, result_view
from cogs.cancel import QueueWatch
from cogs.errors import SENT_BY_DM, UNDELIVERED, answer_privately, friendly, is_users_fault
from cogs.first import ALREADY_ACKNOWLEDGED, FirstAnswers, mark_deferred

if TYPE_CHECKING:
    from bot.app import EaselBot

log = logging.getLogger(__name__)

VARY = "🔁"
FLAG = "🚩"
RESULT_REACTIONS = (VARY, FLAG)
RESULT_HINT = "React 🔁 to vary image 1 · 🚩 to report it"
"""What Easel adds to each public result it posts: 🔁 varies image 1, 🚩 flags it for the moderators."""
LINEAGE_DEPTH = 10
"""How many parents to follow back from a variation (or zoom, or pan) to the prompt it all started from."""


def result_footer(job_id: int, *, reactions: bool) -> str:
    """The one place a result names its job: "Job #12 · React 🔁 to vary image 1 · 🚩 to report it"."""
    return f"Job #{job_id} · {RESULT_HINT}" if reactions else f"Job #{job_id}"


async def add_result_reactions(message: discord.Message) -> None:
    """Add 🔁 and 🚩 to a result; a missing permission only means the reactions are not there to click."""
    for emoji in RESULT_REACTIONS:
        try:
            await message.add_reaction(emoji)
        except discord.HTTPException as error:
            log.info("could not add %s to message %s: %s", emoji, message.id, error)
            return


def react_later(in_flight: InFlight, pacer: Pacer, message: discord.Message, job_id: int) -> None:
    """Add the result reactions to `message` in a task of its own, once no defer is on its way and no result
    is being posted."""

    async def react() -> None:
        await pacer.defers.quiet()
        await pacer.results.quiet()
        await pacer.turn()
        await add_result_reactions(message)

    in_flight.spawn(react(), name=f"reactions for job {job_id}")


TOKEN_LIFETIME = dt.timedelta(minutes=14, seconds=30)
"""How long an interaction token is trusted: Discord's 15 minutes, less a margin for the upload itself."""
PREVIEW_INTERVAL = 2.0
"""Seconds between two preview updates: Discord rate-limits message edits, and nobody needs more."""
PROMPT_SHOWN = 1000
"""Characters of the prompt shown in the embed (the rest is in the job record)."""
FIELD_MAX = 1024
TITLE_MAX = 256

_WHEN = {"day": "today", "week": "this week", "month": "this month", "all": "in total"}


@dataclass(frozen=True, slots=True)
class Hooks:
    """What a reply's job reports to: itself the preview handler (`on_partial`), plus `on_queue`.

    Being a `PartialHandler` keeps old one-argument work (and wrappers of it) working unchanged.
    """

    on_partial: PartialHandler
    on_queue: QueueHandler | None = None

    async def __call__(self, partial: PartialImage) -> None:
        await self.on_partial(partial)


Work = Callable[[Hooks], Awaitable[JobOutcome]]
"""A job to run for a reply: given its hooks (previews, place in line), its outcome (or the error that stopped it).

Pass both on: `studio.generate(req, who, on_partial=hooks, on_queue=hooks.on_queue)`.
"""


def requester(interaction: discord.Interaction[Any], *, private: bool = False) -> Requester:
    """Who asks, and where: the ids budgets apply to ('' for the guild in DMs), the member's roles, and
    whether the result is for them alone."""
    user = interaction.user
    roles = (
        tuple(str(role.id) for role in user.roles if not role.is_default()) if isinstance(user, discord.Member) else ()
    )
    return Requester(
        user_id=str(user.id),
        guild_id=str(interaction.guild_id) if interaction.guild_id else "",
        channel_id=str(interaction.channel_id) if interaction.channel_id else "",
        roles=roles,
        private=private,
    )


def token_expired(interaction: discord.Interaction[Any], now: dt.datetime) -> bool:
    """True once the interaction is too old to answer through its token."""
    return now - interaction.created_at >= TOKEN_LIFETIME


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def budget_left(status: BudgetStatus) -> str:
    """ "you have $1.79 left today", or "$4.00 left in this server's monthly budget"."""
    left = format_usd(status.remaining)
    if status.budget.scope == "user":
        return f"you have {left} left {_WHEN[status.budget.period]}"
    return f"{left} left in {describe_budget(status.budget)}"


def estimate_line(quote: Quote) -> str:
    """The progress line shown before a job runs: its estimate and the tightest budget."""
    line = f"🎨 Working on it… estimated cost {format_usd(quote.estimate)}"
    if quote.budgets:
        line += f" · {budget_left(quote.budgets[0])}"
    return line


def queue_line(update: QueueUpdate, quote: Quote | None) -> str:
    """The progress line while a job waits ("⏳ Queued: number 3 in line · …") or starts, with its estimate."""
    line = f"⏳ Queued: number {update.position} in line" if update.position else "🖌️ Starting…"
    if quote is not None:
        line += f" · estimated cost {format_usd(quote.estimate)}"
        if quote.budgets:
            line += f" · {budget_left(quote.budgets[0])}"
    if update.note:
        line += f"\n{update.note}"
    return line


def _expired_token(error: discord.HTTPException) -> bool:
    """Discord's answers for a reply that can no longer be edited: the token expired or the message is gone."""
    return isinstance(error, discord.NotFound) or error.code in (10015, 50027)


def _input(image: GeneratedImage) -> InputImage:
    return InputImage(image.data, filename=f"image.{extension(image.mime)}", mime=image.mime)


@dataclass(frozen=True, slots=True)
class Upload:
    """One file to attach: its name and bytes, and the job image it is."""

    filename: str
    data: bytes
    index: int

    def file(self) -> discord.File:
        # A fresh File each time: discord.py closes a File once it has been sent.
        return discord.File(io.BytesIO(self.data), filename=self.filename)


class PreviewUpdater:
    """A `Studio.generate(on_partial=...)` handler that shows the latest preview at most once per `interval`.

    The stream never waits on Discord for a preview: each edit goes in a task of its own, and a preview
    arriving while the last edit is still on its way is skipped (without counting against the interval).
    `finish()` waits for that edit, so the result, posted after it, is never overwritten by a late preview.
    """

    def __init__(
        self,
        show: Callable[[PartialImage], Awaitable[None]],
        *,
        interval: float = PREVIEW_INTERVAL,
        clock: Callable[[], float] | None = None,
        shared: EditAllowance | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self._show = show
        self._ready = ready
        """False while the reply's previous edit (the estimate) is still on its way: skip, don't wait."""
        self._interval = interval
        self._clock = clock or time.monotonic
        self._shared = shared
        """The allowance every reply's previews draw from (cogs.allowance); None: only `interval` limits."""
        self._last: float | None = None
        self._editing: asyncio.Task[None] | None = None
        self.shown = 0

    async def __call__(self, partial: PartialImage) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return
        if self._editing is not None and not self._editing.done():
            return  # the last preview is still on its way to Discord; the stream goes on without waiting
        if self._ready is not None and not self._ready():
            return  # the stream never waits on Discord for a courtesy edit
        if self._shared is not None and not self._shared.take():
            return  # many replies at once: this one skips a preview, the next (or the result) shows
        self._last = now
        self._editing = asyncio.get_running_loop().create_task(self._edit(partial), name="preview edit")

    async def _edit(self, partial: PartialImage) -> None:
        try:
            await self._show(partial)
        except discord.HTTPException as exc:
            # A preview is a courtesy: the job goes on, and the result replaces it anyway.
            log.debug("could not show a preview: %s", exc)
            return
        except Exception:
            log.exception("could not show a preview")
            return
        self.shown += 1

    async def finish(self) -> None:
        """Wait for the preview edit on its way, if any (it never raises)."""
        if self._editing is not None:
            await asyncio.shield(self._editing)


class Renderer:
    """Progress, previews, results and failures for one bot; see the module docstring."""

    def __init__(
        self,
        studio: Studio,
        image_store: ImageStore,
        workers: ImageWorkers,
        ledger: Ledger,
        settings: Settings,
        *,
        now: Callable[[], dt.datetime] = discord.utils.utcnow,
        preview_clock: Callable[[], float] | None = None,
        preview_interval: float = PREVIEW_INTERVAL,
        in_flight: InFlight | None = None,
        pacer: Pacer | None = None,
        first: FirstAnswers | None = None,
    ) -> None:
        self._studio = studio
        self.in_flight = in_flight or InFlight()
        """Replies in flight, which a clean stop lets finish (the bot's own, shared by every cog)."""
        self.pacer = pacer or Pacer()
        """Turns of the event loop for results (the bot's own, shared by every cog)."""
        self.first = first
        """The bot's early acknowledgements (`cogs.first`): a defer finds its interaction answered there."""
        self._store = image_store
        self._workers = workers
        self._ledger = ledger
        self.settings = settings
        self._now = now
        self._preview_clock = preview_clock
        self._preview_interval = preview_interval
        self._quotes: dict[int, Quote] = {}
        """The estimate shown for each interaction whose job is running, for its place-in-line updates."""
        self._estimates: dict[int, asyncio.Task[None]] = {}
        """Each reply's estimate edit, while the job goes on without waiting for Discord to answer it."""
        self._running: set[int] = set()
        """Interactions whose job `run` is handling."""
        self._reply_ids: dict[int, int] = {}
        """The reply's message id of each running job, once an edit returned it (see `_remove_stale_reply`)."""

    @classmethod
    def of(cls, bot: EaselBot) -> Renderer:
        """A renderer for one of `bot`'s cogs: its services and workers, its replies in flight and its pacer."""
        core = bot.core
        return cls(
            core.studio,
            core.image_store,
            bot.workers,
            core.ledger,
            core.settings,
            in_flight=bot.in_flight,
            pacer=bot.pacer,
            first=bot.first_answers,
        )

    # -- small helpers the cogs share ------------------------------------------------------------------

    @staticmethod
    def requester(interaction: discord.Interaction[Any], *, private: bool = False) -> Requester:
        return requester(interaction, private=private)

    def vary_model(self, model: str) -> str | None:
        """`model` when it can vary images; else None, so the studio picks one that can."""
        spec = self._studio.images.catalogue.find(model)
        return spec.name if spec is not None and spec.can_vary() else None

    def edit_model(self, model: str) -> str | None:
        """`model` when it can paint into a masked area (zoom and pan need that); else None for the default."""
        spec = self._studio.images.catalogue.find(model)
        usable = spec is not None and spec.supports("edit") and spec.edit is not None and spec.edit.mask
        return spec.name if spec is not None and usable else None

    def prices(self, job: JobRecord | None, image: GeneratedImage | None) -> Prices:
        """What each button under `job`'s result would cost, estimated without calling the provider.

        None leaves a button out: the model cannot do it (or the job is gone).
        """
        if job is None:
            return Prices(vary=None, reroll=None, remix=None, outpaint=None)
        vary = outpaint = None
        each: dict[str, int] = {}
        if image is not None:
            source = _input(image)
            vary_req = VaryRequest(image=source, model=self.vary_model(job.model), n=1, quality=job.quality)
            vary = self._estimate(lambda: self._studio.plan_vary(vary_req))
            edit_req = EditRequest(prompt=OUTPAINT_PROMPT, images=(source,), model=self.edit_model(job.model))
            outpaint = self._estimate(lambda: self._studio.plan_edit(edit_req, kind="outpaint"))
            if outpaint is not None:
                each = self._outpaint_prices(job, image, edit_req)
        reroll = remix = None
        if job.kind == "generate":
            again = generate_again(job)
            reroll = remix = self._estimate(lambda: self._studio.plan_generate(again))
        elif job.kind == "vary" and job.parent_job is not None:
            reroll = vary
        return Prices(vary=vary, reroll=reroll, remix=remix, outpaint=outpaint, outpaint_each=each)

    def _outpaint_prices(self, job: JobRecord, image: GeneratedImage, req: EditRequest) -> dict[str, int]:
        """Each zoom's and pan's price, for the canvas it paints and at the job's quality, as it will be run."""
        try:
            spec = self._studio.images.model(req.model)
        except EaselError:
            return {}
        quality = job.quality if job.quality in spec.qualities else None
        prices: dict[str, int] = {}
        steps: list[tuple[str, float | None, Direction | None]] = [
            *((key, factor, None) for key, factor in ZOOM_FACTORS.items()),
            *((direction, None, direction) for direction in PAN_ARROWS),
        ]
        for key, factor, direction in steps:
            try:
                geometry = plan_geometry(image.width, image.height, spec, factor=factor, direction=direction)
            except (EaselError, ValueError):
                continue
            sized = dataclasses.replace(req, model=spec.name, size=geometry.size, quality=quality)
            price = self._estimate(functools.partial(self._studio.plan_edit, sized, kind="outpaint"))
            if price is not None:
                prices[key] = price
        return prices

    @staticmethod
    def _estimate(make_plan: Callable[[], Plan]) -> int | None:
        try:
            return make_plan().estimate
        except EaselError:
            return None

    # -- while a job runs -------------------------------------------------------------------------------

    async def progress(self, interaction: discord.Interaction[Any], text: str) -> None:
        """Show `text` in the reply (the deferred "thinking…" message); a failure here only gets logged."""
        await self.pacer.turn()
        try:
            message = await interaction.edit_original_response(content=text)
        except discord.HTTPException as exc:
            log.debug("could not show progress: %s", exc)
            return
        # Remembered while the job runs: once the token has expired, the reply is only reachable by its id.
        if interaction.id in self._running:
            self._reply_ids[interaction.id] = message.id

    async def announce(
        self, interaction: discord.Interaction[Any], make_plan: Callable[[], Plan], who: Requester
    ) -> None:
        """Show the estimate and the budget left as a job starts.

        The job does not wait for Discord to take the edit (a round trip). The reply's later edits do: the
        place in line and the result wait for it (`_after_estimate`), and a preview is skipped until it is
        done, so the estimate never overwrites what follows it and the stream never waits. A request the
        plan refuses is left to the job itself, which records the refusal and raises it.
        """
        try:
            quote = await self._studio.quote(make_plan(), who)
        except EaselError:
            return
        self._quotes[interaction.id] = quote
        self._estimates[interaction.id] = asyncio.create_task(
            self.progress(interaction, estimate_line(quote)), name=f"easel-estimate-{interaction.id}"
        )

    def announcer(self, interaction: discord.Interaction[Any], who: Requester) -> PlanHandler:
        """`announce` for a studio call that plans the job itself (an edit or variation, once its uploads are
        prepared: a HEIC turned into a JPEG, a picture padded square), so the estimate shown is the one
        reserved."""

        async def show(plan: Plan) -> None:
            await self.announce(interaction, lambda: plan, who)

        return show

    def _estimate_shown(self, interaction_id: int) -> bool:
        """Whether the reply's estimate edit is done (or there is none)."""
        task = self._estimates.get(interaction_id)
        return task is None or task.done()

    async def _after_estimate(self, interaction_id: int) -> None:
        """Wait until the reply's estimate edit (if one is on its way) is done."""
        task = self._estimates.get(interaction_id)
        if task is None:
            return
        # Shielded: a preview or place edit given up on must not cancel the estimate under the others. A
        # failed estimate edit never stops what comes after it (`progress` logs Discord's refusals).
        with contextlib.suppress(Exception):
            await asyncio.shield(task)

    async def defer(
        self, interaction: discord.Interaction[Any], *, thinking: bool = True, ephemeral: bool = False
    ) -> None:
        """Acknowledge `interaction` (the 3 s rule), before any reply's work after its own defer."""
        if self.first is not None and await self.first.taken(interaction, ephemeral=ephemeral):
            return
        async with self.pacer.defers.urgent(), self.pacer.callbacks.slot():
            await self.pacer.turn(urgent=True)
            try:
                await interaction.response.defer(thinking=thinking, ephemeral=ephemeral)
            except discord.HTTPException as exc:
                if exc.code != ALREADY_ACKNOWLEDGED:
                    raise
                # An early answer that seemed to fail had reached Discord after all.
                mark_deferred(interaction)

    def preview(self, interaction: discord.Interaction[Any]) -> PreviewUpdater:
        """A throttled handler that puts the latest streamed preview into the reply."""

        async def show(partial: PartialImage) -> None:
            name = f"preview.{extension(partial.mime)}"
            await interaction.edit_original_response(
                content=f"🖌️ Drawing image {partial.index + 1}… (preview)",
                attachments=[discord.File(io.BytesIO(partial.data), filename=name)],
            )

        return PreviewUpdater(
            show,
            interval=self._preview_interval,
            clock=self._preview_clock,
            shared=allowance(self._studio, "preview"),
            ready=functools.partial(self._estimate_shown, interaction.id),
        )

    async def run(
        self,
        interaction: discord.Interaction[Any],
        who: Requester,
        work: Work,
        *,
        private: bool = False,
        headline: str | None = None,
    ) -> discord.Message | None:
        """Run `work` with live previews and its place in line (with a Cancel button while it waits), then
        deliver its outcome; any failure becomes one private sentence.

        The caller has deferred already (`defer`); the work after it waits until no defer is on its way."""
        async with self._job_reply(interaction.id):
            await self.pacer.defers.quiet()
            await self.pacer.turn()
            job_id: int | None = None
            quote_text = functools.partial(self._queue_text, interaction.id)
            watch = QueueWatch(
                interaction,
                self._studio,
                quote_text,
                private=private,
                before_edit=functools.partial(self._after_estimate, interaction.id),
            )
            previews = self.preview(interaction)
            try:
                try:
                    outcome = await work(Hooks(previews, on_queue=watch))
                finally:
                    watch.close()
                    # The result (or the failure) replaces the preview, so it goes after it.
                    await previews.finish()
                    self._quotes.pop(interaction.id, None)
                    # The result (or the failure) replaces the estimate, so it goes after it.
                    await self._after_estimate(interaction.id)
                    self._estimates.pop(interaction.id, None)
                job_id = outcome.job_id
            except Exception as error:
                if isinstance(error, EaselError) and not is_users_fault(error):
                    log.warning("job for user %s failed: %s", who.user_id, error.message)
                await self.fail(interaction, error, private=private, job_id=job_id)
                return None
            try:
                return await self.deliver(interaction, outcome, who, private=private, headline=headline)
            except Exception as error:
                # Paid for and kept in the store: try the member's direct messages before giving up.
                log.warning(
                    "job %d: could not post its result (%r); trying a direct message",
                    job_id,
                    error,
                    exc_info=not isinstance(error, discord.HTTPException),
                )
                return await self._deliver_by_dm(interaction, outcome, who, private=private, headline=headline)

    @contextlib.asynccontextmanager
    async def _job_reply(self, interaction_id: int) -> AsyncIterator[None]:
        """The enclosed job counts as in flight, and its reply's message id is kept meanwhile (`progress`)."""
        self._running.add(interaction_id)
        try:
            async with self.in_flight.track():
                yield
        finally:
            self._running.discard(interaction_id)
            self._reply_ids.pop(interaction_id, None)

    def _queue_text(self, interaction_id: int, update: QueueUpdate) -> str:
        return queue_line(update, self._quotes.get(interaction_id))

    # -- results ----------------------------------------------------------------------------------------

    async def deliver(
        self,
        interaction: discord.Interaction[Any],
        outcome: JobOutcome,
        who: Requester,
        *,
        private: bool = False,
        headline: str | None = None,
    ) -> discord.Message:
        """Replace the reply with the result (images, embed, buttons) and record where the images went;
        the result's reactions follow when the bot is quiet."""
        async with self.pacer.results.urgent():
            message = await self._post(interaction, outcome, who, private=private, headline=headline)
        if not private and not message.flags.ephemeral:
            react_later(self.in_flight, self.pacer, message, outcome.job_id)
        return message

    async def _deliver_by_dm(
        self,
        interaction: discord.Interaction[Any],
        outcome: JobOutcome,
        who: Requester,
        *,
        private: bool,
        headline: str | None,
    ) -> discord.Message | None:
        """A result Discord would not take in place, sent by direct message; the member is told either way."""
        try:
            message = await self._post(interaction, outcome, who, private=True, headline=headline, by_dm=True)
        except Exception as error:
            log.warning("job %d: could not send its result by direct message either (%r)", outcome.job_id, error)
            await answer_privately(interaction, UNDELIVERED.format(job_id=outcome.job_id), private=private)
            return None
        await answer_privately(interaction, SENT_BY_DM, private=private)
        return message

    async def _post(
        self,
        interaction: discord.Interaction[Any],
        outcome: JobOutcome,
        who: Requester,
        *,
        private: bool,
        headline: str | None,
        by_dm: bool = False,
    ) -> discord.Message:
        await self.pacer.turn()
        images = outcome.result.images
        max_bytes = interaction.filesize_limit or DISCORD_MAX_BYTES
        # The job's record and the budget line come from the database thread while the images are fitted.
        (uploads, omitted), job, budget = await asyncio.gather(
            self._fit(outcome.job_id, images, max_bytes),
            self._ledger.job(outcome.job_id),
            self._budget(who, outcome.result.model),
        )
        # The lookups of many results end in one database hand-off; building each embed and its priced
        # buttons (~0.5 ms) is work of its own to spread.
        await self.pacer.turn()
        count = len(uploads)
        # One image is the embed's image; several stay attachments, which Discord lays out as a gallery
        # (an attachment the embed shows is shown only inside the embed).
        shown = uploads[0] if count == 1 else None
        reactions = not private
        embed = await self._result_embed(
            outcome, job, budget=budget, headline=headline, image=shown, omitted=omitted, reactions=reactions
        )
        view = result_view(outcome.job_id, count, self.prices(job, images[0] if images else None))
        await self.pacer.turn()
        if by_dm:
            message = await self._post_elsewhere(
                interaction, uploads, embed=embed, view=view, private=True, why="Discord would not let me post it there"
            )
        else:
            message = await self._send(interaction, uploads, embed=embed, view=view, private=private)
        await self._attach(outcome.job_id, message, uploads)
        return message

    async def show_image(
        self, interaction: discord.Interaction[Any], job_id: int, index: int, *, private: bool = False
    ) -> discord.Message | None:
        """Post image `index` of a job alone, at full size, with its own buttons (the U buttons). Free."""
        try:
            job = await self._ledger.job(job_id)
            if job is None:
                raise ImageGone(NO_JOB)
            image = await self._store.load(job_id, index)
            max_bytes = interaction.filesize_limit or DISCORD_MAX_BYTES
            fitted = await self._workers.fit([image], max_bytes=max_bytes, max_files=1)
            upload = self._upload(job_id, fitted.files[0], index)
            embed = discord.Embed(
                title=f"🔎 Image {index + 1}, full size",
                description=await self.describe(job),
                colour=discord.Colour.blurple(),
            )
            embed.add_field(name="Model", value=self._label(job.model))
            embed.add_field(name="Size", value=f"{fitted.files[0].width}x{fitted.files[0].height}")
            if fitted.files[0].reencoded:
                embed.add_field(name="Notes", value="Re-encoded to fit Discord's upload limit.", inline=False)
            embed.set_image(url=f"attachment://{upload.filename}")
            embed.set_footer(text=f"Job #{job_id} · image {index + 1}")
            view = image_view(job_id, index, self.prices(job, image))
            message = await self._send(interaction, [upload], embed=embed, view=view, private=private)
            await self._attach(job_id, message, [upload])
            return message
        except Exception as error:
            await self.fail(interaction, error, private=private)
            return None

    async def _fit(self, job_id: int, images: Sequence[GeneratedImage], max_bytes: int) -> tuple[list[Upload], int]:
        """Every image as its own file within `max_bytes` (at most ten), and how many were left out.

        No grid: Discord shows two to ten attachments of one message as a gallery already, so a grid
        would only show every image twice.
        """
        if not images:
            return [], 0
        fitted = await self._workers.fit(images, max_bytes=max_bytes, max_files=DISCORD_MAX_FILES)
        return [self._upload(job_id, file, file.index) for file in fitted.files], fitted.omitted

    @staticmethod
    def _upload(job_id: int, file: FittedFile, index: int) -> Upload:
        suffix = file.filename.rpartition(".")[2]
        return Upload(f"easel-{job_id}-{index + 1}.{suffix}", file.data, index)

    def _label(self, model: str) -> str:
        spec = self._studio.images.catalogue.find(model)
        return spec.label if spec is not None else model

    async def _result_embed(
        self,
        outcome: JobOutcome,
        job: JobRecord | None,
        *,
        budget: str,
        headline: str | None,
        image: Upload | None,
        omitted: int,
        reactions: bool = True,
    ) -> discord.Embed:
        result = outcome.result
        prompt = job.prompt if job is not None else ""
        count = len(result.images)
        # No "for <@member>": Discord shows a mention in an embed's title as its raw text. The reply already
        # names who asked (and a result posted elsewhere mentions them in its text).
        title = headline or ("🎨 An image" if count == 1 else f"🎨 {count} images")
        embed = discord.Embed(
            title=clip(title, TITLE_MAX),
            description=await self.describe(job),
            colour=discord.Colour.blurple(),
        )
        revised = result.revised_prompt or (job.revised_prompt if job is not None else None)
        if revised and revised.strip() != prompt.strip():
            embed.add_field(name="Revised prompt", value=clip(revised, FIELD_MAX), inline=False)
        embed.add_field(name="Model", value=self._label(result.model))
        embed.add_field(name="Size", value=result.size or (job.size if job else None) or "auto")
        embed.add_field(name="Quality", value=result.quality or (job.quality if job else None) or "auto")
        embed.add_field(name="Cost", value=format_usd(outcome.cost))
        embed.add_field(name="Budget", value=budget)
        notes = list(outcome.notes)
        if omitted:
            notes.append(f"{omitted} more image(s) did not fit: Discord takes {DISCORD_MAX_FILES} files a message.")
        if notes:
            embed.add_field(name="Notes", value=clip("\n".join(notes), FIELD_MAX), inline=False)
        if image is not None:
            embed.set_image(url=f"attachment://{image.filename}")
        embed.set_footer(text=result_footer(outcome.job_id, reactions=reactions))
        return embed

    async def describe(self, job: JobRecord | None) -> str | None:
        """The embed's description: the job's prompt, or for a variation where it came from and the prompt
        it all started from ("Variation of image 2 of job #12", then that prompt).

        A zoom or a pan shows the prompt it started from instead of the outpaint instruction it sent.
        """
        if job is None:
            return None
        if job.kind not in ("vary", "outpaint") or job.parent_job is None:
            return clip(job.prompt, PROMPT_SHOWN) or None
        lines: list[str] = []
        if job.kind == "vary":
            index = f"image {job.parent_index + 1}" if job.parent_index is not None else "an image"
            lines.append(f"Variation of {index} of job #{job.parent_job}")
        if job.prompt and job.prompt != OUTPAINT_PROMPT:
            lines.append(job.prompt)  # a variation asked with words of its own (/vary's prompt)
        elif origin := await self._origin_prompt(job.parent_job):
            lines.append(origin)
        return clip("\n".join(lines), PROMPT_SHOWN) or None

    async def _origin_prompt(self, job_id: int) -> str:
        """The prompt of job `job_id`, or of its nearest ancestor with one of its own ('' when none is known)."""
        next_id: int | None = job_id
        for _ in range(LINEAGE_DEPTH):
            if next_id is None:
                break
            job = await self._ledger.job(next_id)
            if job is None:
                break
            if job.prompt and job.prompt != OUTPAINT_PROMPT:
                return job.prompt
            next_id = job.parent_job
        return ""

    async def _budget(self, who: Requester, model: str) -> str:
        """The member's tightest budget after this job: what is left and when it resets.

        Budgets apply by who asks and where, never by the kind of job, so any kind asks the same.
        """
        draft = JobDraft(
            kind="generate",
            user_id=who.user_id,
            model=model,
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            roles=who.roles,
        )
        statuses = await self._ledger.budget_status(draft)
        if not statuses:
            return "No spending limit"
        tightest = statuses[0]
        line = f"{format_usd(tightest.remaining)} left of {describe_budget(tightest.budget)}"
        if tightest.resets_at is not None:
            line += f", resets {discord.utils.format_dt(tightest.resets_at, 'R')}"
        return line

    async def _send(
        self,
        interaction: discord.Interaction[Any],
        uploads: Sequence[Upload],
        *,
        embed: discord.Embed,
        view: discord.ui.View,
        private: bool,
    ) -> discord.Message:
        """Turn the reply into the result; once the token is too old, post it elsewhere with a mention."""
        if not token_expired(interaction, self._now()):
            try:
                return await interaction.edit_original_response(
                    content=None, embed=embed, attachments=[upload.file() for upload in uploads], view=view
                )
            except discord.HTTPException as error:
                if not _expired_token(error):
                    raise
                log.info("interaction %s can no longer be answered (%s); posting elsewhere", interaction.id, error)
        message = await self._post_elsewhere(interaction, uploads, embed=embed, view=view, private=private)
        if not private:
            await self._remove_stale_reply(interaction)
        return message

    async def _remove_stale_reply(self, interaction: discord.Interaction[Any]) -> None:
        """Delete the reply a result posted elsewhere leaves behind (its estimate, a stale preview, a Cancel
        button that no longer cancels), through the channel: the interaction's token has expired."""
        reply_id = self._reply_ids.get(interaction.id)
        get = getattr(interaction.channel, "get_partial_message", None)
        if reply_id is None or get is None:
            return
        with contextlib.suppress(discord.HTTPException):
            await get(reply_id).delete()

    async def _post_elsewhere(
        self,
        interaction: discord.Interaction[Any],
        uploads: Sequence[Upload],
        *,
        embed: discord.Embed,
        view: discord.ui.View,
        private: bool,
        why: str = "it took longer than Discord lets me answer in place",
    ) -> discord.Message:
        """The result in the channel with the member's mention, or by direct message when it was private."""
        user = interaction.user
        files = [upload.file() for upload in uploads]
        channel = interaction.channel
        perms = interaction.app_permissions
        can_post = (perms.send_messages or perms.send_messages_in_threads) and perms.attach_files and perms.embed_links
        if not private and can_post and isinstance(channel, discord.abc.Messageable):
            return await channel.send(
                content=f"{user.mention} here is your result ({why}).",
                embed=embed,
                files=files,
                view=view,
                allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=[user]),
            )
        return await user.send(
            content=f"Here is your result ({why}).",
            embed=embed,
            files=files,
            view=view,
        )

    async def _attach(self, job_id: int, message: discord.Message, uploads: Sequence[Upload]) -> None:
        """Record in the image store where Discord now holds each image (so buttons can fetch it back)."""
        indices = {upload.filename: upload.index for upload in uploads}
        try:
            for attachment in message.attachments:
                index = indices.get(attachment.filename)
                if index is not None:
                    await self._store.attach(
                        job_id, index, message_id=message.id, attachment_id=attachment.id, attachment_url=attachment.url
                    )
        except Exception:
            # The result is posted; only the way back to Discord's copy is lost, and the local file remains.
            log.exception("job %d: could not record where Discord keeps its images", job_id)

    # -- failures ---------------------------------------------------------------------------------------

    async def fail(
        self,
        interaction: discord.Interaction[Any],
        error: BaseException,
        *,
        private: bool = False,
        job_id: int | None = None,
    ) -> None:
        """Tell only the member who asked what went wrong, in one sentence from `cogs.errors.friendly`."""
        await answer_privately(interaction, friendly(error, job_id=job_id), private=private)
