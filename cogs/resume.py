"""After a restart: the jobs that were still waiting in the queue run, and their results are posted.

At start the bot opens the core with `resume_queued=True`, so jobs still queued keep their reservation
(jobs that were running are resolved by the ledger's crash rule: an "unknown" charge, never resumed).
Once the bot is ready this cog resumes each queued job through the fair queue, oldest first, one task per
job, under its original reservation (`Studio.resume`: it settles once, never charges twice).

The interaction that asked for a job is long dead after a restart, so the result is a plain channel message
that mentions the requester (`deliver_to_channel`: fitted files, the embed, the priced buttons, the
attachments recorded in the image store); a result asked for privately goes by direct message instead.
A job that cannot resume (an edit or variation, whose input images were not kept; a model gone since; a
channel gone or closed to the bot; a request from outside Discord) is refunded, and the requester is told
in one sentence where the bot may still post.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.errors import EaselError
from bot.jobs import is_private
from bot.queue import QueuedJob
from cogs.buttons import result_view
from cogs.errors import friendly
from cogs.reactions import Destination, deliver_to_channel
from cogs.render import Renderer

if TYPE_CHECKING:
    from bot.app import EaselBot

log = logging.getLogger(__name__)

NOT_RESUMED = "your request from before the restart could not be resumed; nothing was charged."
GONE = "Easel restarted and could no longer reach the channel or member that asked; nothing was charged."


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a resumed job's result goes and whom it mentions."""

    channel: Destination
    user: discord.User | discord.Member
    can_post: bool
    """The bot may post a result there (send, attach files, embed links)."""


class Resume(commands.Cog):
    """Resumes the jobs a restart left queued and posts their results in their channels."""

    def __init__(self, bot: EaselBot, renderer: Renderer) -> None:
        self.bot = bot
        self.renderer = renderer
        self._starter: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def cog_load(self) -> None:
        self._starter = asyncio.create_task(self._resume_all(), name="easel-resume")

    async def cog_unload(self) -> None:
        tasks = [task for task in (self._starter, *self._tasks) if task is not None and not task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            # The studio resolves a cancelled job itself: refunded if not yet sent, else an unknown charge.
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._starter = None
        self._tasks.clear()

    @property
    def pending(self) -> int:
        """Resumed jobs not finished yet."""
        return sum(1 for task in self._tasks if not task.done())

    async def _resume_all(self) -> None:
        await self.bot.wait_until_ready()
        try:
            jobs = await self.bot.core.studio.queued()
        except Exception:
            log.exception("could not list the jobs left queued by the restart")
            return
        if jobs:
            log.info("resuming %d job(s) left queued by the restart", len(jobs))
        # Targets are looked up one after another, so the jobs enter the fair queue oldest first.
        for job in jobs:
            try:
                target = await self._target(job)
            except Exception:
                log.exception("job %d: could not find where to post it", job.job_id)
                target = None
            if target is None or not target.can_post:
                await self._give_up(job, target)
                continue
            task = asyncio.create_task(self._tracked(job, target), name=f"easel-resume-{job.job_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _target(self, job: QueuedJob) -> _Target | None:
        """The channel and member of `job`, or None when either is gone (or the job came from outside Discord)."""
        if not (job.user_id.isdigit() and job.channel_id.isdigit()):
            return None
        user = await self._user(job)
        if user is None:
            return None
        channel: Destination | None
        if not job.guild_id or is_private(job):
            # A private result goes to the member alone: by direct message, never into the channel.
            try:
                channel = await user.create_dm()
            except discord.HTTPException:
                return None
            return _Target(channel, user, can_post=True)
        channel = await self._channel(int(job.channel_id))
        if channel is None:
            return None
        return _Target(channel, user, can_post=self._may_post(channel))

    async def _user(self, job: QueuedJob) -> discord.User | discord.Member | None:
        user_id = int(job.user_id)
        guild = self.bot.get_guild(int(job.guild_id)) if job.guild_id.isdigit() else None
        if guild is not None:
            member = guild.get_member(user_id)
            if member is not None:
                return member
            with contextlib.suppress(discord.NotFound):
                return await guild.fetch_member(user_id)
        user = self.bot.get_user(user_id)
        if user is not None:
            return user
        try:
            return await self.bot.fetch_user(user_id)
        except discord.NotFound:
            return None

    async def _channel(self, channel_id: int) -> Destination | None:
        channel = self.bot.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self.bot.fetch_channel(channel_id)
            except (discord.NotFound, discord.Forbidden):
                return None
        return channel if isinstance(channel, Destination) else None

    @staticmethod
    def _may_post(channel: Destination) -> bool:
        if not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
            return True
        perms = channel.permissions_for(channel.guild.me)
        send = perms.send_messages_in_threads if isinstance(channel, discord.Thread) else perms.send_messages
        return send and perms.attach_files and perms.embed_links

    async def _give_up(self, job: QueuedJob, target: _Target | None) -> None:
        """Refund a job that cannot run, and tell its requester where the bot may still say so."""
        try:
            refunded = await self.bot.core.ledger.refund(
                job.job_id, code="interrupted", message=GONE, status="cancelled"
            )
        except Exception:
            log.exception("job %d: could not refund it", job.job_id)
            return
        log.info("job %d: not resumed after the restart (channel or member gone, or no access)", job.job_id)
        if refunded and target is not None:
            await self._tell(target, NOT_RESUMED)

    async def _tracked(self, job: QueuedJob, target: _Target) -> None:
        """`_resume`, counted as work in flight so that a stop lets its result be posted."""
        async with self.bot.in_flight.track():
            await self._resume(job, target)

    async def _resume(self, job: QueuedJob, target: _Target) -> None:
        studio = self.bot.core.studio
        try:
            outcome = await studio.resume(job)
        except Exception as error:
            if not isinstance(error, EaselError):
                log.exception("job %d: resuming it failed", job.job_id)
            else:
                log.info("job %d: not resumed: %s", job.job_id, error.message)
            record = await self.bot.core.ledger.job(job.job_id)
            refunded = record is not None and record.cost_state == "refunded"
            await self._tell(target, NOT_RESUMED if refunded else friendly(error, job_id=job.job_id))
            return
        record = await self.bot.core.ledger.job(job.job_id)
        images = outcome.result.images
        prices = self.renderer.prices(record, images[0] if images else None)
        try:
            await deliver_to_channel(
                self.bot,
                target.channel,
                outcome,
                target.user,
                title="🎨 Your request from before the restart",
                description=await self.renderer.describe(record),
                view=result_view(outcome.job_id, len(images), prices),
            )
        except Exception as error:
            log.warning("job %d: could not post its result after the restart: %s", job.job_id, error)
            await self._tell(target, friendly(error, job_id=outcome.job_id))

    @staticmethod
    async def _tell(target: _Target, text: str) -> None:
        """One sentence for the requester in the job's channel; only logged when the bot may not post."""
        user = target.user
        try:
            await target.channel.send(
                f"{user.mention} {text}",
                allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=[user]),
            )
        except discord.HTTPException as error:
            log.info("could not tell user %s in channel %s: %s", user.id, target.channel.id, error)


async def setup(bot: EaselBot) -> None:
    renderer = Renderer.of(bot)
    await bot.add_cog(Resume(bot, renderer))
