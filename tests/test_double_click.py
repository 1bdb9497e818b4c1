"""A double click on a priced button, on a loopback Discord: two interactions at once, one job.

simcord runs one member action at a time, so the two clicks of a double click go through the loopback fake
(`tests.fakes.discord_server`), whose gateway delivers both frames together, as Discord does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cogs.errors import ALREADY_WORKING
from tests.fakes.discord_server import FakeDiscord
from tests.test_first_answers import GUILD, STEP_S, callbacks, fake, running

__all__ = ["fake"]  # the loopback fake's fixture, shared with the early-answer tests

MEMBER = 777


def buttons(fake: FakeDiscord, token: str) -> bool:
    """True once the reply of interaction `token` carries the result's buttons."""
    try:
        return bool(fake.original(token).get("components"))
    except KeyError:  # not answered yet
        return False


async def test_a_double_click_on_reroll_makes_one_job(fake: FakeDiscord, tmp_path: Path) -> None:
    """The first click re-rolls; the second, arriving while the first is handled, is told so for free."""
    async with running(fake, tmp_path / "data") as bot:
        _, token = await fake.slash_command("imagine", {"prompt": "a heron"}, user_id=MEMBER, guild_id=GUILD)
        await fake.wait_for(lambda: buttons(fake, token), STEP_S)

        (first, first_token), (second, _) = await asyncio.gather(
            fake.click(token, "easel:rr:1", user_id=MEMBER, guild_id=GUILD),
            fake.click(token, "easel:rr:1", user_id=MEMBER, guild_id=GUILD),
        )
        await fake.wait_for(lambda: callbacks(fake, second), STEP_S)
        await fake.wait_for(lambda: buttons(fake, first_token), STEP_S)

        assert [call.json["type"] for call in callbacks(fake, first)] == [5]
        [refusal] = callbacks(fake, second)
        assert refusal.json["type"] == 4
        assert (refusal.json["data"]["content"], refusal.json["data"]["flags"]) == (ALREADY_WORKING, 64)
        assert await bot.core.db.fetchval("SELECT COUNT(*) FROM jobs") == 2
