"""The gate in front of every command: the right channel, and the permissions to post the result.

Checked before anything is deferred, queued or charged, and answered with one private sentence from
`cogs.errors.friendly`:

- outside EASEL_CHANNELS (when set) Easel refuses: "🚫 I only draw in <#…>, <#…>." A thread counts as its
  parent channel, so threads under an allowed channel are allowed too;
- where Easel lacks Attach Files or Embed Links (every result is files plus an embed), or Send Messages
  (Send Messages in Threads in a thread) for a public result, it says which permission to grant.

Private results (`private:True`, `preview:True`, clicks on a private message) need no Send Messages: they
travel as ephemeral interaction followups, which carry files, and after the token's 15 minutes they go by
direct message, never to the channel. They still need Attach Files and Embed Links: Discord documents no
exemption for ephemeral messages (and simcord does not model either way), so the guard asks first rather
than risk a reply that fails after the job was paid for. In direct messages the permission check is
skipped: Discord's `app_permissions` there always include Attach Files and Embed Links.

The setup installs the check on the command tree (`CommandTree.interaction_check`, discord.py's global check
for slash commands and context menus). Buttons and forms are dispatched by discord.py's view store, not the
tree: their owners call `admit` (or `guard_problem`) first. Raw reaction handlers call `channel_allowed`.
A command whose answer is text only opts out of the permission check with `extras={TEXT_ONLY: True}`.
The check first takes a turn of the loop with room (`bot.pacing`): it is each command's first step, and
when two hundred arrive together their steps would otherwise all run in one long turn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import discord

from bot.config import Settings
from bot.inflight import InFlight
from bot.pacing import Pacer
from cogs.errors import CannotPost, OutsideChannels, Stopping, friendly

if TYPE_CHECKING:
    from bot.app import EaselBot

TEXT_ONLY = "easel_text_only"
"""A command's `extras` key: true when its answer carries no files or embeds (only the channel is checked)."""

PRIVATE_OPTIONS = ("private", "preview")
"""Boolean command options that make the answer private."""

Check = Callable[[discord.Interaction[Any]], Coroutine[Any, Any, bool]]


def channel_allowed(settings: Settings, channel_id: int | None, parent_id: int | None = None) -> bool:
    """True when Easel may answer in `channel_id` (or in a thread whose parent is `parent_id`)."""
    allowed = settings.channel_ids()
    if not allowed:
        return True
    return (channel_id is not None and channel_id in allowed) or (parent_id is not None and parent_id in allowed)


def _parent_id(channel: object) -> int | None:
    return channel.parent_id if isinstance(channel, discord.Thread) else None


def _true_options(options: object) -> Iterator[str]:
    """Names of the boolean options set to true, through subcommand nesting."""
    if not isinstance(options, list):
        return
    for option in options:
        if not isinstance(option, Mapping):
            continue
        if option.get("value") is True:
            yield str(option.get("name"))
        yield from _true_options(option.get("options"))


def _asks_private(command: Mapping[str, Any]) -> bool:
    """Whether a command's data sets one of the private options."""
    return any(name in PRIVATE_OPTIONS for name in _true_options(command.get("options")))


def is_private(interaction: discord.Interaction[Any]) -> bool:
    """Whether the answer will be private: a private option for commands, the message's privacy for clicks."""
    if interaction.type is discord.InteractionType.application_command:
        return _asks_private(interaction.data or {})
    message = interaction.message
    return message is not None and message.flags.ephemeral


def missing_permissions(interaction: discord.Interaction[Any], *, private: bool) -> list[str]:
    """The permissions Easel lacks here to post a result (`discord.Permissions` names, in the order to ask)."""
    if interaction.guild_id is None:
        return []
    return _missing(
        interaction.app_permissions, private=private, thread=isinstance(interaction.channel, discord.Thread)
    )


def missing_in(channel: object) -> list[str]:
    """The permissions Easel lacks to post a result in `channel` (a cached server channel or thread); none
    for a direct message or a channel it does not know (then Discord says so, if it must)."""
    if not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        return []
    have = channel.permissions_for(channel.guild.me)
    return _missing(have, private=False, thread=isinstance(channel, discord.Thread))


