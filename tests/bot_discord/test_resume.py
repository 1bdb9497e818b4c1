"""Restarts on simulated Discord: queued jobs resume and post in their channel, running ones stay unknown.

Each test reserves jobs directly through the first bot's ledger (as /imagine would, before its turn came),
then restarts the bot on the same database, as a crash and a fresh start would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import discord
import simcord

from bot.api.mock import MockProvider
from bot.api.types import GenerateRequest, ImageResult
from bot.app import EaselBot
from bot.catalogue import ModelSpec
from bot.config import Settings
from bot.jobs import PRIVATE, is_private
from bot.services import Core, open_core
from bot.store.ledger import JobDraft, JobKind, JobOptions
from cogs.cancel import CANCEL, cancel_view
from cogs.errors import CANCEL_NOT_YOURS, CANCEL_TOO_LATE
from cogs.render import result_footer
from cogs.resume import NOT_RESUMED
from tests.bot_discord.test_cancel import hold_queue
from tests.bot_discord.test_imagine import ready

EXTENSIONS = ("cogs.imagine", "cogs.resume")
ESTIMATE = 42_000


def make_bot(settings: Settings) -> EaselBot:
    return EaselBot(settings, workers="thread", extensions=EXTENSIONS)


class World:
    def __init__(self, env: simcord.Env) -> None:
        self.env = env
        self.guild = env.create_guild()
        self.channel = self.guild.create_text_channel("art")
        self.alice_user = env.create_user("alice")
        self.alice = self.guild.add_member(self.alice_user)

    async def reserve(
        self,
        bot: EaselBot,
        *,
        kind: JobKind = "generate",
        prompt: str = "a red fox",
        channel_id: int | None = None,
        user_id: int | None = None,
        guild_id: str | None = None,
        model: str | None = None,
        options: JobOptions = (),
    ) -> int:
        """A job reserved and left queued, the way a request waiting for its turn is stored."""
        draft = JobDraft(
            kind=kind,
            user_id=str(user_id or self.alice.id),
            guild_id=str(self.guild.id) if guild_id is None else guild_id,
            channel_id=str(channel_id or self.channel.id),
            model=model or bot.core.settings.model,
            provider="mock",
            n=2,
            size="1024x1024",
            quality="low",
            prompt=prompt,
            options=options,
        )
        return await bot.core.ledger.reserve(draft, ESTIMATE)


async def ledger_rows(bot: EaselBot, job_id: int) -> list[tuple[str, int]]:
    rows = await bot.core.db.fetchall("SELECT kind, amount FROM ledger WHERE job_id = ? ORDER BY id", (job_id,))
    return [(row[0], int(row[1])) for row in rows]


async def state(bot: EaselBot, job_id: int) -> tuple[str, str]:
    job = await bot.core.ledger.job(job_id)
    assert job is not None
    return job.status, job.cost_state


def mentions(messages: Sequence[discord.Message], user_id: int) -> list[discord.Message]:
    return [message for message in messages if f"<@{user_id}>" in message.content]


@contextlib.asynccontextmanager
async def restarting(settings: Settings) -> AsyncIterator[tuple[simcord.Env, World, EaselBot, EaselBot]]:
    """A running first bot with its world, and the second bot a test restarts into; both closed after."""
    first, second = make_bot(settings), make_bot(settings)
    try:
        async with simcord.run(first) as env:
            yield env, World(env), first, second
    finally:
        await first.close()
        await second.close()


async def test_a_queued_job_resumes_and_posts_in_its_channel(settings: Settings) -> None:
    """After a restart the queued job runs once under its reservation; the result mentions alice, with buttons."""
    async with restarting(settings) as (env, world, first, second):
        job_id = await world.reserve(first)
        await env.restart_bot(second)
        await env.settle()

        assert await state(second, job_id) == ("succeeded", "settled")
        # One reservation, one charge (the mock is free) and its release: never a second reservation.
        rows = await ledger_rows(second, job_id)
        assert [kind for kind, _ in rows].count("reserve") == 1
        assert [kind for kind, _ in rows].count("charge") == 1
        (posted,) = mentions(world.channel.history(), world.alice.id)
        assert posted.reference is None
        assert "before the restart" in posted.content
        assert [a.filename for a in posted.attachments] == [f"easel_{job_id}_1.png", f"easel_{job_id}_2.png"]
        assert posted.embeds[0].footer.text == result_footer(job_id, reactions=True)
        assert posted.embeds[0].description == "a red fox"
        custom_ids = [child.custom_id for row in posted.components for child in row.children]  # type: ignore[attr-defined]
        assert f"easel:v:{job_id}:0" in custom_ids
        assert await second.core.image_store.find_by_message(posted.id) == [(job_id, 0), (job_id, 1)]


async def test_a_queued_edit_is_refunded_and_the_user_told(settings: Settings) -> None:
    """An edit's input images were not kept: it is refunded, and alice reads one sentence saying so."""
    async with restarting(settings) as (env, world, first, second):
        job_id = await world.reserve(first, kind="edit", prompt="add a hat")
        await env.restart_bot(second)
        await env.settle()

        assert await state(second, job_id) == ("cancelled", "refunded")
        (told,) = mentions(world.channel.history(), world.alice.id)
        assert told.content == f"<@{world.alice.id}> {NOT_RESUMED}"
        assert not told.attachments


