"""Read a bridge topic back and decode it, as a downstream consumer does."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from bridge.errors import BridgeError
from bridge.sink.serialization import SchemaLookup, decode_value


def read_all(
    bootstrap: str,
    topic: str,
    *,
    timeout: float = 20.0,
    errors: list[KafkaError] | None = None,
    config: Mapping[str, str] | None = None,
) -> list[Message]:
    """Every record of a topic: assign() all partitions from the start, read to partition EOF.

    The end is the partition-EOF event, not the high watermark (some brokers report it late).
    Consumer errors go to `errors` when given. Raises TimeoutError if a partition's end is not
    reached within `timeout`.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "mlink-bridge-tail",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "logger": logging.getLogger("librdkafka"),
            **(config or {}),
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = list(metadata.topics[topic].partitions) if topic in metadata.topics else []
        if not partitions:
            return []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out: list[Message] = []
        at_eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_eof) < len(partitions) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_eof.add(msg.partition() or 0)
                elif errors is not None:
                    errors.append(error)
                continue
            at_eof.discard(msg.partition() or 0)
            out.append(msg)
        if len(at_eof) < len(partitions):
            raise TimeoutError(f"{topic}: not every partition reached its end in {timeout:.0f}s")
        return out
    finally:
        consumer.close()


def schema_lookup(
    bootstrap: str,
    schemas_topic: str,
    registry: SchemaRegistryClient | None = None,
    config: Mapping[str, str] | None = None,
) -> SchemaLookup:
    """Writer schemas from the schemas topic (`<prefix>_schemas`) and a registry, if any."""
    schemas: dict[str, Any] = {}
    for msg in read_all(bootstrap, schemas_topic, config=config):
        key, value = msg.key(), msg.value()
        if key and value:
            schemas[key.decode()] = value
    return SchemaLookup(registry=registry, schemas=schemas)


def latest_values(
    bootstrap: str, topic: str, lookup: SchemaLookup, config: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any] | None]:
    """The newest value per key, as compaction would leave it (None: deleted)."""
    state: dict[str, dict[str, Any] | None] = {}
    messages = read_all(bootstrap, topic, config=config)
    for msg in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        key, value = msg.key(), msg.value()
        if key is None:
            continue
        state[key.decode()] = None if value is None else decode_value(value, lookup)
    return state


def tail_topic(
    bootstrap: str,
    topic: str,
    schemas_topic: str,
    count: int,
    *,
    registry: SchemaRegistryClient | None = None,
    config: Mapping[str, str] | None = None,
) -> list[str]:
    """The last `count` keys of a topic, decoded, as display lines. `config` holds further
    consumer properties (security settings, say)."""
    try:
        lookup = schema_lookup(bootstrap, schemas_topic, registry, config)
        state = latest_values(bootstrap, topic, lookup, config)
    except BridgeError as exc:
        return [f"cannot decode {topic}: {exc}"]
    lines = []
    for key, value in list(state.items())[-count:]:
        shown = "<tombstone>" if value is None else orjson.dumps(value).decode()
        lines.append(f"{key}: {shown[:300]}")
    return lines
