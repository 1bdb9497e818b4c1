"""Answering first (`cogs.first`): a command acknowledged from its gateway frame, on a loopback Discord.

The bot runs in the test's loop against `tests.fakes.discord_server.FakeDiscord` over real HTTP and a real
websocket, so the acknowledgement goes out the way it does in production (the bot's kept-alive client, or
discord.py's own aiohttp session behind a proxy; not a test harness's adapter). Each test checks what
Discord receives: one type-5 callback per interaction, private when asked, the guard's refusal as the first
answer where the guard refuses, and the usual defer when the early one fails.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest
from pydantic import SecretStr

from bot.app import EaselBot, point_at
from bot.config import Settings
from tests.fakes.discord_server import Call, FakeDiscord

TOKEN = "MTIzNDU2Nzg5.first-answers-token.Zm9yIHRlc3RzIG9ubHk"
STEP_S = 20.0
GUILD = 4242
CHANNEL = 4343


@contextlib.asynccontextmanager
async def running(
    fake: FakeDiscord, data: Path, extensions: tuple[str, ...] = ("cogs.guard", "cogs.imagine"), **fields: Any
) -> AsyncIterator[EaselBot]:
    """An EaselBot with `extensions` (the guard and /imagine), logged in to `fake` and ready; closed after."""
    bases = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, discord_token=SecretStr(TOKEN), provider="mock", data_dir=data, **fields
    )
    point_at(fake.api_base, fake.gateway_url)
    bot = EaselBot(settings, workers="thread", extensions=extensions, sync_commands=False)
    connection: asyncio.Task[None] | None = None
    try:
        await bot.login(TOKEN)
        connection = asyncio.create_task(bot.connect(reconnect=False))
        await asyncio.wait_for(bot.wait_until_ready(), STEP_S)
        yield bot
    finally:
        await bot.close()
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection, STEP_S)
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = bases


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN) as discord_fake:
        yield discord_fake


def callbacks(fake: FakeDiscord, interaction_id: str) -> list[Call]:
    return fake.calls("POST", rf"/interactions/{interaction_id}/[^/]+/callback")


def result_posted(fake: FakeDiscord, token: str) -> Call | None:
    edits = fake.calls("PATCH", rf"/webhooks/\d+/{token}/messages/@original")
    return next((edit for edit in edits if edit.files), None)


async def test_imagine_is_acknowledged_once_from_its_frame_then_delivered(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running(fake, tmp_path / "data") as bot:
        interaction_id, token = await fake.slash_command("imagine", {"prompt": "a heron"}, guild_id=GUILD)
        result = await fake.wait_for(lambda: result_posted(fake, token), STEP_S)

        [callback] = callbacks(fake, interaction_id)
        assert callback.json == {"type": 5}
        # The early answer asks for no callback resource: Discord then answers 204 with nothing to parse.
        assert "with_response" not in callback.query
        assert result.files
        assert bot.first_answers.answered == 1


async def test_early_answers_share_one_kept_alive_connection(fake: FakeDiscord, tmp_path: Path) -> None:
    """They go out on the bot's own lean client (`bot.keepalive`), as discord.py's user agent, one connection."""
    async with running(fake, tmp_path / "data") as bot:
        tokens = []
        for prompt in ("a heron", "a crane"):
            interaction_id, token = await fake.slash_command("imagine", {"prompt": prompt}, guild_id=GUILD)
            await fake.wait_for(lambda: result_posted(fake, token), STEP_S)  # noqa: B023  # awaited here
            tokens.append((interaction_id, token))

        for interaction_id, _ in tokens:
            [callback] = callbacks(fake, interaction_id)
            assert callback.json == {"type": 5}
            assert callback.user_agent == bot.http.user_agent
        assert bot.first_answers.connections_opened == 1
        assert bot.first_answers.answered == 2


async def test_without_the_lean_client_early_answers_go_through_discord_py_s_session(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with running(fake, tmp_path / "data") as bot:
        bot.first_answers.keepalive = False
        interaction_id, token = await fake.slash_command("imagine", {"prompt": "a heron"}, guild_id=GUILD)
        await fake.wait_for(lambda: result_posted(fake, token), STEP_S)

        [callback] = callbacks(fake, interaction_id)
        assert callback.json == {"type": 5}
        assert "with_response" not in callback.query
        assert bot.first_answers.connections_opened == 0
        assert bot.first_answers.answered == 1


async def test_behind_a_proxy_early_answers_use_discord_py_s_session(fake: FakeDiscord, tmp_path: Path) -> None:
    """The lean client has no proxy support: with discord.py's `proxy` set, the callbacks go its way."""
    async with running(fake, tmp_path / "data") as bot:
        assert bot.first_answers._poster(bot.http) is not None
        bot.http.proxy = "http://proxy.internal:3128"
        assert bot.first_answers._poster(bot.http) is None
        bot.http.proxy = None


