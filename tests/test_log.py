"""Secrets never reach logs or messages: pattern redaction, registered secrets, and the log filter."""

from __future__ import annotations

import logging

import pytest

from bot.log import RedactingFilter, redact, register_secrets


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Incorrect API key provided: sk-proj-fake-1234567", "sk-proj-fake-1234567"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ('{"api-key": "0123456789abcdef"}', "0123456789abcdef"),
        ("token MTExMTExMTExMTExMTExMTExMQ.GaBcDe.abcdefghijklmnopqrstuvwxyz0123", "MTExMTExMTExMTExMTExMTExMQ"),
    ],
)
def test_patterns_are_redacted(text: str, secret: str) -> None:
    """Keys, bearer tokens, api-key fields and Discord tokens are replaced."""
    cleaned = redact(text)
    assert secret not in cleaned
    assert "<redacted>" in cleaned


def test_registered_secret_is_redacted_anywhere() -> None:
    """A registered secret that matches no pattern (an Azure key, say) is still removed."""
    register_secrets(["azurekey0123456789ABCDEF"])
    assert redact("bad key azurekey0123456789ABCDEF given") == "bad key <redacted> given"


def test_filter_cleans_log_records(caplog: pytest.LogCaptureFixture) -> None:
    """The logging filter rewrites records with secrets in their arguments."""
    logger = logging.getLogger("tests.redaction")
    handler_filter = RedactingFilter(["hunter2-secret"])
    logger.addFilter(handler_filter)
    try:
        with caplog.at_level(logging.INFO, logger="tests.redaction"):
            logger.info("calling with %s and %s", "hunter2-secret", "sk-abcdefghijklmnop")
    finally:
        logger.removeFilter(handler_filter)
    assert "hunter2-secret" not in caplog.text
    assert "sk-abcdefghijklmnop" not in caplog.text
