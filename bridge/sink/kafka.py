"""The producer: the only place that writes to Kafka.

An idempotent confluent-kafka Producer (acks=all, at most 5 requests in flight, keyed
murmur2_random partitioning) keeps per-key order. `send()` never blocks the websocket reader:
when librdkafka's bounded queue is full, records wait in an overflow map that keeps only the
newest value per (topic, key) — conflation, counted — and `pump()` moves them on as room appears.
A daemon thread serves delivery reports; they update the counters and the source-to-ack latency.
A fatal producer error (e.g. the idempotence guarantee is lost) is reported once through
`on_fatal`; the application must then stop.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException, Message, Producer

from bridge.errors import BridgeError
from bridge.settings import PRODUCER_DEFAULTS, redacted

log = logging.getLogger("mlink.sink")

Headers = list[tuple[str, str | bytes | None]]


class ProducerFatal(BridgeError):
    """The producer cannot go on (librdkafka fatal error): stop with a non-zero exit."""


@dataclass(slots=True)
class OutRecord:
    """One record for Kafka. `value` None is a tombstone."""

    topic: str
    key: bytes
    value: bytes | None
    headers: Headers = field(default_factory=list)
    timestamp_ms: int = 0  # 0: the producer's clock
    src_ns: int | None = None  # source time, for the latency histogram


PARTITION_BY_KEY = -1  # librdkafka's RD_KAFKA_PARTITION_UA: the partitioner picks, by key

# Upper bounds (ms) of the latency histogram buckets; the last bucket is open.
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


@dataclass
class SinkStats:
    """Counters the metrics endpoint and the shutdown report read. Updated from two threads;
    each field has one writer."""

    produced: int = 0  # handed to librdkafka by send()
    produced_acked: int = 0  # handed to librdkafka by send_acked() (schema records)
    delivered: int = 0  # acknowledged by the broker
    failed: int = 0  # delivery reports with an error
    refused: int = 0  # records librdkafka refused to take (too large, say)
    conflated: int = 0  # replaced in the overflow map before they could be produced
    tombstones: int = 0
    bytes_out: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_ms: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    latency_sum_ms: float = 0.0
    # Every latency observed while this is a list (the bench sets one for exact quantiles).
    latency_samples: list[float] | None = None

    @property
    def produced_total(self) -> int:
        return self.produced + self.produced_acked

    @property
    def lost(self) -> int:
        """Records that will never reach Kafka: failed deliveries and refused records."""
        return self.failed + self.refused

    def observe_latency(self, ms: float) -> None:
        if self.latency_samples is not None:
            self.latency_samples.append(ms)
        # The first bucket whose bound is >= ms (the last one, +Inf, past every bound).
        self.latency_ms[bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
        self.latency_sum_ms += ms

    def latency_quantile(self, q: float) -> float | None:
        """An upper bound for the q-quantile, from the histogram (None before any delivery)."""
        return histogram_quantile(self.latency_ms, q)


def histogram_quantile(counts: Sequence[int], q: float) -> float | None:
    """An upper bound for the q-quantile of LATENCY_BUCKETS_MS counts (None when empty)."""
    total = sum(counts)
    if not total:
        return None
    seen = 0
    for i, count in enumerate(counts):
        seen += count
        if seen >= q * total:
            return float(LATENCY_BUCKETS_MS[i]) if i < len(LATENCY_BUCKETS_MS) else float("inf")
    return float("inf")


def producer_config(properties: Mapping[str, str], queue_max_messages: int) -> dict[str, Any]:
    """The producer's librdkafka configuration: the bridge's defaults, then the operator's."""
    return {
        **PRODUCER_DEFAULTS,
        "queue.buffering.max.messages": str(queue_max_messages),
        **properties,
    }


