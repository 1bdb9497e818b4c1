"""/imagine on simulated Discord: delivery, refusals, privacy, the 3 s and 15 min rules, autocomplete, previews."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import simcord

from bot.api.mock import MockProvider
from bot.api.types import GenerateRequest, PartialImage, StreamEvent
from bot.app import EaselBot
from bot.catalogue import ModelSpec
from bot.config import Settings
from bot.pricing import format_usd
from bot.services import Core, open_core
from cogs.errors import SENT_BY_DM, UNDELIVERED
from cogs.render import PreviewUpdater, estimate_line


class PricedMock(MockProvider):
    """The mock provider under another name, so the studio prices its requests as if they were billed."""

    name = "priced-mock"


def with_provider(provider: MockProvider) -> Callable[[Settings], AbstractAsyncContextManager[Core]]:
    """A core opener that swaps in `provider` (slow or priced) for the settings' mock."""

    @contextlib.asynccontextmanager
    async def open_services(settings: Settings) -> AsyncIterator[Core]:
        async with open_core(settings, recover=True) as core:
            core.images.provider = provider
            yield core

    return open_services


def make_bot(settings: Settings, provider: MockProvider | None = None) -> EaselBot:
    """A bot with only the imagine extension, optionally on another provider."""
    if provider is None:
        return EaselBot(settings, workers="thread", extensions=("cogs.imagine",))
    return EaselBot(settings, workers="thread", extensions=("cogs.imagine",), open_services=with_provider(provider))


async def ready(bot: EaselBot) -> None:
    """Start the database's group-commit writer from the test, not from a handler.

    The writer is a task that lives as long as the database; simcord counts a long-lived task a handler
    started as unfinished work and refuses to settle, so the test starts it first.
    """
    await bot.core.db.write("SELECT 1")


def world(env: simcord.Env) -> tuple[simcord.ChannelHandle, simcord.MemberActor]:
    """A guild with an #art channel and a member, alice."""
    guild = env.create_guild()
    channel = guild.create_text_channel("art")
    alice = guild.add_member(env.create_user("alice"))
    return channel, alice


@pytest.fixture
async def simcord_bot(settings: Settings) -> AsyncIterator[EaselBot]:
    """A bot with only the imagine extension, closed after the test."""
    bot = make_bot(settings)
    yield bot
    await bot.close()


@pytest.fixture
async def env(simcord_env: simcord.Env, simcord_bot: EaselBot) -> simcord.Env:
    """The running environment, with the bot's database writer started."""
    await ready(simcord_bot)
    return simcord_env


def fields(message: simcord.ResponseMessage) -> dict[str, str]:
    """The first embed's fields by name."""
    return {str(field.name): str(field.value) for field in message.embeds[0].fields}


def labels(components: list[dict[str, Any]]) -> list[str]:
    """Every button's label, row by row ("None" for an emoji-only button)."""
    return [str(button.get("label")) for row in components for button in row["components"]]


def buttons(components: list[dict[str, Any]]) -> list[list[str]]:
    """Every button as a member reads it, emoji then label ("🔁 Vary · $0.04"), row by row."""

    def read(button: dict[str, Any]) -> str:
        emoji = (button.get("emoji") or {}).get("name")
        return " ".join(part for part in (emoji, button.get("label")) if part)

    return [[read(button) for button in row["components"]] for row in components]


