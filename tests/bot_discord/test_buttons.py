"""The result buttons on simulated Discord: every action, who pays, layouts, and clicks after a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator

import discord
import pytest
import simcord

from bot.app import EaselBot
from bot.config import Settings
from bot.jobs import is_private
from cogs.buttons import Prices, image_view, result_view, submitted_text
from tests.bot_discord.test_imagine import buttons, fields, make_bot, ready, world


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


async def imagine(
    env: simcord.Env, n: int = 2
) -> tuple[simcord.ChannelHandle, simcord.MemberActor, simcord.ResponseMessage]:
    """#art, alice, and the result of her /imagine with `n` images (job 1)."""
    channel, alice = world(env)
    result = await alice.slash(channel, "imagine", prompt="a red fox", n=n)
    assert result.response is not None
    return channel, alice, result.response


async def jobs(bot: EaselBot) -> int:
    return int(await bot.core.db.fetchval("SELECT COUNT(*) FROM jobs"))


async def test_v1_posts_a_variation_recorded_as_the_images_child(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """V1 makes one variation of image 1, posted with its own buttons, its job pointing at (job 1, image 0)."""
    _, alice, message = await imagine(env)
    click = await alice.click(message, custom_id="easel:v:1:0")

    variation = click.response
    assert variation is not None
    assert variation.id != message.id
    assert not variation.ephemeral
    assert variation.embeds[0].title == "🔁 Variation"
    assert [attachment.filename for attachment in variation.attachments] == ["easel-2-1.png"]
    assert buttons(variation.components)[0][0] == "🔁 Vary"
    job = await simcord_bot.core.ledger.job(2)
    assert job is not None
    assert (job.kind, job.parent_job, job.parent_index, job.status) == ("vary", 1, 0, "succeeded")


async def test_a_variation_keeps_the_quality_of_its_image(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """V1 under a high-quality result varies at high quality (gpt-image-2 varies through edit), as does 🔁."""
    channel, alice = world(env)
    result = await alice.slash(channel, "imagine", prompt="a red fox", quality="high")
    assert result.response is not None
    await alice.click(result.response, custom_id="easel:v:1:0")
    job = await simcord_bot.core.ledger.job(2)
    assert job is not None
    assert (job.kind, job.quality) == ("vary", "high")


async def test_another_member_pays_for_their_own_click(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """Bob clicking V2 under alice's result runs a job in bob's name, so bob's budgets apply."""
    _, _, message = await imagine(env)
    bob = env.guild.add_member(env.create_user("bob"))
    await bob.click(message, custom_id="easel:v:1:1")

    job = await simcord_bot.core.ledger.job(2)
    assert job is not None
    assert job.user_id == str(bob.id)
    assert job.parent_index == 1


async def test_u1_posts_the_image_alone_for_free(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """U1 posts image 1 at full size with its own V, zoom and pan buttons, and starts no job."""
    _, alice, message = await imagine(env)
    click = await alice.click(message, custom_id="easel:u:1:0")

    single = click.response
    assert single is not None
    (attachment,) = single.attachments
    assert await attachment.read() == (await simcord_bot.core.image_store.load(1, 0)).data
    assert single.embeds[0].title == "🔎 Image 1, full size"
    assert single.embeds[0].footer.text == "Job #1 · image 1"
    assert "Job" not in fields(single)
    assert single.embeds[0].description == "a red fox"
    assert buttons(single.components) == [
        ["🔁 Vary"],
        ["🔍 Zoom out 1.5x", "🔍 Zoom out 2x"],
        ["⬅️ Left", "➡️ Right", "⬆️ Up", "⬇️ Down"],
    ]
    assert await jobs(simcord_bot) == 1


async def test_reroll_runs_the_same_request_again(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """🔄 generates the same prompt, model and count again as a new job."""
    _, alice, message = await imagine(env)
    click = await alice.click(message, custom_id="easel:rr:1")

    assert click.response is not None
    assert len(click.response.attachments) == 2
    first, again = await simcord_bot.core.ledger.job(1), await simcord_bot.core.ledger.job(2)
    assert first is not None
    assert again is not None
    assert (again.kind, again.prompt, again.model, again.n) == ("generate", first.prompt, first.model, first.n)


async def test_reroll_and_remix_keep_the_background_asked_for(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """A transparent /imagine re-rolled or remixed is transparent again: the job kept its options."""
    channel, alice = world(env)
    result = await alice.slash(channel, "imagine", prompt="a red fox sticker", background="transparent")
    assert result.response is not None
    await alice.click(result.response, custom_id="easel:rr:1")
    shown = await alice.click(result.response, custom_id="easel:remix:1")
    assert shown.modal is not None
    await alice.submit_modal(shown, {"prompt": "a blue fox sticker"})
    for job_id in (1, 2, 3):
        job = await simcord_bot.core.ledger.job(job_id)
        assert job is not None
        assert dict(job.options) == {"background": "transparent"}, job_id
    last = await simcord_bot.core.ledger.job(3)
    assert last is not None
    assert last.prompt == "a blue fox sticker"


async def test_remix_opens_a_prefilled_form_and_generates_the_edited_prompt(
    env: simcord.Env, simcord_bot: EaselBot
) -> None:
    """✏️ answers with a form holding the prompt; submitting it generates the edited prompt."""
    _, alice, message = await imagine(env)
    shown = await alice.click(message, custom_id="easel:remix:1")

    assert shown.modal is not None
    assert shown.modal["custom_id"] == "easel:remix-form:1"
    assert submitted_text(shown.modal["components"], "prompt") == "a red fox"
    submitted = await alice.submit_modal(shown, {"prompt": "a blue fox"})

    assert submitted.response is not None
    assert len(submitted.response.attachments) == 2
    assert submitted.response.embeds[0].description == "a blue fox"
    job = await simcord_bot.core.ledger.job(2)
    assert job is not None
    assert job.prompt == "a blue fox"


async def test_a_remix_of_a_prompt_longer_than_the_form_keeps_it_whole(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """A form holds 4,000 characters and /imagine takes 6,000: the label says the text is cut, an unchanged
    submission remixes the whole prompt, and an edited one uses the edit."""
    channel, alice = world(env)
    prompt = "a red fox " * 600  # 6,000 characters
    result = await alice.slash(channel, "imagine", prompt=prompt)
    assert result.response is not None
    shown = await alice.click(result.response, custom_id="easel:remix:1")
    assert shown.modal is not None
    assert "first 4,000 of 6,000 characters" in str(shown.modal["components"])
    shown_text = submitted_text(shown.modal["components"], "prompt")
    assert shown_text == prompt[:4000]

    await alice.submit_modal(shown, {"prompt": shown_text})
    first, again = await simcord_bot.core.ledger.job(1), await simcord_bot.core.ledger.job(2)
    assert first is not None
    assert again is not None
    assert len(again.prompt) > 4000
    assert again.prompt == first.prompt
    shown = await alice.click(result.response, custom_id="easel:remix:1")
    await alice.submit_modal(shown, {"prompt": "a blue fox"})
    edited = await simcord_bot.core.ledger.job(3)
    assert edited is not None
    assert edited.prompt == "a blue fox"


async def test_zoom_and_pan_extend_a_single_image(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """A single image offers 🔍 and arrows; zooming out 2x and panning left each run an outpaint job."""
    _, alice, message = await imagine(env, n=1)
    assert buttons(message.components) == [
        ["🔁 Vary", "🔄 Re-roll", "✏️ Remix"],
        ["🔍 Zoom out 1.5x", "🔍 Zoom out 2x"],
        ["⬅️ Left", "➡️ Right", "⬆️ Up", "⬇️ Down"],
    ]
    zoomed = await alice.click(message, custom_id="easel:zoom:1:0:20")
    panned = await alice.click(message, custom_id="easel:pan:1:0:left")

    assert zoomed.response is not None
    assert zoomed.response.embeds[0].title == "🔍 Image 1 of job 1, zoomed out 2x"
    assert panned.response is not None
    assert len(panned.response.attachments) == 1
    for job_id in (2, 3):
        job = await simcord_bot.core.ledger.job(job_id)
        assert job is not None
        assert (job.kind, job.parent_job, job.parent_index) == ("outpaint", 1, 0)


async def test_a_private_result_keeps_its_clicks_private(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """A click under an ephemeral result answers ephemerally too, and a re-roll's job is marked private (so a
    restart would send it by direct message, not post it in the channel)."""
    channel, alice = world(env)
    result = await alice.slash(channel, "imagine", prompt="a secret fox", n=2, private=True)
    assert result.response is not None
    click = await alice.click(result.response, custom_id="easel:u:1:1")

    assert click.response is not None
    assert click.response.ephemeral
    reroll = await alice.click(result.response, custom_id="easel:rr:1")
    assert reroll.response is not None
    assert reroll.response.ephemeral
    job = await simcord_bot.core.ledger.job(2)
    assert job is not None
    assert is_private(job)


async def test_a_click_on_a_forgotten_image_is_refused_privately(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """U2 for an image the store no longer knows gets one private sentence, and the public reply goes away."""
    _, alice, message = await imagine(env)
    await simcord_bot.core.db.execute("DELETE FROM images WHERE job_id = 1 AND idx = 1")
    click = await alice.click(message, custom_id="easel:u:1:1")

    assert click.response is None
    (reply,) = click.followups
    assert reply.ephemeral
    assert reply.content == "Easel has no stored copy of that image; generate it again."


async def test_old_buttons_work_after_a_restart(settings: Settings) -> None:
    """After a restart (new bot, empty caches) V1, U2 and 🔄 on the old message work from SQLite and the store."""
    first = make_bot(settings)
    second = make_bot(settings)
    try:
        async with simcord.run(first) as env:
            await ready(first)
            _, alice, message = await imagine(env)
            await env.restart_bot(second)
            await ready(second)

            varied = await alice.click(message, custom_id="easel:v:1:0")
            picked = await alice.click(message, custom_id="easel:u:1:1")
            rerolled = await alice.click(message, custom_id="easel:rr:1")

            assert varied.response is not None
            assert len(varied.response.attachments) == 1
            assert picked.response is not None
            assert await picked.response.attachments[0].read() == (await second.core.image_store.load(1, 1)).data
            assert rerolled.response is not None
            assert len(rerolled.response.attachments) == 2
            vary_job = await second.core.ledger.job(2)
            assert vary_job is not None
            assert vary_job.parent_job == 1
    finally:
        await first.close()
        await second.close()


async def test_results_leave_nothing_per_message_in_the_view_store(env: simcord.Env, simcord_bot: EaselBot) -> None:
    """Every button is a dynamic item, found by its custom_id: discord.py keeps no view per posted message,
    so a bot that posts results for months holds no more for it (a view with timeout=None and one plain
    button would be kept for as long as the process runs)."""
    _, alice, message = await imagine(env)
    await alice.click(message, custom_id="easel:v:1:0")
    await alice.click(message, custom_id="easel:rr:1")
    store = simcord_bot._connection._view_store
    assert await jobs(simcord_bot) == 3
    assert store._views == {}
    assert store._synced_message_views == {}
    assert store._modals == {}


def rows(view: discord.ui.View) -> list[list[str]]:
    found: dict[int, list[str]] = {}
    for item in view.children:
        assert isinstance(item, discord.ui.DynamicItem)
        found.setdefault(item.row or 0, []).append(item.custom_id)
    return [found[row] for row in sorted(found)]


def test_ten_images_fill_five_rows() -> None:
    """U1-10 and V1-10 take two rows each, 🔄 and ✏️ the fifth."""
    laid_out = rows(result_view(7, 10, Prices()))
    assert [len(row) for row in laid_out] == [5, 5, 5, 5, 2]
    assert laid_out[0][0] == "easel:u:7:0"
    assert laid_out[3][4] == "easel:v:7:9"
    assert laid_out[4] == ["easel:rr:7", "easel:remix:7"]


def test_one_image_gets_zoom_and_pan_and_no_u() -> None:
    """A single image: V1 🔄 ✏️, then the two zooms, then the four arrows."""
    laid_out = rows(result_view(3, 1, Prices(vary=53_000, reroll=211_000, remix=211_000, outpaint=250_000)))
    assert laid_out == [
        ["easel:v:3:0", "easel:rr:3", "easel:remix:3"],
        ["easel:zoom:3:0:15", "easel:zoom:3:0:20"],
        ["easel:pan:3:0:left", "easel:pan:3:0:right", "easel:pan:3:0:up", "easel:pan:3:0:down"],
    ]
    view = result_view(3, 1, Prices(vary=53_000, reroll=211_000, remix=211_000, outpaint=250_000))
    shown = [item.item.label for item in view.children if isinstance(item, discord.ui.DynamicItem)]
    assert shown == [
        "Vary · $0.053",
        "Re-roll · $0.211",
        "Remix · $0.211",
        "Zoom out 1.5x · $0.250",
        "Zoom out 2x · $0.250",
        "Left · $0.250",
        "Right · $0.250",
        "Up · $0.250",
        "Down · $0.250",
    ]


def test_actions_a_model_cannot_do_are_left_out() -> None:
    """None for a price leaves its buttons out: a job whose model cannot vary or extend shows neither."""
    laid_out = rows(result_view(4, 2, Prices(vary=None, outpaint=None, remix=None)))
    assert laid_out == [["easel:u:4:0", "easel:u:4:1"], ["easel:rr:4"]]
    assert rows(image_view(4, 1, Prices(vary=None, outpaint=None))) == []


async def test_a_click_outside_the_allowed_channels_is_refused_for_free(
    env: simcord.Env, simcord_bot: EaselBot, settings: Settings
) -> None:
    """Once EASEL_CHANNELS leaves the channel out, V1 under an old result gets the guard's sentence and no job."""
    channel, alice, message = await imagine(env)
    elsewhere = env.guild.create_text_channel("studio")
    settings.channels = str(elsewhere.id)

    click = await alice.click(message, custom_id="easel:v:1:0")

    assert click.response is not None
    assert click.response.ephemeral
    assert click.response.content == f"🚫 I only draw in <#{elsewhere.id}>."
    assert await jobs(simcord_bot) == 1
    settings.channels = str(channel.id)
    await alice.click(message, custom_id="easel:v:1:0")
    assert await jobs(simcord_bot) == 2


async def test_a_variation_says_what_it_varies_and_the_prompt_it_came_from(
    env: simcord.Env, simcord_bot: EaselBot
) -> None:
    """A vary job has no prompt of its own: its embed names its parent image and shows the first prompt,
    also for a variation of a variation; its own job id is in the footer only."""
    _, alice, message = await imagine(env)
    first = await alice.click(message, custom_id="easel:v:1:1")
    assert first.response is not None
    again = await alice.click(first.response, custom_id="easel:v:2:0")

    assert first.response.embeds[0].description == "Variation of image 2 of job #1\na red fox"
    assert first.response.embeds[0].footer.text == "Job #2 · React 🔁 to vary image 1 · 🚩 to report it"
    assert "Job" not in fields(first.response)
    assert again.response is not None
    assert again.response.embeds[0].description == "Variation of image 1 of job #2\na red fox"
    assert again.response.embeds[0].footer.text.startswith("Job #3 · ")


async def test_a_zoom_shows_the_prompt_it_started_from(env: simcord.Env) -> None:
    """A zoom's embed shows the member's prompt, not the outpaint instruction Easel sent for it."""
    _, alice, message = await imagine(env, n=1)
    zoomed = await alice.click(message, custom_id="easel:zoom:1:0:15")

    assert zoomed.response is not None
    assert zoomed.response.embeds[0].description == "a red fox"
    assert zoomed.response.embeds[0].footer.text.startswith("Job #2 · ")


def emoji_of(view: discord.ui.View) -> dict[str, str]:
    """Each button's emoji by custom_id ('' for none)."""
    found: dict[str, str] = {}
    for item in view.children:
        assert isinstance(item, discord.ui.DynamicItem)
        found[item.custom_id] = str(item.item.emoji or "")
    return found


def test_several_images_get_numbered_buttons_that_read_clearly() -> None:
    """Under two images: 🔎 U1 U2, 🔁 V1 V2 with their price, 🔄 Re-roll and ✏️ Remix with theirs."""
    view = result_view(5, 2, Prices(vary=53_000, reroll=211_000, remix=211_000, outpaint=250_000))
    labels = {item.custom_id: item.item.label for item in view.children if isinstance(item, discord.ui.DynamicItem)}
    assert labels == {
        "easel:u:5:0": "U1",
        "easel:u:5:1": "U2",
        "easel:v:5:0": "V1 · $0.053",
        "easel:v:5:1": "V2 · $0.053",
        "easel:rr:5": "Re-roll · $0.211",
        "easel:remix:5": "Remix · $0.211",
    }
    assert emoji_of(view) == {
        "easel:u:5:0": "🔎",
        "easel:u:5:1": "🔎",
        "easel:v:5:0": "🔁",
        "easel:v:5:1": "🔁",
        "easel:rr:5": "🔄",
        "easel:remix:5": "✏️",
    }


def test_only_vary_buttons_use_the_vary_emoji() -> None:
    """🔁 means vary everywhere, as the reaction does: on every V button and on nothing else."""
    views = [
        result_view(9, n, Prices(vary=53_000, reroll=211_000, remix=211_000, outpaint=250_000)) for n in (1, 4, 10)
    ]
    views.append(image_view(9, 3, Prices(vary=53_000, outpaint=250_000)))
    for view in views:
        for custom_id, emoji in emoji_of(view).items():
            assert (emoji == "🔁") == custom_id.startswith("easel:v:"), custom_id
