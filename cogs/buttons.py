"""The buttons under every result: restart-proof, priced, and paid for by whoever clicks.

Each button is a `discord.ui.DynamicItem` whose custom_id carries the action and the job (and image)
it acts on, so a click works on any old message, after any restart: everything else comes from
SQLite (`Ledger.job`) and the image store, nothing from memory.

    easel:u:<job>:<i>              🔎 U1…Un     post image i alone at full size (free, no job)
    easel:v:<job>:<i>              🔁 V1…Vn     a variation of image i (vary, parent = (job, i));
                                   🔁 Vary      the same, under a lone image
    easel:rr:<job>                 🔄 Re-roll   the same request again (generate; a vary job varies its parent again)
    easel:remix:<job>              ✏️ Remix     a form prefilled with the prompt, then generate with the edited prompt
    easel:zoom:<job>:<i>:<15|20>   🔍 Zoom out  zoom image i out 1.5x or 2x (outpaint)
    easel:pan:<job>:<i>:<dir>      ⬅ Left …    extend image i to the left, right, up or down (outpaint)
    easel:remix-form:<job>                      the remix form; its submission is handled by `Actions.on_modal_submit`

Every button says in words what it does, and 🔁 always means vary, as the 🔁 reaction does. Labels carry
the estimate where a click costs money ("Vary · $0.053"). The custom_ids never change with the labels, so
buttons on old messages keep working. Every click defers at once, except ✏️, whose first answer must be
the form itself (one quick database read comes first).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Self, TypeVar, cast

import discord
from discord.ext import commands

from bot.api.types import InputImage, VaryRequest
from bot.errors import ImageGone
from bot.imaging.outpaint import Direction
from bot.jobs import JobOutcome, QueueHandler, Requester, Studio, generate_again
from bot.pricing import format_usd
from bot.store.images import ImageStore
from bot.store.ledger import JobRecord, Ledger
from cogs.errors import ALREADY_WORKING, answer_privately
from cogs.guard import admit

if TYPE_CHECKING:
    from cogs.render import Hooks, Renderer

PER_ROW = 5
"""Discord puts at most five buttons in a row, and at most five rows under a message."""
MAX_ROWS = 5
IMAGINE_COG = "Imagine"
"""The cog that owns the `Actions` the buttons call (see `_actions`)."""
PROMPT_INPUT = "prompt"
REMIX_FORM = re.compile(r"easel:remix-form:(?P<job>\d+)")
TEXT_INPUT_MAX = 4000
"""Discord's limit on a text input's length."""

ZOOM_FACTORS = {"15": 1.5, "20": 2.0}
PAN_ARROWS: dict[Direction, str] = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}
PAN_WORDS: dict[Direction, str] = {"left": "Left", "right": "Right", "up": "Up", "down": "Down"}
VARY_EMOJI = "🔁"
"""Vary, on every vary button as on the reaction; 🔄 (re-roll) is a different action."""
PICK_EMOJI = "🔎"
REROLL_EMOJI = "🔄"
NO_JOB = "Easel has no record of that result any more; generate it again."


@dataclass(frozen=True, slots=True)
class Prices:
    """What each action would cost in micro-dollars; None leaves out a button the job's model cannot do."""

    vary: int | None = 0
    reroll: int | None = 0
    remix: int | None = 0
    outpaint: int | None = 0
    """Zoom and pan: None leaves them out; each button's own price is in `outpaint_each` when known."""
    outpaint_each: Mapping[str, int] = field(default_factory=dict)
    """Each zoom factor's and pan direction's price (keys "15", "20", "left", ...): their canvases differ."""


def priced(label: str, price: int | None) -> str:
    """`label` with its price when the click costs money: "Vary · $0.053"."""
    return f"{label} · {format_usd(price)}" if price else label


def _button(
    custom_id: str, *, label: str | None = None, emoji: str | None = None
) -> discord.ui.Button[discord.ui.View]:
    return discord.ui.Button(style=discord.ButtonStyle.secondary, label=label, emoji=emoji, custom_id=custom_id)


def _actions(interaction: discord.Interaction[Any]) -> Actions:
    """The services behind the buttons, from the cog that registered them (set up once, in the cog's setup)."""
    client = interaction.client
    cog = client.get_cog(IMAGINE_COG) if isinstance(client, commands.Bot) else None
    actions = getattr(cog, "actions", None)
    if not isinstance(actions, Actions):
        raise RuntimeError("the imagine cog is not loaded, so its buttons have nothing to call")
    return actions


