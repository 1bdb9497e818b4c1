"""Reactions on results, on simulated Discord: variations charged to whoever reacts, bursts, flags, deletes.

Results are posted the way the bot posts them outside an interaction (`deliver_to_channel`), so these tests
need no other cog; a real generate job stands behind each one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest
import simcord

from bot.api.types import GenerateRequest
from bot.app import EaselBot
from bot.config import Settings
from bot.jobs import Requester
from bot.store.flags import Flags
from cogs.reactions import DELETE, DIGITS, FLAG, NOTICE_SECONDS, VARY, Action, action_for, deliver_to_channel
from cogs.render import result_footer

EXTENSIONS = ("cogs.reactions",)


@pytest.fixture
async def simcord_bot(settings: Settings) -> AsyncIterator[EaselBot]:
    bot = EaselBot(settings, workers="thread", extensions=EXTENSIONS)
    yield bot
    await bot.close()


class World:
    """A server with a channel, the requester (alice), a stranger (bob) and a moderator (mod)."""

    def __init__(self, env: simcord.Env) -> None:
        self.env = env
        self.guild = env.create_guild()
        self.channel = self.guild.create_text_channel("art")
        moderators = self.guild.create_role("mods", permissions=discord.Permissions(manage_messages=True))
        self.alice = self.guild.add_member(env.create_user("alice"))
        self.bob = self.guild.add_member(env.create_user("bob"))
        self.mod = self.guild.add_member(env.create_user("mod"), roles=[moderators])

    @property
    def bot(self) -> EaselBot:
        bot = self.env.bot
        assert isinstance(bot, EaselBot)
        return bot

    async def result(self, n: int = 2, prompt: str = "a red fox") -> discord.Message:
        """A finished /imagine-like job by alice, posted by the bot in the channel."""
        bot = self.bot
        who = Requester(user_id=str(self.alice.id), guild_id=str(self.guild.id), channel_id=str(self.channel.id))
        outcome = await bot.core.studio.generate(GenerateRequest(prompt=prompt, n=n), who)
        channel = bot.get_channel(self.channel.id)
        assert isinstance(channel, discord.TextChannel)
        member = await channel.guild.fetch_member(self.alice.id)
        message = await deliver_to_channel(bot, channel, outcome, member, title=f"🎨 {prompt}")
        # Its reactions follow in a task started here, not in bot-owned work: settling alone would miss it.
        await asyncio.wait_for(bot.in_flight.idle(), timeout=10)
        await self.env.settle()
        return message

    async def children(self, message: discord.Message) -> list[tuple[str, str, int, int]]:
        """(kind, user id, parent job, parent index) of every job started from the result's images."""
        jobs = await self.bot.core.image_store.find_by_message(message.id)
        rows = await self.bot.core.db.fetchall(
            "SELECT kind, user_id, parent_job, parent_index FROM jobs WHERE parent_job = ? ORDER BY id",
            (jobs[0][0],),
        )
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    def replies_to(self, message: discord.Message) -> list[discord.Message]:
        return [m for m in self.channel.history() if m.reference is not None and m.reference.message_id == message.id]


async def start_database_writer(bot: EaselBot) -> None:
    """Start the database's group-commit writer from the test, not from bot-owned work.

    The writer is an idle task waiting on a queue between writes. Started inside a handler, simcord counts
    it as bot work that never settles (TimeoutError after the reaction); started here, it is not tracked.
    """
    await bot.core.db.write("SELECT 1")


@pytest.fixture
async def world(simcord_env: simcord.Env) -> World:
    world = World(simcord_env)
    await start_database_writer(world.bot)
    return world


def test_emoji_actions() -> None:
    """Emojis map to actions with or without the variation selector; custom and other emojis do nothing."""
    assert action_for(discord.PartialEmoji(name=VARY)) == Action("vary", 0)
    assert action_for(discord.PartialEmoji(name=DIGITS[3])) == Action("vary", 3)
    assert action_for(discord.PartialEmoji(name="4\u20e3")) == Action("vary", 3)
    assert action_for(discord.PartialEmoji(name=DELETE)) == Action("delete")
    assert action_for(discord.PartialEmoji(name="\U0001f5d1")) == Action("delete")
    assert action_for(discord.PartialEmoji(name=FLAG)) == Action("flag")
    assert action_for(discord.PartialEmoji(name="👍")) is None
    assert action_for(discord.PartialEmoji(name="vary", id=123)) is None


