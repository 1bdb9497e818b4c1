"""Reactions on Easel's results: 🔁 and 1️⃣-4️⃣ vary an image, 🚩 flags the result, 🗑️ deletes it.

The listener takes the raw event (`on_raw_reaction_add`), which fires whether or not the message is cached,
so reactions keep working on old results and after a restart: the image store knows which job and image a
message holds (`find_by_message`), and everything else is read from the database.

- 🔁 varies image 1, 1️⃣-4️⃣ vary that image (when the result has it). The member who reacts pays from their
  own budgets, with their own roles; the variation is posted as a reply to the result, mentioning them.
  While it waits for its turn, a reply to the result shows its place in line with a Cancel button
  (`LineNotice`); the reply goes once the job starts.
- 🚩 records a flag (once per member and job) for the moderators. It is kept quiet: the member's reaction
  is taken off again where the bot may (so others do not see who flagged) and the thanks go by DM.
- 🗑️ deletes the result, when the member asked for it or may manage messages in that channel.
- ❌ on a waiting job's progress message cancels the job (see `cogs.cancel`), for the same members.

Reactions from Easel itself (the 🔁 and 🚩 it adds to each result) and from other bots are ignored. A burst
of the same reaction starts one job: a reaction already being handled for the same member, message and
action is dropped, and so is one whose job (same parent image, same member) was started in the last
`BURST_SECONDS`, which also holds across a restart.

A failed variation is explained in a short reply that deletes itself after `NOTICE_SECONDS`.
`deliver_to_channel` posts a finished job outside an interaction (fitted files, an embed, the priced buttons,
the attachments recorded in the image store, then the result reactions once the bot is quiet); the result
reactions are what every public result gets, whichever way it was posted (`cogs.render.react_later`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import discord
from discord.ext import commands

from bot.api.types import InputImage, VaryRequest
from bot.errors import ImageGone
from bot.imaging.fit import FittedFile
from bot.jobs import JobOutcome, Requester, Studio
from bot.pricing import format_usd
from bot.queue import QueueUpdate
from bot.store.flags import Flags
from bot.store.images import ImageStore, extension
from bot.store.ledger import iso, utc_now
from cogs.allowance import allowance
from cogs.buttons import NO_JOB, result_view
from cogs.cancel import CANCEL, cancel_by_reaction, cancel_view, job_on_message
from cogs.errors import CannotPost, friendly
from cogs.guard import channel_allowed, missing_in
from cogs.render import FLAG, PROMPT_SHOWN, VARY, Renderer, clip, queue_line, react_later, result_footer

if TYPE_CHECKING:
    from bot.app import EaselBot

log = logging.getLogger(__name__)

DELETE = "🗑️"
DIGITS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")

BURST_SECONDS = 30
"""A second identical variation by the same member within this many seconds is taken as part of a burst."""
NOTICE_SECONDS = 15
"""How long a reply explaining a failed reaction stays before it deletes itself."""

_VARIATION_SELECTOR = "\ufe0f"

Destination = (
    discord.TextChannel
    | discord.VoiceChannel
    | discord.StageChannel
    | discord.Thread
    | discord.DMChannel
    | discord.PartialMessageable
)
"""Where a result can be posted: every channel that holds messages a bot can reply to (no group DMs)."""


@dataclass(frozen=True, slots=True)
class Action:
    """What a reaction asks for; `index` is the 0-based image for a variation."""

    kind: Literal["vary", "flag", "delete"]
    index: int = 0


def _bare(name: str) -> str:
    """An emoji without its variation selector: clients send 🗑️ and 1️⃣ both with and without one."""
    return name.replace(_VARIATION_SELECTOR, "")


_ACTIONS: dict[str, Action] = {
    _bare(VARY): Action("vary", 0),
    _bare(FLAG): Action("flag"),
    _bare(DELETE): Action("delete"),
    **{_bare(digit): Action("vary", index) for index, digit in enumerate(DIGITS)},
}


def action_for(emoji: discord.PartialEmoji) -> Action | None:
    """The action a reaction stands for; None for any other emoji, custom emojis included."""
    if emoji.id is not None or not emoji.name:
        return None
    return _ACTIONS.get(_bare(emoji.name))


def requester(user: discord.User | discord.Member, *, guild_id: int | None, channel_id: int | None) -> Requester:
    """Who pays for a request: the user, where they asked, and (in a server) their roles for role budgets.

    The same ids as `cogs.render.requester` gives for an interaction (roles without @everyone).
    """
    roles = (
        tuple(str(role.id) for role in user.roles if not role.is_default()) if isinstance(user, discord.Member) else ()
    )
    return Requester(
        user_id=str(user.id),
        guild_id=str(guild_id) if guild_id else "",
        channel_id=str(channel_id) if channel_id else "",
        roles=roles,
    )


# -- posting results outside an interaction ----------------------------------------------------------------


async def record_attachments(
    store: ImageStore, job_id: int, message: discord.Message, files: Sequence[FittedFile]
) -> None:
    """Tell the image store where Discord holds each posted image, so reactions and re-fetches find it."""
    by_name = {attachment.filename: attachment for attachment in message.attachments}
    for position, fitted in enumerate(files):
        attachment = by_name.get(fitted.filename)
        if attachment is None and position < len(message.attachments):
            attachment = message.attachments[position]  # Discord renamed it; the order is kept
        if attachment is None:
            continue
        await store.attach(
            job_id, fitted.index, message_id=message.id, attachment_id=attachment.id, attachment_url=attachment.url
        )


def result_embed(outcome: JobOutcome, title: str, description: str | None = None) -> discord.Embed:
    """A small embed for a result: what it is (`description`: where it came from and its prompt), the model,
    its cost, any notes on the inputs, and the job id in the same footer as every other result."""
    text = "\n".join(part for part in (description, *outcome.notes) if part)
    embed = discord.Embed(title=title, description=clip(text, PROMPT_SHOWN) or None, colour=discord.Colour.blurple())
    embed.add_field(name="Model", value=outcome.result.model)
    embed.add_field(name="Cost", value=format_usd(outcome.cost))
    embed.set_footer(text=result_footer(outcome.job_id, reactions=True))
    return embed


def filesize_limit(channel: Destination) -> int:
    """The upload limit where `channel` is: the server's, or Discord's default outside a cached server."""
    guild = getattr(channel, "guild", None)
    if isinstance(guild, discord.Guild):
        return guild.filesize_limit
    return discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES


def reply_reference(channel: Destination, message_id: int) -> discord.MessageReference:
    """A reply to message `message_id` in `channel` that still posts when that message is gone."""
    return channel.get_partial_message(message_id).to_reference(fail_if_not_exists=False)


class LineNotice:
    """A `Studio` `on_queue` handler for a reaction's job: while it waits, a reply to the result with its
    place in line and a Cancel button, for the member who reacted; deleted once the job starts or ends.

    Its edits share the place-in-line allowance of every reply (`cogs.allowance`); "next in line" is always
    shown. Discord refusing any of it never stops the job.
    """

    def __init__(
        self, studio: Studio, channel: Destination, reply_to: int, user: discord.User | discord.Member
    ) -> None:
        self._studio = studio
        self._channel = channel
        self._reply_to = reply_to
        self._user = user
        self.message: discord.Message | None = None

    async def __call__(self, update: QueueUpdate) -> None:
        if update.position == 0:
            await self.close()
            return
        if self.message is not None and update.position > 1 and not allowance(self._studio, "place").take():
            return
        text = f"{self._user.mention} {queue_line(update, None)} (your variation)"
        try:
            if self.message is None:
                self.message = await self._channel.send(
                    text,
                    reference=reply_reference(self._channel, self._reply_to),
                    view=cancel_view(update.job_id),
                    allowed_mentions=discord.AllowedMentions.none(),
                )
            else:
                self.message = await self.message.edit(content=text)
        except discord.HTTPException as exc:
            log.debug("could not show a variation's place in line: %s", exc)

    async def close(self) -> None:
        """Take the notice away (the job started, was cancelled or failed)."""
        message, self.message = self.message, None
        if message is not None:
            with contextlib.suppress(discord.HTTPException):
                await message.delete()


async def deliver_to_channel(
    bot: EaselBot,
    channel: Destination,
    outcome: JobOutcome,
    who: discord.User | discord.Member,
    *,
    title: str,
    description: str | None = None,
    reply_to: int | None = None,
    view: discord.ui.View | None = None,
) -> discord.Message:
    """Post a finished job in `channel` (as a reply to message `reply_to`), mentioning `who`; the message.

    The images are fitted to the channel's upload limit, their attachments recorded in the image store,
    and the result gets `view`, its buttons, when given; its reactions follow once no result is being posted.
    """
    async with bot.pacer.results.urgent():
        message = await _post_to_channel(
            bot, channel, outcome, who, title=title, description=description, reply_to=reply_to, view=view
        )
    react_later(bot.in_flight, bot.pacer, message, outcome.job_id)
    return message


async def _post_to_channel(
    bot: EaselBot,
    channel: Destination,
    outcome: JobOutcome,
    who: discord.User | discord.Member,
    *,
    title: str,
    description: str | None,
    reply_to: int | None,
    view: discord.ui.View | None,
) -> discord.Message:
    fitted = await bot.workers.fit(
        outcome.result.images, max_bytes=filesize_limit(channel), stem=f"easel_{outcome.job_id}"
    )
    files = [discord.File(io.BytesIO(item.data), filename=item.filename) for item in fitted.files]
    mentions = discord.AllowedMentions(everyone=False, roles=False, users=[who], replied_user=False)
    content = f"{who.mention} {title}"
    embed = result_embed(outcome, title, description)
    view = view or discord.utils.MISSING
    if reply_to is None:
        message = await channel.send(content=content, embed=embed, files=files, view=view, allowed_mentions=mentions)
    else:
        message = await channel.send(
            content=content,
            embed=embed,
            files=files,
            view=view,
            reference=reply_reference(channel, reply_to),
            allowed_mentions=mentions,
        )
    try:
        await record_attachments(bot.core.image_store, outcome.job_id, message, fitted.files)
    except Exception:
        # The images are posted and paid for; only finding them again from this message is lost.
        log.exception("job %d: could not record its attachments", outcome.job_id)
    return message


# -- the cog ----------------------------------------------------------------------------------------------------


class Reactions(commands.Cog):
    """Turns reactions on results into variations, flags and deletions."""

    def __init__(self, bot: EaselBot, renderer: Renderer) -> None:
        self.bot = bot
        self.renderer = renderer
        self.flags = Flags(bot.core.db)
        self._busy: set[tuple[int, int, str]] = set()

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        me = self.bot.user
        if me is None or payload.user_id == me.id:
            return
        if payload.member is not None and payload.member.bot:
            return
        if payload.message_author_id is not None and payload.message_author_id != me.id:
            return  # not one of Easel's messages: no need to ask the database
        if payload.emoji.name == CANCEL:
            if self._allowed(payload):
                await self._cancel(payload)
            return
        action = action_for(payload.emoji)
        # EASEL_CHANNELS limits where Easel draws; flagging and deleting its old results keep working in a
        # channel taken off the list later, so moderators can still clean up there.
        if action is None or (action.kind == "vary" and not self._allowed(payload)):
            return
        # Taken before the first await, so a second event of the burst sees it.
        key = (payload.message_id, payload.user_id, f"{action.kind}:{action.index}")
        if key in self._busy:
            return
        if self.bot.in_flight.closing:
            log.info("stopping: ignored %s on message %s", payload.emoji, payload.message_id)
            return
        self._busy.add(key)
        try:
            async with self.bot.in_flight.track():
                await self.renderer.pacer.turn()
                await self._handle(payload, action)
        except Exception:
            log.exception("reaction %s on message %s failed", payload.emoji, payload.message_id)
        finally:
            self._busy.discard(key)

    async def _handle(self, payload: discord.RawReactionActionEvent, action: Action) -> None:
        images = await self.bot.core.image_store.find_by_message(payload.message_id)
        if not images:
            return  # not an Easel result (or one this store no longer knows)
        channel = self._channel(payload)
        job_id = images[0][0]
        match action.kind:
            case "vary":
                if action.index < len(images):
                    parent_job, parent_index = images[action.index]
                    await self._vary(payload, channel, parent_job, parent_index)
            case "flag":
                await self._flag(payload, channel, job_id)
            case "delete":
                await self._delete(payload, channel, job_id)

    def _allowed(self, payload: discord.RawReactionActionEvent) -> bool:
        """Whether EASEL_CHANNELS lets Easel draw here, as for commands (a thread counts as its parent)."""
        channel = self.bot.get_channel(payload.channel_id)
        parent = channel.parent_id if isinstance(channel, discord.Thread) else None
        return channel_allowed(self.bot.settings, payload.channel_id, parent)

    def _channel(self, payload: discord.RawReactionActionEvent) -> Destination:
        channel = self.bot.get_channel(payload.channel_id)
        if isinstance(channel, Destination):
            return channel
        return self.bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)

    async def _user(self, payload: discord.RawReactionActionEvent) -> discord.User | discord.Member | None:
        if payload.member is not None:
            return payload.member
        user = self.bot.get_user(payload.user_id)
        if user is None:
            try:
                user = await self.bot.fetch_user(payload.user_id)
            except discord.HTTPException:
                return None
        return None if user.bot else user

    # -- 🔁 and 1️⃣-4️⃣ ---------------------------------------------------------------------------------------

    async def _vary(
        self, payload: discord.RawReactionActionEvent, channel: Destination, job_id: int, index: int
    ) -> None:
        user = await self._user(payload)
        if user is None:
            return
        if await self._recently_varied(job_id, index, user.id):
            log.info("ignored a repeated variation of job %d image %d by %s", job_id, index, user.id)
            return
        missing = missing_in(channel)
        if missing:
            # As for a command: a result that could not be posted is never made (nor paid for).
            with contextlib.suppress(discord.HTTPException):
                await user.send(friendly(CannotPost(missing)))
            return
        who = requester(user, guild_id=payload.guild_id, channel_id=payload.channel_id)
        core = self.bot.core
        async with contextlib.AsyncExitStack() as stack:
            # "Easel is typing…" while the job runs, where the bot may; never a reason to fail the job.
            with contextlib.suppress(discord.HTTPException):
                await stack.enter_async_context(channel.typing())
            try:
                parent = await core.ledger.job(job_id)
                if parent is None:
                    raise ImageGone(NO_JOB)
                stored = await core.image_store.load(job_id, index)
                image = InputImage(stored.data, filename=f"image.{extension(stored.mime)}", mime=stored.mime)
                req = VaryRequest(image=image, model=self.renderer.vary_model(parent.model), quality=parent.quality)
                notice = LineNotice(core.studio, channel, payload.message_id, user)
                try:
                    outcome = await core.studio.vary(req, who, parent=(job_id, index), on_queue=notice)
                finally:
                    await notice.close()
            except Exception as error:
                await self._notice(channel, payload.message_id, user, friendly(error))
                return
            try:
                await deliver_to_channel(
                    self.bot,
                    channel,
                    outcome,
                    user,
                    title=f"{VARY} Variation of image {index + 1} of job #{job_id}",
                    description=await self.renderer.describe(parent),
                    reply_to=payload.message_id,
                    view=await self._buttons(outcome),
                )
            except Exception as error:
                await self._notice(channel, payload.message_id, user, friendly(error, job_id=outcome.job_id))

    async def _recently_varied(self, job_id: int, index: int, user_id: int) -> bool:
        """True when this member's variation of this image was started in the last BURST_SECONDS."""
        since = iso(utc_now() - dt.timedelta(seconds=BURST_SECONDS))
        row = await self.bot.core.db.fetchone(
            "SELECT 1 FROM jobs WHERE parent_job = ? AND parent_index = ? AND user_id = ? AND kind = 'vary' "
            "AND status IN ('queued', 'running', 'succeeded') AND created_at >= ? LIMIT 1",
            (job_id, index, str(user_id), since),
        )
        return row is not None

    async def _buttons(self, outcome: JobOutcome) -> discord.ui.View:
        """The same priced buttons a result posted through an interaction has."""
        job = await self.bot.core.ledger.job(outcome.job_id)
        images = outcome.result.images
        return result_view(outcome.job_id, len(images), self.renderer.prices(job, images[0] if images else None))

    async def _notice(
        self, channel: Destination, message_id: int, user: discord.User | discord.Member, text: str
    ) -> None:
        """A short reply to the result, for `user`, that deletes itself after NOTICE_SECONDS."""
        with contextlib.suppress(discord.HTTPException):
            await channel.send(
                f"{user.mention} {text}",
                reference=reply_reference(channel, message_id),
                delete_after=NOTICE_SECONDS,
                allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=[user], replied_user=False),
            )

    # -- ❌ on a waiting job's progress message ---------------------------------------------------------------

    async def _cancel(self, payload: discord.RawReactionActionEvent) -> None:
        channel = self._channel(payload)
        core = self.bot.core
        try:
            moderator = self._may_manage(payload, channel)
            text = await cancel_by_reaction(
                core.studio,
                core.ledger,
                payload.message_id,
                payload.user_id,
                moderator=moderator,
                look_up=functools.partial(self._job_on_message, payload, channel),
            )
            if text is not None and (user := await self._user(payload)) is not None:
                await self._notice(channel, payload.message_id, user, text)
        except Exception:
            log.exception("cancelling by reaction on message %s failed", payload.message_id)

    async def _job_on_message(self, payload: discord.RawReactionActionEvent, channel: Destination) -> int | None:
        """The job whose Cancel button an Easel message shows (one from before a restart), read from Discord.

        Only Easel's messages carry its buttons: the listener has already passed over messages Discord says
        someone else wrote, and one whose author Discord left out is checked once fetched."""
        try:
            message = await channel.fetch_message(payload.message_id)
        except discord.HTTPException:
            return None
        me = self.bot.user
        if me is None or message.author.id != me.id:
            return None
        return job_on_message(message)

    # -- 🚩 -----------------------------------------------------------------------------------------------------

    async def _flag(self, payload: discord.RawReactionActionEvent, channel: Destination, job_id: int) -> None:
        user = await self._user(payload)
        if user is None:
            return
        added = await self.flags.add(
            job_id,
            user.id,
            message_id=payload.message_id,
            channel_id=payload.channel_id,
            guild_id=payload.guild_id or "",
            reason="reaction",
        )
        if payload.guild_id is not None:
            # Keep the flagger anonymous: take their 🚩 off again (Easel's own stays, ready for the next one).
            with contextlib.suppress(discord.HTTPException):
                await channel.get_partial_message(payload.message_id).remove_reaction(payload.emoji, user)
        text = (
            f"{FLAG} Thanks: the moderators will look at that result (job {job_id})."
            if added
            else f"{FLAG} You have already flagged that result (job {job_id}); the moderators have it."
        )
        try:
            await user.send(text)
        except discord.HTTPException:
            # DMs closed: a quiet note in the channel that names nobody, for a new flag only (a repeat records
            # nothing, and must not let one member fill the channel with notes).
            if added:
                with contextlib.suppress(discord.HTTPException):
                    await channel.send(f"{FLAG} Flag recorded.", delete_after=NOTICE_SECONDS)

    # -- 🗑️ -----------------------------------------------------------------------------------------------------

    async def _delete(self, payload: discord.RawReactionActionEvent, channel: Destination, job_id: int) -> None:
        job = await self.bot.core.ledger.job(job_id)
        owner = job.user_id if job is not None else None
        if str(payload.user_id) != owner and not self._may_manage(payload, channel):
            return
        try:
            await channel.get_partial_message(payload.message_id).delete()
        except discord.NotFound:
            return
        except discord.HTTPException as error:
            log.info("could not delete result message %s: %s", payload.message_id, error)
            return
        log.info("job %d: result message %s deleted by %s", job_id, payload.message_id, payload.user_id)

    @staticmethod
    def _may_manage(payload: discord.RawReactionActionEvent, channel: Destination) -> bool:
        """True when the member may manage messages in that channel (overwrites included)."""
        member = payload.member
        if member is None:
            return False
        if isinstance(channel, discord.abc.GuildChannel | discord.Thread):
            return channel.permissions_for(member).manage_messages
        return member.guild_permissions.manage_messages


async def setup(bot: EaselBot) -> None:
    renderer = Renderer.of(bot)
    await bot.add_cog(Reactions(bot, renderer))
