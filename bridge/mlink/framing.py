"""MLink wire framing, without I/O.

A websocket payload holds either one plain JSON message (`/mlink/json`) or one or more
framed messages (`/mlink/jsonf`, `/mlink/proto`), each:

    \\r\\n  J|P  NNNNN  LLLLLL  body
    2     1    5      6       LLLLLL bytes   (message number and body length, zero padded)

Framed payloads are parsed by length, never by splitting on `\\r\\n`: protobuf bodies are binary
and may contain any byte. Every size is capped, and every violation raises a named error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import StrEnum
from types import ModuleType
from typing import NamedTuple

from bridge.errors import FramingError, GarbledFrame, OversizedFrame, TruncatedFrame

_native: ModuleType | None
try:  # the splitter's fast path in C (bridge/mlink/_framing_native.c), when it is built
    import bridge.mlink._framing_native as _native
except ImportError:  # pragma: no cover - the install could not compile it
    _native = None

FRAME_MARK = b"\r\n"
HEADER_LEN = 14
MAX_BODY_LEN = 999_999  # six decimal digits
DEFAULT_MAX_MESSAGE = MAX_BODY_LEN
DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024
_KINDS = (ord("J"), ord("P"))
# A whole frame header: mark, kind, five digits of message number, six of body length.
_HEADER = re.compile(rb"\r\n([JP])([0-9]{5})([0-9]{6})")
_KIND_NAMES = {b"J": "J", b"P": "P"}
_WHITESPACE = b" \t\r\n"


class WireForm(StrEnum):
    """How messages travel in websocket payloads."""

    JSON = "json"  # one plain JSON object per payload
    FRAMED = "jsonf"  # framed JSON, several per payload
    PROTO = "proto"  # framed protobuf


# A tuple: one is made per record, and the C splitter builds it directly.
class Frame(NamedTuple):
    """One message taken out of a payload: J (JSON) or P (protobuf), its number, its body."""

    kind: str
    number: int
    body: bytes


def encode_frame(body: bytes, number: int = 0, kind: str = "J") -> bytes:
    """`\\r\\n` + kind + 5-digit number + 6-digit length + body."""
    if kind not in ("J", "P"):
        raise ValueError(f"frame kind must be 'J' or 'P', not {kind!r}")
    if not 0 <= number <= 99_999:
        raise ValueError(f"message number {number} does not fit in five digits")
    if len(body) > MAX_BODY_LEN:
        raise OversizedFrame(f"body of {len(body)} bytes does not fit a framed message")
    return b"%s%s%05d%06d%s" % (FRAME_MARK, kind.encode(), number, len(body), body)


def is_framed(payload: bytes) -> bool:
    """Whether a payload starts with a framed-message header (\r\n, J|P, eleven digits).

    Plain JSON may also start with \r\n (the sample clients split payloads on it), so the
    whole header shape decides, not the mark alone.
    """
    return (
        payload[:2] == FRAME_MARK
        and len(payload) >= HEADER_LEN
        and payload[2] in _KINDS
        and payload[3:HEADER_LEN].isdigit()
    )


def split_frames(
    payload: bytes, max_message: int = DEFAULT_MAX_MESSAGE
) -> tuple[list[Frame], FramingError | None]:
    """The framed messages of a payload, in order, and the error that stopped the split (None
    when the whole payload was read). The frames before a bad header are all there: nothing
    good is lost. Trailing ASCII whitespace after the last frame is ignored."""
    frames: list[Frame] = []
    pos = 0
    if _native is not None:
        frames, pos = _native.split(Frame, payload, max_message)
        if pos == len(payload):
            return frames, None
    try:
        _split_python(payload, max_message, pos, frames)
    except FramingError as exc:
        return frames, exc
    return frames, None


def _split_python(payload: bytes, max_message: int, pos: int, frames: list[Frame]) -> None:
    """Append the frames from `pos` on; raise at the first thing that is not one."""
    end = len(payload)
    header_at = _HEADER.match
    while pos < end:
        header = header_at(payload, pos)
        if header is None:
            _end_or_raise(payload, pos, end)
            return
        kind, number, length = header.groups()
        size = int(length)
        if size > max_message:
            raise OversizedFrame(
                f"framed message at offset {pos} is {size} bytes; the limit is {max_message}"
            )
        start = pos + HEADER_LEN
        pos = start + size
        if pos > end:
            raise TruncatedFrame(
                f"framed message at offset {start - HEADER_LEN} announces {size} bytes, "
                f"{end - start} remain"
            )
        frames.append(Frame(_KIND_NAMES[kind], int(number), payload[start:pos]))


def iter_frames(payload: bytes, max_message: int = DEFAULT_MAX_MESSAGE) -> Iterator[Frame]:
    """Yield the framed messages in a payload in order, then raise the error that stopped the
    split, if any (see split_frames)."""
    yield from _then_raise(*split_frames(payload, max_message))


def _then_raise(frames: list[Frame], error: FramingError | None) -> Iterator[Frame]:
    yield from frames
    if error is not None:
        raise error


def _end_or_raise(payload: bytes, pos: int, end: int) -> None:
    """At `pos`, no frame header: returns when only trailing white space (or a lone CRLF, as
    the sample clients' split() tolerates) is left, else raises the error that names what is
    wrong."""
    header = payload[pos : pos + HEADER_LEN]
    if header[:2] != FRAME_MARK and payload[pos:end].strip(_WHITESPACE) == b"":
        return
    if len(header) < HEADER_LEN:
        if header == FRAME_MARK:
            return
        raise TruncatedFrame(
            f"framed header cut short at offset {pos}: {len(header)} of {HEADER_LEN} bytes"
        )
    raise GarbledFrame(f"bad framed header at offset {pos}: {bytes(header)!r}")


def split_messages(
    payload: bytes | str,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    max_message: int = DEFAULT_MAX_MESSAGE,
    *,
    framed: bool | None = None,
) -> tuple[list[Frame], FramingError | None]:
    """Every message in a websocket payload, framed or plain JSON, and the error that stopped
    the split (None when the whole payload was read); the messages before it are all there.

    A plain JSON payload is one message (kind J, number 0). Text payloads are UTF-8 encoded.
    `framed` True parses strictly as framed (a framed endpoint: a bad header is GarbledFrame),
    False as plain JSON; None decides by the payload's first bytes.
    """
    data = payload.encode() if isinstance(payload, str) else payload
    if len(data) > max_payload:
        error = f"payload of {len(data)} bytes exceeds the limit of {max_payload}"
        return [], OversizedFrame(error)
    if framed or (framed is None and is_framed(data)):
        return split_frames(data, max_message)
    # Plain JSON: normally one object; objects separated by CRLF are taken one by one, as the
    # documented sample client does (JSON text never holds a raw CR or LF inside a string).
    frames: list[Frame] = []
    parts = data.split(FRAME_MARK) if FRAME_MARK in data else [data]
    for part in parts:
        body = part.strip(_WHITESPACE)
        if len(body) > max_message:
            error = f"message of {len(body)} bytes exceeds the limit of {max_message}"
            return frames, OversizedFrame(error)
        if body:
            frames.append(Frame("J", 0, body))
    return frames, None


def iter_messages(
    payload: bytes | str,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    max_message: int = DEFAULT_MAX_MESSAGE,
    *,
    framed: bool | None = None,
) -> Iterator[Frame]:
    """Yield every message in a websocket payload, then raise the error that stopped the
    split, if any (see split_messages)."""
    yield from _then_raise(*split_messages(payload, max_payload, max_message, framed=framed))
