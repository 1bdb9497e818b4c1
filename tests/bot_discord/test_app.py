"""The bot process: services opened in setup_hook and closed in reverse, commands synced only when changed."""

from __future__ import annotations

import gc
import sys

import pytest
import simcord

from bot.app import COMMANDS_HASH_FILE, SWITCH_INTERVAL, EaselBot, point_at
from bot.config import Settings
from bot.errors import ConfigError


async def test_setup_opens_the_services(simcord_env: simcord.Env, simcord_bot: EaselBot, settings: Settings) -> None:
    """After start-up the core, the ledger and the workers are there, and the command hash is stored."""
    core = simcord_bot.core
    assert core.studio.images.provider.name == "mock"
    assert simcord_bot.workers.mode == "thread"
    assert (settings.data_dir / COMMANDS_HASH_FILE).read_text().startswith(f"global:{simcord_bot.application_id}:")
    assert not core.http.is_closed
    assert gc.get_freeze_count() > 0
    assert sys.getswitchinterval() == SWITCH_INTERVAL


async def test_close_releases_everything(settings: Settings) -> None:
    """close() after setup leaves the HTTP client closed and the services gone."""
    bot = EaselBot(settings, workers="thread", sync_commands=False)
    async with simcord.run(bot):
        http = bot.core.http
    await bot.close()
    assert http.is_closed
    assert bot._core is None


async def test_commands_sync_only_when_changed(settings: Settings) -> None:
    """A second start with the same commands does not sync again; a changed definition does."""
    first = EaselBot(settings, workers="thread")
    async with simcord.run(first):
        assert not await first.sync_commands()
        assert await first.sync_commands(force=True)
    await first.close()


async def test_the_command_hash_belongs_to_the_bots_application(settings: Settings) -> None:
    """Another bot (a new token, a new application) reusing the data folder gets its commands synced."""
    bot = EaselBot(settings, workers="thread")
    async with simcord.run(bot):
        assert str(bot.application_id) in bot.command_signature()
        (settings.data_dir / COMMANDS_HASH_FILE).write_text(
            bot.command_signature().replace(str(bot.application_id), "1")
        )
        assert await bot.sync_commands()
    await bot.close()


async def test_a_server_that_refuses_the_commands_is_one_clear_setting_error(settings: Settings) -> None:
    """DEV_GUILD_ID naming a server the bot may not add commands to: a ConfigError naming the setting."""
    bot = EaselBot(settings.model_copy(update={"dev_guild_id": 4242}), workers="thread", sync_commands=False)
    async with simcord.run(bot) as env:
        env.inject_error("PUT", "/applications/*/guilds/*/commands", status=403, code=50001, message="Missing Access")
        with pytest.raises(ConfigError, match="DEV_GUILD_ID"):
            await bot.sync_commands(force=True)
    await bot.close()


async def test_discord_down_during_a_sync_is_retried_at_the_next_start(settings: Settings) -> None:
    """A failed global sync keeps the bot running and the old hash, so the next start syncs again."""
    bot = EaselBot(settings, workers="thread")
    async with simcord.run(bot) as env:
        stored = (settings.data_dir / COMMANDS_HASH_FILE).read_text()
        env.inject_error("PUT", "/applications/*/commands", status=503, code=0)
        assert not await bot.sync_commands(force=True)
        assert (settings.data_dir / COMMANDS_HASH_FILE).read_text() == stored
    await bot.close()


def test_point_at_moves_rest_and_gateway(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """DISCORD_API_BASE and DISCORD_GATEWAY_URL redirect discord.py."""
    import discord

    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    )
    point_at("http://127.0.0.1:9/api/v10/", "ws://127.0.0.1:9/")
    assert discord.http.Route.BASE == "http://127.0.0.1:9/api/v10"
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:9/"
