"""The guard: refusals outside EASEL_CHANNELS and without the permissions to post, before any job or charge."""

from __future__ import annotations

from collections.abc import AsyncIterator

import discord
import pytest
import simcord

from bot.app import EaselBot
from bot.config import Settings
from cogs.guard import channel_allowed, guard_problem
from tests import images
from tests.bot_discord.test_imagine import ready, world


@pytest.fixture
async def simcord_bot(settings: Settings) -> AsyncIterator[EaselBot]:
    """A bot with the guard in front of /imagine, closed after the test."""
    bot = EaselBot(settings, workers="thread", extensions=("cogs.guard", "cogs.imagine"))
    yield bot
    await bot.close()


@pytest.fixture
async def env(simcord_env: simcord.Env, simcord_bot: EaselBot) -> simcord.Env:
    await ready(simcord_bot)
    return simcord_env


async def jobs(bot: EaselBot) -> int:
    count: int = await bot.core.db.fetchval("SELECT COUNT(*) FROM jobs")
    return count


async def test_outside_the_allowed_channels_one_private_sentence_and_no_job(
    env: simcord.Env, simcord_bot: EaselBot, settings: Settings
) -> None:
    """/imagine in a channel EASEL_CHANNELS leaves out is refused at once, privately; no job, no charge."""
    channel, alice = world(env)
    studio = env.guild.create_text_channel("studio")
    gallery = env.guild.create_text_channel("gallery")
    settings.channels = f"{gallery.id},{studio.id}"

    result = await alice.slash(channel, "imagine", prompt="a red fox")

    assert result.ephemeral
    assert result.response is not None
    assert (
        result.response.content
        == f"🚫 I only draw in <#{min(studio.id, gallery.id)}>, <#{max(studio.id, gallery.id)}>."
    )
    assert result.followups == []
    assert await jobs(simcord_bot) == 0
    assert await simcord_bot.core.db.fetchval("SELECT COALESCE(SUM(cost), 0) FROM jobs") == 0


async def test_the_guard_waits_for_a_turn_with_room_before_anything_else(
    env: simcord.Env, simcord_bot: EaselBot, settings: Settings
) -> None:
    """A command's first step is paced (`bot.pacing`): when 200 arrive together, their checks and defers
    spread over short turns of the loop. The turn comes before the guard answers, even with a refusal."""
    channel, alice = world(env)
    settings.channels = str(env.guild.create_text_channel("studio").id)
    pacer = simcord_bot.pacer
    original = pacer.turn
    answered: list[bool] = []

    async def turn(*, urgent: bool = False) -> None:
        answered.append(any(entry.path.endswith("/callback") for entry in env.http_requests))
        await original(urgent=urgent)

    pacer.turn = turn  # type: ignore[method-assign]
    result = await alice.slash(channel, "imagine", prompt="a red fox")

    assert result.ephemeral
    assert answered == [False], "one turn, before the refusal went out"


async def test_an_allowed_channel_works(env: simcord.Env, simcord_bot: EaselBot, settings: Settings) -> None:
    """In a listed channel the image arrives as usual."""
    channel, alice = world(env)
    settings.channels = str(channel.id)

    result = await alice.slash(channel, "imagine", prompt="a red fox")

    assert result.response is not None
    assert not result.response.ephemeral
    assert [a.filename for a in result.response.attachments] == ["easel-1-1.png"]
    assert await jobs(simcord_bot) == 1


async def test_a_thread_under_an_allowed_channel_works(
    env: simcord.Env, simcord_bot: EaselBot, settings: Settings
) -> None:
    """A thread counts as its parent channel."""
    channel, alice = world(env)
    settings.channels = str(channel.id)
    parent = simcord_bot.get_channel(channel.id)
    assert isinstance(parent, discord.TextChannel)
    await parent.create_thread(name="fox ideas", type=discord.ChannelType.public_thread)
    (thread,) = channel.threads

    result = await alice.slash(thread, "imagine", prompt="a red fox")

    assert result.response is not None
    assert [a.filename for a in result.response.attachments] == ["easel-1-1.png"]
    assert await jobs(simcord_bot) == 1


