"""Discord-facing extensions, loaded by the bot from this explicit list (not a folder scan)."""

EXTENSIONS: tuple[str, ...] = ("cogs.guard", "cogs.imagine", "cogs.edit", "cogs.reactions", "cogs.resume")
