"""/imagine: images from a text prompt, delivered with priced, restart-proof buttons.

Thin on purpose: parse the options, defer at once (Discord allows 3 s for the first answer), show the
estimate and the budget left, run `Studio.generate` with live previews, and hand the outcome to the
shared `Renderer`. Every failure is one private sentence from `cogs.errors.friendly`. The extension also
registers the result buttons (`cogs.buttons`) and routes submitted remix forms to them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.app_commands import Choice
from discord.ext import commands

from bot.api.client import utc_today
from bot.api.types import GenerateRequest
from bot.catalogue import Catalogue, ModelSpec, parse_size
from bot.config import Settings
from bot.errors import InvalidOption
from bot.jobs import JobOutcome, Studio
from cogs.buttons import BUTTONS, IMAGINE_COG, Actions
from cogs.cancel import CancelButton
from cogs.first import ACK_FIRST
from cogs.render import Hooks, Renderer, clip

if TYPE_CHECKING:
    from bot.app import EaselBot

MAX_CHOICES = 25
"""Discord shows at most 25 autocomplete choices."""
CHOICE_NAME_MAX = 100

STYLES = [Choice(name="Vivid", value="vivid"), Choice(name="Natural", value="natural")]
BACKGROUNDS = [
    Choice(name="Auto", value="auto"),
    Choice(name="Opaque", value="opaque"),
    Choice(name="Transparent", value="transparent"),
]


def model_choices(catalogue: Catalogue, default: str, typed: str, today: dt.date) -> list[Choice[str]]:
    """The models still running on `today` whose name, label or alias contains `typed`; the default first."""
    needle = typed.strip().lower()
    found: list[Choice[str]] = []
    for spec in catalogue.active(today):
        if needle and not any(needle in name.lower() for name in (spec.name, spec.label, *spec.aliases)):
            continue
        name = spec.label if spec.label == spec.name else f"{spec.label} ({spec.name})"
        if spec.name == default:
            name += " (default)"
        elif spec.status(today) == "deprecated":
            name += " · retiring soon"
        found.append(Choice(name=clip(name, CHOICE_NAME_MAX), value=spec.name))
    found.sort(key=lambda choice: choice.value != default)
    return found[:MAX_CHOICES]


def value_choices(values: Iterable[str], default: str, typed: str) -> list[Choice[str]]:
    """`values` containing `typed`, the model's default marked."""
    needle = typed.strip().lower()
    found = [
        Choice(name=f"{value} (default)" if value == default else value, value=value)
        for value in values
        if needle in value.lower()
    ]
    return found[:MAX_CHOICES]


def chosen_spec(catalogue: Catalogue, default_model: str, interaction: discord.Interaction[Any]) -> ModelSpec:
    """The model chosen so far in the command being typed (its `model` option), else the default."""
    chosen = getattr(interaction.namespace, "model", None)
    spec = catalogue.find(chosen) if isinstance(chosen, str) and chosen else None
    return spec or catalogue.get(default_model)


def size_choices(spec: ModelSpec, typed: str) -> list[Choice[str]]:
    """The model's sizes containing `typed`; a typed WIDTHxHEIGHT the model allows comes first."""
    found = value_choices(spec.sizes, spec.default_size, typed)
    custom = typed.strip().lower()
    if parse_size(custom) is not None and custom not in spec.sizes and spec.size_allowed(custom):
        found.insert(0, Choice(name=custom, value=custom))
    return found[:MAX_CHOICES]


class Imagine(commands.Cog, name=IMAGINE_COG):
    """/imagine and the buttons under its results."""

    def __init__(
        self,
        *,
        studio: Studio,
        catalogue: Catalogue,
        settings: Settings,
        renderer: Renderer,
        actions: Actions,
        today: Callable[[], dt.date] = utc_today,
    ) -> None:
        self.studio = studio
        self.catalogue = catalogue
        self.settings = settings
        self.renderer = renderer
        self.actions = actions
        """What the result buttons do; `cogs.buttons` finds it here by the cog's name."""
        self._today = today

    @app_commands.command(name="imagine", description="Draw images from a text prompt.", extras={ACK_FIRST: True})
    @app_commands.describe(
        prompt="What to draw",
        model="The image model (the server's default when left out)",
        size="Width x height, or auto",
        quality="Higher quality costs more",
        style="DALL·E 3 only",
        background="Transparent needs a model that supports it",
        n="How many images (each one costs)",
        private="Show the result only to you",
    )
    @app_commands.choices(style=STYLES, background=BACKGROUNDS)
    async def imagine(
        self,
        interaction: discord.Interaction[Any],
        prompt: str,
        model: str | None = None,
        size: str | None = None,
        quality: str | None = None,
        style: str | None = None,
        background: str | None = None,
        n: app_commands.Range[int, 1, 10] = 1,
        private: bool = False,
    ) -> None:
        await self.renderer.defer(interaction, ephemeral=private)
        who = self.renderer.requester(interaction, private=private)
        cap = self.settings.max_images
        if n > cap:
            many = "image" if cap == 1 else "images"
            refusal = InvalidOption(f"🔢 You can ask for at most {cap} {many} at a time here.", param="n")
            await self.renderer.fail(interaction, refusal, private=private)
            return
        req = GenerateRequest(
            prompt=prompt, model=model, n=n, size=size, quality=quality, style=style, background=background
        )

        async def work(hooks: Hooks) -> JobOutcome:
            await self.renderer.announce(interaction, lambda: self.studio.plan_generate(req), who)
            return await self.studio.generate(req, who, on_partial=hooks, on_queue=hooks.on_queue)

        await self.renderer.run(interaction, who, work, private=private)

    def _spec(self, interaction: discord.Interaction[Any]) -> ModelSpec:
        return chosen_spec(self.catalogue, self.studio.images.default_model, interaction)

    @imagine.autocomplete("model")
    async def _model_choices(self, _interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        return model_choices(self.catalogue, self.studio.images.default_model, current, self._today())

    @imagine.autocomplete("size")
    async def _size_choices(self, interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        return size_choices(self._spec(interaction), current)

    @imagine.autocomplete("quality")
    async def _quality_choices(self, interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        spec = self._spec(interaction)
        return value_choices(spec.qualities, spec.default_quality, current)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """Submitted remix forms: handled from their custom_id, so they work even across a restart."""
        if interaction.type is discord.InteractionType.modal_submit:
            await self.actions.on_modal_submit(interaction)


async def setup(bot: EaselBot) -> None:
    """Wire the cog to the bot's services, and register the result buttons."""
    core = bot.core
    renderer = Renderer.of(bot)
    actions = Actions(core.studio, core.ledger, core.image_store, renderer)
    bot.add_dynamic_items(*BUTTONS, CancelButton)
    await bot.add_cog(
        Imagine(
            studio=core.studio, catalogue=core.catalogue, settings=core.settings, renderer=renderer, actions=actions
        )
    )


async def teardown(bot: EaselBot) -> None:
    bot.remove_dynamic_items(*BUTTONS, CancelButton)
