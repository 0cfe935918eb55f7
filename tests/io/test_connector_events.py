"""What the connector passes on from one payload's events, and what ends the connection."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bridge.io.connector import _up_to_failure, _Watch
from bridge.io.policy import Failure
from bridge.mlink.messages import DataRecord
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
        subscriptions=[], config=SimpleNamespace(jwt_file=None), _clock=lambda: 7.0
    )
    watch = _Watch(owner, None, None)  # type: ignore[arg-type]
    assert watch.saw([record(1), record(2)])
    assert not watch.saw([record(3), SnapshotBegin("b")])
    assert not watch.saw([ServerClosing("GoodNight", "")])
