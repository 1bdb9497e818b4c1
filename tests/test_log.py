"""Secrets never reach logs or messages: pattern redaction, registered secrets, and the log filter."""

from __future__ import annotations

import io
import logging

import pytest

from bot.log import RedactingFilter, RedactingFormatter, redact, register_secrets


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


def test_filter_cleans_tracebacks_and_stacks() -> None:
    """A secret inside an exception's text (a library's 'illegal header' error, say) is gone from the logged
    traceback too, and from a logged stack."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(message)s", ["hunter2-secret"]))
    handler.addFilter(RedactingFilter(["hunter2-secret"]))
    logger = logging.getLogger("tests.redaction.traceback")
    logger.addHandler(handler)
    logger.propagate = False
    key = "-".join(("sk", "proj", "SECRETSECRET1234"))  # made up; joined so it reads as no key in the source
    try:
        try:
            raise RuntimeError(f"Illegal header value b'Bearer {key}' and hunter2-secret")
        except RuntimeError:
            logger.exception("the request failed")
        logger.warning("where %s", "we are", stack_info=True)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = stream.getvalue()
    assert "the request failed" in text
    assert "RuntimeError: Illegal header value" in text
    assert "SECRETSECRET" not in text
    assert "hunter2-secret" not in text
    assert "Stack (most recent call last)" in text
