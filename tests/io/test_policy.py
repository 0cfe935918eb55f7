from __future__ import annotations

import pytest

from bridge.io.policy import Failure, ReconnectPolicy


@pytest.mark.parametrize("failure", [f for f in Failure if f is not Failure.AUTH])
def test_network_delays_are_full_jitter_under_a_growing_cap(failure: Failure) -> None:
    policy = ReconnectPolicy.from_limits(0.5, 30.0, 30.0, 600.0)
    for attempt in range(1, 12):
        cap = min(30.0, 0.5 * 2 ** (attempt - 1))
        delays = [policy.delay(failure, attempt) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        # Full jitter spreads over the whole range, not just near the cap.
        assert min(delays) < cap * 0.2
        assert max(delays) > cap * 0.8


def test_auth_failures_wait_long_and_never_hot_loop() -> None:
    policy = ReconnectPolicy.from_limits(0.5, 30.0, 30.0, 600.0)
    for attempt in range(1, 10):
        delays = [policy.delay(Failure.AUTH, attempt) for _ in range(100)]
        assert all(30.0 <= d <= 600.0 for d in delays)


def test_attempts_never_stop() -> None:
    policy = ReconnectPolicy()
    assert policy.delay(Failure.CLOSED, 10_000) <= 30.0
