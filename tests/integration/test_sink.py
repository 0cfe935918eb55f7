"""The producer and topic admin against a real broker on 127.0.0.1."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from bridge.embedded import EmbeddedBroker
from bridge.errors import ConfigError
from bridge.sink.kafka import KafkaSink, OutRecord
from bridge.sink.topics import TopicSpec, ensure_topics

pytestmark = pytest.mark.integration


def sink_for(broker: EmbeddedBroker, **kwargs: object) -> KafkaSink:
    sink = KafkaSink({"bootstrap.servers": broker.bootstrap}, **kwargs)  # type: ignore[arg-type]
    sink.start()
    return sink


def test_topics_are_created_compacted_then_verified(broker: EmbeddedBroker) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    specs = [TopicSpec("t1.StockBookQuote", partitions=3), TopicSpec("t1._dlq", compacted=False)]
    first = ensure_topics(admin, specs)
    assert sorted(first.created) == ["t1.StockBookQuote", "t1._dlq"]
    again = ensure_topics(admin, specs)
    assert again.created == []
    assert sorted(again.verified) == ["t1.StockBookQuote", "t1._dlq"]


def test_a_topic_that_is_not_compacted_is_refused(broker: EmbeddedBroker) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    ensure_topics(admin, [TopicSpec("t2.plain", compacted=False)])
    with pytest.raises(ConfigError, match="not compact"):
        ensure_topics(admin, [TopicSpec("t2.plain")])
    report = ensure_topics(admin, [TopicSpec("t2.plain")], allow_non_compacted=True)
    assert report.verified == ["t2.plain"]
    with pytest.raises(ConfigError, match="BRIDGE_CREATE_TOPICS"):
        ensure_topics(admin, [TopicSpec("t2.absent")], create=False)


def test_records_headers_timestamps_and_tombstones_arrive(
    broker: EmbeddedBroker, read_topic: Any
) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    ensure_topics(admin, [TopicSpec("t3.data", partitions=2)])
    sink = sink_for(broker)
    try:
        now_ms = int(time.time() * 1000)
        for i in range(200):
            sink.send(
                OutRecord(
                    "t3.data",
                    f"K{i % 20}".encode(),
                    f"v{i}".encode(),
                    [("mlink.msg", b"StockBookQuote"), ("mlink.seq", str(i).encode())],
                    now_ms - i,
                    time.time_ns(),
                )
            )
        sink.send(OutRecord("t3.data", b"K0", None, [("mlink.msg", b"StockBookQuote")]))
        assert sink.flush(20) == 0
    finally:
        sink.close()
    got = read_topic(broker.bootstrap, "t3.data", 2)
    assert got.errors == []
    assert len(got.messages) == 201
    latest: dict[bytes, bytes | None] = {}
    for msg in sorted(got.messages, key=lambda m: (m.partition() or 0, m.offset() or 0)):
        key = msg.key()
        assert isinstance(key, bytes)
        latest[key] = msg.value()  # type: ignore[assignment]
    assert latest[b"K0"] is None  # the tombstone is last for its key
    assert latest[b"K19"] == b"v199"
    by_seq = {
        dict(m.headers() or [])["mlink.seq"]: m for m in got.messages if m.value() is not None
    }
    assert by_seq[b"7"].timestamp()[1] == now_ms - 7
    assert sink.stats.delivered == 201
    assert sink.stats.tombstones == 1
    assert sink.stats.latency_quantile(0.5) is not None


def java_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java client picks for a key: murmur2 (seed 0x9747b28c), positive."""
    m, h = 0x5BD1E995, (0x9747B28C ^ len(key)) & 0xFFFFFFFF
    tail = len(key) - len(key) % 4
    for i in range(0, tail, 4):
        k = (int.from_bytes(key[i : i + 4], "little") * m) & 0xFFFFFFFF
        k ^= k >> 24
        h = ((h * m) & 0xFFFFFFFF) ^ ((k * m) & 0xFFFFFFFF)
    rest = key[tail:]
    if rest:
        for i in reversed(range(len(rest))):
            h ^= rest[i] << (8 * i)
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def test_java_partition_matches_kafkas_published_murmur2_values() -> None:
    # Kafka's UtilsTest: murmur2("21") == -973932308, murmur2("foobar") == -790332482
    assert java_partition(b"21", 2**31) == -973932308 & 0x7FFFFFFF
    assert java_partition(b"foobar", 2**31) == -790332482 & 0x7FFFFFFF


