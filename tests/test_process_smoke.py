"""The real bot process, `python -m bot`, against a loopback fake of Discord (tests/fakes/discord_server.py).

Nothing inside the process is faked: settings come from its environment, discord.py logs in over HTTP,
identifies on a websocket, syncs the commands, and answers an /imagine typed in a DM with the mock image
provider drawing for real; a stop signal closes it with exit code 0, a refused token ends it with one line
and exit code 2. Only Discord itself is the fake, on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import SETTING_NAMES
from tests.fakes.discord_server import Call, FakeDiscord

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "MTIzNDU2Nzg5.fake-smoke-token.Zm9yIHRlc3RzIG9ubHk"
"""Distinctive enough that finding it in the output means it leaked."""
START_TIMEOUT_S = 30.0
"""Generous: a loaded 2-CPU machine may take seconds just to import discord.py and start the workers."""
STEP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
T = TypeVar("T")


@dataclass
class BotProcess:
    proc: asyncio.subprocess.Process
    folder: Path

    @property
    def stdout(self) -> str:
        return (self.folder / "stdout.txt").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return (self.folder / "stderr.txt").read_text(errors="replace")

    @property
    def database(self) -> Path:
        return self.folder / "data" / "easel.db"

    async def expect(self, waiting: Awaitable[T], what: str, seconds: float = STEP_TIMEOUT_S) -> T:
        """Wait for `waiting`, failing at once (with the bot's stderr) if the process exits or time runs out."""
        step = asyncio.ensure_future(waiting)
        ended = asyncio.ensure_future(self.proc.wait())
        try:
            done, _ = await asyncio.wait({step, ended}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        timed_out = f"did not happen within {seconds} s"
        if step in done:
            try:
                return step.result()
            except TimeoutError:
                pytest.fail(f"{what}: {timed_out}\n--- bot stderr ---\n{self.stderr}")
        step.cancel()
        why = f"exited with {self.proc.returncode}" if ended in done else timed_out
        pytest.fail(f"{what}: {why}\n--- bot stderr ---\n{self.stderr}")

    def group_alive(self) -> bool:
        """Whether any process of the bot's process group (its image workers included) still runs."""
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    async def group_ended(self, seconds: float = STOP_TIMEOUT_S) -> bool:
        """Wait until the bot and every process it started have exited."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.group_alive():
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def exit_code(self, seconds: float = STOP_TIMEOUT_S) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), seconds)
        except TimeoutError:
            pytest.fail(f"the bot did not exit within {seconds} s\n--- bot stderr ---\n{self.stderr}")


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN) as discord:
        yield discord


def bot_env(folder: Path, discord: FakeDiscord, token: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in SETTING_NAMES}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        PYTHONUNBUFFERED="1",
        DISCORD_TOKEN=token,
        DISCORD_API_BASE=discord.api_base,
        DISCORD_GATEWAY_URL=discord.gateway_url,
        EASEL_PROVIDER="mock",
        EASEL_DATA_DIR=str(folder / "data"),
        EASEL_LOG_LEVEL="INFO",
    )
    return env


StartBot = Callable[[FakeDiscord], Awaitable[BotProcess]]


@pytest.fixture
async def start_bot(tmp_path: Path) -> AsyncIterator[StartBot]:
    """Start `python -m bot` in its own folder and process group; whatever happens, the group is killed at the
    end, so no image worker outlives the test (a killed bot's workers would otherwise live on as orphans)."""
    started: list[BotProcess] = []

    async def start(discord: FakeDiscord) -> BotProcess:
        folder = tmp_path / f"bot{len(started)}"
        folder.mkdir()
        with (folder / "stdout.txt").open("wb") as out, (folder / "stderr.txt").open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                cwd=folder,
                env=bot_env(folder, discord, TOKEN),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        bot = BotProcess(proc, folder)
        started.append(bot)
        return bot

    try:
        yield start
    finally:
        for bot in started:
            bot.kill_group()
            if bot.proc.returncode is None:
                await bot.proc.wait()


async def ready(bot: BotProcess, discord: FakeDiscord) -> None:
    """Wait until the bot identified and synced its commands."""
    await bot.expect(discord.wait_for(lambda: discord.gateway.identify, START_TIMEOUT_S), "IDENTIFY", START_TIMEOUT_S)
    await bot.expect(discord.wait_for(lambda: discord.commands, STEP_TIMEOUT_S), "the command sync")


def assert_clean(bot: BotProcess, discord: FakeDiscord) -> None:
    """No token in the output, no error or traceback logged, no call the fake does not know."""
    assert TOKEN not in bot.stdout
    assert TOKEN not in bot.stderr
    assert "Traceback" not in bot.stderr
    assert " ERROR " not in bot.stderr
    assert [(call.method, call.path) for call in discord.unhandled] == []


# -- start-up -----------------------------------------------------------------------------------------------


async def test_the_bot_logs_in_identifies_and_syncs_its_commands(fake: FakeDiscord, start_bot: StartBot) -> None:
    bot = await start_bot(fake)
    await ready(bot, fake)

    assert fake.calls("GET", "/users/@me"), "the bot never checked its token"
    identify = fake.gateway.identify
    assert identify is not None
    assert identify["token"] == TOKEN
    intents = int(identify["intents"])
    assert not intents & (1 << 15), "the bot asked for message content"
    assert intents & 1, "the bot did not ask for guild events"
    assert {"imagine", "edit", "vary"} <= set(fake.commands)
    assert fake.calls("PUT", rf"/applications/{fake.application_id}/commands")

    # It keeps the connection alive: at least one heartbeat, answered.
    await bot.expect(fake.wait_for(lambda: fake.gateway.heartbeats, STEP_TIMEOUT_S), "a heartbeat")
    assert bot.proc.returncode is None
    assert fake.gateway.connections == 1
    # On uvloop's event loop where it is installed (every platform but Windows), as pyproject.toml asks.
    assert "event loop: uvloop" in bot.stderr
    assert_clean(bot, fake)


async def test_a_refused_token_is_one_line_and_exit_code_2(start_bot: StartBot) -> None:
    async with FakeDiscord(token=TOKEN, refuse_token=True) as discord:
        bot = await start_bot(discord)
        code = await bot.exit_code(START_TIMEOUT_S)

        assert code == 2, bot.stderr
        lines = bot.stderr.splitlines()
        assert len(lines) == 1, bot.stderr
        assert lines[0].startswith("error: DISCORD_TOKEN was refused by Discord")
        assert bot.stdout == ""
        assert_clean(bot, discord)
        assert [call.path for call in discord.requests] == ["/users/@me"]
        assert discord.gateway.connections == 0


# -- an /imagine round trip ---------------------------------------------------------------------------------


IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF")


def is_image(data: bytes) -> bool:
    return data.startswith(IMAGE_MAGIC)


def result_edit(discord: FakeDiscord, token: str) -> Call | None:
    """The edit of the reply that carries the result: an embed and image files (discord.py sends them as
    application/octet-stream, so they are told by their bytes)."""
    for call in discord.calls("PATCH", rf"/webhooks/{discord.application_id}/{token}/messages/@original"):
        if isinstance(call.json, dict) and call.json.get("embeds") and any(is_image(f.data) for f in call.files):
            return call
    return None


def reactions(discord: FakeDiscord, message_id: str) -> list[str]:
    """The emojis the bot added to a message, in order."""
    calls = discord.calls("PUT", rf"/channels/\d+/messages/{message_id}/reactions/[^/]+/@me")
    return [call.path.split("/")[-2] for call in calls]


async def finished(bot: BotProcess, discord: FakeDiscord, token: str) -> Call:
    """Wait for the result of the interaction `token`, and for the reactions the bot adds to it last."""
    result: Call = await bot.expect(discord.wait_for(lambda: result_edit(discord, token), STEP_TIMEOUT_S), "images")
    message_id = discord.original(token)["id"]
    await bot.expect(discord.wait_for(lambda: len(reactions(discord, message_id)) >= 2, STEP_TIMEOUT_S), "reactions")
    return result


async def test_imagine_in_a_dm_defers_then_delivers_images(fake: FakeDiscord, start_bot: StartBot) -> None:
    bot = await start_bot(fake)
    await ready(bot, fake)

    sent_at = asyncio.get_running_loop().time()
    token = await fake.slash_command_in_dm("imagine", {"prompt": "a lighthouse at dusk"})
    callback = rf"/interactions/\d+/{token}/callback"
    deferred = await bot.expect(fake.wait_for(lambda: fake.calls("POST", callback), STEP_TIMEOUT_S), "the defer")
    assert deferred[0].json["type"] == 5, deferred[0].json
    assert deferred[0].at - sent_at < 3.0, "the defer came after Discord's 3 s"

    result = await finished(bot, fake, token)
    assert result.files
    assert all(is_image(upload.data) for upload in result.files)
    names = {upload.filename for upload in result.files}
    assert {attachment["filename"] for attachment in result.json["attachments"]} == names
    embed = result.json["embeds"][0]
    assert embed["image"]["url"].removeprefix("attachment://") in names
    assert any("a lighthouse at dusk" in field["value"] for field in embed.get("fields", [])), embed
    assert len(fake.calls("POST", callback)) == 1, "the interaction was answered twice"
    assert reactions(fake, fake.original(token)["id"]) == ["🔁", "🚩"]
    assert bot.proc.returncode is None
    assert_clean(bot, fake)


# -- shutdown -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_stop_signal_closes_the_bot_cleanly_with_exit_code_0(
    fake: FakeDiscord, start_bot: StartBot, signum: signal.Signals
) -> None:
    bot = await start_bot(fake)
    await ready(bot, fake)
    token = await fake.slash_command_in_dm("imagine", {"prompt": "a lighthouse at dusk"})
    await finished(bot, fake, token)

    bot.proc.send_signal(signum)
    code = await bot.exit_code(STOP_TIMEOUT_S)

    assert code == 0, bot.stderr
    assert fake.gateway.close_code == 1000, "the gateway was not closed"
    assert "Easel stopped" in bot.stderr
    assert ("SIGTERM received: stopping" in bot.stderr) == (signum == signal.SIGTERM)
    assert_clean(bot, fake)
    assert await bot.group_ended(), "an image worker outlived the bot"
    await asyncio.to_thread(check_closed_database, bot.database)


async def test_a_stop_during_a_reply_lets_the_reply_finish(start_bot: StartBot) -> None:
    """A SIGTERM while the result is still uploading waits for it (EASEL_STOP_GRACE): the reply completes."""
    async with FakeDiscord(token=TOKEN, upload_delay_s=1.0) as discord:
        bot = await start_bot(discord)
        await ready(bot, discord)
        token = await discord.slash_command_in_dm("imagine", {"prompt": "a lighthouse at dusk"})
        await bot.expect(discord.wait_for(lambda: result_edit(discord, token), STEP_TIMEOUT_S), "the result upload")

        bot.proc.send_signal(signal.SIGTERM)  # while the upload's answer is still on its way
        code = await bot.exit_code(STOP_TIMEOUT_S)

        assert code == 0, bot.stderr
        assert reactions(discord, discord.original(token)["id"]) == ["🔁", "🚩"], bot.stderr
        assert_clean(bot, discord)


async def test_a_job_does_not_wait_for_discord_to_take_its_estimate(start_bot: StartBot) -> None:
    """Discord holds the estimate edit unanswered: the job is drawn and settled meanwhile, and the result
    edit still comes after the estimate, so the estimate never overwrites it."""
    async with FakeDiscord(token=TOKEN, hold_text_edits=True) as discord:
        bot = await start_bot(discord)
        await ready(bot, discord)
        token = await discord.slash_command_in_dm("imagine", {"prompt": "a lighthouse at dusk"})
        edits = rf"/webhooks/{discord.application_id}/{token}/messages/@original"
        held = await bot.expect(discord.wait_for(lambda: discord.calls("PATCH", edits), STEP_TIMEOUT_S), "the estimate")
        assert held[0].json["content"].startswith("🎨 Working on it… estimated cost"), held[0].json

        await bot.expect(job_finished(bot.database), "the job, while Discord holds the estimate")
        assert result_edit(discord, token) is None, "the result was sent before the estimate was answered"

        discord.release_edits()
        result = await finished(bot, discord, token)
        assert discord.calls("PATCH", edits) == [held[0], result], "edits out of order"
        assert_clean(bot, discord)
        # This fake closes before the fixture stops the bot: a bot still running reconnects its gateway
        # meanwhile, and the fake's shutdown then waits out aiohttp's 60 s for that connection's handler.
        bot.kill_group()
        await bot.proc.wait()


async def job_finished(database: Path) -> None:
    """Return once the (only) job in the bot's database has succeeded and been settled."""

    def read() -> list[tuple[str, str]]:
        with contextlib.closing(sqlite3.connect(database)) as db:
            return db.execute("SELECT status, cost_state FROM jobs").fetchall()

    # Another process's database: nothing to wait on but the file itself.
    while await asyncio.to_thread(read) != [("succeeded", "settled")]:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def check_closed_database(path: Path) -> None:
    """The database was closed, not abandoned: no write-ahead log left behind, intact, the job settled."""
    assert not Path(f"{path}-wal").exists()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT status, cost_state FROM jobs").fetchall() == [("succeeded", "settled")]


@pytest.mark.parametrize(
    ("moment", "path"),
    [("login", "/users/@me"), ("services open", r"/applications/\d+/commands")],
    ids=["login", "command-sync"],
)
async def test_a_sigterm_while_starting_still_closes_cleanly(
    fake: FakeDiscord, start_bot: StartBot, moment: str, path: str
) -> None:
    bot = await start_bot(fake)
    await bot.expect(fake.wait_for(lambda: fake.calls("GET", path) + fake.calls("PUT", path), START_TIMEOUT_S), moment)

    bot.proc.send_signal(signal.SIGTERM)
    code = await bot.exit_code(STOP_TIMEOUT_S)

    assert code == 0, bot.stderr
    assert "Easel stopped" in bot.stderr
    assert_clean(bot, fake)
    assert await bot.group_ended(), "an image worker outlived the bot"
    assert not await asyncio.to_thread(Path(f"{bot.database}-wal").exists)