async def test_a_running_job_stays_an_unknown_charge(settings: Settings) -> None:
    """A job running at the restart is not resumed: the crash rule keeps its estimate as an unknown charge."""
    async with restarting(settings) as (env, world, first, second):
        running = await world.reserve(first, prompt="running fox")
        assert await first.core.ledger.start(running)
        queued = await world.reserve(first, prompt="queued fox")
        await env.restart_bot(second)
        await env.settle()

        assert await state(second, running) == ("failed", "unknown")
        job = await second.core.ledger.job(running)
        assert job is not None
        assert job.cost == ESTIMATE
        assert await state(second, queued) == ("succeeded", "settled")
        (posted,) = mentions(world.channel.history(), world.alice.id)
        assert posted.embeds[0].description == "queued fox"


async def test_a_job_whose_channel_is_gone_is_refunded(settings: Settings) -> None:
    """A queued job for a channel the bot can no longer find is refunded without calling the provider."""
    async with restarting(settings) as (env, world, first, second):
        job_id = await world.reserve(first, channel_id=987654321)
        await env.restart_bot(second)
        await env.settle()

        assert await state(second, job_id) == ("cancelled", "refunded")
        assert mentions(world.channel.history(), world.alice.id) == []


async def test_a_job_in_a_channel_closed_to_the_bot_is_refunded_and_told(settings: Settings) -> None:
    """Where the bot may talk but not attach files, the job is refunded before it runs and alice is told."""
    async with restarting(settings) as (env, world, first, second):
        me = world.guild.me
        assert me is not None
        closed = world.guild.create_text_channel(
            "no-files", overwrites={me: discord.PermissionOverwrite(attach_files=False)}
        )
        job_id = await world.reserve(first, channel_id=closed.id)
        await env.restart_bot(second)
        await env.settle()

        assert await state(second, job_id) == ("cancelled", "refunded")
        (told,) = mentions(closed.history(), world.alice.id)
        assert told.content == f"<@{world.alice.id}> {NOT_RESUMED}"


class Held(MockProvider):
    """The mock provider, whose calls wait (a declared external wait, so simcord can settle) until released."""

    def __init__(self, env: simcord.Env) -> None:
        super().__init__()
        self.env = env
        self.gate = asyncio.Event()
        self.calls = 0

    async def generate(self, spec: ModelSpec, req: GenerateRequest) -> ImageResult:
        self.calls += 1
        await self.env.external_wait(self.gate.wait(), reason="the image service is working")
        return await super().generate(spec, req)


def held_bot(settings: Settings, provider: Held) -> EaselBot:
    @contextlib.asynccontextmanager
    async def open_services(settings: Settings) -> AsyncIterator[Core]:
        async with open_core(settings, recover=True, resume_queued=True) as core:
            core.images.provider = provider
            yield core

    return EaselBot(settings, workers="thread", extensions=EXTENSIONS, open_services=open_services)