async def test_results_get_reactions_and_the_bots_own_are_ignored(world: World) -> None:
    """The bot adds 🔁 and 🚩 to a result; its own 🔁 starts nothing."""
    message = await world.result()
    posted = world.channel.last_message
    assert posted is not None
    assert posted.id == message.id
    assert [str(r.emoji) for r in posted.reactions] == [VARY, FLAG]
    assert [r.count for r in posted.reactions] == [1, 1]
    assert await world.children(message) == []


async def test_a_result_is_posted_before_its_reactions_which_wait_for_other_results(world: World) -> None:
    """While another result is being posted, a finished result is out at once and its reactions wait."""
    bot = world.bot
    who = Requester(user_id=str(world.alice.id), guild_id=str(world.guild.id), channel_id=str(world.channel.id))
    outcome = await bot.core.studio.generate(GenerateRequest(prompt="a red fox", n=1), who)
    channel = bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    member = await channel.guild.fetch_member(world.alice.id)
    async with bot.pacer.results.urgent():  # another member's result, still uploading
        message = await deliver_to_channel(bot, channel, outcome, member, title="🎨 a red fox")
        posted = world.channel.last_message
        assert posted is not None
        assert posted.id == message.id
        assert len(posted.attachments) == 1
        await asyncio.sleep(0.05)  # time the reactions would have had, were they not waiting
        waiting = world.channel.last_message
        assert waiting is not None
        assert waiting.reactions == []
        assert bot.in_flight.running == 1  # the reactions, still to come, hold a clean stop
    await asyncio.wait_for(bot.in_flight.idle(), timeout=10)
    await world.env.settle()
    reacted = world.channel.last_message
    assert reacted is not None
    assert reacted.id == message.id
    assert [str(r.emoji) for r in reacted.reactions] == [VARY, FLAG]
    assert bot.in_flight.running == 0


async def test_repeat_varies_image_one_charged_to_the_reactor(world: World) -> None:
    """bob's 🔁 on alice's result varies image 1 as bob's job, posted as a reply that mentions bob."""
    message = await world.result()
    parent = (await world.bot.core.image_store.find_by_message(message.id))[0][0]
    await world.bob.react(message, VARY)
    assert await world.children(message) == [("vary", str(world.bob.id), parent, 0)]
    [reply] = world.replies_to(message)
    assert reply.content.startswith(world.bob.mention)
    assert "image 1" in reply.content
    assert len(reply.attachments) == 1
    assert [str(r.emoji) for r in reply.reactions] == [VARY, FLAG]
    assert reply.components  # the same priced buttons as any result
    # Like any result: the prompt it came from, and the job id once, in the usual footer.
    (embed,) = reply.embeds
    assert embed.title == f"{VARY} Variation of image 1 of job #{parent}"
    assert embed.description == "a red fox"
    [(child, _)] = await world.bot.core.image_store.find_by_message(reply.id)
    assert embed.footer.text == result_footer(child, reactions=True)
    # The variation is itself a result the store can find, so it can be varied in turn.
    assert await world.bot.core.image_store.find_by_message(reply.id) == [(child, 0)]
    ledger = await world.bot.core.db.fetchall("SELECT DISTINCT user_id FROM ledger WHERE job_id = ?", (child,))
    assert [row[0] for row in ledger] == [str(world.bob.id)]


async def test_digits_vary_that_image(world: World) -> None:
    """2️⃣ varies image 2; 3️⃣ on a result of two images does nothing."""
    message = await world.result(n=2)
    parent = (await world.bot.core.image_store.find_by_message(message.id))[0][0]
    await world.alice.react(message, DIGITS[1])
    await world.alice.react(message, DIGITS[2])
    assert await world.children(message) == [("vary", str(world.alice.id), parent, 1)]


