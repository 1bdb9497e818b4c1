"""Logging set-up, and redaction of secrets from anything that might be logged or shown."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

_PATTERNS = (
    # OpenAI-style keys, bearer tokens in headers, and Discord bot tokens.
    re.compile(r"sk-[A-Za-z0-9_\-*.]{6,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-.=]+"),
    re.compile(r"(?i)((?:api[-_]?key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',]+"),
    re.compile(r"[MNO][A-Za-z0-9_\-]{23,27}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,40}"),
)


_REGISTERED: set[str] = set()


def register_secrets(secrets: Iterable[str]) -> None:
    """Remember secret values (keys, tokens) so every later `redact` call removes them too."""
    _REGISTERED.update(s for s in secrets if s and len(s) >= 4)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with API keys, bearer tokens, Discord tokens, registered and given secrets replaced by <redacted>."""
    for secret in sorted({*secrets, *_REGISTERED}, key=len, reverse=True):
        if secret and len(secret) >= 4:
            text = text.replace(secret, "<redacted>")
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "<redacted>", text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites every record's message so secrets never reach a log handler (`RedactingFormatter` does the
    same for the tracebacks and stacks it prints)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self._secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class RedactingFormatter(logging.Formatter):
    """A formatter whose tracebacks and stacks have secrets removed: an exception's text (a library's
    'illegal header' error, say) may hold one. The record itself is left alone for other handlers."""

    def __init__(self, fmt: str | None = None, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self._secrets = tuple(s for s in secrets if s)

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei), self._secrets)

    def formatStack(self, stack_info: str) -> str:
        return redact(super().formatStack(stack_info), self._secrets)


def setup_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Log to stderr at `level`, with secrets redacted and chatty libraries quieted."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", secrets))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "discord.http", "discord.gateway"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
