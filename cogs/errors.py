"""The one table from errors to what a member reads: one short, friendly sentence each.

Core errors already carry a sentence written for people (`EaselError.message`); this table adds the
Discord-side cases and the words around them. Anything unexpected gets a generic sentence with the job id
while the traceback goes to the log, never to the user. Keys, tokens and raw provider text never appear.

`answer_privately` delivers such a sentence to the member alone whatever state the reply is in, and
`answer_unhandled` is the command tree's last resort for an error no command answered.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import discord
from discord import app_commands

from bot.errors import (
    AuthenticationFailed,
    BadImage,
    BudgetExceeded,
    ContentRejected,
    EaselError,
    ModelUnavailable,
    PermissionDenied,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    RequestError,
)
from bot.log import redact

log = logging.getLogger(__name__)

CANCEL_TOO_LATE = "It has already started; it can't be cancelled now."
"""A Cancel click or ❌ on a job that is no longer waiting (running, finished, or unknown)."""
CANCEL_NOT_YOURS = "🔒 Only the member who asked for this job, or a moderator, can cancel it."
ALREADY_WORKING = "⏳ I'm already working on that click; your result is on its way."
SENT_BY_DM = "📬 Discord would not let me post your result here, so I sent it to you by direct message."
UNDELIVERED = (
    "📦 Your images (job {job_id}) were made and charged, but Discord would not let me post them here or send "
    "them to you; ask a server admin to check my permissions in this channel and its upload limit."
)
"""A paid result that could be posted nowhere: the member must not read that failed jobs cost nothing."""
CANCELLED_FOR_SOMEONE = "❌ Cancelled job {job_id}; nothing was charged."
"""What a moderator who cancels someone else's waiting job is told (the member sees the reply change)."""


class OutsideChannels(app_commands.CheckFailure):
    """Used outside the channels EASEL_CHANNELS allows (threads count as their parent channel)."""

    def __init__(self, allowed: Iterable[int]) -> None:
        super().__init__("used outside the allowed channels")
        self.allowed = tuple(sorted(allowed))


class Stopping(app_commands.CheckFailure):
    """Easel is stopping (a restart or an update): new work is turned away while replies in flight finish."""

    def __init__(self) -> None:
        super().__init__("the bot is stopping")


class CannotPost(app_commands.BotMissingPermissions):
    """Easel lacks a permission it needs to post results in this channel (names as in `discord.Permissions`)."""


def _permission_names(names: Iterable[str]) -> str:
    shown = [name.replace("_", " ").title().replace(" In ", " in ") for name in names]
    listed = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
    return f"{listed} permission" + ("" if len(shown) == 1 else "s")


SENTENCE_LIMIT = 600
"""Characters at most of a sentence `friendly` returns: well inside Discord's 2,000 for a reply's text."""


def friendly(error: BaseException, *, job_id: int | None = None) -> str:
    """One sentence (two at most) for `error`, safe to show in the channel, at most `SENTENCE_LIMIT` long."""
    text = _sentence(error, job_id=job_id)
    return text if len(text) <= SENTENCE_LIMIT else text[: SENTENCE_LIMIT - 1].rstrip() + "…"


def _sentence(error: BaseException, *, job_id: int | None) -> str:
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    match error:
        case ContentRejected():
            return f"🚫 {error.message}"
        case BudgetExceeded():
            return f"💸 {error.message}"
        case RateLimited():
            return "⏳ The image service is busy right now; your request will be retried shortly."
        case BadImage():
            return f"🖼️ {error.message}"
        case ModelUnavailable():
            return f"🧭 {error.message}"
        case ProviderTimeout() if error.maybe_billed:
            return (
                "⌛ The image service took too long to answer; it may still have billed the request, so its "
                "estimate stays on your spending."
            )
        case AuthenticationFailed() | PermissionDenied() | QuotaExhausted():
            return f"🔧 {error.message} (A server admin needs to fix this.)"
        case ProviderUnavailable() | ProviderError():
            return f"🛠️ {error.message}"
        case RequestError() | EaselError():
            return redact(error.message)
        case app_commands.CommandOnCooldown():
            return f"🐢 Slow down a little: try again in {error.retry_after:.0f} s."
        case app_commands.MissingPermissions():
            return "🔒 You need the Manage Messages permission for that."
        case Stopping():
            return "🔧 I'm restarting right now; please try again in a minute. Nothing was charged."
        case OutsideChannels():
            return "🚫 I only draw in " + ", ".join(f"<#{channel}>" for channel in error.allowed) + "."
        case CannotPost():
            needed = _permission_names(error.missing_permissions)
            return f"🔒 I need the {needed} in this channel to post images; ask a server admin."
        case app_commands.BotMissingPermissions():
            missing = ", ".join(p.replace("_", " ").title() for p in error.missing_permissions)
            return f"🔒 I need the {missing} permission in this channel; ask a server admin to grant it."
        case app_commands.NoPrivateMessage():
            return "🏠 That works in a server, not in direct messages."
        case app_commands.CheckFailure():
            return "🚧 That command is not available here."
        case discord.Forbidden():
            return "🔒 I lack a permission here (Send Messages, Attach Files or Embed Links); ask a server admin."
    log.error("unexpected error (job %s)", job_id, exc_info=error)
    where = f" (job {job_id})" if job_id is not None else ""
    return f"😵 Something went wrong on my side{where}; please try again. Failed jobs are not charged."


def is_users_fault(error: BaseException) -> bool:
    """True for errors the user can fix by changing the request (shown privately, never logged as bugs)."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    return isinstance(error, RequestError | app_commands.CheckFailure)


async def answer_privately(interaction: discord.Interaction[Any], text: str, *, private: bool = False) -> None:
    """`text` for the member alone: the first answer, the private reply itself, or a private followup once a
    public "thinking…" reply is finished and removed; by direct message when none of those can be done."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
        elif private:
            await interaction.edit_original_response(content=text, embed=None, attachments=[], view=None)
        else:
            # A public "thinking…" reply cannot become private: finish it, remove it, then answer privately.
            # Until it is finished, Discord would turn the first followup into that public reply.
            finished = False
            with contextlib.suppress(discord.HTTPException):
                await interaction.edit_original_response(content="…", embed=None, attachments=[], view=None)
                finished = True
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
            if not finished:
                raise discord.ClientException("the public reply could not be finished")
            await interaction.followup.send(text, ephemeral=True)
    except (discord.HTTPException, discord.ClientException) as exc:
        log.info("could not answer interaction %s (%s); sending the sentence by direct message", interaction.id, exc)
        with contextlib.suppress(discord.HTTPException):
            await interaction.user.send(text)


async def answer_unhandled(interaction: discord.Interaction[Any], error: app_commands.AppCommandError) -> None:
    """The command tree's last resort (`CommandTree.on_error`): an error no command answered becomes one
    private sentence (`friendly` logs an unknown one with its traceback), instead of a reply left thinking."""
    # Whether a defer was private is not known here: finishing and removing the reply works for both.
    await answer_privately(interaction, friendly(error))
