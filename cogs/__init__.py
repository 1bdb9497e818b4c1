"""Discord-facing extensions, loaded by the bot from this explicit list (none yet: the bot comes next)."""

EXTENSIONS: tuple[str, ...] = ()
