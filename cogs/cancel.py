"""A waiting job in Discord: its place in line on the progress message, and a way to cancel it.

While a job waits for its turn (`QueueUpdate.position` ≥ 1), `QueueWatch` keeps the reply up to date
("⏳ Queued: number 3 in line · estimated cost $0.21 · you have $1.79 left today": the queue reports a new
place at most every `bot.queue.REPORT_EVERY` seconds, and the edits share ten a second across all replies
(`cogs.allowance`); "number 1" is always shown) and gives it a Cancel button (`easel:cancel:<job>`). A public
reply also gets a ❌ reaction, and the message is remembered for the job (per Studio, shared by every cog's
Renderer) until the job ends, so `cancel_by_reaction` can find it. When the job starts, the button and
Easel's own ❌ go ("🖌️ Starting…").

Cancelling calls `Studio.cancel`: the job ends 'cancelled', its reservation is returned in full, and the
reply shows the `JobCancelled` sentence. Only the member who asked, or one who may manage messages there,
may cancel; anyone else gets one private sentence. A job that has already started cannot be cancelled.
Nothing is kept in memory that a restart would need: after one, the resumed jobs (`cogs.resume`) wait in
the new queue under their old job ids, so an old Cancel button still cancels its job while it waits, and
answers that it has started or ended afterwards. An old ❌ does the same: a reply the bot no longer
remembers is read back from Discord, and the job is the one its Cancel button names (`job_on_message`);
a reply without one (its job started, and the button went) is not a waiting reply.
"""

from __future__ import annotations

import contextlib
import logging
import re
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Self

import discord

from bot.jobs import Studio
from bot.queue import QueueUpdate
from bot.store.ledger import Ledger
from cogs.allowance import allowance
from cogs.buttons import _actions, _Guarded
from cogs.errors import CANCEL_NOT_YOURS, CANCEL_TOO_LATE, CANCELLED_FOR_SOMEONE

log = logging.getLogger(__name__)

CANCEL = "❌"

_WAITING: weakref.WeakKeyDictionary[Studio, dict[int, int]] = weakref.WeakKeyDictionary()


def waiting(studio: Studio) -> dict[int, int]:
    """Progress message id → job id, for the public replies of `studio`'s jobs that waited and are not done."""
    return _WAITING.setdefault(studio, {})


CANCEL_ID = re.compile(r"easel:cancel:(?P<job>\d+)")
"""A Cancel button's custom_id: the template `CancelButton` matches, and what `job_on_message` looks for."""


class CancelButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=CANCEL_ID.pattern):
    """Cancel: take a waiting job out of line, fully refunded."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.danger, label="Cancel", emoji=CANCEL, custom_id=f"easel:cancel:{job_id}"
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, _interaction: discord.Interaction[Any], _item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        actions = _actions(interaction)
        await cancel_by_click(interaction, actions.studio, actions.ledger, self.job_id)


def cancel_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


async def _owner(ledger: Ledger, job_id: int, user_id: int) -> bool | None:
    """True when `user_id` asked for the job, False when someone else did, None when there is no such job."""
    job = await ledger.job(job_id)
    return None if job is None else job.user_id == str(user_id)


async def cancel_by_click(interaction: discord.Interaction[Any], studio: Studio, ledger: Ledger, job_id: int) -> None:
    """The Cancel button: for the requester, the reply itself turns into the sentence; a moderator is told."""
    owner = await _owner(ledger, job_id, interaction.user.id)
    moderator = interaction.permissions.manage_messages
    if owner is False and not moderator:
        await interaction.response.send_message(CANCEL_NOT_YOURS, ephemeral=True)
        return
    if not studio.cancel(job_id):
        await interaction.response.send_message(CANCEL_TOO_LATE, ephemeral=True)
        return
    log.info("job %d cancelled by %s", job_id, interaction.user.id)
    if owner:
        await interaction.response.defer()
    else:
        await interaction.response.send_message(CANCELLED_FOR_SOMEONE.format(job_id=job_id), ephemeral=True)


def job_on_message(message: discord.Message) -> int | None:
    """The job whose Cancel button `message` shows, if it shows one."""
    for row in message.components:
        for item in getattr(row, "children", ()):
            custom_id = getattr(item, "custom_id", None)
            if custom_id is not None and (match := CANCEL_ID.fullmatch(custom_id)):
                return int(match["job"])
    return None


async def cancel_by_reaction(
    studio: Studio,
    ledger: Ledger,
    message_id: int,
    user_id: int,
    *,
    moderator: bool,
    look_up: Callable[[], Awaitable[int | None]] | None = None,
) -> str | None:
    """❌ on a waiting job's reply: None when done (or not a waiting reply), else the sentence for the member.

    `look_up` finds the job of a reply this process does not remember (one from before a restart)."""
    job_id = waiting(studio).get(message_id)
    if job_id is None and look_up is not None:
        job_id = await look_up()
    if job_id is None:
        return None
    if await _owner(ledger, job_id, user_id) is False and not moderator:
        return CANCEL_NOT_YOURS
    if not studio.cancel(job_id):
        return CANCEL_TOO_LATE
    waiting(studio).pop(message_id, None)  # a second ❌ in the same breath finds nothing left to cancel
    log.info("job %d cancelled by %s (reaction)", job_id, user_id)
    return None


class QueueWatch:
    """A `Studio` `on_queue` handler for one reply: the place in line, the Cancel button, and the ❌."""

    def __init__(
        self,
        interaction: discord.Interaction[Any],
        studio: Studio,
        text: Callable[[QueueUpdate], str],
        *,
        private: bool,
        before_edit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._interaction = interaction
        self._before_edit = before_edit
        """Awaited before each edit: the reply's earlier edit (the estimate) must land first."""
        self._studio = studio
        self._text = text
        self._private = private
        self._waiting = False
        self._message: discord.Message | None = None

    async def __call__(self, update: QueueUpdate) -> None:
        if update.position == 0:
            await self._started(update)
            return
        # Shared with every other reply (cogs.allowance); "next in line" and the start are never skipped.
        if update.position > 1 and not allowance(self._studio, "place").take():
            return
        first = not self._waiting
        self._waiting = True
        await self._edit(content=self._text(update), view=cancel_view(update.job_id))
        if first and not self._private:
            await self._offer_reaction(update.job_id)

    async def _started(self, update: QueueUpdate) -> None:
        if not self._waiting:
            return  # it never waited: the reply shows the estimate, and nothing needs taking away
        self._waiting = False
        await self._edit(content=self._text(update), view=None)
        me = self._interaction.client.user
        if self._message is not None and me is not None:
            # Easel's own ❌ would otherwise stay on the result this reply turns into.
            with contextlib.suppress(discord.HTTPException):
                await self._message.remove_reaction(CANCEL, me)

    async def _edit(self, **changes: Any) -> None:
        if self._before_edit is not None:
            await self._before_edit()
        try:
            # The edited reply comes back with the edit: no separate fetch is needed to react on it.
            self._message = await self._interaction.edit_original_response(**changes)
        except discord.HTTPException as exc:
            log.debug("could not show the place in line: %s", exc)

    async def _offer_reaction(self, job_id: int) -> None:
        """React ❌ on the reply, and remember it for the job, so the member can cancel by reacting."""
        message = self._message
        if message is None or message.flags.ephemeral:  # the edit failed, or only the member sees it
            return
        waiting(self._studio)[message.id] = job_id
        with contextlib.suppress(discord.HTTPException):
            await message.add_reaction(CANCEL)

    def close(self) -> None:
        """The job is over: a ❌ on its reply means nothing any more."""
        if self._message is not None:
            waiting(self._studio).pop(self._message.id, None)
