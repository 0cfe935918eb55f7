"""Logging for operators: one JSON object per line by default (`LOG_FORMAT=console` for people),
repeats rate-limited, secrets redacted.

Both filters sit on the handler, so they apply to every logger, librdkafka's included:

* `Redactor` replaces every known secret value (the API key, passwords, the JWT, registry and
  Kafka credentials, registered with `add_secret`) with `***` in the final message and in the
  formatted exception, whatever code produced them.
* `RepeatLimiter` lets a given message (same logger, level and text, numbers aside) through at
  most `burst` times per `window` seconds; the rest are counted, and the next one let through
  says how many were suppressed (`suppressed` in JSON). A flapping connection cannot flood the
  logs, and different messages (another subscription, another broker) do not silence each other.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

__all__ = ["JsonFormatter", "Redactor", "RepeatLimiter", "configure_logging", "redactor"]

# Attributes every LogRecord has; anything else was passed in `extra=` and goes into the JSON.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "suppressed",
    "taskName",
}
_MIN_SECRET = 4  # shorter values would redact ordinary words
_DIGITS = re.compile(r"\d+")  # "attempt 5" and "attempt 6" are the same message


class Redactor(logging.Filter):
    """Replaces known secret values with `***` in messages and exception text."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()

    def add_secret(self, value: str | None) -> None:
        if value and len(value) >= _MIN_SECRET and value not in self._secrets:
            # Longest first, so that a secret containing another is replaced whole.
            self._secrets = tuple(sorted((*self._secrets, value), key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        for name, value in list(record.__dict__.items()):  # fields passed with extra=
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, self.redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class RepeatLimiter(logging.Filter):
    """At most `burst` records per (logger, level, format string) in each `window` seconds."""

    def __init__(
        self,
        burst: int = 5,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = 10_000,
    ) -> None:
        super().__init__()
        self._burst = burst
        self._window = window
        self._clock = clock
        self._max_tracked = max_tracked
        self._lock = threading.Lock()
        # key -> [window start, passed in window, suppressed since the last one passed]
        self._seen: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, _DIGITS.sub("#", record.getMessage()[:300]))
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None:
                if len(self._seen) >= self._max_tracked:
                    self._seen.clear()
                self._seen[key] = [now, 1, 0]
                return True
            if now - entry[0] >= self._window:
                entry[0], entry[1] = now, 0
            if entry[1] >= self._burst:
                entry[2] += 1
                return False
            entry[1] += 1
            suppressed, entry[2] = int(entry[2]), 0
        if suppressed:
            record.suppressed = suppressed
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, msg, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                doc[name] = value
        suppressed = getattr(record, "suppressed", 0)
        if suppressed:
            doc["suppressed"] = suppressed
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        return orjson.dumps(doc, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        suppressed = getattr(record, "suppressed", 0)
        return f"{line} (+{suppressed} similar suppressed)" if suppressed else line


_redactor = Redactor()


def redactor() -> Redactor:
    """The process's redactor (secrets learnt later, e.g. a rotated JWT, are added to it)."""
    return _redactor


def configure_logging(
    level: str = "INFO", fmt: str = "json", secrets: Iterable[str | None] = ()
) -> Redactor:
    """Replace the root logger's handlers with one stderr handler; returns its redactor."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(_redactor)
    handler.addFilter(RepeatLimiter())
    for secret in secrets:
        _redactor.add_secret(secret)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # At DEBUG, websockets logs every frame cut to ~75 characters: a logon frame's password or
    # JWT would show in part, which the redactor cannot recognise. Its frames never go out.
    logging.getLogger("websockets").setLevel(max(root.level, logging.INFO))
    return _redactor
