"""Shared test settings: hypothesis runs the same on every machine (no deadlines: CI is noisy),
and a real broker's topics can be read back with the bridge's own reader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaError, Message
from hypothesis import HealthCheck, settings

from bridge.tail import read_all

settings.register_profile(
    "bridge", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile("bridge")


@dataclass
class Read:
    messages: list[Message]
    errors: list[KafkaError]


ReadTopic = Callable[..., Read]


def _read_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 20.0) -> Read:
    errors: list[KafkaError] = []
    messages = read_all(bootstrap, topic, timeout=timeout, errors=errors)
    assert {m.partition() for m in messages} <= set(range(partitions))
    return Read(messages, errors)


@pytest.fixture
def read_topic() -> ReadTopic:
    """`read_topic(bootstrap, topic, partitions)`: everything in a topic, read to its end."""
    return _read_topic
