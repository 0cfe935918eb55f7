"""What the connector passes on from one payload's events, and what ends the connection."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bridge.io.connector import Credentials, _up_to_failure, _Watch
from bridge.io.policy import Failure
from bridge.mlink.messages import DataRecord, MLinkLogon
from bridge.mlink.session import (
    AuthFailed,
    Record,
    ServerClosing,
    SnapshotBegin,
    SubscriptionEnded,
)


def record(n: int) -> Record:
    return Record("b", DataRecord("StockBookQuote", {}, {"n": n}, b"{}"), False)


def test_refused_credentials_end_the_connection_and_are_not_passed_on() -> None:
    events = [record(1), ServerClosing("GoodNight", ""), AuthFailed("AuthError", "bad"), record(2)]
    batch, failed, goodnight = _up_to_failure(events)
    assert batch == [record(1), events[1], record(2)]  # records that arrived still pass
    assert failed is not None
    assert failed.failure is Failure.AUTH
    assert "AuthError" in str(failed)
    assert goodnight


def test_an_ended_subscription_is_passed_on_then_ends_the_connection() -> None:
    """Records after it in the same payload pass too: they arrived, and the resume mark
    counts them (dropped, a resume from that mark would never send them again)."""
    ended = SubscriptionEnded("b", "Replaced", "newer query")
    batch, failed, goodnight = _up_to_failure([record(1), ended, record(2), SnapshotBegin("c")])
    assert batch == [record(1), ended, record(2)]
    assert failed is not None
    assert failed.failure is Failure.PROTOCOL
    assert not goodnight


def test_without_a_failure_every_event_passes() -> None:
    events = [record(1), ServerClosing("GoodNight", ""), record(2)]
    assert _up_to_failure(events) == (events, None, True)


def test_the_watch_says_whether_a_payload_held_only_records() -> None:
    owner: Any = SimpleNamespace(
        subscriptions=[],
        config=SimpleNamespace(jwt_file=None),
        _clock=lambda: 7.0,
        _jwt_mtime=None,
    )
    watch = _Watch(owner, None, None)  # type: ignore[arg-type]
    assert watch.saw([record(1), record(2)])
    assert not watch.saw([record(3), SnapshotBegin("b")])
    assert not watch.saw([ServerClosing("GoodNight", "")])


class _Session:
    def __init__(self) -> None:
        self.logons: list[str | None] = []

    def relogon(self, logon: MLinkLogon) -> None:
        self.logons.append(logon.jwt_token)

    def data_to_send(self) -> list[bytes]:
        return [b"logon"]


class _Socket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, payload: bytes) -> None:
        self.sent.append(payload)


async def test_a_rotated_jwt_file_logs_on_again_and_an_empty_one_is_read_again(
    tmp_path: Path,
) -> None:
    jwt = tmp_path / "jwt"
    jwt.write_text("jwt-1")
    os.utime(jwt, (1_000, 1_000))

    def credentials() -> Credentials:
        text = jwt.read_text().strip()
        return Credentials(logon=MLinkLogon(jwt_token=text) if text else None)

    owner: Any = SimpleNamespace(
        subscriptions=[],
        config=SimpleNamespace(jwt_file=jwt, credentials=credentials),
        _clock=lambda: 7.0,
        _jwt_mtime=1_000.0,  # when the connection's credentials were read
    )
    session, ws = _Session(), _Socket()
    watch = _Watch(owner, session, ws)  # type: ignore[arg-type]
    await watch._check_jwt()
    assert session.logons == []  # unchanged
    jwt.write_text("")  # the rotator truncates first ...
    os.utime(jwt, (2_000, 2_000))
    await watch._check_jwt()
    assert session.logons == []
    jwt.write_text("jwt-2")  # ... and writes within the same clock tick
    os.utime(jwt, (2_000, 2_000))
    await watch._check_jwt()
    assert session.logons == ["jwt-2"]
    assert ws.sent == [b"logon"]
    await watch._check_jwt()
    assert session.logons == ["jwt-2"]  # once per change