def test_each_key_lands_where_a_java_producer_would_put_it(
    broker: EmbeddedBroker, read_topic: Any
) -> None:
    """Keyed records go to murmur2(key) % partitions, as Kafka's Java clients do: a consumer
    or Streams app joining these topics with others finds each key where it expects it."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    ensure_topics(admin, [TopicSpec("t6.data", partitions=5)])
    keys = [f"AAPL-{i}-NMS-EQT".encode() for i in range(60)] + [b"k", b"ab", b"abc"]
    sink = sink_for(broker)
    try:
        for key in keys:
            sink.send(OutRecord("t6.data", key, b"v", [("mlink.msg", b"StockBookQuote")]))
        assert sink.flush(20) == 0
    finally:
        sink.close()
    got = read_topic(broker.bootstrap, "t6.data", 5)
    assert got.errors == []
    placed = {m.key(): m.partition() for m in got.messages}
    assert placed == {key: java_partition(key, 5) for key in keys}
    assert len(set(placed.values())) == 5  # the keys spread over every partition


def test_a_full_queue_conflates_per_key_instead_of_blocking(
    broker: EmbeddedBroker, read_topic: Any
) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    ensure_topics(admin, [TopicSpec("t4.data", partitions=1)])
    sink = KafkaSink(
        {"bootstrap.servers": broker.bootstrap, "linger.ms": "200"}, queue_max_messages=100
    )
    sink.start()
    try:
        for i in range(2000):
            sink.send(OutRecord("t4.data", f"K{i % 50}".encode(), f"v{i}".encode()))
        assert sink.overflowing > 0
        assert sink.stats.conflated > 0
        assert sink.flush(30) == 0
    finally:
        sink.close()
    got = read_topic(broker.bootstrap, "t4.data", 1)
    latest = {m.key(): m.value() for m in got.messages}
    # Whatever was conflated away, every key ends at its newest value.
    assert latest == {f"K{k}".encode(): f"v{1950 + k}".encode() for k in range(50)}
    assert sink.stats.produced + sink.stats.conflated == 2000


def test_records_wait_for_a_broker_that_is_down_at_start(read_topic: Any) -> None:
    broker = EmbeddedBroker()
    sink = KafkaSink({"bootstrap.servers": broker.bootstrap})
    sink.start()
    try:
        for i in range(50):
            sink.send(OutRecord("t5.data", f"K{i}".encode(), b"x"))
        time.sleep(1.0)
        assert sink.stats.delivered == 0
        broker.start()
        ensure_topics(
            AdminClient({"bootstrap.servers": broker.bootstrap}),
            [TopicSpec("t5.data", partitions=1)],
        )
        assert sink.flush(30) == 0
        assert sink.stats.delivered == 50
        got = read_topic(broker.bootstrap, "t5.data", 1)
        assert len({m.key() for m in got.messages}) == 50
    finally:
        sink.close()
        broker.stop()


def test_a_record_librdkafka_refuses_is_counted_lost_and_the_rest_go_on(
    broker: EmbeddedBroker, read_topic: Any
) -> None:
    ensure_topics(AdminClient({"bootstrap.servers": broker.bootstrap}), [TopicSpec("t9.big", 1)])
    sink = KafkaSink({"bootstrap.servers": broker.bootstrap, "message.max.bytes": "2000"})
    sink.start()
    try:
        sink.send(OutRecord("t9.big", b"small-1", b"x" * 100))
        sink.send(OutRecord("t9.big", b"huge", b"x" * 10_000))  # above message.max.bytes
        sink.send(OutRecord("t9.big", b"small-2", b"x" * 100))
        assert sink.flush(30) == 0
    finally:
        sink.close()
    assert sink.stats.refused == 1
    assert sink.stats.lost == 1  # the bridge exits 1 at shutdown for this
    assert sink.stats.delivered == 2
    keys = [m.key() for m in read_topic(broker.bootstrap, "t9.big", 1).messages]
    assert keys == [b"small-1", b"small-2"]
