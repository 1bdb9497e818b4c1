"""/edit and /vary, and the message menus "Vary image" and "Edit image".

- `/edit image prompt [mask] [region] [model] [quality] [preview]` repaints part of a picture. The area comes from a
  region typed as text (a rectangle in percent or a named area such as `top-left`), an uploaded mask (its
  transparent part), or the picture's own transparency; with none of them the whole picture is edited.
  `preview:True` only shows the marked area, privately and for free: no job, nothing charged.
- `/vary image [n] [strength] [model] [quality]` makes variations of a picture. `quality` offers the
  chosen model's qualities (the default model's before one is chosen); higher costs more.
- "Vary image" and "Edit image" (right-click a message, Apps) work on the first picture attached to any
  message, or on the image Easel stored for one of its own results (then the new job is its child).
  "Edit image" first asks for the prompt and an optional region in a form.

Uploads are checked from their metadata before anything is downloaded: a picture type, at most
`MAX_UPLOAD_BYTES`. Everything is acknowledged at once (Discord allows 3 s), except "Edit image", whose
first answer must be its form. Jobs run and results are shown through the shared `Renderer`, so failures are
one private sentence from `cogs.errors.friendly`; public results get Easel's reactions (🔁 🚩).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import mimetypes
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.app_commands import Choice
from discord.ext import commands

from bot.api.client import utc_today
from bot.api.types import EditRequest, InputImage, Strength, VaryRequest
from bot.catalogue import Catalogue, ModelSpec
from bot.config import Settings
from bot.errors import BadImage, EaselError, InvalidOption
from bot.imaging import masks
from bot.imaging.inputs import DEFAULT_UPLOAD_CAP
from bot.jobs import JobOutcome, Studio
from bot.store.images import ImageStore, extension
from bot.store.ledger import Ledger
from cogs.first import ACK_FIRST
from cogs.imagine import MAX_CHOICES, chosen_spec, model_choices, value_choices
from cogs.render import Hooks, Renderer, clip

if TYPE_CHECKING:
    from bot.app import EaselBot

MAX_UPLOAD_BYTES = DEFAULT_UPLOAD_CAP
"""Uploads larger than this are refused from their metadata, before any download."""
IMAGE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/gif",
        "image/bmp",
        "image/tiff",
        "image/heic",
        "image/heif",
    }
)
"""What Easel can read (see `bot.imaging.inputs`)."""
PROMPT_MAX = 4000
"""Discord's limit on a text input, and more than any model takes (the model's own limit is checked later)."""
HEADLINE_PROMPT = 80
PREVIEW_FILE = "mask-preview.jpg"
FORM_TIMEOUT = 15 * 60.0
"""How long an "Edit image" form waits for its answer."""

REGION_HELP = "x=10 y=20 w=50 h=40 in percent (add 'ellipse' for an oval), or an area: " + ", ".join(masks.AREA_NAMES)


def _content_type(attachment: discord.Attachment) -> str:
    """The attachment's mime type, from Discord or else from its file name; '' when neither says."""
    given = (attachment.content_type or "").split(";")[0].strip().lower()
    return given or (mimetypes.guess_type(attachment.filename)[0] or "")


def is_picture(attachment: discord.Attachment) -> bool:
    return _content_type(attachment) in IMAGE_TYPES


def check_upload(attachment: discord.Attachment, *, what: str = "image") -> None:
    """Refuse, from its metadata alone, an upload that is not a picture or is too large (BadImage)."""
    if not is_picture(attachment):
        raise BadImage(f"The {what} ({clip(attachment.filename, 60)}) is not a picture: send a PNG, JPEG or WEBP.")
    if attachment.size > MAX_UPLOAD_BYTES:
        size = attachment.size / (1024 * 1024)
        limit = MAX_UPLOAD_BYTES // (1024 * 1024)
        raise BadImage(f"The {what} is {size:.1f} MB; Easel takes pictures up to {limit} MB.")


async def read_upload(attachment: discord.Attachment, *, what: str = "image") -> InputImage:
    """The checked upload's bytes, named and typed for the image service."""
    check_upload(attachment, what=what)
    data = await attachment.read()
    return InputImage(data, filename=attachment.filename, mime=_content_type(attachment))


