"""/edit, /vary and the "Vary image" / "Edit image" message menus on simulated Discord, with the mock provider."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
import simcord
from PIL import Image

from bot.api.types import EditRequest, ImageResult, VaryRequest
from bot.app import EaselBot
from bot.config import Settings
from cogs.edit import MAX_UPLOAD_BYTES, PREVIEW_FILE, region_choices
from cogs.reactions import FLAG, VARY
from tests import images

EXTENSIONS = ("cogs.imagine", "cogs.reactions", "cogs.edit")
PHOTO = images.png(64, 48)


@pytest.fixture
async def simcord_bot(settings: Settings) -> AsyncIterator[EaselBot]:
    bot = EaselBot(settings, workers="thread", extensions=EXTENSIONS)
    yield bot
    await bot.close()


class Calls:
    """The requests that reached the image service."""

    def __init__(self) -> None:
        self.edits: list[EditRequest] = []
        self.varies: list[VaryRequest] = []
        self.downloads: list[str] = []


@pytest.fixture
async def world(simcord_env: simcord.Env, monkeypatch: pytest.MonkeyPatch) -> World:
    world = World(simcord_env)
    images_client = world.bot.core.images
    real_edit, real_vary = images_client.edit, images_client.vary

    async def edit(req: EditRequest) -> ImageResult:
        world.calls.edits.append(req)
        return await real_edit(req)

    async def vary(req: VaryRequest) -> ImageResult:
        world.calls.varies.append(req)
        return await real_vary(req)

    monkeypatch.setattr(images_client, "edit", edit)
    monkeypatch.setattr(images_client, "vary", vary)
    real_read = discord.Attachment.read

    async def read(attachment: discord.Attachment, **options: Any) -> bytes:
        world.calls.downloads.append(attachment.filename)
        return await real_read(attachment, **options)

    monkeypatch.setattr(discord.Attachment, "read", read)
    # The database's writer waits on a queue between writes; started from inside a command, simcord would
    # count it as bot work that never settles. Started here, it is not tracked.
    await world.bot.core.db.write("SELECT 1")
    return world


class World:
    def __init__(self, env: simcord.Env) -> None:
        self.env = env
        self.guild = env.create_guild()
        self.channel = self.guild.create_text_channel("art")
        self.alice = self.guild.add_member(env.create_user("alice"))
        self.calls = Calls()

    @property
    def bot(self) -> EaselBot:
        bot = self.env.bot
        assert isinstance(bot, EaselBot)
        return bot

    async def jobs(self) -> list[dict[str, Any]]:
        rows = await self.bot.core.db.fetchall(
            "SELECT id, kind, user_id, status, parent_job, parent_index, prompt FROM jobs ORDER BY id"
        )
        return [dict(row) for row in rows]


def _only_for(result: simcord.InteractionResult) -> str:
    """The single private sentence a failed command answered with."""
    answers = [m for m in (result.response, *result.followups) if m is not None]
    assert answers, "the command did not answer"
    assert all(m.ephemeral for m in answers)
    return answers[-1].content


def test_region_choices() -> None:
    assert [c.value for c in region_choices("top")] == ["top", "top-left", "top-right"]
    assert region_choices("x=0 y=0 w=50 h=50")[0].value == "x=0 y=0 w=50 h=50"
    assert region_choices("")[-1].value == "x=25 y=25 w=50 h=50"


async def test_edit_with_a_region(world: World) -> None:
    """/edit with a named region makes one paid edit job, posts it publicly with reactions and a mask."""
    result = await world.alice.slash(
        world.channel, "edit", image=("fox.png", PHOTO), prompt="add a red scarf", region="bottom-left"
    )
    message = result.response
    assert message is not None
    assert not message.ephemeral
    assert len(message.attachments) == 1
    assert "add a red scarf" in message.embeds[0].title
    [job] = await world.jobs()
    assert (job["kind"], job["user_id"], job["status"], job["parent_job"]) == (
        "edit",
        str(world.alice.id),
        "succeeded",
        None,
    )
    [sent] = world.calls.edits
    assert sent.mask is not None
    posted = world.channel.last_message
    assert posted is not None
    assert [str(r.emoji) for r in posted.reactions] == [VARY, FLAG]
    assert await world.bot.core.image_store.find_by_message(message.id) == [(job["id"], 0)]


async def test_edit_with_a_mask(world: World) -> None:
    """An uploaded mask is what the edit sends (fitted to the picture)."""
    result = await world.alice.slash(
        world.channel,
        "edit",
        image=("fox.png", images.png(16, 16)),
        prompt="a hat",
        mask=("mask.png", images.mask(16, 16)),
    )
    assert result.response is not None
    assert not result.response.ephemeral
    [sent] = world.calls.edits
    assert sent.mask is not None
    assert [job["kind"] for job in await world.jobs()] == ["edit"]


async def test_mask_preview_is_free_and_private(world: World) -> None:
    """preview:True shows the tinted area privately: no job, no call to the image service."""
    result = await world.alice.slash(
        world.channel, "edit", image=("fox.png", PHOTO), prompt="a hat", region="x=0 y=0 w=50 h=100", preview=True
    )
    message = result.response
    assert message is not None
    assert message.ephemeral
    assert [a.filename for a in message.attachments] == [PREVIEW_FILE]
    assert "50%" in message.content
    assert "free" in message.content
    assert await world.jobs() == []
    assert world.calls.edits == []


async def test_an_error_no_command_answers_still_gets_one_private_sentence(world: World) -> None:
    """Discord failing the preview's edit raises past the command: the tree's last resort answers privately,
    instead of leaving the reply thinking."""
    world.env.inject_error("PATCH", "/webhooks/*/messages/@original", status=500, code=0)
    result = await world.alice.slash(
        world.channel, "edit", image=("fox.png", PHOTO), prompt="a hat", region="top", preview=True
    )
    assert "Something went wrong on my side" in _only_for(result)
    assert await world.jobs() == []


async def test_preview_without_any_area_says_so(world: World) -> None:
    result = await world.alice.slash(world.channel, "edit", image=("fox.jpg", images.jpeg()), prompt="x", preview=True)
    assert result.response is not None
    assert "No area is marked" in _only_for(result)
    assert await world.jobs() == []


async def test_a_file_that_is_not_a_picture_is_refused_unread(world: World) -> None:
    """A text file is refused from its type, privately, before anything is downloaded or recorded."""
    result = await world.alice.slash(world.channel, "edit", image=("notes.txt", b"hello"), prompt="a hat")
    assert "not a picture" in _only_for(result)
    assert not result.deferred
    assert await world.jobs() == []
    assert world.calls.downloads == []


async def test_an_oversized_upload_is_refused_from_its_size(world: World) -> None:
    big = b"\x89PNG" + bytes(MAX_UPLOAD_BYTES)
    result = await world.alice.slash(world.channel, "vary", image=("huge.png", big))
    assert "MB" in _only_for(result)
    assert await world.jobs() == []
    assert world.calls.downloads == []


async def test_a_bad_region_is_explained(world: World) -> None:
    result = await world.alice.slash(world.channel, "edit", image=("a.png", PHOTO), prompt="x", region="somewhere")
    assert "no area called" in _only_for(result)
    assert await world.jobs() == []


async def test_a_very_long_region_is_quoted_short_and_answered_at_once(world: World) -> None:
    """A region with 2,100 characters of noise is refused before the defer, in a sentence Discord takes."""
    region = "x=10 y=10 w=50 h=50 " + "q" * 2100
    result = await world.alice.slash(world.channel, "edit", image=("a.png", PHOTO), prompt="x", region=region)
    sentence = _only_for(result)
    assert "cannot read ('qqqq" in sentence
    assert len(sentence) < 400
    assert await world.jobs() == []


async def test_a_broken_picture_fails_privately_with_nothing_charged(world: World) -> None:
    """A file that claims to be a PNG but is not: the job is refused, the member alone is told."""
    result = await world.alice.slash(world.channel, "vary", image=("broken.png", b"not really a png"))
    assert "not an image Easel can read" in _only_for(result)
    [job] = await world.jobs()
    assert job["status"] == "rejected"


async def test_vary_with_strength(world: World) -> None:
    result = await world.alice.slash(world.channel, "vary", image=("fox.png", PHOTO), n=2, strength="strong")
    message = result.response
    assert message is not None
    assert not message.ephemeral
    assert "strong" in message.embeds[0].title
    [sent] = world.calls.varies
    assert (sent.strength, sent.n) == ("strong", 2)
    [job] = await world.jobs()
    assert (job["kind"], job["user_id"], job["status"]) == ("vary", str(world.alice.id), "succeeded")


async def test_edit_and_vary_take_a_quality(world: World) -> None:
    """/edit and /vary ask for the quality chosen, offered from the model typed so far, and the job keeps it."""
    await world.alice.slash(world.channel, "edit", image=("fox.png", PHOTO), prompt="a hat", quality="high")
    await world.alice.slash(world.channel, "vary", image=("fox.png", PHOTO), quality="low")
    [edited] = world.calls.edits
    [varied] = world.calls.varies
    assert (edited.quality, varied.quality) == ("high", "low")
    kept = await world.bot.core.db.fetchall("SELECT kind, quality, status FROM jobs ORDER BY id")
    assert [tuple(row) for row in kept] == [("edit", "high", "succeeded"), ("vary", "low", "succeeded")]
    for command in ("edit", "vary"):
        offered = await world.alice.autocomplete(world.channel, command, "quality", "", model="gpt-image-2.5-flare")
        assert [choice["value"] for choice in offered] == ["auto", "low", "medium", "high", "xhigh", "max"]
        assert offered[0]["name"] == "auto (default)"
    medium = await world.alice.autocomplete(world.channel, "vary", "quality", "med")
    assert [choice["value"] for choice in medium] == ["medium"]


async def test_vary_image_menu_on_a_members_picture(world: World) -> None:
    """The "Vary image" menu on a member's message varies its first picture; the job has no parent."""
    posted = await world.alice.send(world.channel, "my cat", attachments=[("notes.txt", b"x"), ("cat.png", PHOTO)])
    result = await world.alice.context_menu(world.channel, "Vary image", posted)
    assert result.response is not None
    assert not result.response.ephemeral
    [job] = await world.jobs()
    assert (job["kind"], job["parent_job"]) == ("vary", None)
    assert world.calls.downloads == ["cat.png"]  # the picture, not the text file before it


