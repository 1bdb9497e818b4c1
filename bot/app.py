"""The Discord application: the Bot subclass that owns every resource, and `run_bot` to start it.

`setup_hook` opens the core (one HTTP client, one database, the stores; crash recovery runs here: running
jobs become unknown charges, queued ones stay reserved for `cogs.resume` to run once the bot is ready), starts
the image workers and the housekeeping task (the image store's retention, unfinished CLI jobs), loads the
cogs from `cogs.EXTENSIONS`, and syncs the slash commands only when their definition changed. `close()`
first lets the replies in flight finish (`bot.in_flight`, up to EASEL_STOP_GRACE seconds, turning new work
away meanwhile), then unloads the cogs (so their tasks end while the services still work), closes the
gateway, then the services in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import discord
import yarl
from discord.ext import commands

from bot.config import Settings
from bot.errors import ConfigError
from bot.imaging.pool import ImageWorkers, Mode
from bot.inflight import InFlight
from bot.pacing import Pacer
from bot.services import Core, cli_lifetime, open_core
from bot.store.ledger import utc_now
from cogs import EXTENSIONS
from cogs.echoes import Echoes
from cogs.errors import answer_unhandled
from cogs.first import FirstAnswers

log = logging.getLogger(__name__)

COMMANDS_HASH_FILE = "commands.sha256"

CoreOpener = Callable[[Settings], AbstractAsyncContextManager[Core]]


SWITCH_INTERVAL = 0.001
"""Seconds a thread may hold the GIL while another waits for it (Python's default: 0.005)."""

RESUME_EXTENSION = "cogs.resume"
"""The extension that runs the jobs a restart left queued; without it they are refunded at start."""


@contextlib.asynccontextmanager
async def _open_core_recovering(settings: Settings) -> AsyncIterator[Core]:
    async with open_core(settings, recover=True) as core:
        yield core


@contextlib.asynccontextmanager
async def _open_core_resuming(settings: Settings) -> AsyncIterator[Core]:
    async with open_core(settings, recover=True, resume_queued=True) as core:
        yield core


class EaselBot(commands.Bot):
    """Easel on Discord. Services live on the bot; cogs receive them in their `setup`."""

    def __init__(
        self,
        settings: Settings,
        *,
        open_services: CoreOpener | None = None,
        extensions: Sequence[str] = EXTENSIONS,
        workers: Mode = "process",
        sync_commands: bool = True,
    ) -> None:
        # Slash commands, buttons and raw reactions need no privileged intent, and no message content.
        intents = discord.Intents.default()
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None)
        self.settings = settings
        self._extensions = tuple(extensions)
        if open_services is None:
            # Queued jobs stay reserved only when something will run them; otherwise they are refunded.
            open_services = _open_core_resuming if RESUME_EXTENSION in self._extensions else _open_core_recovering
        self._open_services = open_services
        self._workers_mode: Mode = workers
        self._sync = sync_commands
        self._stack = contextlib.AsyncExitStack()
        self._core: Core | None = None
        self._workers: ImageWorkers | None = None
        self._background: list[asyncio.Task[None]] = []
        self.in_flight = InFlight()
        """Replies and results in flight: a stop turns new work away and lets these finish first."""
        self.pacer = Pacer()
        """Spreads a burst's interactions and results over short turns of the event loop (`bot.pacing`)."""
        self.first_answers = FirstAnswers(self, self.pacer)
        """Acknowledges marked commands straight from their gateway frame (`cogs.first`)."""
        self.echoes = Echoes(self)
        """Drops the gateway's events about the bot's own messages and reactions (`cogs.echoes`)."""

    @property
    def ws(self) -> discord.gateway.DiscordWebSocket:
        """The gateway connection; each new one (a resume, a reconnect) reads its frames in paced turns."""
        return self._ws

    @ws.setter
    def ws(self, ws: discord.gateway.DiscordWebSocket) -> None:
        # discord.py sets this in `Client.__init__` (to None, before the pacer exists) and on every connect.
        if isinstance(ws, discord.gateway.DiscordWebSocket):
            _read_in_turns(ws, self.pacer)
        self._ws = ws

    @property
    def core(self) -> Core:
        """The core services; available from `setup_hook` on."""
        if self._core is None:
            raise RuntimeError("the bot's services are not open yet (setup_hook has not run)")
        return self._core

    @property
    def workers(self) -> ImageWorkers:
        if self._workers is None:
            raise RuntimeError("the image workers are not started yet (setup_hook has not run)")
        return self._workers

    async def setup_hook(self) -> None:
        log.info("event loop: %s", type(asyncio.get_running_loop()).__module__.split(".")[0])
        self._core = await self._stack.enter_async_context(self._open_services(self.settings))
        if self._core.recovery is not None and (self._core.recovery.refunded or self._core.recovery.unknown):
            log.warning(
                "recovered after a crash: %d job(s) refunded, %d kept as unknown charges",
                len(self._core.recovery.refunded),
                len(self._core.recovery.unknown),
            )
        # Jobs finishing a step together go on over several turns of the loop (through `pacer.turn` at the
        # time of the call, so a test's stand-in pacer is used too).
        self._core.studio.pace = lambda: self.pacer.turn()
        self._workers = await self._stack.enter_async_context(ImageWorkers(mode=self._workers_mode))
        self._background.append(asyncio.create_task(self._housekeeping(), name="easel-housekeeping"))
        for extension in self._extensions:
            await self.load_extension(extension)
        self.first_answers.install()
        self.echoes.install()
        # The last resort for an error no command answered: one private sentence, not a reply left thinking.
        self.tree.error(answer_unhandled)
        if self._sync:
            await self.sync_commands()
        # The ~75k objects loaded at start-up never die; moving them out of the collector's sight keeps
        # full collections short (measured: 40-60 ms pauses down to 5-20 ms under load).
        gc.freeze()
        # A worker thread that wants the GIL back (after its fsync, its sqlite call) waits for the busy loop
        # to give it up, by default every 5 ms. At 1 ms the threads' short turns come sooner, and with them
        # the results the loop awaits: 100 jobs at 2 s went from 2.57-2.67 to 2.54-2.55 s (bench/bot.py).
        sys.setswitchinterval(SWITCH_INTERVAL)

    async def _housekeeping(self) -> None:
        """Apply the image store's retention limits now and every EASEL_IMAGE_CLEANUP_HOURS, and resolve CLI
        jobs a dead CLI run left behind (start-up recovery spares young ones); never crashes."""
        days, size = self.settings.retention()
        while True:
            try:
                report = await self.core.image_store.cleanup(max_age_days=days, max_total_bytes=size)
                if report.deleted_files:
                    log.info("image store: removed %d file(s), %d bytes", report.deleted_files, report.freed_bytes)
            except Exception:
                log.exception("image store clean-up failed; trying again later")
            try:
                stale = await self.core.ledger.recover_cli(utc_now() - cli_lifetime(self.settings))
                if stale.refunded or stale.unknown:
                    log.info("resolved %d job(s) a CLI run left unfinished", len(stale.refunded) + len(stale.unknown))
            except Exception:
                log.exception("resolving unfinished CLI jobs failed; trying again later")
            await asyncio.sleep(self.settings.image_cleanup_hours * 3600)

    def command_signature(self) -> str:
        """A hash of every command's definition, with where they go (the server, or all, and the bot's
        application: a new bot reusing the data folder must get its own), to sync only when it changed."""
        definition = [command.to_dict(self.tree) for command in self.tree.get_commands()]
        blob = json.dumps(definition, sort_keys=True, default=str).encode()
        guild = self.settings.dev_guild_id or "global"
        return f"{guild}:{self.application_id}:{hashlib.sha256(blob).hexdigest()}"

    async def sync_commands(self, *, force: bool = False) -> bool:
        """Sync the slash commands if their definition changed (Discord caps command creates at 200 a day)."""
        path = self.settings.data_dir / COMMANDS_HASH_FILE
        signature = self.command_signature()
        previous = await asyncio.to_thread(_read_text, path)
        if previous == signature and not force:
            log.info("commands unchanged; not syncing")
            return False
        try:
            if self.settings.dev_guild_id:
                guild = discord.Object(id=self.settings.dev_guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
            else:
                await self.tree.sync()
        except discord.HTTPException as error:
            if isinstance(error, discord.Forbidden) and self.settings.dev_guild_id:
                raise ConfigError(
                    f"DEV_GUILD_ID: Discord would not take Easel's commands in server {self.settings.dev_guild_id}: "
                    "invite the bot there with the applications.commands scope, or unset DEV_GUILD_ID",
                    variable="DEV_GUILD_ID",
                ) from None
            # Discord busy or down: the commands from the last sync still work; the next start tries again.
            log.warning("could not sync the commands (%s); trying again at the next start", error)
            return False
        await asyncio.to_thread(_write_text, path, signature)
        log.info("commands synced to %s", self.settings.dev_guild_id or "all servers")
        return True

    async def close(self) -> None:
        # Replies in flight first (within EASEL_STOP_GRACE), so no paid-for result is cut off mid-upload;
        # then the cogs, so their tasks finish while the HTTP client and database still work.
        if self._core is not None and not self.is_closed():
            await self.in_flight.drain(self.settings.stop_grace)
        await self.first_answers.close()
        for extension in list(self.extensions):
            with contextlib.suppress(commands.ExtensionError):
                await self.unload_extension(extension)
        await super().close()
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background.clear()
        await self._stack.aclose()
        self._core = None
        self._workers = None


def _read_in_turns(ws: discord.gateway.DiscordWebSocket, pacer: Pacer) -> None:
    """Make the gateway's reading loop give way to the rest of the bot once its turn of the loop is long.

    `Client.connect` awaits `poll_event` frame after frame, and aiohttp hands over a frame that is already
    buffered without suspending: a burst of interactions that arrived together was parsed and dispatched in
    one step of 7-12 ms, with no timer, heartbeat or defer in between. After each frame the reader now takes
    a `Pacer.turn`, which returns at once while the turn is short.
    """
    poll = ws.poll_event

    async def poll_event() -> None:
        await poll()
        await pacer.turn(urgent=True)

    # An attribute of this connection only: a later one is wrapped when it is set on the bot.
    ws.poll_event = poll_event  # type: ignore[method-assign]


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def point_at(api_base: str | None, gateway_url: str | None) -> None:
    """Send discord.py's REST calls and gateway connection elsewhere (a proxy, or a local fake in tests)."""
    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The bot's event loop: uvloop's where it is installed (not on Windows, where it does not build), else
    asyncio's own. uvloop runs the loop's machinery (timers, ready callbacks, sockets) in C; a burst's arrival
    is many small steps of exactly that kind (bench/README.md: 200 interactions' defer p99 and worst lag)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_bot(settings: Settings, **options: Any) -> int:
    """Start the bot and run until it is stopped; an exit code for `python -m bot`."""
    if settings.discord_token is None:
        raise ConfigError("DISCORD_TOKEN is not set: create a bot at https://discord.com/developers and copy its token")
    token = settings.discord_token.get_secret_value()
    point_at(settings.discord_api_base, settings.discord_gateway_url)
    # Easel never joins voice: no warnings about voice libraries, and no "logging in" line before every
    # start (or before the one-line error when the token is refused) unless debugging.
    discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("discord.client").setLevel(logging.WARNING)
    bot = EaselBot(settings, **options)

    async def main() -> None:
        # SIGTERM (systemd, docker stop) stops the bot the way Ctrl-C does under asyncio's runner: the main task
        # is cancelled, so `async with bot` closes it, whatever it was doing (setup, connecting, running).
        # Without this the default SIGTERM kills the process with the database and sessions still open.
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("run_bot's main() must run as a task")
        stopping = False

        def stop() -> None:
            nonlocal stopping
            if not stopping:  # a second SIGTERM must not interrupt the close
                stopping = True
                log.info("SIGTERM received: stopping")
                task.cancel()

        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' event loop
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
        try:
            async with bot:
                await bot.start(token)
        except asyncio.CancelledError:
            # Ours: a normal stop. Anyone else's (Ctrl-C included) goes on up to the runner.
            if not stopping or task.uncancel() > 0:
                raise

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(main())
    except discord.LoginFailure:
        raise ConfigError(
            "DISCORD_TOKEN was refused by Discord: copy the bot's token again from the developer portal"
        ) from None
    except discord.PrivilegedIntentsRequired:
        raise ConfigError("Discord refused an intent Easel asked for; this is a bug, please report it") from None
    except KeyboardInterrupt:
        pass
    log.info("Easel stopped")
    return 0