def mask_preview(image: bytes, mask: bytes | None, region: masks.Region | None) -> tuple[bytes, float] | None:
    """The picture with the area an edit would repaint tinted, and that area's share; None when nothing is marked.

    The area comes from the region, else the uploaded mask, else the picture's transparency, as in an edit.
    Synchronous and CPU-bound: run it in a thread.
    """
    width, height = masks.open_image(image).size
    if region is not None:
        mask_png: bytes | None = masks.mask_from_region(width, height, region)
    elif mask is not None:
        mask_png = masks.mask_from_upload(mask, width, height)
    else:
        mask_png = masks.mask_from_alpha(image)
    if mask_png is None:
        return None
    return masks.preview(image, mask_png), masks.transparent_fraction(mask_png)


def region_choices(typed: str) -> list[Choice[str]]:
    """Named areas containing `typed`; what was typed comes first when it already reads as a region."""
    needle = typed.strip().lower()
    found = [Choice(name=name, value=name) for name in masks.AREA_NAMES if needle in name]
    if needle and needle not in masks.AREA_NAMES:
        try:
            masks.parse_region(needle)
        except InvalidOption:
            pass
        else:
            found.insert(0, Choice(name=clip(typed.strip(), 100), value=clip(typed.strip(), 100)))
    if not needle:
        found.append(Choice(name="x=25 y=25 w=50 h=50 (a box in percent)", value="x=25 y=25 w=50 h=50"))
    return found[:MAX_CHOICES]


def _headline(emoji: str, what: str, prompt: str = "") -> str:
    return f"{emoji} {what}: {clip(prompt, HEADLINE_PROMPT)}" if prompt else f"{emoji} {what}"


class EditForm(discord.ui.Modal, title="Edit image"):
    """What "Edit image" asks for: the change, and optionally where."""

    prompt: discord.ui.TextInput[EditForm] = discord.ui.TextInput(
        label="What should change?",
        style=discord.TextStyle.paragraph,
        placeholder="Put a red scarf on the fox",
        max_length=PROMPT_MAX,
    )
    region: discord.ui.TextInput[EditForm] = discord.ui.TextInput(
        label="Where? (leave empty for the whole picture)",
        required=False,
        placeholder="top-left, center, or x=10 y=20 w=50 h=40",
        max_length=100,
    )

    def __init__(self, cog: Edit, message: discord.Message) -> None:
        super().__init__(timeout=FORM_TIMEOUT)
        self.cog = cog
        self.message = message

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await self.cog.edit_from_form(interaction, self.message, self.prompt.value, self.region.value)

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception) -> None:  # type: ignore[override]
        await self.cog.renderer.fail(interaction, error, private=True)