@pytest.mark.parametrize("keepalive", [True, False], ids=["lean-client", "aiohttp"])
async def test_a_failed_early_answer_never_logs_the_interactions_token(
    fake: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture, keepalive: bool
) -> None:
    """aiohttp's errors quote the URL, whose path holds the token: the warning says <token> instead."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 2x4 Nope\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with running(fake, tmp_path / "data") as bot:
        bot.first_answers.keepalive = keepalive
        discord.http.Route.BASE = f"http://127.0.0.1:{port}/api/v10"  # `running` puts it back
        try:
            with caplog.at_level(logging.WARNING, logger="cogs.first"):
                assert await bot.first_answers._ack(1234, "SECRET-interaction-token", 0) is False
        finally:
            server.close()
            await server.wait_closed()

    [warning] = [record for record in caplog.records if "early acknowledgement failed" in record.getMessage()]
    # aiohttp's error named the URL (redacted); the lean client's errors hold no path at all.
    assert ("<token>" in warning.getMessage()) is not keepalive
    assert "SECRET" not in caplog.text
    assert bot.first_answers.fell_back == 1


async def test_a_stop_lets_the_acknowledgements_on_their_way_finish_on_the_lean_client(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    """Closing while acknowledgements wait for a slot: they still go out as they are, none falls back."""
    async with running(fake, tmp_path / "data") as bot:
        bot.pacer.callbacks.size = 1
        fake.callback_delay_s = 0.1
        sent = [await fake.slash_command("imagine", {"prompt": f"heron {n}"}, guild_id=GUILD) for n in range(3)]
        await fake.wait_for(lambda: bot.first_answers.answered >= 1 or callbacks(fake, sent[0][0]), STEP_S)
        await bot.first_answers.close()

        assert bot.first_answers.answered == 3
        assert bot.first_answers.fell_back == 0
        assert all(len(callbacks(fake, interaction_id)) == 1 for interaction_id, _ in sent)
        assert bot.first_answers.connections_opened == 1


async def test_a_private_imagine_is_acknowledged_privately(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running(fake, tmp_path / "data"):
        interaction_id, token = await fake.slash_command(
            "imagine", {"prompt": "a heron", "private": True}, guild_id=GUILD
        )
        await fake.wait_for(lambda: result_posted(fake, token), STEP_S)

        [callback] = callbacks(fake, interaction_id)
        assert callback.json == {"type": 5, "data": {"flags": 64}}


async def test_outside_the_allowed_channels_the_refusal_is_the_first_answer(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running(fake, tmp_path / "data", channels="999") as bot:
        interaction_id, _ = await fake.slash_command("imagine", {"prompt": "a heron"}, guild_id=GUILD)
        [callback] = await fake.wait_for(lambda: callbacks(fake, interaction_id), STEP_S)

        assert callback.json["type"] == 4
        assert callback.json["data"]["flags"] == 64
        assert "<#999>" in callback.json["data"]["content"]
        assert bot.first_answers.answered == 0


async def test_without_attach_files_the_refusal_is_the_first_answer(fake: FakeDiscord, tmp_path: Path) -> None:
    without = ((1 << 51) - 1) & ~discord.Permissions(attach_files=True).value
    async with running(fake, tmp_path / "data"):
        interaction_id, _ = await fake.slash_command(
            "imagine", {"prompt": "a heron"}, guild_id=GUILD, channel_id=CHANNEL, app_permissions=without
        )
        [callback] = await fake.wait_for(lambda: callbacks(fake, interaction_id), STEP_S)

        assert callback.json["type"] == 4
        assert "Attach Files" in callback.json["data"]["content"]


async def test_a_failed_early_answer_falls_back_to_the_usual_defer(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running(fake, tmp_path / "data") as bot:
        fake.failing_callbacks = 1
        interaction_id, token = await fake.slash_command("imagine", {"prompt": "a heron"}, guild_id=GUILD)
        result = await fake.wait_for(lambda: result_posted(fake, token), STEP_S)

        first, second = callbacks(fake, interaction_id)
        assert first.json == second.json == {"type": 5}
        assert result.files
        assert bot.first_answers.answered == 0


async def test_a_failure_of_ours_hands_the_frame_to_discord_py(
    fake: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in the gateway's parser would end discord.py's connection: the frame goes on instead."""
    async with running(fake, tmp_path / "data") as bot:

        def broken(_data: object) -> int | None:
            raise KeyError("data")

        monkeypatch.setattr(bot.first_answers, "flags_for", broken)
        interaction_id, token = await fake.slash_command("imagine", {"prompt": "a heron"}, guild_id=GUILD)
        result = await fake.wait_for(lambda: result_posted(fake, token), STEP_S)

        [callback] = callbacks(fake, interaction_id)
        assert callback.json == {"type": 5}
        assert callback.query.get("with_response") == "1", "deferred by discord.py, the usual way"
        assert result.files
        assert bot.first_answers.answered == 0
        assert not bot.ws.socket.closed