async def test_a_burst_starts_one_job(world: World) -> None:
    """The same reaction arriving twice at once, then once more soon after, starts a single variation."""
    message = await world.result()
    backend = world.env.backend
    for reacted in (True, False, True):  # three gateway events before the bot handles any
        backend.set_reaction(world.channel.id, message.id, VARY, world.bob.id, reacted)
    await world.env.settle()
    assert len(await world.children(message)) == 1
    # Taken off and added again after the job finished: still the same burst, by the database's record.
    await world.bob.unreact(message, VARY)
    await world.bob.react(message, VARY)
    # 1️⃣ asks for the same image as 🔁.
    await world.bob.react(message, DIGITS[0])
    assert len(await world.children(message)) == 1
    # Another member's reaction is their own request.
    await world.alice.react(message, VARY)
    assert [child[1] for child in await world.children(message)] == [str(world.bob.id), str(world.alice.id)]


async def test_reactions_from_other_bots_are_ignored(world: World) -> None:
    message = await world.result()
    robot = world.guild.add_member(world.env.create_user("robot", bot=True))
    await robot.react(message, VARY)
    await robot.react(message, DELETE)
    assert await world.children(message) == []
    assert [m.id for m in world.channel.history()] == [message.id]


async def test_reactions_on_other_messages_do_nothing(world: World) -> None:
    chat = await world.alice.send(world.channel, "hello")
    await world.bob.react(chat, VARY)
    await world.bob.react(chat, FLAG)
    assert [m.content for m in world.channel.history()] == ["hello"]


async def test_a_failed_variation_says_why_and_cleans_up(world: World, settings: Settings) -> None:
    """When the image can no longer be loaded, a short reply says so and deletes itself."""
    message = await world.result(n=1)
    for file in (settings.data_dir / "images").rglob("*.png"):
        file.unlink()
    await world.bob.react(message, VARY)
    [notice] = world.replies_to(message)
    assert notice.content.startswith(world.bob.mention)
    assert "no longer stored" in notice.content
    assert await world.children(message) == []
    await world.env.advance_time(NOTICE_SECONDS + 1)
    assert world.replies_to(message) == []


async def test_flag_is_recorded_once_and_kept_quiet(world: World) -> None:
    """🚩 records one flag per member, takes the member's reaction off and thanks them by DM."""
    message = await world.result()
    job = (await world.bot.core.image_store.find_by_message(message.id))[0][0]
    await world.bob.react(message, FLAG)
    flags = await Flags(world.bot.core.db).for_job(job)
    assert [(f.user_id, f.message_id, f.guild_id) for f in flags] == [
        (str(world.bob.id), str(message.id), str(world.guild.id))
    ]
    posted = world.channel.last_message
    assert posted is not None
    assert posted.id == message.id  # nothing said in the channel
    [flag_reaction] = [r for r in posted.reactions if str(r.emoji) == FLAG]
    assert flag_reaction.count == 1  # only Easel's own: bob's was taken off
    await world.bob.react(message, FLAG)
    assert len(await Flags(world.bot.core.db).for_job(job)) == 1
    dms = [m.content for m in world.bob.user.dm_channel.history()]
    assert "Thanks" in dms[0]
    assert "already flagged" in dms[1]


async def test_with_dms_closed_a_flag_is_noted_in_the_channel_once(world: World) -> None:
    """A member whose DMs are closed gets one anonymous note in the channel for a new flag; flagging again
    records nothing and posts nothing, so nobody can fill the channel with notes."""
    message = await world.result()
    world.env.inject_error(
        "POST", "/users/@me/channels", status=403, code=50007, message="Cannot send messages to this user", times=None
    )
    for _ in range(3):
        await world.bob.react(message, FLAG)
    notes = [m.content for m in world.channel.history() if m.content.startswith(FLAG)]
    assert notes == [f"{FLAG} Flag recorded."]


