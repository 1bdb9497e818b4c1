"""A waiting job on simulated Discord: its place in line, and cancelling it by button or ❌, fully refunded.

One job runs at a time (EASEL_MAX_RUNNING=1) and the first one takes 30 s (the mock provider's latency, on
simcord's clock), so a second /imagine waits in line. The queue's wait is declared to simcord as an
external wait, so the environment settles while a job waits for its turn.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import discord
import simcord

from bot.app import EaselBot
from bot.config import Settings
from bot.queue import JobQueue
from bot.store.ledger import JobDraft
from cogs.allowance import PER_SECOND, EditAllowance
from cogs.cancel import CANCEL, waiting
from cogs.errors import CANCEL_NOT_YOURS, CANCEL_TOO_LATE
from cogs.render import Renderer
from tests.bot_discord.test_imagine import PricedMock, labels, with_provider

EXTENSIONS = ("cogs.imagine", "cogs.reactions")
LATENCY = 30
CANCELLED = "Cancelled; nothing was charged."
BUDGET = 2_000_000


def hold_queue(env: simcord.Env, queue: JobQueue) -> None:
    """Declare the queue's wait for a turn as an external input, so simcord settles while a job waits."""
    original = queue._wait

    async def wait(*args: Any) -> None:
        await env.external_wait(original(*args), reason="the job waits for its turn in the queue")

    queue._wait = wait  # type: ignore[method-assign, assignment]


@dataclass
class Line:
    """A server where alice's first job runs and her second waits; bob is a stranger, mod a moderator."""

    env: simcord.Env
    bot: EaselBot
    channel: simcord.ChannelHandle
    alice: simcord.MemberActor
    bob: simcord.MemberActor
    mod: simcord.MemberActor

    async def two_jobs(self, **options: Any) -> tuple[simcord.InteractionResult, simcord.InteractionResult]:
        """Alice's first /imagine (running, for LATENCY seconds) and her second (waiting behind it)."""
        first = await self.alice.slash(self.channel, "imagine", prompt="the first fox", **options)
        second = await self.alice.slash(self.channel, "imagine", prompt="the second fox", **options)
        return first, second

    async def job(self, job_id: int) -> tuple[str, str, int]:
        job = await self.bot.core.ledger.job(job_id)
        assert job is not None
        return job.status, job.cost_state, job.cost

    async def spent(self) -> int:
        """What alice's daily budget counts as spent (reservations included)."""
        draft = JobDraft(kind="generate", user_id=str(self.alice.id), model="gpt-image-2")
        (status,) = await self.bot.core.ledger.budget_status(draft)
        return status.spent

    async def finish(self) -> None:
        """Let the running job finish (and any job behind it)."""
        await self.env.advance_time(LATENCY)
        await self.env.advance_time(LATENCY)


@contextlib.asynccontextmanager
async def line(settings: Settings) -> AsyncIterator[Line]:
    settings = settings.model_copy(update={"max_running": 1})
    provider = PricedMock(latency=LATENCY)
    bot = EaselBot(settings, workers="thread", extensions=EXTENSIONS, open_services=with_provider(provider))
    try:
        async with simcord.run(bot) as env:
            await bot.core.db.write("SELECT 1")  # the database writer, started outside bot-owned work
            queue = bot.core.studio.queue
            assert queue is not None
            hold_queue(env, queue)
            guild = env.create_guild()
            channel = guild.create_text_channel("art")
            moderators = guild.create_role("mods", permissions=discord.Permissions(manage_messages=True))
            alice = guild.add_member(env.create_user("alice"))
            bob = guild.add_member(env.create_user("bob"))
            mod = guild.add_member(env.create_user("mod"), roles=[moderators])
            await bot.core.ledger.set_budget("user", "day", BUDGET, target_id=str(alice.id))
            yield Line(env, bot, channel, alice, bob, mod)
    finally:
        await bot.close()


def custom_ids(message: simcord.ResponseMessage) -> list[str]:
    return [str(button.get("custom_id")) for row in message.components for button in row["components"]]


def reply_path(env: simcord.Env, content: str) -> str:
    """The API path of the interaction reply once edited to start with `content`."""
    (path,) = {
        entry.path
        for entry in env.http_requests
        if entry.method == "PATCH" and ((entry.json or {}).get("content") or "").startswith(content)
    }
    return path


def reactions(env: simcord.Env, message_id: int) -> list[str]:
    """The emoji the bot put on a message (each PUT to its reactions)."""
    return [
        entry.path.split("/reactions/")[1].split("/")[0]
        for entry in env.http_requests
        if entry.method == "PUT" and f"/messages/{message_id}/reactions/" in entry.path
    ]


