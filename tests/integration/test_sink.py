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
