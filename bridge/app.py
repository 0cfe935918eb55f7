"""Wiring and lifecycle: MLink events in, Kafka records out.

`Pipeline` turns connector events into Kafka records: data records become Avro values keyed by
their canonical primary key on compacted topics, deletes become tombstones, snapshot and
connection changes become status records, and anything that cannot be converted goes to the
dead-letter topic with the reason — the stream never stops for one bad record.
`run_bridge` builds everything from Settings, runs until SIGTERM/SIGINT, flushes within the
budget, and returns the process exit code (0 only if nothing was lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from bridge.errors import BridgeError, ConfigError, KeyFormatError
from bridge.io.connector import (
    ConnectionDown,
    ConnectionUp,
    Connector,
    ConnectorConfig,
    ConnectorEvent,
    Credentials,
    SubscriptionSpec,
)
from bridge.io.policy import Failure, ReconnectPolicy
from bridge.mlink.catalog import Catalog, MessageSpec, default_catalog
from bridge.mlink.messages import (
    MLinkLogon,
    MLinkQuery,
    MLinkStream,
    MLinkSubscribe,
    MsgTypeFilter,
    QueryType,
)
from bridge.mlink.session import (
    ProtocolViolation,
    Record,
    SnapshotBegin,
    SnapshotComplete,
    SubscriptionEnded,
    SubscriptionFailed,
)
from bridge.mlink.where import compile_where
from bridge.settings import AuthMode, Mode, ResumeMode, Settings, SubscriptionConfig
from bridge.sink.avro import SchemaHistory, SchemaMismatch
from bridge.sink.kafka import KafkaSink, OutRecord, ProducerFatal
from bridge.sink.serialization import (
    ConfluentSerializer,
    RegistryError,
    RegistryUnavailable,
    SerializationContext,
    SingleObjectSerializer,
    ValueSerializer,
)
from bridge.sink.topics import TopicError, TopicSpec, ensure_topics
from transforms import TransformError, TransformOptions, compile_plan

log = logging.getLogger("mlink.bridge")

# After the registry fails, records that need it go to the dead-letter topic for this long
# before the next try, so a registry that hangs costs one timeout, not one per record.
REGISTRY_RETRY_AFTER = 30.0

# Why a record can go to the dead-letter topic instead of its own.
CONVERSION_ERRORS = (KeyFormatError, TransformError, SchemaMismatch, RegistryError)


def view_names(view: str | None) -> tuple[str, ...]:
    """MLink view text (`a|b|c`, commas or spaces also work) as field names."""
    if not view:
        return ()
    return tuple(n for n in view.replace(",", "|").replace(" ", "|").split("|") if n)


@dataclass
class Channel:
    """One subscription's records of one message type, on their way to one topic."""

    label: str
    topic: str
    history: SchemaHistory
    ctx: SerializationContext
    known_keys: set[bytes] = field(default_factory=set)  # for reconciliation
    snapshot_keys: set[bytes] | None = None


@dataclass
class PipelineStats:
    records_in: dict[str, int] = field(default_factory=dict)  # per message type
    records_out: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    tombstones: int = 0
    reconciled: int = 0
    schema_versions: int = 0


