"""Pure policies for the connector: how long to wait before reconnecting, and why we left.

Retry policy is data (tenacity's wait strategies), kept apart from the loop it drives, and time
and randomness come from outside, so every decision here is testable without a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from tenacity import RetryCallState, wait_fixed, wait_random_exponential
from tenacity.wait import wait_base


class Failure(StrEnum):
    """Why a connection ended; each is counted apart."""

    CLOSED = "closed"  # the server closed or the TCP connection dropped
    KEEPALIVE = "keepalive"  # pings went unanswered: the peer is dead
    STALE = "stale"  # pongs came back but a live subscription stopped delivering data
    AUTH = "auth"  # credentials refused: wait long, never hot-loop
    GOODNIGHT = "goodnight"  # MLinkAdmin GoodNight: the server is going away
    CONNECT = "connect"  # could not connect or handshake (refused, DNS, HTTP status, timeout)
    PROTOCOL = "protocol"  # a subscription was refused or the server broke the protocol


def _full_jitter(low: float, high: float) -> wait_base:
    """AWS-style full jitter: uniform(0, min(high, low * 2**attempt))."""
    return wait_random_exponential(multiplier=low, max=high)


@dataclass(frozen=True)
class ReconnectPolicy:
    """How long to wait before the next connection attempt. Attempts never stop."""

    network: wait_base = field(default_factory=lambda: _full_jitter(0.5, 30.0))
    auth: wait_base = field(default_factory=lambda: wait_fixed(30.0) + _full_jitter(30.0, 570.0))
    healthy_after: float = 30.0  # a connection live this long starts the count over

    @classmethod
    def from_limits(
        cls, low: float, high: float, auth_low: float, auth_high: float
    ) -> ReconnectPolicy:
        return cls(
            network=_full_jitter(low, high),
            auth=wait_fixed(auth_low) + _full_jitter(auth_low, max(auth_high - auth_low, 0.0)),
        )

    def delay(self, failure: Failure, attempt: int) -> float:
        """Seconds to wait before attempt `attempt + 1` after `attempt` consecutive failures."""
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = max(1, attempt)
        strategy = self.auth if failure is Failure.AUTH else self.network
        return float(strategy(state))