class KafkaSink:
    def __init__(
        self,
        config: Mapping[str, str],
        *,
        queue_max_messages: int = 100_000,
        on_fatal: Callable[[ProducerFatal], None] | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._config = producer_config(config, queue_max_messages)
        self._on_fatal = on_fatal
        self._clock_ns = clock_ns
        self._producer: Producer | None = None
        self._overflow: dict[tuple[str, bytes], OutRecord] = {}
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._poll_lock = threading.Lock()
        self._fatal: ProducerFatal | None = None
        self.brokers_down = False  # librdkafka said all brokers are down; cleared by a delivery
        self.stats = SinkStats()
        # The per-record delivery callbacks: partials are C, so a report costs one Python call
        # (positional: a keyword would cost a dict per report).
        self._report = functools.partial(self._delivered, False)
        self._report_timed = functools.partial(self._delivered, True)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the producer and the delivery-report thread (no network I/O blocks here)."""
        config = dict(self._config)
        config["error_cb"] = self._on_error
        config.setdefault("logger", logging.getLogger("librdkafka"))  # not raw stderr
        log.info("producer config: %s", redacted(self._config))
        try:
            self._producer = Producer(config)
        except KafkaException as exc:
            raise ProducerFatal(f"bad producer configuration: {exc.args[0]}") from None
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-delivery", daemon=True)
        self._poller.start()

    def flush(self, timeout: float) -> int:
        """Move the overflow into the producer and wait up to `timeout` s; returns records left
        undelivered (in the producer's queue or the overflow)."""
        deadline = time.monotonic() + timeout
        producer = self._require()
        with self._poll_lock:  # one thread serves delivery reports: the counters have one writer
            while self._overflow and time.monotonic() < deadline:
                self.pump()
                producer.flush(min(0.1, max(0.0, deadline - time.monotonic())))
            remaining = producer.flush(max(0.0, deadline - time.monotonic()))
        return remaining + len(self._overflow)

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    @property
    def fatal(self) -> ProducerFatal | None:
        return self._fatal

    @property
    def queue_depth(self) -> int:
        """Records waiting: in librdkafka's queue plus the overflow map."""
        producer = self._producer
        return (len(producer) if producer is not None else 0) + len(self._overflow)

    @property
    def overflowing(self) -> int:
        return len(self._overflow)

    # -- sending --------------------------------------------------------------------------------

    def send(self, record: OutRecord) -> None:
        """Hand a record to Kafka without blocking; conflate per key when the queue is full."""
        if self._overflow:
            self._hold(record)
            return
        if not self._produce(record):
            self._hold(record)

    def send_acked(
        self, record: OutRecord, done: Callable[[str | None], None], timeout: float = 30.0
    ) -> None:
        """Produce one record now (never conflated) and call `done(error or None)` from the
        delivery thread once the broker answers. Waits up to `timeout` s for room in a full
        queue, then raises BufferError. Safe to call from another thread."""
        producer = self._require()
        deadline = time.monotonic() + timeout

        def report(err: KafkaError | None, msg: Message) -> None:
            self._delivered(False, err, msg)
            done(err.str() if err is not None else None)

        while True:
            try:
                producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    headers=record.headers,
                    on_delivery=report,
                )
                self.stats.produced_acked += 1  # its own counter: another thread writes it
                return
            except BufferError:
                if time.monotonic() > deadline or self._stop.is_set():
                    raise
                time.sleep(0.01)

    def pump(self) -> int:
        """Produce held records, oldest first, while the queue has room; returns how many."""
        moved = 0
        while self._overflow:
            ident = next(iter(self._overflow))
            if not self._produce(self._overflow[ident]):
                break
            del self._overflow[ident]
            moved += 1
        return moved

    def _hold(self, record: OutRecord) -> None:
        ident = (record.topic, record.key)
        if ident in self._overflow:
            self.stats.conflated += 1
            del self._overflow[ident]  # re-insert at the end: its newest value goes out last
        self._overflow[ident] = record

    def _produce(self, record: OutRecord) -> bool:
        producer = self._require()
        try:
            # Positional, in the binding's order (topic, value, key, partition, callback,
            # on_delivery, timestamp, headers): ~1.4 µs less per record than keywords. The
            # callbacks are bound once in __init__; a timed record's latency is read back from
            # its own timestamp (the source time, in ms) when the ack comes.
            producer.produce(
                record.topic,
                record.value,
                record.key,
                PARTITION_BY_KEY,
                self._report_timed if record.src_ns else self._report,
                None,
                record.timestamp_ms,
                record.headers,
            )
        except BufferError:
            return False
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.fatal():
                self._fail(ProducerFatal(f"producer fatal error: {error.str()}"))
                raise
            # One record librdkafka refuses (too large, say) must not stop the stream: it is
            # counted as failed, which makes the process exit non-zero at the end.
            name = error.name() if isinstance(error, KafkaError) else type(exc).__name__
            self.stats.refused += 1  # this thread's own counter (failed is the delivery thread's)
            log.error("record for %s refused by the producer: %s", record.topic, name)
            return True
        stats = self.stats
        stats.produced += 1
        if record.value is None:
            stats.tombstones += 1
        else:
            stats.bytes_out += len(record.value)
        return True

    # -- callbacks (delivery thread) ------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            producer = self._producer
            if producer is None:
                return
            with self._poll_lock:
                producer.poll(0.05)

    def _delivered(self, timed: bool, err: KafkaError | None, msg: Message) -> None:
        stats = self.stats
        if err is not None:
            stats.failed += 1
            name = err.name()
            stats.errors[name] = stats.errors.get(name, 0) + 1
            log.warning("delivery to %s failed: %s", msg.topic(), err.str())
            if err.fatal():
                self._fail(ProducerFatal(f"producer fatal error: {err.str()}"))
            return
        stats.delivered += 1
        self.brokers_down = False
        if timed:
            kind, stamp_ms = msg.timestamp()
            if kind != TIMESTAMP_NOT_AVAILABLE:
                stats.observe_latency(self._clock_ns() / 1e6 - stamp_ms)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fail(ProducerFatal(f"producer fatal error: {err.str()}"))
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.brokers_down = True
            log.warning("all Kafka brokers are down; records wait in the queue")
        else:
            log.info("producer: %s", err.str())

    def _fail(self, error: ProducerFatal) -> None:
        if self._fatal is None:
            self._fatal = error
            log.error("%s", error)
            if self._on_fatal is not None:
                self._on_fatal(error)

    def _require(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("KafkaSink.start() first")
        return self._producer