async def test_vary_image_menu_on_an_easel_result_uses_the_stored_image(world: World) -> None:
    """On Easel's own result the stored image is varied and the new job is its child."""
    first = await world.alice.slash(world.channel, "vary", image=("fox.png", PHOTO))
    assert first.response is not None
    parent = (await world.jobs())[0]["id"]
    result = await world.alice.context_menu(world.channel, "Vary image", first.response.message)
    assert result.response is not None
    child = (await world.jobs())[-1]
    assert (child["kind"], child["parent_job"], child["parent_index"]) == ("vary", parent, 0)


async def test_menus_on_a_message_without_a_picture(world: World) -> None:
    posted = await world.alice.send(world.channel, "just words")
    result = await world.alice.context_menu(world.channel, "Vary image", posted)
    assert "no picture" in _only_for(result)


async def test_edit_image_menu_asks_then_edits(world: World) -> None:
    """The "Edit image" menu opens a form; its answer edits the picture in the region given."""
    first = await world.alice.slash(world.channel, "vary", image=("fox.png", PHOTO))
    assert first.response is not None
    parent = (await world.jobs())[0]["id"]
    shown = await world.alice.context_menu(world.channel, "Edit image", first.response.message)
    assert shown.modal is not None
    assert shown.modal["title"] == "Edit image"
    values = {_input_id(shown, "What"): "a blue hat", _input_id(shown, "Where"): "top"}
    submitted = await world.alice.submit_modal(shown, values)
    assert submitted.response is not None
    assert not submitted.response.ephemeral
    child = (await world.jobs())[-1]
    assert (child["kind"], child["parent_job"], child["prompt"]) == ("edit", parent, "a blue hat")
    [sent] = world.calls.edits
    assert sent.mask is not None