async def test_imagine_posts_every_image_an_embed_and_buttons(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """Two images arrive as exactly two attachments (Discord's gallery, no grid repeating them), with the
    embed's facts and the U/V/re-roll/remix buttons."""
    channel, alice = world(env)
    result = await alice.slash(channel, "imagine", prompt="a red fox in the snow", n=2)

    message = result.response
    assert message is not None
    assert not message.ephemeral
    names = [attachment.filename for attachment in message.attachments]
    assert names == ["easel-1-1.png", "easel-1-2.png"]
    store = simcord_bot.core.image_store
    for index, attachment in enumerate(message.attachments):
        assert attachment.size <= 10 * 1024 * 1024
        assert await attachment.read() == (await store.load(1, index)).data
    info = fields(message)
    assert info["Cost"] == "$0.00"
    assert "Job" not in info, "the job id is in the footer, once"
    assert message.embeds[0].footer.text == "Job #1 · React 🔁 to vary image 1 · 🚩 to report it"
    assert "#1" not in str(message.embeds[0].title)
    assert info["Model"] == "GPT Image 2"
    assert info["Revised prompt"] == "[mock] a red fox in the snow"
    assert info["Budget"] == "No spending limit"
    assert message.embeds[0].description == "a red fox in the snow"
    assert not message.embeds[0].image.url, "several images are a gallery of attachments, not an embed image"
    assert buttons(message.components) == [["🔎 U1", "🔎 U2"], ["🔁 V1", "🔁 V2"], ["🔄 Re-roll", "✏️ Remix"]]
    assert await store.find_by_message(message.id) == [(1, 0), (1, 1)]


async def test_a_single_image_is_the_embeds_image(env: simcord.Env) -> None:
    """One image is one attachment, shown inside the embed (attachment://), with no grid beside it."""
    channel, alice = world(env)
    result = await alice.slash(channel, "imagine", prompt="a lone fox", n=1)

    message = result.response
    assert message is not None
    assert [attachment.filename for attachment in message.attachments] == ["easel-1-1.png"]
    assert message.embeds[0].image.url == "attachment://easel-1-1.png"


async def test_more_images_than_the_server_allows_are_refused_kindly(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """n above EASEL_MAX_IMAGES gets one private sentence and starts no job."""
    channel, alice = world(env)
    result = await alice.slash(channel, "imagine", prompt="foxes", n=5)

    assert result.response is None
    (reply,) = result.followups
    assert reply.ephemeral
    assert reply.content == "🔢 You can ask for at most 4 images at a time here."
    assert await simcord_bot.core.db.fetchval("SELECT COUNT(*) FROM jobs") == 0


@pytest.mark.parametrize("option", ["size", "quality", "model"])
async def test_a_very_long_option_is_quoted_short_and_still_answered(
    env: simcord.Env, simcord_bot: EaselBot, option: str
) -> None:
    """2,500 characters typed into a text option: the refusal quotes a few of them (Discord takes at most 2,000
    in a reply; a longer one would be refused and the member told nothing), and nothing is charged."""
    channel, alice = world(env)
    result = await alice.slash(channel, "imagine", prompt="foxes", **{option: "z" * 2500})

    (reply,) = result.followups
    assert reply.ephemeral
    assert "'zzzz" in reply.content
    assert "…'" in reply.content
    assert len(reply.content) < 300
    job = await simcord_bot.core.ledger.job(1)
    assert job is None or job.cost_state == "free"


async def test_an_option_the_model_lacks_is_refused_privately_and_recorded(
    env: simcord.Env, simcord_bot: EaselBot
) -> None:
    """A style on gpt-image-2 gets a private friendly sentence and leaves a rejected job."""
    channel, alice = world(env)
    result = await alice.slash(channel, "imagine", prompt="foxes", style="vivid")

    (reply,) = result.followups
    assert reply.ephemeral
    assert reply.content == "gpt-image-2 takes no style; dall-e-3 does."
    job = await simcord_bot.core.ledger.job(1)
    assert job is not None
    assert job.status == "rejected"
    assert job.user_id == str(alice.id)
    assert job.cost_state == "free"


async def test_a_spent_budget_refuses_before_anything_is_made(settings: Settings) -> None:
    """With a zero daily budget a priced request is refused with the budget's words, and recorded as rejected."""
    bot = make_bot(settings, PricedMock())
    try:
        async with simcord.run(bot) as env:
            await ready(bot)
            channel, alice = world(env)
            await bot.core.ledger.set_budget("user", "day", 0, target_id=str(alice.id))
            result = await alice.slash(channel, "imagine", prompt="foxes", quality="low", size="1024x1024")

            (reply,) = result.followups
            assert reply.ephemeral
            assert reply.content.startswith("💸 This request costs about $0.0060, but your daily budget has $0.00 left")
            job = await bot.core.ledger.job(1)
            assert job is not None
            assert job.status == "rejected"
            assert job.cost == 0
    finally:
        await bot.close()


async def test_buttons_show_what_a_click_costs(settings: Settings) -> None:
    """With a billable provider every paid button carries its estimate, and the embed the budget left."""
    bot = make_bot(settings, PricedMock())
    try:
        async with simcord.run(bot) as env:
            await ready(bot)
            channel, alice = world(env)
            await bot.core.ledger.set_budget("user", "day", 1_000_000, target_id=str(alice.id))
            result = await alice.slash(channel, "imagine", prompt="foxes", quality="low", size="1024x1024")

            message = result.response
            assert message is not None
            (first, zoom, pan) = buttons(message.components)
            assert re.fullmatch(r"🔁 Vary · \$0\.\d+", first[0])
            assert first[1:] == ["🔄 Re-roll · $0.0060", "✏️ Remix · $0.0060"]
            assert re.fullmatch(r"🔍 Zoom out 1\.5x · \$0\.\d+", zoom[0])
            assert re.fullmatch(r"🔍 Zoom out 2x · \$0\.\d+", zoom[1])
            assert [label.partition(" · ")[0] for label in pan] == ["⬅️ Left", "➡️ Right", "⬆️ Up", "⬇️ Down"]
            assert fields(message)["Budget"].startswith("$1.00 left of your daily budget, resets <t:")
            # Each zoom and pan paints its own canvas: the label is what that click reserves, at the job's quality.
            for job_id, (label, custom_id) in enumerate(
                [(zoom[1], "easel:zoom:1:0:20"), (pan[0], "easel:pan:1:0:left")], start=2
            ):
                await alice.click(message, custom_id=custom_id)
                job = await bot.core.ledger.job(job_id)
                assert job is not None
                assert (job.kind, job.quality) == ("outpaint", "low")
                assert label.rpartition(" · ")[2] == format_usd(job.estimate)
    finally:
        await bot.close()


async def test_private_results_are_ephemeral(env: simcord.Env) -> None:
    """private:true keeps the whole reply, images included, to the member who asked."""
    channel, alice = world(env)
    result = await alice.slash(channel, "imagine", prompt="a secret fox", private=True)

    assert result.ephemeral
    message = result.response
    assert message is not None
    assert message.ephemeral
    assert len(message.attachments) == 1
    # A private result gets no reactions, so its footer offers none.
    assert message.embeds[0].footer.text == "Job #1"


async def test_the_reply_is_deferred_before_the_slow_work(settings: Settings) -> None:
    """A 30 s generation: the interaction is answered at once with the estimate, the images follow."""
    bot = make_bot(settings, MockProvider(latency=30))
    try:
        async with simcord.run(bot) as env:
            await ready(bot)
            channel, alice = world(env)
            result = await alice.slash(channel, "imagine", prompt="a slow fox")

            assert result.acknowledged
            early = result.response
            assert early is not None
            assert early.attachments == []
            assert early.content == "🎨 Working on it… estimated cost $0.00"
            callbacks = [entry for entry in env.http_requests if entry.path.endswith("/callback")]
            assert [entry.json["type"] for entry in callbacks] == [5]  # type: ignore[index]

            await env.advance_time(30)
            message = result.response
            assert message is not None
            assert len(message.attachments) == 1
            previews = [
                entry
                for entry in env.http_requests
                if entry.method == "PATCH" and ((entry.json or {}).get("content") or "").startswith("🖌️")
            ]
            assert previews, "the streamed previews were shown while the image was drawn"
    finally:
        await bot.close()


async def test_a_result_after_the_token_expired_is_posted_in_the_channel(settings: Settings) -> None:
    """A 16-minute generation outlives the token: the result goes to the channel, mentioning the member."""
    bot = make_bot(settings, MockProvider(latency=16 * 60))
    try:
        async with simcord.run(bot) as env:
            await ready(bot)
            channel, alice = world(env)
            result = await alice.slash(channel, "imagine", prompt="a patient fox")
            original = result.response
            assert original is not None
            await env.advance_time(16 * 60)

            posted = channel.last_message
            assert posted is not None
            assert posted.id != original.id
            assert posted.content.startswith(f"<@{alice.id}> here is your result")
            assert [attachment.filename for attachment in posted.attachments] == ["easel-1-1.png"]
            assert await bot.core.image_store.find_by_message(posted.id) == [(1, 0)]
            # The reply the token can no longer edit (its estimate, a stale preview) is removed, not left behind.
            assert [message.id for message in channel.history()] == [posted.id]
    finally:
        await bot.close()


async def test_a_private_result_after_the_token_expired_goes_by_direct_message(settings: Settings) -> None:
    """A private result that outlives the token is sent to the member directly, never to the channel."""
    bot = make_bot(settings, MockProvider(latency=16 * 60))
    try:
        async with simcord.run(bot) as env:
            await ready(bot)
            channel, alice = world(env)
            await alice.slash(channel, "imagine", prompt="a shy fox", private=True)
            await env.advance_time(16 * 60)

            assert channel.last_message is None
            dm = alice.user.dm_channel.last_message
            assert dm is not None
            assert dm.content.startswith("Here is your result")
            assert len(dm.attachments) == 1
    finally:
        await bot.close()


async def test_model_autocomplete_offers_running_models_default_first(env: simcord.Env) -> None:
    """Typing nothing lists the default first and marked; typing filters by name or label."""
    channel, alice = world(env)
    everything = await alice.autocomplete(channel, "imagine", "model", "")
    assert everything[0] == {"name": "GPT Image 2 (gpt-image-2) (default)", "value": "gpt-image-2"}
    assert len(everything) <= 25
    assert "dall-e-3" not in [choice["value"] for choice in everything]

    flares = await alice.autocomplete(channel, "imagine", "model", "flare")
    assert [choice["value"] for choice in flares] == ["gpt-image-2.6-flare", "gpt-image-2.5-flare"]


async def test_size_and_quality_autocomplete_follow_the_chosen_model(env: simcord.Env) -> None:
    """Sizes and qualities come from the model typed so far, or from the default one."""
    channel, alice = world(env)
    sizes = await alice.autocomplete(channel, "imagine", "size", "1536x10")
    assert [choice["value"] for choice in sizes] == ["1536x1024"]
    custom = await alice.autocomplete(channel, "imagine", "size", "1280x720")
    assert custom[0] == {"name": "1280x720", "value": "1280x720"}
    qualities = await alice.autocomplete(channel, "imagine", "quality", "", model="gpt-image-2.5-flare")
    assert [choice["value"] for choice in qualities] == ["auto", "low", "medium", "high", "xhigh", "max"]
    assert qualities[0]["name"] == "auto (default)"


async def test_previews_are_throttled_to_one_every_two_seconds() -> None:
    """Previews arriving faster than every 2 s are skipped; the next one after the interval is shown."""
    now = [0.0]
    shown: list[int] = []

    async def show(partial: PartialImage) -> None:
        shown.append(partial.sequence)

    update = PreviewUpdater(show, clock=lambda: now[0])
    for sequence, moment in enumerate([0.0, 0.5, 1.9, 2.0, 3.0, 4.5]):
        now[0] = moment
        await update(PartialImage(index=0, sequence=sequence, data=b"png", mime="image/png"))
        await update.finish()  # each edit answered before the next preview

    assert shown == [0, 3, 5]
    assert update.shown == 3


async def test_a_preview_is_skipped_while_the_estimate_is_on_its_way() -> None:
    """The stream never waits for Discord: until the reply's estimate edit is done, previews are skipped (and
    do not count against the interval), then the next one shows."""
    estimate_done = False
    shown: list[int] = []

    async def show(partial: PartialImage) -> None:
        shown.append(partial.sequence)

    update = PreviewUpdater(show, clock=lambda: 0.0, ready=lambda: estimate_done)
    await update(PartialImage(index=0, sequence=0, data=b"png", mime="image/png"))
    estimate_done = True
    await update(PartialImage(index=0, sequence=1, data=b"png", mime="image/png"))
    await update.finish()

    assert shown == [1]
    assert update.shown == 1


async def test_the_stream_never_waits_for_a_preview_edit() -> None:
    """A slow edit (Discord rate-limiting, say) goes on by itself: the stream's call returns at once, previews
    arriving meanwhile are skipped, and `finish()` waits for the edit, so the result is posted after it."""
    now = [0.0]
    answered = asyncio.Event()
    shown: list[int] = []

    async def show(partial: PartialImage) -> None:
        await answered.wait()
        shown.append(partial.sequence)

    update = PreviewUpdater(show, clock=lambda: now[0])
    await asyncio.wait_for(update(PartialImage(index=0, sequence=0, data=b"png", mime="image/png")), timeout=1)
    now[0] = 5.0  # past the interval, but the first edit is still on its way
    await asyncio.wait_for(update(PartialImage(index=0, sequence=1, data=b"png", mime="image/png")), timeout=1)
    finishing = asyncio.create_task(update.finish())
    await asyncio.sleep(0.01)
    assert not finishing.done()
    answered.set()
    await asyncio.wait_for(finishing, timeout=1)
    assert shown == [0]
    assert update.shown == 1
    now[0] = 10.0
    await update(PartialImage(index=0, sequence=2, data=b"png", mime="image/png"))
    await update.finish()
    assert shown == [0, 2]


async def test_a_preview_edit_that_breaks_costs_the_job_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected failure of the edit is logged; the stream and `finish()` go on without it."""

    async def show(_partial: PartialImage) -> None:
        raise RuntimeError("boom")

    update = PreviewUpdater(show, clock=lambda: 0.0)
    await update(PartialImage(index=0, sequence=0, data=b"png", mime="image/png"))
    await update.finish()
    assert update.shown == 0
    assert [record.getMessage() for record in caplog.records] == ["could not show a preview"]


def test_the_estimate_line_names_the_tightest_budget() -> None:
    """No budget: the estimate alone."""
    from bot.jobs import Quote

    assert estimate_line(Quote(model="m", estimate=211_000, budgets=())) == "🎨 Working on it… estimated cost $0.211"


async def test_a_reply_goes_through_the_pacer_after_its_defer(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """The defer, then the reply's start, its estimate, the job's steps, the result's building, its upload and
    its reactions each wait for a turn of the loop with room (`bot.pacing`); only the defer's turn comes
    before the callback is sent. (Under simcord the defer is discord.py's; see `cogs.first`.)"""
    channel, alice = world(env)
    pacer = simcord_bot.pacer
    original = pacer.turn
    deferred: list[bool] = []

    busy: list[bool] = []
    slotted: list[int] = []
    budgets: list[bool] = []

    async def turn(*, urgent: bool = False) -> None:
        deferred.append(any(entry.path.endswith("/callback") for entry in env.http_requests))
        busy.append(pacer.defers.busy)
        slotted.append(pacer.callbacks.taken)
        budgets.append(urgent)
        await original(urgent=urgent)

    pacer.turn = turn  # type: ignore[method-assign]
    result = await alice.slash(channel, "imagine", prompt="a paced fox")
    assert result.response is not None
    assert result.response.attachments
    # The defer; the reply's start; the estimate edit; after the job's reservation, before its start, before
    # its call and after the provider's answer (`Studio.pace`); the result's lookups, its embed and buttons,
    # its upload; its reactions.
    assert deferred == [False] + [True] * 10
    assert busy == [True] + [False] * 10, "the defer is urgent work, and nothing after it is"
    assert budgets == [True] + [False] * 10, "the defer's turn has the urgent budget"
    assert slotted == [1] + [0] * 10, "the defer holds one of the callback slots, and gives it back"
    assert simcord_bot.first_answers.answered == 0, "under simcord every frame goes to discord.py"


class NoPreviews(MockProvider):
    """The mock without streamed previews: between the defer and the result the reply is edited once (the
    estimate), so a test can have Discord refuse the edit that carries the images."""

    def stream_generate(self, spec: ModelSpec, req: GenerateRequest) -> AsyncGenerator[StreamEvent, None]:
        return super().stream_generate(spec, dataclasses.replace(req, partial_images=0))


async def _imagine_refused_in_place(
    env: simcord.Env, *, dm_refused: bool
) -> tuple[simcord.ChannelHandle, Any, simcord.InteractionResult]:
    """alice's /imagine whose result Discord refuses to take in place (and, with `dm_refused`, by DM too): the
    estimate's edit and the upload's are refused (the estimate is best effort), the next edit goes through."""
    env.inject_error(
        "PATCH", "/webhooks/*/messages/@original", status=413, code=40005, message="Request entity too large", times=2
    )
    guild = env.create_guild()
    channel = guild.create_text_channel("art")
    user = env.create_user("alice")
    alice = guild.add_member(user)
    if dm_refused:
        env.inject_error(
            "POST", "/users/@me/channels", status=403, code=50007, message="Cannot send messages to this user"
        )
    result = await alice.slash(channel, "imagine", prompt="a red fox", n=2)
    return channel, user, result


async def test_a_result_refused_in_place_goes_by_direct_message(settings: Settings) -> None:
    """The job is made and paid for; Discord will not take the upload in the channel: the images go to the member
    by direct message, the member is told so privately, and nobody reads that failed jobs are not charged."""
    bot = make_bot(settings, NoPreviews())
    try:
        async with simcord.run(bot) as env:
            await ready(bot)
            channel, user, result = await _imagine_refused_in_place(env, dm_refused=False)
            (sent,) = user.dm_channel.history()
            assert len(sent.attachments) == 2
            assert "would not let me post it there" in sent.content
            assert [(m.ephemeral, m.content) for m in result.followups] == [(True, SENT_BY_DM)]
            assert all("not charged" not in m.content for m in channel.history())
            job = await bot.core.ledger.job(1)
            assert job is not None
            assert job.status == "succeeded"
    finally:
        await bot.close()


async def test_a_result_refused_everywhere_says_it_was_charged(settings: Settings) -> None:
    """Refused in place and in direct messages too: the member learns the images were made and charged."""
    bot = make_bot(settings, NoPreviews())
    try:
        async with simcord.run(bot) as env:
            await ready(bot)
            _, user, result = await _imagine_refused_in_place(env, dm_refused=True)
            assert user.dm_channel.history() == []
            (told,) = result.followups
            assert told.ephemeral
            assert told.content == UNDELIVERED.format(job_id=1)
    finally:
        await bot.close()


async def test_a_refusal_never_turns_public_when_the_reply_cannot_be_finished(
    env: simcord.Env, simcord_bot: EaselBot
) -> None:
    """After a public defer, Discord makes the first followup the reply itself: when the reply cannot be
    finished first, the private sentence goes by direct message instead of into the channel."""
    guild = env.create_guild()
    channel = guild.create_text_channel("art")
    user = env.create_user("alice")
    alice = guild.add_member(user)
    env.inject_error("PATCH", "/webhooks/*/messages/@original", status=500, code=0)
    result = await alice.slash(channel, "imagine", prompt="foxes", style="vivid")

    assert result.followups == []
    assert all("takes no style" not in m.content for m in channel.history())
    (told,) = user.dm_channel.history()
    assert told.content == "gpt-image-2 takes no style; dall-e-3 does."


async def test_a_result_title_carries_no_raw_mention(env: simcord.Env) -> None:
    """Discord shows a mention in an embed title as its raw text: the title names the images only."""
    channel, alice = world(env)
    result = await alice.slash(channel, "imagine", prompt="a red fox", n=2)
    assert result.response is not None
    assert result.response.embeds[0].title == "🎨 2 images"