# -- the buttons ---------------------------------------------------------------------------------------


class _Guarded:
    """Clicks pass the same channel and permission check as the commands, before any work or charge."""

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return await admit(interaction, _actions(interaction).settings)


class PickButton(
    _Guarded, discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"easel:u:(?P<job>\d+):(?P<i>\d+)"
):
    """🔎 U1…Un: post one image of a result alone, at full size, with its own buttons. Free."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(_button(f"easel:u:{job_id}:{index}", label=f"U{index + 1}", emoji=PICK_EMOJI))
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, _interaction: discord.Interaction[Any], _item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(int(match["job"]), int(match["i"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _actions(interaction).pick(interaction, self.job_id, self.index)


class VaryButton(
    _Guarded, discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"easel:v:(?P<job>\d+):(?P<i>\d+)"
):
    """🔁 V1…Vn: a variation of one image; "🔁 Vary" when it is the only image on the message."""

    def __init__(self, job_id: int, index: int, *, price: int | None = 0, alone: bool = False) -> None:
        label = priced("Vary" if alone else f"V{index + 1}", price)
        super().__init__(_button(f"easel:v:{job_id}:{index}", label=label, emoji=VARY_EMOJI))
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, _interaction: discord.Interaction[Any], _item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(int(match["job"]), int(match["i"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _actions(interaction).vary(interaction, self.job_id, self.index)


class RerollButton(
    _Guarded, discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"easel:rr:(?P<job>\d+)"
):
    """🔄 Re-roll: the same request again."""

    def __init__(self, job_id: int, *, price: int | None = 0) -> None:
        super().__init__(_button(f"easel:rr:{job_id}", label=priced("Re-roll", price), emoji=REROLL_EMOJI))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, _interaction: discord.Interaction[Any], _item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _actions(interaction).reroll(interaction, self.job_id)


class RemixButton(
    _Guarded, discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"easel:remix:(?P<job>\d+)"
):
    """✏️: edit the prompt in a form, then generate again."""

    def __init__(self, job_id: int, *, price: int | None = 0) -> None:
        super().__init__(_button(f"easel:remix:{job_id}", label=priced("Remix", price), emoji="✏️"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, _interaction: discord.Interaction[Any], _item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _actions(interaction).open_remix(interaction, self.job_id)


class ZoomButton(
    _Guarded,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"easel:zoom:(?P<job>\d+):(?P<i>\d+):(?P<f>15|20)",
):
    """🔍: zoom one image out 1.5x or 2x, painting the new border."""

    def __init__(self, job_id: int, index: int, factor: str, *, price: int | None = 0) -> None:
        label = priced(f"Zoom out {ZOOM_FACTORS[factor]:g}x", price)
        super().__init__(_button(f"easel:zoom:{job_id}:{index}:{factor}", label=label, emoji="🔍"))
        self.job_id = job_id
        self.index = index
        self.factor = ZOOM_FACTORS[factor]

    @classmethod
    async def from_custom_id(
        cls, _interaction: discord.Interaction[Any], _item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(int(match["job"]), int(match["i"]), match["f"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _actions(interaction).zoom(interaction, self.job_id, self.index, self.factor)


class PanButton(
    _Guarded,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"easel:pan:(?P<job>\d+):(?P<i>\d+):(?P<d>left|right|up|down)",
):
    """⬅ Left, ➡ Right, ⬆ Up, ⬇ Down: extend one image's canvas in a direction, painting the new strip."""

    def __init__(self, job_id: int, index: int, direction: Direction, *, price: int | None = 0) -> None:
        label = priced(PAN_WORDS[direction], price)
        custom_id = f"easel:pan:{job_id}:{index}:{direction}"
        super().__init__(_button(custom_id, label=label, emoji=PAN_ARROWS[direction]))
        self.job_id = job_id
        self.index = index
        self.direction: Direction = direction

    @classmethod
    async def from_custom_id(
        cls, _interaction: discord.Interaction[Any], _item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        # The template admits only the four directions.
        return cls(int(match["job"]), int(match["i"]), cast(Direction, match["d"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _actions(interaction).pan(interaction, self.job_id, self.index, self.direction)


BUTTONS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    PickButton,
    VaryButton,
    RerollButton,
    RemixButton,
    ZoomButton,
    PanButton,
)
"""Every dynamic button, for `bot.add_dynamic_items`."""


# -- views -----------------------------------------------------------------------------------------------


def _chunks(indices: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(indices), PER_ROW):
        yield indices[start : start + PER_ROW]


def _outpaint_rows(job_id: int, index: int, prices: Prices) -> list[list[discord.ui.Item[Any]]]:
    """The zoom row and the pan row for one image, each button with its own price."""
    each, price = prices.outpaint_each, prices.outpaint
    zoom: list[discord.ui.Item[Any]] = [
        ZoomButton(job_id, index, factor, price=each.get(factor, price)) for factor in ZOOM_FACTORS
    ]
    pan: list[discord.ui.Item[Any]] = [
        PanButton(job_id, index, direction, price=each.get(direction, price)) for direction in PAN_ARROWS
    ]
    return [zoom, pan]


def _view(rows: list[list[discord.ui.Item[Any]]]) -> discord.ui.View:
    """A view that never times out, with `rows` in order (empty rows dropped)."""
    rows = [row for row in rows if row]
    if len(rows) > MAX_ROWS or any(len(row) > PER_ROW for row in rows):
        raise ValueError(f"at most {MAX_ROWS} rows of {PER_ROW} buttons fit under a message")
    view = discord.ui.View(timeout=None)
    for number, row in enumerate(rows):
        for item in row:
            item.row = number
            view.add_item(item)
    return view


def result_view(job_id: int, n: int, prices: Prices) -> discord.ui.View:
    """The buttons under a result of `n` images: U and V per image, 🔄 ✏️, and zoom and pan for a single image.

    Ten images take all five rows (🔎 U1-5, U6-10, 🔁 V1-5, V6-10, 🔄 Re-roll ✏️ Remix); one image takes three
    (🔁 Vary, 🔄 Re-roll, ✏️ Remix; the two 🔍 Zoom outs; ⬅ Left ➡ Right ⬆ Up ⬇ Down) and no U: it is alone already.
    """
    if not 0 <= n <= 2 * PER_ROW:
        raise ValueError(f"a result has 0 to {2 * PER_ROW} images, not {n}")
    indices = list(range(n))
    picks: list[list[discord.ui.Item[Any]]] = (
        [[PickButton(job_id, i) for i in chunk] for chunk in _chunks(indices)] if n > 1 else []
    )
    varies: list[list[discord.ui.Item[Any]]] = (
        [[VaryButton(job_id, i, price=prices.vary) for i in chunk] for chunk in _chunks(indices)]
        if prices.vary is not None
        else []
    )
    again: list[discord.ui.Item[Any]] = []
    if prices.reroll is not None:
        again.append(RerollButton(job_id, price=prices.reroll))
    if prices.remix is not None:
        again.append(RemixButton(job_id, price=prices.remix))
    if n == 1:
        # A single image shares its only row with 🔄 and ✏️, leaving room for zoom and pan.
        vary = [VaryButton(job_id, 0, price=prices.vary, alone=True)] if prices.vary is not None else []
        rows: list[list[discord.ui.Item[Any]]] = [[*vary, *again]]
        if prices.outpaint is not None:
            rows += _outpaint_rows(job_id, 0, prices)
        return _view(rows)
    return _view([*picks, *varies, again])


def image_view(job_id: int, index: int, prices: Prices) -> discord.ui.View:
    """The buttons under one image posted alone (U): vary it, zoom it out, extend it."""
    rows: list[list[discord.ui.Item[Any]]] = []
    if prices.vary is not None:
        rows.append([VaryButton(job_id, index, price=prices.vary, alone=True)])
    if prices.outpaint is not None:
        rows += _outpaint_rows(job_id, index, prices)
    return _view(rows)


def remix_form(job: JobRecord) -> discord.ui.Modal:
    """The remix form, prefilled with the job's prompt. It is never kept in memory (see `Actions.open_remix`)."""
    form = discord.ui.Modal(title="Remix: edit the prompt", custom_id=f"easel:remix-form:{job.id}", timeout=None)
    # A form's text holds 4,000 characters and /imagine takes more: the label says so, and an unchanged
    # submission keeps the whole prompt (`remixed_prompt`).
    cut = len(job.prompt) > TEXT_INPUT_MAX
    form.add_item(
        discord.ui.TextInput(
            label=f"Prompt (first {TEXT_INPUT_MAX:,} of {len(job.prompt):,} characters)" if cut else "Prompt",
            custom_id=PROMPT_INPUT,
            style=discord.TextStyle.paragraph,
            default=job.prompt[:TEXT_INPUT_MAX],
            max_length=TEXT_INPUT_MAX,
            required=True,
        )
    )
    return form


def remixed_prompt(job: JobRecord, submitted: str) -> str:
    """The prompt a remix form's submission asks for: the job's whole prompt when its shown start came back
    unchanged (the form could not hold all of it), else what was typed."""
    if len(job.prompt) > TEXT_INPUT_MAX and submitted == job.prompt[:TEXT_INPUT_MAX]:
        return job.prompt
    return submitted


def submitted_text(components: Any, custom_id: str) -> str | None:
    """The value of the text input `custom_id` in a modal submission's raw components (rows or labels)."""
    if isinstance(components, list):
        for component in components:
            found = submitted_text(component, custom_id)
            if found is not None:
                return found
        return None
    if not isinstance(components, dict):
        return None
    if components.get("custom_id") == custom_id and isinstance(components.get("value"), str):
        value: str = components["value"]
        return value
    return submitted_text(components.get("components") or components.get("component"), custom_id)


# -- what the buttons do -----------------------------------------------------------------------------------


def _private(interaction: discord.Interaction[Any]) -> bool:
    """Answers to a click are as private as the message clicked on."""
    message = interaction.message
    return message is not None and message.flags.ephemeral


def _input(image_data: bytes, mime: str) -> InputImage:
    extension = mime.rpartition("/")[2].split("+")[0] or "png"
    return InputImage(image_data, filename=f"image.{extension}", mime=mime)


_A = TypeVar("_A", bound="Actions")
_P = ParamSpec("_P")
Click = Callable[Concatenate[_A, discord.Interaction[Any], _P], Awaitable[None]]


def once_at_a_time(action: Click[_A, _P]) -> Click[_A, _P]:
    """A priced click that starts nothing while the same member's click on the same button is being handled.

    A double click sends two interactions; like a burst of the same reaction (`cogs.reactions`), it makes one
    job, and the second click gets one private sentence for free.
    """

    async def handle(self: _A, interaction: discord.Interaction[Any], /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        data: dict[str, Any] = dict(interaction.data or {})
        message_id = interaction.message.id if interaction.message is not None else 0
        key = (message_id, interaction.user.id, str(data.get("custom_id", "")))
        if key in self._clicking:
            await answer_privately(interaction, ALREADY_WORKING, private=True)
            return
        self._clicking.add(key)
        try:
            await action(self, interaction, *args, **kwargs)
        finally:
            self._clicking.discard(key)

    functools.update_wrapper(handle, action)
    return handle


class Actions:
    """What each button does, with the services it needs; the clicking member pays from their own budget."""

    def __init__(self, studio: Studio, ledger: Ledger, image_store: ImageStore, renderer: Renderer) -> None:
        self._studio = studio
        self._ledger = ledger
        self.studio = studio
        self.ledger = ledger
        """Shared with the Cancel button (`cogs.cancel`), which has no Actions of its own."""
        self._store = image_store
        self._renderer = renderer
        self.settings = renderer.settings
        self._clicking: set[tuple[int, int, str]] = set()
        """(message, member, button) of the priced clicks being handled (`once_at_a_time`)."""

    async def _job(self, job_id: int) -> JobRecord:
        job = await self._ledger.job(job_id)
        if job is None or job.status != "succeeded":
            raise ImageGone(NO_JOB)
        return job

    async def _defer(self, interaction: discord.Interaction[Any]) -> bool:
        """Acknowledge the click at once (the 3 s rule); True when the answer must stay private."""
        private = _private(interaction)
        await self._renderer.defer(interaction, ephemeral=private)
        return private

    async def pick(self, interaction: discord.Interaction[Any], job_id: int, index: int) -> None:
        """U: post image `index` alone, full size, with its own V, zoom and pan buttons. Free: no job."""
        private = await self._defer(interaction)
        await self._renderer.show_image(interaction, job_id, index, private=private)

    @once_at_a_time
    async def vary(self, interaction: discord.Interaction[Any], job_id: int, index: int) -> None:
        """V: one variation of image `index`, recorded as its child."""
        private = await self._defer(interaction)
        who = self._renderer.requester(interaction, private=private)

        async def work(hooks: Hooks) -> JobOutcome:
            job = await self._job(job_id)
            return await self._vary(who, job, (job_id, index), on_queue=hooks.on_queue)

        headline = "🔁 Variation"  # what it varies is the embed's first line (`Renderer` reads the parent)
        await self._renderer.run(interaction, who, work, private=private, headline=headline)

    @once_at_a_time
    async def reroll(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """🔄: the same request again (a variation varies its parent image again)."""
        private = await self._defer(interaction)
        who = self._renderer.requester(interaction, private=private)

        async def work(hooks: Hooks) -> JobOutcome:
            job = await self._job(job_id)
            if job.kind == "vary" and job.parent_job is not None and job.parent_index is not None:
                return await self._vary(who, job, (job.parent_job, job.parent_index), on_queue=hooks.on_queue)
            return await self._generate(interaction, who, job, job.prompt, hooks)

        await self._renderer.run(interaction, who, work, private=private, headline=f"🔄 Re-roll of job {job_id}")

    async def open_remix(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """✏️: answer with the remix form, prefilled with the job's prompt.

        A form must be the first answer, so there is no defer here; one indexed read comes first. The form
        is marked finished before it is sent, so discord.py keeps no copy in memory: `on_modal_submit`
        handles the submission from its custom_id alone, which also works across a restart.
        """
        try:
            job = await self._job(job_id)
        except ImageGone as error:
            await self._renderer.fail(interaction, error, private=True)
            return
        form = remix_form(job)
        form.stop()
        await interaction.response.send_modal(form)

    async def on_modal_submit(self, interaction: discord.Interaction[Any]) -> bool:
        """Handle a submitted remix form; False when the submission is not one of ours."""
        data: dict[str, Any] = dict(interaction.data or {})
        match = REMIX_FORM.fullmatch(str(data.get("custom_id", "")))
        if match is None:
            return False
        if not await admit(interaction, self.settings):
            return True
        job_id = int(match["job"])
        private = await self._defer(interaction)
        who = self._renderer.requester(interaction, private=private)
        prompt = submitted_text(data.get("components"), PROMPT_INPUT) or ""

        async def work(hooks: Hooks) -> JobOutcome:
            job = await self._job(job_id)
            return await self._generate(interaction, who, job, remixed_prompt(job, prompt), hooks)

        await self._renderer.run(interaction, who, work, private=private, headline=f"✏️ Remix of job {job_id}")
        return True

    async def zoom(self, interaction: discord.Interaction[Any], job_id: int, index: int, factor: float) -> None:
        """🔍: zoom image `index` out by `factor`, painting the new border."""
        headline = f"🔍 Image {index + 1} of job {job_id}, zoomed out {factor:g}x"
        await self._outpaint(interaction, job_id, index, headline, factor=factor)

    async def pan(self, interaction: discord.Interaction[Any], job_id: int, index: int, direction: Direction) -> None:
        """⬅➡⬆⬇: extend image `index` towards `direction`, painting the new strip."""
        headline = f"{PAN_ARROWS[direction]} Image {index + 1} of job {job_id}, extended {direction}"
        await self._outpaint(interaction, job_id, index, headline, direction=direction)

    @once_at_a_time
    async def _outpaint(
        self,
        interaction: discord.Interaction[Any],
        job_id: int,
        index: int,
        headline: str,
        *,
        factor: float | None = None,
        direction: Direction | None = None,
    ) -> None:
        private = await self._defer(interaction)
        who = self._renderer.requester(interaction, private=private)

        async def work(hooks: Hooks) -> JobOutcome:
            job = await self._job(job_id)
            image = await self._store.load(job_id, index)
            return await self._studio.outpaint(
                _input(image.data, image.mime),
                who,
                factor=factor,
                direction=direction,
                model=self._renderer.edit_model(job.model),
                quality=job.quality,
                parent=(job_id, index),
                on_queue=hooks.on_queue,
                on_plan=self._renderer.announcer(interaction, who),
            )

        await self._renderer.run(interaction, who, work, private=private, headline=headline)

    async def _vary(
        self, who: Requester, job: JobRecord, parent: tuple[int, int], *, on_queue: QueueHandler | None = None
    ) -> JobOutcome:
        """One variation of image `parent` (job, index), with `job`'s model when it can vary."""
        image = await self._store.load(*parent)
        req = VaryRequest(
            image=_input(image.data, image.mime), model=self._renderer.vary_model(job.model), n=1, quality=job.quality
        )
        return await self._studio.vary(req, who, parent=parent, on_queue=on_queue)

    async def _generate(
        self,
        interaction: discord.Interaction[Any],
        who: Requester,
        job: JobRecord,
        prompt: str,
        hooks: Hooks,
    ) -> JobOutcome:
        """Generate again with everything `job` kept (model, size, quality, count, options), and `prompt`."""
        req = generate_again(job, prompt=prompt)
        await self._renderer.announce(interaction, lambda: self._studio.plan_generate(req), who)
        return await self._studio.generate(req, who, on_partial=hooks, on_queue=hooks.on_queue)