async def test_closing_the_bot_stops_a_resumed_job_by_the_crash_rule(settings: Settings) -> None:
    """A resumed job still with the provider when the bot closes is cancelled and kept as an unknown charge."""
    settings = settings.model_copy(update={"stop_grace": 0.2})  # the job outlasts the grace either way
    first = make_bot(settings)
    second: EaselBot | None = None
    try:
        async with simcord.run(first) as env:
            world = World(env)
            job_id = await world.reserve(first)
            provider = Held(env)
            second = held_bot(settings, provider)
            await env.restart_bot(second)
            assert provider.calls == 1
            # discord.py loads an extension as a fresh module, so the cog's class is not this file's import.
            assert getattr(second.get_cog("Resume"), "pending", None) == 1

            await second.close()

            async with open_core(settings) as core:
                job = await core.ledger.job(job_id)
            assert job is not None
            assert (job.status, job.cost_state, job.cost) == ("failed", "unknown", ESTIMATE)
            assert mentions(world.channel.history(), world.alice.id) == []
    finally:
        await first.close()
        if second is not None:
            await second.close()


async def test_several_queued_jobs_resume_through_the_capped_queue(settings: Settings) -> None:
    """With one job at a time allowed, three queued jobs of two members all run, each posted once."""
    settings = settings.model_copy(update={"max_running": 1})
    async with restarting(settings) as (env, world, first, second):
        bob = world.guild.add_member(env.create_user("bob"))
        jobs = [
            await world.reserve(first, prompt="fox one"),
            await world.reserve(first, prompt="fox two"),
            await world.reserve(first, prompt="bob's owl", user_id=bob.id),
        ]
        await env.restart_bot(second)
        await env.settle()

        for job_id in jobs:
            assert await state(second, job_id) == ("succeeded", "settled")
        history = world.channel.history()
        assert len(mentions(history, world.alice.id)) == 2
        assert len(mentions(history, bob.id)) == 1


async def test_a_job_whose_model_is_gone_is_refunded_and_told(settings: Settings) -> None:
    """A queued job for a model shut down since cannot run: refunded, and alice is told in one sentence."""
    async with restarting(settings) as (env, world, first, second):
        job_id = await world.reserve(first, model="dall-e-3")
        await env.restart_bot(second)
        await env.settle()

        assert (await state(second, job_id))[1] == "refunded"
        (told,) = mentions(world.channel.history(), world.alice.id)
        assert told.content == f"<@{world.alice.id}> {NOT_RESUMED}"


async def test_a_direct_message_job_resumes_in_the_dm(settings: Settings) -> None:
    """A job asked for in a direct message is posted back there."""
    async with restarting(settings) as (env, world, first, second):
        carol = env.create_user("carol")
        dm = carol.dm_channel
        job_id = await world.reserve(first, guild_id="", channel_id=dm.id, user_id=carol.id)
        await env.restart_bot(second)
        await env.settle()

        assert await state(second, job_id) == ("succeeded", "settled")
        (posted,) = mentions(dm.history(), carol.id)
        assert len(posted.attachments) == 2


async def test_a_private_job_resumes_by_direct_message_not_in_the_channel(settings: Settings) -> None:
    """A private /imagine left waiting by a crash: its prompt and images go to alice alone, never to #art."""
    async with restarting(settings) as (env, world, first, second):
        job_id = await world.reserve(first, prompt="my private fox", options=(PRIVATE,))
        await env.restart_bot(second)
        await env.settle()

        assert await state(second, job_id) == ("succeeded", "settled")
        assert world.channel.history() == []
        (posted,) = mentions(world.alice_user.dm_channel.history(), world.alice.id)
        assert len(posted.attachments) == 2
        assert "my private fox" in (posted.embeds[0].description or "")


async def test_a_private_imagine_is_recorded_as_private(settings: Settings) -> None:
    """/imagine private:True marks its job, so a restart would not post it publicly; a public one is not."""
    bot = make_bot(settings)
    try:
        async with simcord.run(bot) as env:
            await ready(bot)
            world = World(env)
            await world.alice.slash(world.channel, "imagine", prompt="secret", private=True)
            await world.alice.slash(world.channel, "imagine", prompt="open")
            private, public = await bot.core.ledger.job(1), await bot.core.ledger.job(2)
            assert private is not None
            assert public is not None
            assert is_private(private)
            assert not is_private(public)
    finally:
        await bot.close()


async def test_without_the_resume_extension_queued_jobs_are_refunded(settings: Settings) -> None:
    """A bot that does not load cogs.resume refunds queued jobs at start instead of holding them forever."""
    first = make_bot(settings)
    second = EaselBot(settings, workers="thread", extensions=("cogs.imagine",))
    try:
        async with simcord.run(first) as env:
            world = World(env)
            job_id = await world.reserve(first)
            await env.restart_bot(second)

            assert await state(second, job_id) == ("cancelled", "refunded")
    finally:
        await first.close()
        await second.close()