async def test_a_stop_before_an_answered_command_is_built_is_told_privately(fake: FakeDiscord, tmp_path: Path) -> None:
    """Answered from its frame, then a stop begins: the guard's sentence replaces the "thinking…" reply."""
    async with running(fake, tmp_path / "data") as bot:
        fake.callback_delay_s = 0.3
        interaction_id, token = await fake.slash_command("imagine", {"prompt": "a heron"}, guild_id=GUILD)
        await fake.wait_for(lambda: callbacks(fake, interaction_id), STEP_S)
        bot.in_flight.closing = True  # what `InFlight.drain` does first
        followup = rf"/webhooks/\d+/{token}"
        [sentence] = await fake.wait_for(lambda: fake.calls("POST", followup), STEP_S)

        assert callbacks(fake, interaction_id)[0].json == {"type": 5}
        assert sentence.json["flags"] == 64
        assert "restarting" in sentence.json["content"]
        assert fake.calls("DELETE", rf"/webhooks/\d+/{token}/messages/@original")
        assert result_posted(fake, token) is None
        bot.in_flight.closing = False


def frame(name: str, *, kind: int = 2, command_type: int = 1, **options: Any) -> dict[str, Any]:
    """A raw INTERACTION_CREATE payload's fields that `flags_for` reads, typed in a DM."""
    return {
        "type": kind,
        "channel_id": str(CHANNEL),
        "channel": {"id": str(CHANNEL), "type": 1},
        "data": {
            "name": name,
            "type": command_type,
            "options": [{"name": key, "type": 5, "value": value} for key, value in options.items()],
        },
    }