async def test_edit_image_form_with_a_bad_region(world: World) -> None:
    posted = await world.alice.send(world.channel, "cat", attachments=[("cat.png", PHOTO)])
    shown = await world.alice.context_menu(world.channel, "Edit image", posted)
    submitted = await world.alice.submit_modal(
        shown, {_input_id(shown, "What"): "a hat", _input_id(shown, "Where"): "up"}
    )
    assert "no area called" in _only_for(submitted)
    assert await world.jobs() == []


def _input_id(shown: simcord.InteractionResult, label_start: str) -> str:
    """The custom_id of the form's text input whose label starts with `label_start`."""
    assert shown.modal is not None
    for row in shown.modal["components"]:
        for component in row.get("components", []) or [row.get("component")]:
            label = component.get("label") or row.get("label") or ""
            if label.startswith(label_start):
                return str(component["custom_id"])
    raise AssertionError(f"no input labelled {label_start!r} in {shown.modal}")


async def test_reactions_work_on_results_the_renderer_posted(world: World) -> None:
    """🔁 on an /edit result (posted through the interaction) varies it, as the reacting member's child job."""
    result = await world.alice.slash(world.channel, "edit", image=("fox.png", PHOTO), prompt="a hat", region="top")
    assert result.response is not None
    parent = (await world.jobs())[0]["id"]
    await world.alice.react(result.response.message, VARY)
    child = (await world.jobs())[-1]
    assert (child["kind"], child["user_id"], child["parent_job"], child["parent_index"]) == (
        "vary",
        str(world.alice.id),
        parent,
        0,
    )


async def test_an_upload_that_needs_converting_still_shows_its_estimate(world: World) -> None:
    """A BMP is converted before the model sees it: the estimate is worked out from the converted upload, so
    the member sees it (it was skipped, as the raw file failed the model's format check) while the job runs."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "BMP")
    result = await world.alice.slash(world.channel, "vary", image=("fox.bmp", buffer.getvalue()))
    assert result.response is not None
    assert len(result.response.attachments) == 1
    edits = [
        str((entry.json or {}).get("content"))
        for entry in world.env.http_requests
        if entry.method == "PATCH" and isinstance(entry.json, dict)
    ]
    assert any("estimated cost" in content for content in edits)
