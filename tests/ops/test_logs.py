"""Structured logs: JSON lines, secrets redacted wherever they come from, repeats rate-limited."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bridge.ops.logs import (
    ConsoleFormatter,
    JsonFormatter,
    Redactor,
    RepeatLimiter,
    configure_logging,
)
from bridge.settings import load_settings


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, Redactor]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    redactor = Redactor()
    handler.addFilter(redactor)
    handler.addFilter(RepeatLimiter(burst=3, window=60.0, clock=lambda: 0.0))
    logger = logging.getLogger("test.ops.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream, redactor
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_extra_fields(
    captured: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    logger, stream, _ = captured
    logger.info("subscription %s: %s -> %s", "books", "snapshot", "live", extra={"state": "live"})
    (doc,) = lines(stream)
    assert doc["msg"] == "subscription books: snapshot -> live"
    assert doc["level"] == "info"
    assert doc["logger"] == "test.ops.logs"
    assert doc["state"] == "live"
    assert str(doc["ts"]).endswith("Z")


def test_secrets_are_redacted_in_messages_arguments_and_tracebacks(
    captured: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    logger, stream, redactor = captured
    env = {
        "BRIDGE_SUBSCRIPTIONS": '[{"msgName": "StockBookQuote"}]',
        "MLINK_API_KEY": "key-1234567",
        "MLINK_API_PASSWORD": "pw-abcdefg",
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "sr-user:sr-secret-99",
        "KAFKA_SASL_PASSWORD": "kafka-pass-42",
    }
    for secret in load_settings(env).secret_values():
        redactor.add_secret(secret)
    logger.warning("connect with %s", "key-1234567.pw-abcdefg")
    logger.warning("registry said: bad user info sr-user:sr-secret-99")
    try:
        raise RuntimeError("SASL failed for kafka-pass-42")
    except RuntimeError:
        logger.exception("producer: %s", "sr-secret-99")
    text = stream.getvalue()
    for secret in ("key-1234567", "pw-abcdefg", "sr-secret-99", "kafka-pass-42"):
        assert secret not in text
    docs = lines(stream)
    assert docs[0]["msg"] == "connect with ***"
    assert "***" in str(docs[2]["exception"])


def test_repeats_are_limited_and_the_next_line_says_how_many_were_dropped() -> None:
    now = [0.0]
    limiter = RepeatLimiter(burst=2, window=10.0, clock=lambda: now[0])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ConsoleFormatter())
    handler.addFilter(limiter)
    logger = logging.getLogger("test.ops.repeat")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for attempt in range(50):
            logger.warning("reconnecting (attempt %d)", attempt)  # the same format string
        logger.warning("another message")
        now[0] = 11.0  # a new window
        logger.warning("reconnecting (attempt %d)", 50)
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue().splitlines()
    assert len(out) == 4
    assert "attempt 0" in out[0]
    assert "attempt 1" in out[1]
    assert "another message" in out[2]
    assert "attempt 50" in out[3]
    assert out[3].endswith("(+48 similar suppressed)")


def test_different_messages_with_one_format_are_not_silenced_by_each_other(
    captured: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    logger, stream, _ = captured  # burst 3 per window
    for label in ("a", "b", "c", "d", "e", "f"):
        logger.info("subscription %s: %s -> %s", label, "snapshot", "live")
    assert len(lines(stream)) == 6


def test_fields_passed_as_extra_are_redacted_too(
    captured: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    logger, stream, redactor = captured
    redactor.add_secret("tok-987654")
    logger.warning("status", extra={"detail": "auth: server said tok-987654 is expired"})
    (doc,) = lines(stream)
    assert doc["detail"] == "auth: server said *** is expired"


@pytest.mark.parametrize(("level", "websockets_level"), [("DEBUG", "INFO"), ("WARNING", "WARNING")])
def test_websockets_frames_are_never_logged(level: str, websockets_level: str) -> None:
    """At DEBUG websockets logs each frame cut short: part of a logon frame's credentials,
    which no redactor can recognise. Its logger stays at INFO or above."""
    root = logging.getLogger()
    handlers, before = list(root.handlers), root.level
    library = logging.getLogger("websockets")
    library_before = library.level
    try:
        configure_logging(level)
        assert logging.getLevelName(library.getEffectiveLevel()) == websockets_level
        assert root.level == logging.getLevelName(level)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(before)
        library.setLevel(library_before)