def _missing(have: discord.Permissions, *, private: bool, thread: bool) -> list[str]:
    needed = ["attach_files", "embed_links"]
    if not private:
        needed.insert(0, "send_messages_in_threads" if thread else "send_messages")
    return [name for name in needed if not getattr(have, name)]


THREAD_TYPES = frozenset({10, 11, 12})
"""Discord's channel types for threads (announcement, public, private)."""


def admits_frame(data: Mapping[str, Any], settings: Settings, *, closing: bool, private: bool) -> bool:
    """Whether the guard would let this slash command or menu through, from its raw INTERACTION_CREATE
    payload (`cogs.first` answers such a command before discord.py builds it); `private` as `frame_private`."""
    if closing:
        return False
    channel: Mapping[str, Any] = data.get("channel") or {}
    thread = channel.get("type") in THREAD_TYPES
    parent = channel.get("parent_id") if thread else None
    channel_id = data.get("channel_id") or channel.get("id")
    if not channel_allowed(settings, _snowflake(channel_id), _snowflake(parent)):
        return False
    if data.get("guild_id") is None:
        return True
    have = discord.Permissions(int(data.get("app_permissions") or 0))
    return not _missing(have, private=private, thread=thread)


def frame_private(data: Mapping[str, Any]) -> bool:
    """Whether a raw slash command asks for a private answer (`is_private`, before discord.py builds it)."""
    return _asks_private(data.get("data") or {})


def _snowflake(value: object) -> int | None:
    return int(value) if isinstance(value, (str, int)) else None


def guard_error(
    interaction: discord.Interaction[Any], settings: Settings, *, posts_results: bool = True
) -> Stopping | OutsideChannels | CannotPost | None:
    """Why Easel must refuse this interaction, or None to go ahead."""
    in_flight = getattr(interaction.client, "in_flight", None)
    if isinstance(in_flight, InFlight) and in_flight.closing:
        return Stopping()
    if not channel_allowed(settings, interaction.channel_id, _parent_id(interaction.channel)):
        return OutsideChannels(settings.channel_ids())
    if posts_results:
        missing = missing_permissions(interaction, private=is_private(interaction))
        if missing:
            return CannotPost(missing)
    return None


def guard_problem(
    interaction: discord.Interaction[Any], settings: Settings, *, posts_results: bool = True
) -> str | None:
    """The sentence refusing this interaction, or None to go ahead."""
    error = guard_error(interaction, settings, posts_results=posts_results)
    return None if error is None else friendly(error)


async def admit(interaction: discord.Interaction[Any], settings: Settings, *, posts_results: bool = True) -> bool:
    """True to go ahead; otherwise the member has had the sentence, privately, as the first answer."""
    problem = guard_problem(interaction, settings, posts_results=posts_results)
    if problem is None:
        return True
    if interaction.response.is_done():
        # Answered from its frame (`cogs.first`) before a stop began: the "thinking…" reply makes way.
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
        await interaction.followup.send(problem, ephemeral=True)
    else:
        await interaction.response.send_message(problem, ephemeral=True)
    return False


def tree_check(settings: Settings, previous: Check, pacer: Pacer) -> Check:
    """The tree's global check: the guard, then whatever check was installed before."""

    async def check(interaction: discord.Interaction[Any]) -> bool:
        await pacer.turn()
        # Suggestions cost nothing and cannot carry a sentence; the command itself is checked when sent.
        if interaction.type is discord.InteractionType.autocomplete:
            return await previous(interaction)
        command = interaction.command
        text_only = command is not None and bool(command.extras.get(TEXT_ONLY))
        if not await admit(interaction, settings, posts_results=not text_only):
            return False
        return await previous(interaction)

    return check


async def setup(bot: EaselBot) -> None:
    """Put the guard in front of every slash command and context menu."""
    tree = bot.tree
    # commands.Bot builds the tree itself; replacing its check on the instance spares a CommandTree subclass
    # and lets the extension be loaded and unloaded like any other.
    tree.interaction_check = tree_check(bot.settings, tree.interaction_check, bot.pacer)  # type: ignore[method-assign]


async def teardown(bot: EaselBot) -> None:
    # Dropping the instance attribute brings back the class's own check (and whatever it chains to).
    if "interaction_check" in vars(bot.tree):
        delattr(bot.tree, "interaction_check")