async def test_a_waiting_job_shows_its_place_in_line_and_a_cancel_button(settings: Settings) -> None:
    """The second job's reply says it is next in line, with the estimate and budget, a Cancel button and ❌."""
    async with line(settings) as world:
        first, second = await world.two_jobs()

        running, queued = first.response, second.response
        assert running is not None
        assert queued is not None
        assert running.content.startswith("🎨 Working on it… estimated cost $")
        assert queued.content.startswith("⏳ Queued: number 1 in line · estimated cost $0.")
        assert " · you have $1." in queued.content
        assert queued.content.endswith(" left today")
        assert custom_ids(queued) == ["easel:cancel:2"]
        assert labels(queued.components) == ["Cancel"]
        assert custom_ids(running) == []
        assert waiting(world.bot.core.studio) == {queued.id: 2}
        assert reactions(world.env, queued.id) == [quote(CANCEL)]

        await world.finish()
        assert (await world.job(1))[:2] == ("succeeded", "settled")
        assert (await world.job(2))[:2] == ("succeeded", "settled")
        assert waiting(world.bot.core.studio) == {}


async def test_the_requester_cancels_with_the_button_and_is_refunded(settings: Settings) -> None:
    """Alice's click takes her waiting job out of line: 'cancelled', refunded, and she reads the sentence."""
    async with line(settings) as world:
        _first, second = await world.two_jobs()
        queued = second.response
        assert queued is not None
        reserved = await world.spent()

        click = await world.alice.click(queued, custom_id="easel:cancel:2")

        assert click.acknowledged
        assert await world.job(2) == ("cancelled", "refunded", 0)
        (told,) = second.followups
        assert told.ephemeral
        assert told.content == CANCELLED
        assert await world.spent() < reserved
        assert waiting(world.bot.core.studio) == {}

        await world.finish()
        first_cost = (await world.job(1))[2]
        assert await world.spent() == first_cost, "only the job that ran is charged"


async def test_a_cross_reaction_by_the_requester_cancels(settings: Settings) -> None:
    """❌ on the waiting reply by alice cancels the job, as the button does."""
    async with line(settings) as world:
        _first, second = await world.two_jobs()
        queued = second.response
        assert queued is not None

        await world.alice.react(queued, CANCEL)
        await world.env.settle()

        assert await world.job(2) == ("cancelled", "refunded", 0)
        (told,) = second.followups
        assert told.content == CANCELLED


async def test_a_strangers_click_is_refused_and_the_job_runs(settings: Settings) -> None:
    """Bob may not cancel alice's job: he reads one private sentence, and her job still runs."""
    async with line(settings) as world:
        _first, second = await world.two_jobs()
        queued = second.response
        assert queued is not None

        click = await world.bob.click(queued, custom_id="easel:cancel:2")
        await world.bob.react(queued, CANCEL)
        await world.env.settle()

        assert click.response is not None
        assert click.response.ephemeral
        assert click.response.content == CANCEL_NOT_YOURS
        assert (await world.job(2))[0] == "queued"
        await world.finish()
        assert (await world.job(2))[:2] == ("succeeded", "settled")
        result = second.response
        assert result is not None
        assert len(result.attachments) == 1


async def test_a_moderator_may_cancel_someone_elses_job(settings: Settings) -> None:
    """A member who may manage messages cancels alice's waiting job, and is told so privately."""
    async with line(settings) as world:
        _first, second = await world.two_jobs()
        queued = second.response
        assert queued is not None

        click = await world.mod.click(queued, custom_id="easel:cancel:2")

        assert click.response is not None
        assert click.response.ephemeral
        assert click.response.content == "❌ Cancelled job 2; nothing was charged."
        assert await world.job(2) == ("cancelled", "refunded", 0)
        (told,) = second.followups
        assert told.content == CANCELLED


async def test_a_started_job_cannot_be_cancelled(settings: Settings) -> None:
    """A Cancel click or ❌ that comes after the job started: "already started", and the job runs on."""
    async with line(settings) as world:
        first, second = await world.two_jobs()
        # The second reply's "Starting…" edit fails, so its Cancel button is still there once the job runs.
        world.env.inject_error("PATCH", reply_path(world.env, "⏳ Queued"))
        await world.env.advance_time(LATENCY)
        result = first.response
        assert result is not None
        assert len(result.attachments) == 1, "the first job's result got through"
        assert (await world.job(2))[0] == "running"
        queued = second.response
        assert queued is not None
        assert custom_ids(queued) == ["easel:cancel:2"]

        late = await world.alice.click(queued, custom_id="easel:cancel:2")
        await world.alice.react(queued, CANCEL)
        await world.env.settle()

        assert late.response is not None
        assert late.response.ephemeral
        assert late.response.content == CANCEL_TOO_LATE
        notices = [m for m in world.channel.history() if CANCEL_TOO_LATE in m.content]
        assert len(notices) == 1
        await world.env.advance_time(LATENCY)
        assert (await world.job(2))[:2] == ("succeeded", "settled")


async def test_the_cancel_button_goes_once_the_job_starts(settings: Settings) -> None:
    """When the waiting job's turn comes, the reply says it is starting and the Cancel button is gone."""
    async with line(settings) as world:
        _first, second = await world.two_jobs()
        queued = second.response
        assert queued is not None
        assert custom_ids(queued) == ["easel:cancel:2"]

        await world.env.advance_time(LATENCY)

        started = [
            entry
            for entry in world.env.http_requests
            if entry.method == "PATCH"
            and entry.path.endswith("/messages/@original")
            and ((entry.json or {}).get("content") or "").startswith("🖌️ Starting…")
        ]
        assert len(started) == 1
        assert started[0].json is not None
        assert started[0].json.get("components") == []
        current = second.response
        assert current is not None
        assert custom_ids(current) == []
        removed = [
            entry.path for entry in world.env.http_requests if entry.method == "DELETE" and "/reactions/" in entry.path
        ]
        assert removed == [f"/channels/{world.channel.id}/messages/{queued.id}/reactions/{quote(CANCEL)}/@me"]