class Pipeline:
    def __init__(
        self,
        *,
        settings: Settings,
        subscriptions: Sequence[SubscriptionConfig],
        serializer: ValueSerializer,
        sink: KafkaSink,
        catalog: Catalog | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.settings = settings
        self.catalog = catalog or default_catalog()
        self.subscriptions = {s.name: s for s in subscriptions}
        self.serializer = serializer
        self.sink = sink
        self._clock_ns = clock_ns
        self._channels: dict[tuple[str | None, str], Channel | None] = {}
        self.epochs: dict[str, int] = dict.fromkeys(self.subscriptions, 0)
        self.states: dict[str, str] = dict.fromkeys(self.subscriptions, "connecting")
        self.stats = PipelineStats()
        self._registry_down_until = 0.0

    # -- events -------------------------------------------------------------------------------

    def handle(self, event: ConnectorEvent) -> None:
        if isinstance(event, Record):
            self._record(event)
        elif isinstance(event, SnapshotBegin):
            self.epochs[event.label] = self.epochs.get(event.label, 0) + 1
            for channel in self._channels_of(event.label):
                channel.snapshot_keys = set()
            self._status(event.label, "snapshot")
        elif isinstance(event, SnapshotComplete):
            self._reconcile(event.label)
            self._status(event.label, "live", snapshotSize=event.records)
        elif isinstance(event, ConnectionUp):
            for label in self.subscriptions:
                self._status(label, "connecting")
        elif isinstance(event, ConnectionDown):
            state = "stale" if event.failure is Failure.STALE else "down"
            for label in self.subscriptions:
                self._status(label, state, detail=f"{event.failure}: {event.detail}")
        elif isinstance(event, SubscriptionFailed):
            log.error("MLink refused subscription %s: %s", event.label, event.detail)
            self._status(event.label, "down", detail=f"refused: {event.detail}")
        elif isinstance(event, SubscriptionEnded):
            self._status(event.label, "down", detail=f"ended: {event.state} {event.detail}")
        elif isinstance(event, ProtocolViolation):
            self._dead_letter(event.raw, str(event.error), "protocol", "", "")

    def _record(self, event: Record) -> None:
        record = event.record
        mtyp = record.mtyp
        stats = self.stats
        stats.records_in[mtyp] = stats.records_in.get(mtyp, 0) + 1
        channel = self._channel(event.label, mtyp)
        if channel is None:
            self._dead_letter(
                record.raw, f"unknown message type {mtyp}", "catalog", event.label, mtyp
            )
            return
        message = record.message
        recv_ns = self._clock_ns()
        waiting = self._registry_down_until and time.monotonic() < self._registry_down_until
        if waiting and not record.deleted:  # a tombstone needs no schema
            # The registry just failed: do not stall the reader on it for every record.
            reason = "schema registry unavailable (waiting before the next try)"
            self._dead_letter(record.raw, reason, "RegistryUnavailable", event.label, mtyp)
            return
        try:
            if record.deleted:
                key = channel.history.plan.key_of(message)
                value: bytes | None = None
                src_ns: int | None = None
            else:
                normalized = channel.history.plan.apply(message)
                if normalized.unknown:
                    self._evolve(channel, normalized.unknown)
                    normalized = channel.history.plan.apply(message)
                value = self.serializer(normalized.value, channel.ctx)
                key, src_ns = normalized.key, normalized.src_ns
        except CONVERSION_ERRORS as exc:
            self._dead_letter(record.raw, str(exc), type(exc).__name__, event.label, mtyp)
            return
        except RegistryUnavailable as exc:
            self._registry_down_until = time.monotonic() + REGISTRY_RETRY_AFTER
            self._dead_letter(record.raw, str(exc), type(exc).__name__, event.label, mtyp)
            return
        header = record.header
        epoch = self.epochs.get(event.label or "", 0)
        headers: list[tuple[str, str | bytes | None]] = [
            ("mlink.msg", mtyp),
            ("mlink.seq", str(header.get("seqN", ""))),
            ("mlink.sent", str(header.get("sTim", ""))),
            ("mlink.src_ts", str(src_ns) if src_ns else ""),
            ("bridge.recv_ns", str(recv_ns)),
            ("bridge.epoch", str(epoch)),
        ]
        key_bytes = key.encode()
        stamp_ns = src_ns or recv_ns
        # Latency is measured on live records only: a snapshot replays old source times.
        latency_from = None if event.snapshot else stamp_ns
        self.sink.send(
            OutRecord(channel.topic, key_bytes, value, headers, stamp_ns // 1_000_000, latency_from)
        )
        stats.records_out[mtyp] = stats.records_out.get(mtyp, 0) + 1
        if value is None:
            stats.tombstones += 1
            channel.known_keys.discard(key_bytes)
        else:
            channel.known_keys.add(key_bytes)
            if event.snapshot and channel.snapshot_keys is not None:
                channel.snapshot_keys.add(key_bytes)

    def _evolve(self, channel: Channel, unknown: Mapping[str, Any]) -> None:
        before = channel.history.current
        after = channel.history.evolve(unknown)
        if after is not before:
            self.stats.schema_versions += 1
            channel.ctx = SerializationContext(channel.topic, after)
            log.info(
                "schema %s evolved to version %d: new fields %s",
                after.name,
                after.version,
                sorted(unknown),
            )

    def _reconcile(self, label: str) -> None:
        """Tombstones for keys this process wrote that a fresh snapshot no longer has."""
        for channel in self._channels_of(label):
            seen, channel.snapshot_keys = channel.snapshot_keys, None
            if not self.settings.bridge_reconcile or seen is None:
                continue
            for key in sorted(channel.known_keys - seen):
                self.sink.send(OutRecord(channel.topic, key, None, [("bridge.reconciled", "1")]))
                channel.known_keys.discard(key)
                self.stats.reconciled += 1

    # -- topics, channels, status, dead letters -----------------------------------------------

    def _channels_of(self, label: str) -> list[Channel]:
        return [c for (lab, _), c in self._channels.items() if lab == label and c is not None]

    def _channel(self, label: str | None, mtyp: str) -> Channel | None:
        ident = (label, mtyp)
        if ident in self._channels:
            return self._channels[ident]
        spec = self.catalog.get(mtyp)
        sub = self.subscriptions.get(label) if label else None
        channel = None
        if spec is not None:
            options = TransformOptions(
                view=view_names(sub.view) if sub else (),
                rename=sub.rename if sub else {},
                drop=sub.drop if sub else (),
            )
            history = SchemaHistory(compile_plan(spec, options, self.catalog))
            topic = self.settings.topic_for(sub, spec.name) if sub else self.default_topic(spec)
            channel = Channel(
                label or "", topic, history, SerializationContext(topic, history.current)
            )
        self._channels[ident] = channel
        return channel

    def default_topic(self, spec: MessageSpec) -> str:
        return f"{self.settings.bridge_topic_prefix}{spec.name}"

    def _status(self, label: str, state: str, **extra: Any) -> None:
        self.states[label] = state
        body = {
            "subscription": label,
            "state": state,
            "epoch": self.epochs.get(label, 0),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        }
        self.sink.send(OutRecord(self.settings.status_topic, label.encode(), orjson.dumps(body)))

    def _dead_letter(
        self, raw: bytes, reason: str, stage: str, label: str | None, mtyp: str
    ) -> None:
        self.stats.dead_letters += 1
        log.warning("dead letter (%s, %s): %s", stage, mtyp or "?", reason[:200])
        headers: list[tuple[str, str | bytes | None]] = [
            ("dlq.reason", reason[:1000]),
            ("dlq.stage", stage),
            ("dlq.source", label or ""),
            ("mlink.msg", mtyp),
        ]
        # A unique key: dead letters are evidence, never conflated with one another.
        key = f"{label or ''}:{mtyp}:{self.stats.dead_letters}".encode()
        self.sink.send(OutRecord(self.settings.dlq_topic, key, raw, headers))


# ---------------------------------------------------------------------------------------------
# Building from settings


def subscription_specs(
    settings: Settings, subs: Sequence[SubscriptionConfig], catalog: Catalog
) -> list[SubscriptionSpec]:
    specs = []
    for sub in subs:
        spec = catalog.get(sub.msg_name)
        if spec is None:
            raise ConfigError(f"BRIDGE_SUBSCRIPTIONS: unknown msgName {sub.msg_name!r}")
        specs.append(
            SubscriptionSpec(
                sub.name,
                _request_builder(sub, spec.name),
                sub.stale_after if sub.stale_after is not None else settings.mlink_stale_after,
                accepts_for(sub, spec, catalog),
            )
        )
    return specs


def _request_builder(
    sub: SubscriptionConfig, msg_name: str
) -> Callable[[int | None], MLinkStream | MLinkSubscribe | MLinkQuery]:
    label = sub.name

    def build(highwater: int | None) -> MLinkStream | MLinkSubscribe | MLinkQuery:
        if sub.mode is Mode.STREAM:
            return MLinkStream(label, msg_name, sub.where, sub.view, sub.active_latency, highwater)
        if sub.mode is Mode.SUBSCRIBE:
            views = [(msg_name, sub.view)] if sub.view else []
            return MLinkSubscribe(
                [(msg_name, k) for k in sub.keys], views, active_latency=sub.active_latency
            )
        kind = QueryType.INCR_SUBSCRIPTION if highwater else QueryType.FULL_SUBSCRIPTION
        return MLinkQuery(
            label,
            kind,
            [MsgTypeFilter(msg_name=msg_name, where=sub.where, view=sub.view)],
            active_latency=sub.active_latency,
            highwater_ts=highwater,
        )

    return build


def accepts_for(
    sub: SubscriptionConfig, spec: MessageSpec, catalog: Catalog
) -> Callable[[Mapping[str, Any]], bool] | None:
    """The subscription's own filter, so that same-type subscriptions are told apart. A where
    clause MLink would accept but this evaluator cannot read is a configuration error."""
    if sub.mode is Mode.SUBSCRIBE:
        keys = set(sub.keys)
        plan = compile_plan(spec, TransformOptions(), catalog)
        return lambda message: _safe_key(plan.key_of, message) in keys
    if sub.where:
        try:
            return compile_where(sub.where, spec, catalog=catalog)
        except ValueError as exc:
            raise ConfigError(f"BRIDGE_SUBSCRIPTIONS: {sub.name}: where: {exc}") from None
    return None


def _safe_key(key_of: Callable[[Mapping[str, Any]], str], message: Mapping[str, Any]) -> str:
    try:
        return key_of(message)
    except BridgeError:
        return ""


def credentials_for(settings: Settings) -> Callable[[], Credentials]:
    def credentials() -> Credentials:
        jwt = settings.jwt()
        api_key = settings.mlink_api_key.get_secret_value() if settings.mlink_api_key else None
        password = (
            settings.mlink_api_password.get_secret_value() if settings.mlink_api_password else None
        )
        logon = MLinkLogon(api_key, password, jwt) if (api_key or jwt) else None
        token = settings.api_token() or jwt
        return Credentials(token=token, logon=logon)

    return credentials


def topic_specs(
    settings: Settings, subs: Sequence[SubscriptionConfig], catalog: Catalog
) -> list[TopicSpec]:
    partitions, replication = settings.bridge_topic_partitions, settings.bridge_topic_replication
    names = {settings.topic_for(sub, catalog.get(sub.msg_name).name) for sub in subs}  # type: ignore[union-attr]
    specs = [TopicSpec(name, partitions, replication) for name in sorted(names)]
    specs.append(TopicSpec(settings.status_topic, 1, replication))
    specs.append(TopicSpec(settings.dlq_topic, 1, replication, compacted=False))
    specs.append(TopicSpec(settings.schemas_topic, 1, replication))
    return specs


class SchemaTopicPublisher:
    """Publishes a writer schema to `<prefix>_schemas` and waits for the broker's ack, so that
    the schema is durable before the first record that uses it."""

    def __init__(self, sink: KafkaSink, topic: str, timeout: float = 30.0) -> None:
        self._sink = sink
        self._topic = topic
        self._timeout = timeout

    def __call__(self, fingerprint_hex: str, schema_json: bytes) -> None:
        done = threading.Event()
        outcome: list[str | None] = []

        def delivered(error: str | None) -> None:
            outcome.append(error)
            done.set()

        self._sink.send_acked(
            OutRecord(self._topic, fingerprint_hex.encode(), schema_json), delivered
        )
        if not done.wait(self._timeout) or outcome[0] is not None:
            reason = outcome[0] if outcome else "no acknowledgement in time"
            raise RegistryUnavailable(f"cannot publish schema {fingerprint_hex}: {reason}")


async def run_bridge(
    settings: Settings,
    *,
    catalog: Catalog | None = None,
    stop: asyncio.Event | None = None,
    on_pipeline: Callable[[Pipeline, KafkaSink, Connector], None] | None = None,
    registry: SchemaRegistryClient | None = None,
) -> int:
    """The connector process. Returns the exit code: 0 only if every record was delivered."""
    catalog = catalog or default_catalog()
    subs = settings.subscriptions()
    specs = subscription_specs(settings, subs, catalog)
    kafka = dict(settings.kafka_properties)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    fatal: list[ProducerFatal] = []

    def on_fatal(error: ProducerFatal) -> None:
        fatal.append(error)
        loop.call_soon_threadsafe(stop.set)

    sink = KafkaSink(
        kafka, queue_max_messages=settings.bridge_queue_max_messages, on_fatal=on_fatal
    )
    sink.start()
    # The producer first (above): a configuration it cannot work with fails before the wait
    # for the broker.
    admin_config: dict[str, Any] = {**kafka, "logger": logging.getLogger("librdkafka")}
    admin = AdminClient(admin_config)
    await _ensure_topics_with_retry(admin, topic_specs(settings, subs, catalog), settings, stop)
    if stop.is_set():
        sink.close()
        return 0
    serializer: ValueSerializer
    if registry is not None:
        serializer = ConfluentSerializer(registry)
    elif settings.schema_registry_url:
        conf: dict[str, Any] = {
            "url": settings.schema_registry_url,
            "timeout": settings.schema_registry_timeout,
        }
        if settings.schema_registry_basic_auth_user_info is not None:
            conf["basic.auth.user.info"] = (
                settings.schema_registry_basic_auth_user_info.get_secret_value()
            )
        # new_client: a mock:// URL gives the client's in-memory registry (tests, trials).
        serializer = ConfluentSerializer(SchemaRegistryClient.new_client(conf))
    else:
        serializer = SingleObjectSerializer(SchemaTopicPublisher(sink, settings.schemas_topic))

    connector = Connector(
        ConnectorConfig(
            settings.mlink_url,
            credentials_for(settings),
            header_auth=settings.mlink_auth is AuthMode.HEADER,
            max_message=settings.mlink_max_message_bytes,
            ping_interval=settings.mlink_ping_interval,
            ping_timeout=settings.mlink_ping_timeout,
            resume_highwater=settings.mlink_resume is ResumeMode.HIGHWATER,
            jwt_file=settings.mlink_jwt_file,
        ),
        specs,
        policy=ReconnectPolicy.from_limits(
            settings.mlink_reconnect_min,
            settings.mlink_reconnect_max,
            settings.mlink_auth_backoff_min,
            settings.mlink_auth_backoff_max,
        ),
    )
    pipeline = Pipeline(settings=settings, subscriptions=subs, serializer=serializer, sink=sink)
    if on_pipeline is not None:
        on_pipeline(pipeline, sink, connector)

    async def pump() -> None:
        while True:
            sink.pump()
            await asyncio.sleep(0.02)

    async def read() -> None:
        handle = pipeline.handle
        async for batch in connector.batches():
            for event in batch:
                handle(event)

    pumper = asyncio.create_task(pump(), name="sink-pump")
    reader = asyncio.create_task(read(), name="mlink-reader")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
    connector.stop()
    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(reader, 5)
    stopper.cancel()
    pumper.cancel()
    left = await asyncio.to_thread(sink.flush, settings.bridge_flush_timeout)
    sink.close()
    if reader.done() and not reader.cancelled() and reader.exception() is not None:
        log.error("reader failed: %s", reader.exception())
        return 1
    if fatal:
        log.error("stopped on a fatal producer error: %s", fatal[0])
        return 1
    if left:
        log.error(
            "shutdown: %d records were not delivered within %.0fs",
            left,
            settings.bridge_flush_timeout,
        )
        return 1
    if sink.stats.failed:
        log.error("shutdown: %d records failed delivery: %s", sink.stats.failed, sink.stats.errors)
        return 1
    log.info("shutdown: every record delivered (%d)", sink.stats.delivered)
    return 0


async def _ensure_topics_with_retry(
    admin: AdminClient, specs: list[TopicSpec], settings: Settings, stop: asyncio.Event
) -> None:
    delay = 0.5
    while not stop.is_set():
        try:
            report = await asyncio.to_thread(
                ensure_topics,
                admin,
                specs,
                create=settings.bridge_create_topics,
                allow_non_compacted=settings.bridge_allow_non_compacted,
            )
            log.info("topics ready: created %s, verified %s", report.created, report.verified)
            return
        except TopicError as exc:
            log.warning("Kafka not ready (%s); retrying in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            delay = min(delay * 2, 30.0)