async def test_only_commands_whose_first_step_is_the_defer_are_answered_first(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    extensions = ("cogs.guard", "cogs.imagine", "cogs.edit")
    async with running(fake, tmp_path / "data", extensions=extensions) as bot:
        first = bot.first_answers
        assert first.flags_for(frame("imagine")) == 0
        assert first.flags_for(frame("imagine", private=True)) == 64
        assert first.flags_for(frame("Vary image", command_type=3)) == 0
        # A form must be the first answer; /edit and /vary check the upload before their defer.
        assert first.flags_for(frame("Edit image", command_type=3)) is None
        assert first.flags_for(frame("edit")) is None
        assert first.flags_for(frame("vary")) is None
        # Suggestions, buttons and unknown commands go the usual way.
        assert first.flags_for(frame("imagine", kind=4)) is None
        assert first.flags_for(frame("imagine", kind=3)) is None
        assert first.flags_for(frame("nonesuch")) is None
        assert first.flags_for(frame("imagine", command_type=9)) is None
        bot.in_flight.closing = True
        assert first.flags_for(frame("imagine")) is None, "a stopping bot refuses, with its own first answer"


async def test_the_gateway_reads_a_burst_of_frames_over_several_turns(fake: FakeDiscord, tmp_path: Path) -> None:
    """Frames that arrive together are read a few per turn of the loop, not all in one long step."""
    async with running(fake, tmp_path / "data", extensions=()) as bot:
        turns = 0
        seen: list[int] = []

        async def count_turns() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        bot._connection.parsers["EASEL_PROBE"] = lambda _data: seen.append(turns)
        bot.pacer.budget = bot.pacer.urgent_budget = 0.0  # every turn is "long" once a frame was read in it
        counter = asyncio.create_task(count_turns())
        try:
            for _ in range(40):  # sent in one step: the bot finds them all buffered together
                await fake.dispatch("EASEL_PROBE", {})
            await fake.wait_for(lambda: len(seen) == 40, STEP_S)
        finally:
            counter.cancel()

        per_turn = collections.Counter(seen)
        assert max(per_turn.values()) <= 2, per_turn
        assert not bot.ws.socket.closed


async def imagine_with_reactions(fake: FakeDiscord, bot: EaselBot) -> tuple[int, list[discord.RawReactionActionEvent]]:
    """Run /imagine in a server channel until its result is posted and its two reactions are on; the reply's
    id, and the raw reaction events the bot received (the bot listening to its own)."""
    reactions: list[discord.RawReactionActionEvent] = []

    async def on_raw_reaction_add(payload: discord.RawReactionActionEvent) -> None:
        reactions.append(payload)

    bot.add_listener(on_raw_reaction_add)
    _, token = await fake.slash_command("imagine", {"prompt": "a heron"}, guild_id=GUILD, channel_id=CHANNEL)
    await fake.wait_for(lambda: result_posted(fake, token), STEP_S)
    reactions_on = rf"/channels/{CHANNEL}/messages/\d+/reactions/[^/]+/@me"
    await fake.wait_for(lambda: len(fake.calls("PUT", reactions_on)) == 2, STEP_S)
    return int(fake.original(token)["id"]), reactions


async def test_discord_py_takes_in_the_fakes_events_about_the_bots_own_messages(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    """The fake's echoes are shaped as discord.py wants them (with the bot's own filter out of the way)."""
    async with running(fake, tmp_path / "data") as bot:
        bot.echoes.uninstall()
        reply, reactions = await imagine_with_reactions(fake, bot)
        await fake.wait_for(lambda: len(reactions) == 2, STEP_S)

        cached = next(message for message in bot.cached_messages if message.id == reply)
        assert cached.attachments, "the result's edit reached the cached reply"
        assert cached.components, "with its buttons"
        assert {str(reaction.emoji) for reaction in reactions} == {"🔁", "🚩"}
        assert all(reaction.user_id == bot.user.id and reaction.guild_id == GUILD for reaction in reactions)
        assert not bot.ws.socket.closed


async def test_the_bot_drops_the_echoes_of_its_own_messages(fake: FakeDiscord, tmp_path: Path) -> None:
    """Its reply created and edited, its two reactions: dropped before discord.py builds anything of them."""
    async with running(fake, tmp_path / "data") as bot:
        reply, reactions = await imagine_with_reactions(fake, bot)
        # The placeholder, the estimate, the result and the two reactions at least; all sent before the last
        # reaction's answer, so one more frame read from the gateway has them all in.
        await fake.dispatch("EASEL_PROBE", {})
        await fake.wait_for(lambda: bot.echoes.dropped >= 5, STEP_S)

        assert all(message.id != reply for message in bot.cached_messages)
        assert reactions == []
        assert not bot.ws.socket.closed


async def test_members_messages_and_reactions_still_reach_discord_py(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running(fake, tmp_path / "data") as bot:
        reactions: list[discord.RawReactionActionEvent] = []

        async def on_raw_reaction_add(payload: discord.RawReactionActionEvent) -> None:
            reactions.append(payload)

        bot.add_listener(on_raw_reaction_add)
        member = fake.user(fake.new_id(), "member")
        message = fake.message(str(CHANNEL), {"content": ""}) | {"author": member, "webhook_id": None}
        await fake.dispatch("MESSAGE_CREATE", message)
        reaction = {
            "user_id": member["id"],
            "channel_id": str(CHANNEL),
            "message_id": message["id"],
            "emoji": {"id": None, "name": "🔁"},
            "type": 0,
            "burst": False,
            "burst_colors": [],
        }
        await fake.dispatch("MESSAGE_REACTION_ADD", reaction)
        await fake.wait_for(lambda: reactions, STEP_S)

        assert any(cached.id == int(message["id"]) for cached in bot.cached_messages)
        assert reactions[0].user_id == int(member["id"])
        assert bot.echoes.dropped == 0