async def test_a_variation_that_could_not_be_posted_is_never_made(world: World) -> None:
    """Easel lost Attach Files in the channel after the result was posted: 🔁 starts no job (it could not be
    posted, and would be paid for), and the member learns by DM which permission to ask for."""
    message = await world.result()
    channel = world.bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    await channel.set_permissions(channel.guild.me, attach_files=False)
    await world.env.settle()

    await world.bob.react(message, VARY)
    assert await world.children(message) == []
    [told] = [m.content for m in world.bob.user.dm_channel.history()]
    assert "Attach Files" in told


async def test_a_result_posted_again_alone_keeps_its_reactions(world: World) -> None:
    """U1 and U2 post the images again, one per message: the result still finds both (its 1️⃣ varies image
    1, its 🚩 flags the job), and each U post finds its own image."""
    message = await world.result(n=2)
    store = world.bot.core.image_store
    first = await store.attach(1, 0, message_id=111, attachment_id=1, attachment_url="https://cdn.test/1.png")
    second = await store.attach(1, 1, message_id=222, attachment_id=2, attachment_url="https://cdn.test/2.png")
    assert first
    assert second
    assert await store.find_by_message(message.id) == [(1, 0), (1, 1)]
    assert await store.find_by_message(111) == [(1, 0)]

    await world.bob.react(message, DIGITS[0])
    assert [child[2:] for child in await world.children(message)] == [(1, 0)]
    await world.bob.react(message, FLAG)
    assert len(await Flags(world.bot.core.db).for_job(1)) == 1


async def test_delete_by_requester_or_moderator_only(world: World) -> None:
    """🗑️ from a stranger leaves the result; from the requester or a moderator it goes."""
    first = await world.result()
    await world.bob.react(first, DELETE)
    assert first.id in [m.id for m in world.channel.history()]
    await world.alice.react(first, DELETE)
    assert first.id not in [m.id for m in world.channel.history()]
    second = await world.result()
    await world.mod.react(second, DELETE)
    assert second.id not in [m.id for m in world.channel.history()]


async def test_reactions_work_after_a_restart(world: World, settings: Settings, tmp_path: Path) -> None:
    """A result posted before a restart is varied and deleted by a fresh bot with an empty cache."""
    message = await world.result()
    old = world.bot
    fresh = EaselBot(settings, workers="thread", extensions=EXTENSIONS)
    try:
        await world.env.restart_bot(fresh)
        await start_database_writer(fresh)
        assert fresh.get_channel(world.channel.id) is not None
        assert fresh._connection._get_message(message.id) is None  # not cached
        await world.bob.react(message, VARY)
        assert [child[1] for child in await world.children(message)] == [str(world.bob.id)]
        await world.alice.react(message, DELETE)
        assert message.id not in [m.id for m in world.channel.history()]
    finally:
        await fresh.close()
        assert old is not fresh


async def test_reactions_outside_the_allowed_channels_are_ignored(world: World, settings: Settings) -> None:
    """🔁 on a result in a channel EASEL_CHANNELS leaves out starts nothing; in a listed channel it does."""
    message = await world.result()
    elsewhere = world.guild.create_text_channel("studio")
    settings.channels = str(elsewhere.id)
    await world.bob.react(message, VARY)
    assert await world.children(message) == []
    settings.channels = f"{elsewhere.id},{world.channel.id}"
    await world.bob.unreact(message, VARY)
    await world.bob.react(message, VARY)
    assert len(await world.children(message)) == 1


async def test_flag_and_delete_still_work_in_a_channel_taken_off_the_list(world: World, settings: Settings) -> None:
    """A channel removed from EASEL_CHANNELS keeps its old results under moderation: 🚩 and 🗑️ still act."""
    message = await world.result()
    job = (await world.bot.core.image_store.find_by_message(message.id))[0][0]
    settings.channels = str(world.guild.create_text_channel("studio").id)
    await world.bob.react(message, FLAG)
    assert [f.user_id for f in await Flags(world.bot.core.db).for_job(job)] == [str(world.bob.id)]
    await world.mod.react(message, DELETE)
    assert message.id not in [m.id for m in world.channel.history()]
