"""Shared allowances for message edits that are a courtesy (previews, places in line), per Studio.

In a burst every reply wants the same courtesy edit in the same instant: a hundred jobs whose provider
streams reach their first preview together, two hundred waiting jobs move up one place together. Shown one
by one that is hundreds of Discord requests (uploads, for previews) at once, which stalled the event loop
for over 100 ms in bench/bot.py. Each kind of courtesy edit therefore draws from one token bucket shared by
all of a Studio's replies; an edit that finds none is skipped, and a later one (or the result) shows it.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Literal

from bot.jobs import Studio

Kind = Literal["place", "preview"]

PER_SECOND: dict[Kind, float] = {"place": 10.0, "preview": 10.0}
"""Courtesy edits of each kind a second, across all of one Studio's replies."""


class EditAllowance:
    """A token bucket: `rate` edits a second, at most `rate` at once."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._clock = clock
        self._tokens = rate
        self._at = clock()

    def take(self) -> bool:
        """Use one edit if there is one; False when the bucket is empty."""
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1 - 1e-9:  # clock differences are floats: 0.1 s may come back as 0.0999…
            return False
        self._tokens -= 1
        return True


_SHARED: weakref.WeakKeyDictionary[Studio, dict[Kind, EditAllowance]] = weakref.WeakKeyDictionary()


def allowance(studio: Studio, kind: Kind) -> EditAllowance:
    """The allowance of `kind` edits shared by every reply of `studio` (each cog has its own Renderer)."""
    kinds = _SHARED.setdefault(studio, {})
    found = kinds.get(kind)
    if found is None:
        found = kinds[kind] = EditAllowance(PER_SECOND[kind])
    return found