class Edit(commands.Cog):
    """/edit, /vary and the two message menus."""

    def __init__(
        self,
        bot: commands.Bot,
        *,
        studio: Studio,
        ledger: Ledger,
        image_store: ImageStore,
        catalogue: Catalogue,
        settings: Settings,
        renderer: Renderer,
        today: Callable[[], dt.date] = utc_today,
    ) -> None:
        self.bot = bot
        self.studio = studio
        self.ledger = ledger
        self.image_store = image_store
        self.catalogue = catalogue
        self.settings = settings
        self.renderer = renderer
        self._today = today
        # Context menus cannot be declared in a cog's body; they are added to the tree in cog_load.
        self.vary_menu = app_commands.ContextMenu(
            name="Vary image", callback=self.vary_message, extras={ACK_FIRST: True}
        )
        self.edit_menu = app_commands.ContextMenu(name="Edit image", callback=self.edit_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.vary_menu)
        self.bot.tree.add_command(self.edit_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.vary_menu.name, type=self.vary_menu.type)
        self.bot.tree.remove_command(self.edit_menu.name, type=self.edit_menu.type)

    # -- /edit ------------------------------------------------------------------------------------------------

    @app_commands.command(name="edit", description="Change part of a picture: say what to change and where.")
    @app_commands.describe(
        image="The picture to change",
        prompt="What to change (or what the whole picture should become)",
        mask="A PNG of the same shape whose transparent part marks where to paint",
        region="Where to paint: " + clip(REGION_HELP, 90),
        model="The image model (the server's default when left out)",
        quality="Higher quality costs more",
        preview="Only show the area that would be repainted (free, nothing is made)",
    )
    async def edit(
        self,
        interaction: discord.Interaction[Any],
        image: discord.Attachment,
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        mask: discord.Attachment | None = None,
        region: str | None = None,
        model: str | None = None,
        quality: str | None = None,
        preview: bool = False,
    ) -> None:
        # Checked from metadata and text only, so the first answer still comes at once.
        try:
            check_upload(image)
            if mask is not None:
                check_upload(mask, what="mask")
            area = masks.parse_region(region) if region and region.strip() else None
            if area is not None and mask is not None:
                raise InvalidOption("Give either a mask or a region, not both.", param="region")
        except EaselError as error:
            await self.renderer.fail(interaction, error)
            return
        await self.renderer.defer(interaction, ephemeral=preview)
        if preview:
            await self._preview(interaction, image, mask, area)
            return
        who = self.renderer.requester(interaction)

        async def work(hooks: Hooks) -> JobOutcome:
            source = await read_upload(image)
            mask_image = await read_upload(mask, what="mask") if mask is not None else None
            req = EditRequest(prompt=prompt, images=(source,), mask=mask_image, model=model, quality=quality)
            announce = self.renderer.announcer(interaction, who)
            return await self.studio.edit(req, who, region=area, on_queue=hooks.on_queue, on_plan=announce)

        await self.renderer.run(interaction, who, work, headline=_headline("🖌️", "Edit", prompt))

    async def _preview(
        self,
        interaction: discord.Interaction[Any],
        image: discord.Attachment,
        mask: discord.Attachment | None,
        area: masks.Region | None,
    ) -> None:
        """Show privately which part an edit would repaint. Free: no job is made and nothing is charged."""
        try:
            data = (await read_upload(image)).data
            mask_data = (await read_upload(mask, what="mask")).data if mask is not None else None
            shown = await asyncio.to_thread(mask_preview, data, mask_data, area)
        except Exception as error:
            await self.renderer.fail(interaction, error, private=True)
            return
        if shown is None:
            await self.renderer.progress(
                interaction,
                "🔍 No area is marked (no region, no mask, and the picture has no transparent part), so an edit "
                "would work on the whole picture. Nothing was charged.",
            )
            return
        picture, share = shown
        await interaction.edit_original_response(
            content=f"🔍 The tinted area ({share:.0%} of the picture) is what an edit would repaint. "
            "This preview is free; run /edit again without preview to make it.",
            attachments=[discord.File(io.BytesIO(picture), filename=PREVIEW_FILE)],
        )

    @edit.autocomplete("region")
    async def _region_choices(self, _interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        return region_choices(current)

    @edit.autocomplete("model")
    async def _edit_models(self, _interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        return self._models(current, lambda spec: spec.supports("edit"))

    @edit.autocomplete("quality")
    async def _edit_qualities(self, interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        return self._qualities(interaction, current)

    # -- /vary ------------------------------------------------------------------------------------------------

    @app_commands.command(name="vary", description="Variations of a picture.")
    @app_commands.describe(
        image="The picture to vary",
        n="How many variations (each one costs)",
        strength="subtle stays close to the picture; strong changes more",
        model="The image model (the server's default when left out)",
        quality="Higher quality costs more",
    )
    async def vary(
        self,
        interaction: discord.Interaction[Any],
        image: discord.Attachment,
        n: app_commands.Range[int, 1, 10] = 1,
        strength: Strength = "subtle",
        model: str | None = None,
        quality: str | None = None,
    ) -> None:
        try:
            check_upload(image)
            self._check_count(n)
        except EaselError as error:
            await self.renderer.fail(interaction, error)
            return
        await self.renderer.defer(interaction)
        who = self.renderer.requester(interaction)

        async def work(hooks: Hooks) -> JobOutcome:
            req = VaryRequest(image=await read_upload(image), model=model, n=n, strength=strength, quality=quality)
            announce = self.renderer.announcer(interaction, who)
            return await self.studio.vary(req, who, on_queue=hooks.on_queue, on_plan=announce)

        headline = "🔁 Variation" if n == 1 else f"🔁 {n} variations"
        await self.renderer.run(interaction, who, work, headline=f"{headline} ({strength})")

    @vary.autocomplete("model")
    async def _vary_models(self, _interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        return self._models(current, lambda spec: spec.can_vary())

    @vary.autocomplete("quality")
    async def _vary_qualities(self, interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        return self._qualities(interaction, current)

    def _check_count(self, n: int) -> None:
        cap = self.settings.max_images
        if n > cap:
            many = "image" if cap == 1 else "images"
            raise InvalidOption(f"🔢 You can ask for at most {cap} {many} at a time here.", param="n")

    def _qualities(self, interaction: discord.Interaction[Any], typed: str) -> list[Choice[str]]:
        """The qualities of the model chosen so far in the command being typed, else of the default model."""
        spec = chosen_spec(self.catalogue, self.studio.images.default_model, interaction)
        return value_choices(spec.qualities, spec.default_quality, typed)

    def _models(self, typed: str, usable: Callable[[ModelSpec], bool]) -> list[Choice[str]]:
        choices = model_choices(self.catalogue, self.studio.images.default_model, typed, self._today())
        return [choice for choice in choices if (spec := self.catalogue.find(choice.value)) and usable(spec)]

    # -- the message menus ------------------------------------------------------------------------------------

    async def vary_message(self, interaction: discord.Interaction[Any], message: discord.Message) -> None:
        """Vary image: a variation of the message's picture (Easel's stored copy for its own results)."""
        await self.renderer.defer(interaction)
        who = self.renderer.requester(interaction)

        async def work(hooks: Hooks) -> JobOutcome:
            source, parent = await self._picture(message)
            model = self.renderer.vary_model(await self._parent_model(parent)) if parent else None
            req = VaryRequest(image=source, model=model)
            announce = self.renderer.announcer(interaction, who)
            return await self.studio.vary(req, who, parent=parent, on_queue=hooks.on_queue, on_plan=announce)

        await self.renderer.run(interaction, who, work, headline="🔁 Variation")

    async def edit_message(self, interaction: discord.Interaction[Any], message: discord.Message) -> None:
        """Edit image: ask for the change (the form must be the first answer), then edit the message's picture."""
        await interaction.response.send_modal(EditForm(self, message))

    async def edit_from_form(
        self, interaction: discord.Interaction[Any], message: discord.Message, prompt: str, region: str
    ) -> None:
        """The submitted "Edit image" form: edit the message's picture as asked."""
        try:
            area = masks.parse_region(region) if region.strip() else None
        except EaselError as error:
            await self.renderer.fail(interaction, error)
            return
        await self.renderer.defer(interaction)
        who = self.renderer.requester(interaction)

        async def work(hooks: Hooks) -> JobOutcome:
            source, parent = await self._picture(message)
            model = self.renderer.edit_model(await self._parent_model(parent)) if parent else None
            req = EditRequest(prompt=prompt, images=(source,), model=model)
            announce = self.renderer.announcer(interaction, who)
            return await self.studio.edit(
                req, who, region=area, parent=parent, on_queue=hooks.on_queue, on_plan=announce
            )

        await self.renderer.run(interaction, who, work, headline=_headline("🖌️", "Edit", prompt))

    async def _picture(self, message: discord.Message) -> tuple[InputImage, tuple[int, int] | None]:
        """The picture a message menu works on, and its (job, index) when it is one of Easel's results."""
        posted = await self.image_store.find_by_message(message.id)
        if posted:
            job_id, index = posted[0]
            stored = await self.image_store.load(job_id, index)
            return InputImage(stored.data, filename=f"image.{extension(stored.mime)}", mime=stored.mime), posted[0]
        for attachment in message.attachments:
            if is_picture(attachment):
                return await read_upload(attachment), None
        raise BadImage("That message has no picture attached: choose a message with an image.")

    async def _parent_model(self, parent: tuple[int, int]) -> str:
        job = await self.ledger.job(parent[0])
        return job.model if job is not None else self.studio.images.default_model


async def setup(bot: EaselBot) -> None:
    core = bot.core
    renderer = Renderer.of(bot)
    await bot.add_cog(
        Edit(
            bot,
            studio=core.studio,
            ledger=core.ledger,
            image_store=core.image_store,
            catalogue=core.catalogue,
            settings=core.settings,
            renderer=renderer,
        )
    )