async def test_while_stopping_new_commands_are_turned_away(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """Once a stop has begun, /imagine gets one private sentence and starts no job."""
    channel, alice = world(env)
    assert await simcord_bot.in_flight.drain(grace=0)

    result = await alice.slash(channel, "imagine", prompt="a red fox")

    assert result.ephemeral
    assert result.response is not None
    assert result.response.content == "🔧 I'm restarting right now; please try again in a minute. Nothing was charged."
    assert await jobs(simcord_bot) == 0


async def test_without_attach_files_one_sentence_and_nothing_charged(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """Where the bot may not attach files it says which permission to grant, before any job."""
    guild = env.create_guild()
    alice = guild.add_member(env.create_user("alice"))
    me = guild.me
    assert me is not None
    channel = guild.create_text_channel("art", overwrites={me: discord.PermissionOverwrite(attach_files=False)})

    result = await alice.slash(channel, "imagine", prompt="a red fox")

    assert result.ephemeral
    assert result.response is not None
    assert result.response.content == (
        "🔒 I need the Attach Files permission in this channel to post images; ask a server admin."
    )
    assert await jobs(simcord_bot) == 0


async def test_a_private_result_needs_no_send_messages(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """Without Send Messages a public result is refused, a private one (an interaction followup) still works."""
    guild = env.create_guild()
    alice = guild.add_member(env.create_user("alice"))
    me = guild.me
    assert me is not None
    channel = guild.create_text_channel(
        "art", overwrites={me: discord.PermissionOverwrite(send_messages=False, embed_links=False)}
    )

    refused = await alice.slash(channel, "imagine", prompt="a red fox")
    assert refused.response is not None
    assert refused.response.content == (
        "🔒 I need the Send Messages and Embed Links permissions in this channel to post images; ask a server admin."
    )
    assert await jobs(simcord_bot) == 0

    channel_ok = guild.create_text_channel("den", overwrites={me: discord.PermissionOverwrite(send_messages=False)})
    result = await alice.slash(channel_ok, "imagine", prompt="a red fox", private=True)
    assert result.response is not None
    assert result.response.ephemeral
    assert len(result.response.attachments) == 1
    assert await jobs(simcord_bot) == 1


def test_channel_allowed(settings: Settings) -> None:
    """Blank allows everywhere; otherwise the channel or a thread's parent must be listed."""
    assert channel_allowed(settings, 5, None)
    assert channel_allowed(settings, None, None)
    settings.channels = "10,20"
    assert channel_allowed(settings, 10, None)
    assert channel_allowed(settings, 99, 20)
    assert not channel_allowed(settings, 99, None)
    assert not channel_allowed(settings, 99, 98)
    assert not channel_allowed(settings, None, None)


async def test_a_context_menu_outside_the_allowed_channels_is_refused(settings: Settings) -> None:
    """The message menus pass the same gate as the slash commands."""
    bot = EaselBot(settings, workers="thread", extensions=("cogs.guard", "cogs.imagine", "cogs.edit"))
    try:
        async with simcord.run(bot) as env:
            await ready(bot)
            channel, alice = world(env)
            settings.channels = str(env.guild.create_text_channel("studio").id)
            posted = await alice.send(channel, "my cat", attachments=[("cat.png", images.png())])

            result = await alice.context_menu(channel, "Vary image", posted)

            assert result.response is not None
            assert result.response.ephemeral
            assert result.response.content.startswith("🚫 I only draw in <#")
            assert await jobs(bot) == 0
    finally:
        await bot.close()


async def test_guard_problem_judges_a_click_like_a_command(
    env: simcord.Env, simcord_bot: EaselBot, settings: Settings
) -> None:
    """For buttons (dispatched outside the tree) `guard_problem` gives the same sentence for the click's channel."""
    channel, alice = world(env)
    result = await alice.slash(channel, "imagine", prompt="a red fox")
    assert result.response is not None
    seen: list[str | None] = []

    async def judge(interaction: discord.Interaction[EaselBot]) -> None:
        if interaction.type is discord.InteractionType.component:
            seen.append(guard_problem(interaction, settings))

    simcord_bot.add_listener(judge, "on_interaction")
    studio = env.guild.create_text_channel("studio")
    settings.channels = str(studio.id)
    await alice.click(result.response.message, custom_id="easel:rr:1")

    assert seen == [f"🚫 I only draw in <#{studio.id}>."]


async def test_in_a_thread_it_asks_for_send_messages_in_threads(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """A thread needs Send Messages in Threads, not Send Messages; the sentence names it as Discord does."""
    guild = env.create_guild()
    alice = guild.add_member(env.create_user("alice"))
    me = guild.me
    assert me is not None
    channel = guild.create_text_channel(
        "art", overwrites={me: discord.PermissionOverwrite(send_messages=False, send_messages_in_threads=False)}
    )
    parent = simcord_bot.get_channel(channel.id)
    assert isinstance(parent, discord.TextChannel)
    await parent.create_thread(name="fox ideas", type=discord.ChannelType.public_thread)
    (thread,) = channel.threads

    result = await alice.slash(thread, "imagine", prompt="a red fox")

    assert result.response is not None
    assert result.response.content == (
        "🔒 I need the Send Messages in Threads permission in this channel to post images; ask a server admin."
    )
    assert await jobs(simcord_bot) == 0
