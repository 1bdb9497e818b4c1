"""`python -m bot`: the Discord bot, or with a command (imagine, edit, spend, ...) the command line."""

from bot.cli import main
from bot.config import Settings


def _start_bot(settings: Settings) -> int:
    # Imported here so the command line never pays for loading discord.py.
    from bot.app import run_bot

    return run_bot(settings)


raise SystemExit(main(start_bot=_start_bot))