async def test_the_place_in_line_moves_up(settings: Settings) -> None:
    """A third job is number 2 in line, then number 1 once the first job is done, however soon that comes."""
    async with line(settings) as world:
        # A clock that stands still: every update after the first falls inside the 2 s between edits.
        renderer = getattr(world.bot.get_cog("Imagine"), "renderer", None)
        assert isinstance(renderer, Renderer)
        renderer._preview_clock = lambda: 0.0
        await world.two_jobs()
        third = await world.alice.slash(world.channel, "imagine", prompt="the third fox")
        queued = third.response
        assert queued is not None
        assert queued.content.startswith("⏳ Queued: number 2 in line · estimated cost $")

        await world.env.advance_time(LATENCY)

        queued = third.response
        assert queued is not None
        assert queued.content.startswith("⏳ Queued: number 1 in line · estimated cost $")
        assert custom_ids(queued) == ["easel:cancel:3"]
        await world.alice.click(queued, custom_id="easel:cancel:3")
        assert await world.job(3) == ("cancelled", "refunded", 0)
        await world.env.advance_time(LATENCY)
        assert (await world.job(2))[:2] == ("succeeded", "settled")


async def test_a_private_waiting_reply_gets_the_button_but_no_reaction(settings: Settings) -> None:
    """An ephemeral reply cannot carry reactions: the Cancel button alone cancels it."""
    async with line(settings) as world:
        _first, second = await world.two_jobs(private=True)
        queued = second.response
        assert queued is not None
        assert queued.ephemeral
        assert queued.content.startswith("⏳ Queued: number 1 in line")
        assert custom_ids(queued) == ["easel:cancel:2"]
        assert not [entry for entry in world.env.http_requests if "/reactions/" in entry.path]
        assert waiting(world.bot.core.studio) == {}

        await world.alice.click(queued, custom_id="easel:cancel:2")

        assert await world.job(2) == ("cancelled", "refunded", 0)
        current = second.response
        assert current is not None
        assert current.content == CANCELLED


def test_place_in_line_edits_share_an_allowance() -> None:
    """Ten place-in-line edits a second across all replies: the eleventh at once waits for the bucket to refill."""
    now = [100.0]
    allowance = EditAllowance(PER_SECOND["place"], lambda: now[0])
    assert all(allowance.take() for _ in range(10))
    assert not allowance.take()
    now[0] += 0.1
    assert allowance.take()
    assert not allowance.take()
    now[0] += 60
    assert sum(allowance.take() for _ in range(50)) == 10


async def varying_in_line(world: Line) -> discord.Message:
    """Alice's first result, then her second job running, then bob's 🔁 on the first: the message that says
    where bob's variation waits."""
    first = await world.alice.slash(world.channel, "imagine", prompt="the first fox")
    await world.env.advance_time(LATENCY)
    result = first.response
    assert result is not None
    assert result.attachments
    await world.alice.slash(world.channel, "imagine", prompt="the second fox")
    await world.bob.react(result, "🔁")
    (notice,) = [m for m in world.channel.history() if f"<@{world.bob.id}>" in m.content]
    return notice


async def test_a_reaction_variation_in_line_shows_its_place_and_goes_when_it_starts(settings: Settings) -> None:
    """Bob's 🔁 while the queue is busy: a reply says he is next in line, with a Cancel button; once his job
    starts the reply goes, and his variation is posted."""
    async with line(settings) as world:
        notice = await varying_in_line(world)
        assert notice.content == f"<@{world.bob.id}> ⏳ Queued: number 1 in line (your variation)"
        assert [item.custom_id for row in notice.components for item in row.children] == ["easel:cancel:3"]

        await world.finish()

        assert (await world.job(3))[:2] == ("succeeded", "settled")
        (mine,) = [m for m in world.channel.history() if f"<@{world.bob.id}>" in m.content]
        assert mine.id != notice.id, "the place in line is gone"
        assert mine.attachments, "what is left is the variation itself"


async def test_a_reaction_variation_in_line_can_be_cancelled(settings: Settings) -> None:
    """The Cancel button on that reply takes bob's variation out of line, fully refunded."""
    async with line(settings) as world:
        notice = await varying_in_line(world)
        await world.bob.click(notice, custom_id="easel:cancel:3")

        assert await world.job(3) == ("cancelled", "refunded", 0)
        told = [m.content for m in world.channel.history() if f"<@{world.bob.id}>" in m.content]
        assert told == [f"<@{world.bob.id}> {CANCELLED}"]
        await world.finish()
        assert (await world.job(2))[:2] == ("succeeded", "settled")