async def only_the_running_job_is_made(env: simcord.Env, bot: EaselBot, provider: Held, running: int) -> None:
    """Release the provider: the running job succeeds, and the cancelled one never reached it."""
    provider.gate.set()
    await env.settle()
    assert await state(bot, running) == ("succeeded", "settled")
    assert provider.calls == 1, "the cancelled job never reached the image service"


def held_queue_bot(
    settings: Settings, env: simcord.Env, provider: Held, extensions: Sequence[str] = EXTENSIONS
) -> EaselBot:
    """A bot to restart into whose provider waits for `provider.gate` and whose queue simcord may wait on."""

    @contextlib.asynccontextmanager
    async def open_services(settings: Settings) -> AsyncIterator[Core]:
        async with open_core(settings, recover=True, resume_queued=True) as core:
            core.images.provider = provider
            assert core.queue is not None
            hold_queue(env, core.queue)
            yield core

    return EaselBot(settings, workers="thread", extensions=tuple(extensions), open_services=open_services)


async def test_an_old_cancel_button_cancels_a_resumed_job_still_waiting(settings: Settings) -> None:
    """A Cancel button from before the restart still takes its job out of line once it waits there again."""
    settings = settings.model_copy(update={"max_running": 1})
    first = make_bot(settings)
    second: EaselBot | None = None
    try:
        async with simcord.run(first) as env:
            world = World(env)
            running = await world.reserve(first, prompt="fox one")
            waiting_job = await world.reserve(first, prompt="fox two")
            channel = first.get_channel(world.channel.id)
            assert isinstance(channel, discord.TextChannel)
            await channel.send("⏳ Queued: number 1 in line", view=cancel_view(waiting_job))
            (old,) = world.channel.history()
            provider = Held(env)
            second = held_queue_bot(settings, env, provider)
            await env.restart_bot(second)
            assert provider.calls == 1, "one job runs, the other waits its turn"

            clicked = await world.alice.click(old, custom_id=f"easel:cancel:{waiting_job}")
            assert clicked.response is None or clicked.response.content != CANCEL_TOO_LATE
            assert await state(second, waiting_job) == ("cancelled", "refunded")
            await only_the_running_job_is_made(env, second, provider, running)
    finally:
        await first.close()
        if second is not None:
            await second.close()


async def test_an_old_cross_reaction_cancels_a_resumed_job_still_waiting(settings: Settings) -> None:
    """❌ on a reply from before the restart: the job is read off its Cancel button. A stranger's ❌ is told
    no and changes nothing; the requester's takes the job out of line, fully refunded."""
    settings = settings.model_copy(update={"max_running": 1})
    first = make_bot(settings)
    second: EaselBot | None = None
    try:
        async with simcord.run(first) as env:
            world = World(env)
            bob = world.guild.add_member(env.create_user("bob"))
            running = await world.reserve(first, prompt="fox one")
            waiting_job = await world.reserve(first, prompt="fox two")
            channel = first.get_channel(world.channel.id)
            assert isinstance(channel, discord.TextChannel)
            await channel.send("⏳ Queued: number 1 in line", view=cancel_view(waiting_job))
            await channel.send("🖌️ Starting…")  # a reply whose job started: no Cancel button left
            old, started = world.channel.history()[-2:]
            provider = Held(env)
            second = held_queue_bot(settings, env, provider, extensions=(*EXTENSIONS, "cogs.reactions"))
            await env.restart_bot(second)
            assert provider.calls == 1, "one job runs, the other waits its turn"

            await world.alice.react(started, CANCEL)
            await bob.react(old, CANCEL)
            await env.settle()
            assert await state(second, waiting_job) == ("queued", "reserved")
            notices = [m for m in world.channel.history() if m.content.startswith(bob.mention)]
            assert [CANCEL_NOT_YOURS in m.content for m in notices] == [True]

            await world.alice.react(old, CANCEL)
            await env.settle()
            assert await state(second, waiting_job) == ("cancelled", "refunded")
            await only_the_running_job_is_made(env, second, provider, running)
    finally:
        await first.close()
        if second is not None:
            await second.close()
