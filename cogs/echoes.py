"""Echoes: the gateway events about the bot's own messages and reactions, dropped before discord.py parses them.

With the default intents Discord tells a bot about every message in its servers, its own included: each
reply it posts (a deferred one's "thinking…" placeholder too) comes back as MESSAGE_CREATE, each edit as
MESSAGE_UPDATE, each of its 🔁 and 🚩 as MESSAGE_REACTION_ADD. discord.py builds a `Message` for every one
(two for an edit), keeps up to a thousand in its cache, re-reads the buttons of a tracked view, and
dispatches events nobody here listens to. A burst of two hundred `/imagine` brings two hundred placeholders
back while their acknowledgements are still going out.

Easel never needs these: no cog reads messages from the gateway (a message's job is read from Discord
when a member acts on it, `cogs.cancel.job_on_message`), its own reactions are ignored by
`cogs.reactions`, and its views are already what it sent. `Echoes` wraps those four parsers: a payload
whose author (or reacting user) is the bot itself is counted and dropped; everything else, members'
messages and reactions included, goes to discord.py's parser as before. The check reads two keys of the
raw payload, and never raises into the gateway (an exception there would end discord.py's connection).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import discord

log = logging.getLogger(__name__)

AUTHORED = ("MESSAGE_CREATE", "MESSAGE_UPDATE")
"""Events whose payload is a message, with its author."""
REACTED = ("MESSAGE_REACTION_ADD", "MESSAGE_REACTION_REMOVE")
"""Events whose payload names the reacting user."""

Parser = Callable[[Any], None]


class Echoes:
    """Drops the gateway's echoes of the bot's own messages and reactions (see the module docstring)."""

    def __init__(self, client: discord.Client) -> None:
        self._client = client
        self._originals: dict[str, Parser] = {}
        self.dropped = 0
        """Echoes dropped so far (for the bench and the logs)."""

    def install(self) -> None:
        """Wrap the four parsers in discord.py's table (its gateway reads them from there, frame by frame)."""
        if self._originals:
            return
        parsers = self._client._connection.parsers
        for event in (*AUTHORED, *REACTED):
            original = parsers[event]
            self._originals[event] = original
            parsers[event] = functools.partial(self._parse, original, "author" if event in AUTHORED else "user_id")

    def uninstall(self) -> None:
        """Give discord.py its parsers back."""
        self._client._connection.parsers.update(self._originals)
        self._originals.clear()

    def _parse(self, original: Parser, key: str, data: Any) -> None:
        if self._is_own(data, key):
            self.dropped += 1
            return
        original(data)

    def _is_own(self, data: Any, key: str) -> bool:
        own = self._client._connection.self_id
        try:
            who = data[key]["id"] if key == "author" else data[key]
            return own is not None and str(who) == str(own)
        except (KeyError, TypeError):
            return False  # not the shape we know: discord.py decides
