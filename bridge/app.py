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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

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
from bridge.ops.http import HealthServer, Parts
from bridge.ops.logs import redactor
from bridge.settings import AuthMode, Mode, ResumeMode, Settings, SubscriptionConfig
from bridge.sink.avro import SchemaHistory, SchemaMismatch
from bridge.sink.kafka import KafkaSink, OutRecord, ProducerFatal
from bridge.sink.serialization import (
    ConfluentSerializer,
    RegistryUnavailable,
    SchemaRejected,
    SerializationContext,
    SingleObjectSerializer,
    ValueSerializer,
)
from bridge.sink.topics import TopicError, TopicSpec, admin_client, ensure_topics
from transforms import (
    NormalizedRecord,
    TransformError,
    TransformOptions,
    compile_plan,
    infer_kind,
)

log = logging.getLogger("mlink.bridge")
T = TypeVar("T")

# A registration that failed for a reason retrying may fix is tried again after this back-off
# (doubling per failure); the records waiting for it are held, latest value per key.
REGISTRY_BACKOFF_MIN = 1.0
REGISTRY_BACKOFF_MAX = 30.0
# A schema the registry refused is not asked for again until this long has passed; records that
# need it go to the dead-letter topic meanwhile.
REFUSAL_RETRY_AFTER = 300.0

# Why a record can go to the dead-letter topic instead of its own: a value that cannot be
# converted. OverflowError is an int too large for a double (orjson cannot make one; another
# wire decoder might).
CONVERSION_ERRORS = (KeyFormatError, TransformError, SchemaMismatch, OverflowError)


def view_names(view: str | None) -> tuple[str, ...]:
    """MLink view text (`a|b|c`, commas or spaces also work) as field names."""
    if not view:
        return ()
    return tuple(n for n in view.replace(",", "|").replace(" ", "|").split("|") if n)


class Jobs(Protocol):
    """Where the pipeline runs work that may block (schema registration), off the event loop.
    `done(result, error)` and `later` callbacks run on the pipeline's own thread."""

    def run(
        self,
        work: Callable[[], bytes],
        done: Callable[[bytes | None, BaseException | None], None],
    ) -> None: ...

    def later(self, delay: float, call: Callable[[], None]) -> None: ...


class InlineJobs:
    """Runs work at once, in the caller's thread; timers are kept for the caller to fire (the
    pipeline's unit tests)."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def run(
        self,
        work: Callable[[], bytes],
        done: Callable[[bytes | None, BaseException | None], None],
    ) -> None:
        try:
            result = work()
        except Exception as exc:
            done(None, exc)
        else:
            done(result, None)

    def later(self, delay: float, call: Callable[[], None]) -> None:
        self.timers.append((delay, call))


class LoopJobs:
    """Runs each job in a daemon thread (a registry call that hangs must never keep the process
    from exiting) and hands the outcome back to the event loop. An exception raised by a
    callback is passed to `on_error`: the pipeline's state can no longer be trusted."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_error: Callable[[BaseException], None]
    ) -> None:
        self._loop = loop
        self._on_error = on_error
        self._closed = False
        self.running = 0

    def run(
        self,
        work: Callable[[], bytes],
        done: Callable[[bytes | None, BaseException | None], None],
    ) -> None:
        if self._closed:
            return  # shutting down: what is still held is counted as not delivered
        self.running += 1

        def finished(result: bytes | None, error: BaseException | None) -> None:
            self.running -= 1
            if self._closed:
                return  # too late: the shutdown already counted the held records
            try:
                done(result, error)
            except Exception as exc:
                self._on_error(exc)

        def thread() -> None:
            try:
                result: bytes | None = work()
                error: BaseException | None = None
            except BaseException as exc:
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to report to
                self._loop.call_soon_threadsafe(finished, result, error)

        threading.Thread(target=thread, name="schema-registration", daemon=True).start()

    def later(self, delay: float, call: Callable[[], None]) -> None:
        if not self._closed:
            self._loop.call_later(delay, self._guarded, call)

    def _guarded(self, call: Callable[[], None]) -> None:
        if self._closed:
            return
        try:
            call()
        except Exception as exc:
            self._on_error(exc)

    def close(self) -> None:
        self._closed = True


@dataclass(slots=True)
class Held:
    """A record waiting for its schema to be registered, with what it had on arrival."""

    event: Record
    recv_ns: int
    epoch: int


@dataclass
class Channel:
    """One subscription's records of one message type, on their way to one topic."""

    label: str
    topic: str
    history: SchemaHistory
    ctx: SerializationContext
    msg_header: tuple[str, str]  # ("mlink.msg", type): the same for every record
    prefix: bytes | None = None  # the framing of ctx.schema, once registered
    # While a schema is being registered, every record of the channel waits here (latest per
    # key, so memory is bounded by the number of keys) to keep each key's order.
    held: dict[bytes, Held] | None = None
    refused: dict[str, tuple[str, float]] = field(default_factory=dict)  # fingerprint -> why, until
    backoff: float = 0.0
    # The new fields a record brought (name, inferred type) -> the version they would need, so
    # that a refused version is recognised without building it again for every such record.
    versions_for: dict[tuple[tuple[str, str | None], ...], str] = field(default_factory=dict)
    known_keys: set[bytes] = field(default_factory=set)  # written here (with reconciliation on)
    snapshot_keys: set[bytes] | None = None  # seen in the snapshot under way


@dataclass
class PipelineStats:
    records_in: dict[str, int] = field(default_factory=dict)  # per message type
    records_out: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    tombstones: int = 0
    reconciled: int = 0
    schema_versions: int = 0  # versions added for fields the catalog does not know
    registry_failures: int = 0
    held_conflated: int = 0  # held records replaced by a newer one of the same key


class Pipeline:
    def __init__(
        self,
        *,
        settings: Settings,
        subscriptions: Sequence[SubscriptionConfig],
        serializer: ValueSerializer,
        sink: KafkaSink,
        catalog: Catalog | None = None,
        jobs: Jobs | None = None,
        highwater: Callable[[str], int | None] | None = None,
        on_fatal: Callable[[str], None] | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.catalog = catalog or default_catalog()
        self.subscriptions = {s.name: s for s in subscriptions}
        self.serializer = serializer
        self.sink = sink
        self.jobs: Jobs = jobs or InlineJobs()
        self._highwater = highwater
        self._on_fatal = on_fatal
        self._clock_ns = clock_ns
        self._monotonic = monotonic
        # A completed snapshot whose records still wait for a schema: its `live` status and
        # reconciliation wait too. label -> (records, keys seen per channel, whether to
        # announce it: not once the connection that delivered it has gone down).
        self._completing: dict[str, tuple[int, dict[int, set[bytes] | None], bool]] = {}
        self._reconcile_on = settings.bridge_reconcile
        self._channels: dict[tuple[str | None, str], Channel | None] = {}
        self.epochs: dict[str, int] = dict.fromkeys(self.subscriptions, 0)
        self.states: dict[str, str] = dict.fromkeys(self.subscriptions, "connecting")
        self._since: dict[str, str] = {}
        self._snapshot_began: dict[str, float] = {}
        self.snapshot_seconds: dict[str, float] = {}  # the last complete snapshot's duration
        self.last_record_ns: dict[str, int] = {}  # per subscription label
        self.stats = PipelineStats()

    @property
    def held(self) -> int:
        """Records waiting for a schema registration."""
        return sum(len(c.held) for c in self._channels.values() if c is not None and c.held)

    # -- events -------------------------------------------------------------------------------

    def handle_batch(self, events: Iterable[ConnectorEvent]) -> None:
        """A websocket payload's events, in order. Its records arrived in one message: they
        share one receive time (`bridge.recv_ns`), read once per payload."""
        recv_ns = self._clock_ns()
        record = self._record
        for event in events:
            if type(event) is Record:
                record(event, recv_ns)
            else:
                self.handle(event)

    def handle(self, event: ConnectorEvent) -> None:
        if isinstance(event, Record):
            self._record(event, self._clock_ns())
        elif isinstance(event, SnapshotBegin):
            self.epochs[event.label] = self.epochs.get(event.label, 0) + 1
            self._completing.pop(event.label, None)  # superseded by the new snapshot
            # A snapshot resumed from a highwater mark holds only what changed since: the keys
            # it lacks still exist, so it is not reconciled (None: nothing counted).
            for channel in self._channels_of(event.label):
                channel.snapshot_keys = None if event.resumed else set()
            self._snapshot_began[event.label] = self._monotonic()
            self._status(event.label, "snapshot")
        elif isinstance(event, SnapshotComplete):
            channels = self._channels_of(event.label)
            seen = {id(c): c.snapshot_keys for c in channels}
            for channel in channels:
                channel.snapshot_keys = None
            self._completing[event.label] = (event.records, seen, True)
            self._complete_if_drained(event.label)
        elif isinstance(event, ConnectionUp):
            for label in self.subscriptions:
                self._status(label, "connecting")
        elif isinstance(event, ConnectionDown):
            for label, (records, seen, _) in self._completing.items():
                self._completing[label] = (records, seen, False)
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

    def _record(self, event: Record, recv_ns: int, held: Held | None = None) -> None:
        # The hot path: one call per record, so lookups are kept local and nothing is
        # allocated that the record does not need.
        record = event.record
        mtyp = record.mtyp
        stats = self.stats
        label = event.label
        channel = self._channels.get((label, mtyp))
        if channel is None:
            if label is None or label not in self.subscriptions:
                # A type nobody subscribed to (one the catalog lacks, say), or several
                # subscriptions of the type and none accepts it (its where clause or keys):
                # there is no topic it belongs to.
                if self.catalog.get(mtyp) is None:
                    reason, stage = f"unknown message type {mtyp}", "catalog"
                else:
                    reason, stage = f"no subscription accepts this {mtyp} record", "routing"
                self._dead_letter(record.raw, reason, stage, "", mtyp)
                return
            channel = self._channel(label, mtyp)  # first sight, or a type the catalog lacks
        if held is None:
            if channel is not None:  # unknown types are counted as dead letters, not by name
                stats.records_in[mtyp] = stats.records_in.get(mtyp, 0) + 1
            name = label or ""
            self.last_record_ns[name] = recv_ns
            epoch = self.epochs.get(name, 0)
        else:
            epoch = held.epoch
        if channel is None:
            self._dead_letter(record.raw, f"unknown message type {mtyp}", "catalog", label, mtyp)
            return
        message = record.message
        value: bytes | None = None
        src_ns: int | None = None
        arriving = held is None
        try:
            history = channel.history
            plan = history.plan
            schema = channel.ctx.schema
            wire = schema.encode_wire
            prefix = channel.prefix
            # The common case in one C call: a live value whose fields the plan all knows, for
            # the schema in use. None from it means the Python path below decides.
            if (
                wire is not None
                and prefix is not None
                and channel.held is None
                and not record.deleted
                and history.current is schema
                and plan.known.issuperset(message)
            ):
                key = plan.key_of(message).encode()
                value = wire(message, prefix)
            normalized: NormalizedRecord | None = None
            if value is None:
                if record.deleted or channel.held is not None:
                    key = plan.key_of(message).encode()
                else:
                    normalized = plan.apply(message)
                    key = normalized.key.encode()
            # Counted on arrival: a snapshot record that then goes to the dead-letter topic must
            # not be taken for a deleted key by reconciliation.
            if arriving and self._reconcile_on:
                if event.snapshot:
                    if channel.snapshot_keys is not None:
                        channel.snapshot_keys.add(key)
                elif label in self._completing:
                    # Live after the snapshot completed, while it waits to be reconciled (its
                    # records wait for a schema): the key exists, whatever the snapshot held.
                    seen = self._completing[label][1].get(id(channel))
                    if seen is not None:
                        seen.add(key)
            if value is not None:
                src = message.get(plan.src_field) if plan.src_field else None
                src_ns = src if src.__class__ is int else None
            elif channel.held is not None:
                self._hold(channel, key, held or Held(event, recv_ns, epoch))
                return
            elif normalized is not None:
                # Unknown fields that are all JSON null say nothing new (no type to add): the
                # value goes out as it is, without trying an evolution for every such record.
                if normalized.unknown and not _all_null(normalized.unknown):
                    refusal = self._refused_shape(channel, normalized.unknown)
                    if refusal is not None:
                        self._dead_letter(record.raw, refusal, "SchemaRejected", label, mtyp)
                        return
                    candidate = channel.history.fork()
                    if candidate.evolve(normalized.unknown) is not channel.history.current:
                        if len(channel.versions_for) >= _MAX_SIGNATURES:
                            channel.versions_for.clear()
                        signature = _signature(normalized.unknown)
                        channel.versions_for[signature] = candidate.current.fingerprint
                        self._need_schema(
                            channel, candidate, key, held or Held(event, recv_ns, epoch)
                        )
                        return
                    # Nothing representable is new; the plan now ignores those names.
                    channel.history = candidate
                    normalized = candidate.plan.apply(message)
                prefix = channel.prefix
                if prefix is None:
                    self._need_schema(
                        channel, channel.history, key, held or Held(event, recv_ns, epoch)
                    )
                    return
                value = channel.ctx.schema.encode(normalized.value, prefix)
                src_ns = normalized.src_ns
        except CONVERSION_ERRORS as exc:
            self._dead_letter(record.raw, str(exc), type(exc).__name__, label, mtyp)
            return
        header = record.header
        headers: list[tuple[str, str | bytes | None]] = [
            channel.msg_header,
            ("mlink.seq", str(header.get("seqN", ""))),
            ("mlink.sent", str(header.get("sTim", ""))),
            ("mlink.src_ts", str(src_ns) if src_ns else ""),
            ("bridge.recv_ns", str(recv_ns)),
            ("bridge.epoch", str(epoch)),
        ]
        stamp_ns = src_ns or recv_ns
        # Latency is measured on live records only: a snapshot replays old source times.
        latency_from = None if event.snapshot else stamp_ns
        self.sink.send(
            OutRecord(channel.topic, key, value, headers, stamp_ns // 1_000_000, latency_from)
        )
        stats.records_out[mtyp] = stats.records_out.get(mtyp, 0) + 1
        if value is None:
            stats.tombstones += 1
            channel.known_keys.discard(key)
        elif self._reconcile_on:
            channel.known_keys.add(key)

    # -- schema registration, off the event loop ----------------------------------------------

    def _hold(self, channel: Channel, key: bytes, held: Held) -> None:
        assert channel.held is not None
        if key in channel.held:
            self.stats.held_conflated += 1
        channel.held[key] = held

    def _need_schema(
        self, channel: Channel, candidate: SchemaHistory, key: bytes, held: Held
    ) -> None:
        """The record needs `candidate.current`, not yet registered: hold the channel's records
        and register it in the background; or dead-letter the record if it was refused."""
        writer = candidate.current
        refusal = channel.refused.get(writer.fingerprint)
        if refusal is not None and self._monotonic() < refusal[1]:
            record = held.event.record
            self._dead_letter(record.raw, refusal[0], "SchemaRejected", channel.label, record.mtyp)
            return
        channel.held = {key: held}
        self._register(channel, candidate)

    def _register(self, channel: Channel, candidate: SchemaHistory) -> None:
        ctx = SerializationContext(channel.topic, candidate.current)
        self.jobs.run(
            lambda: self.serializer.register(ctx),
            lambda prefix, error: self._registered(channel, candidate, ctx, prefix, error),
        )

    def _registered(
        self,
        channel: Channel,
        candidate: SchemaHistory,
        ctx: SerializationContext,
        prefix: bytes | None,
        error: BaseException | None,
    ) -> None:
        writer = ctx.schema
        if prefix is not None:
            if writer is not channel.history.current:
                self.stats.schema_versions += 1
                if writer.version > 1:
                    log.info("schema %s evolved to version %d", writer.name, writer.version)
            channel.history, channel.ctx, channel.prefix = candidate, ctx, prefix
            channel.backoff = 0.0
            self._release(channel)
            return
        self.stats.registry_failures += 1
        if isinstance(error, SchemaRejected):
            log.error(
                "%s: schema %s v%d refused: %s", channel.topic, writer.name, writer.version, error
            )
            until = self._monotonic() + REFUSAL_RETRY_AFTER
            channel.refused[writer.fingerprint] = (str(error), until)
            self._release(channel)  # records that need it go to the dead-letter topic
            return
        if not getattr(error, "retryable", False):
            # Credentials or permissions the registry refuses, or a bug: retrying cannot help,
            # and holding records forever would hide it. Stop, and say why.
            reason = str(error) if isinstance(error, BridgeError) else repr(error)
            self._fatal(f"schema registration for {channel.topic} failed: {reason}")
            return
        channel.backoff = min(max(channel.backoff * 2, REGISTRY_BACKOFF_MIN), REGISTRY_BACKOFF_MAX)
        log.warning(
            "%s: cannot register schema %s v%d (%s); %d records held, retrying in %.0fs",
            channel.topic,
            writer.name,
            writer.version,
            error,
            len(channel.held or ()),
            channel.backoff,
        )
        self.jobs.later(channel.backoff, lambda: self._register(channel, candidate))

    def _fatal(self, reason: str) -> None:
        log.error("%s", reason)
        if self._on_fatal is None:
            raise BridgeError(reason)
        self._on_fatal(reason)

    def _release(self, channel: Channel) -> None:
        """Replay the held records in arrival order; one may hold the channel again (a newer
        schema), and the rest then wait behind it. If replaying fails, what was not replayed
        is put back first, so that nothing is dropped silently."""
        held, channel.held = channel.held or {}, None
        items = iter(list(held.items()))
        try:
            for _key, item in items:
                self._record(item.event, item.recv_ns, item)
        except BaseException:
            rest = dict(items)
            if rest:
                channel.held = {**rest, **(channel.held or {})}
            raise
        finally:
            if channel.held is None:
                self._complete_if_drained(channel.label)

    def _refused_shape(self, channel: Channel, unknown: Mapping[str, Any]) -> str | None:
        """Why the version these new fields need was refused, if it was (and still counts)."""
        if not channel.refused:
            return None
        fingerprint = channel.versions_for.get(_signature(unknown))
        refusal = channel.refused.get(fingerprint) if fingerprint else None
        if refusal is not None and self._monotonic() < refusal[1]:
            return refusal[0]
        return None

    def _complete_if_drained(self, label: str) -> None:
        """A completed snapshot is announced (`live`) and reconciled once none of its records
        wait for a schema any more: before that the topic does not hold the snapshot yet."""
        completing = self._completing.get(label)
        if completing is None or any(c.held for c in self._channels_of(label)):
            return
        del self._completing[label]
        records, seen, announce = completing
        began = self._snapshot_began.pop(label, None)
        if began is not None:
            self.snapshot_seconds[label] = self._monotonic() - began
        if self._reconcile_on:
            self._reconcile(label, seen)
        if announce:
            self._status(label, "live", snapshotSize=records)

    def _reconcile(self, label: str, seen_by_channel: Mapping[int, set[bytes] | None]) -> None:
        """Tombstones for keys this process wrote that a fresh snapshot no longer has (unless
        another subscription writing to the same topic has them)."""
        for channel in self._channels_of(label):
            seen = seen_by_channel.get(id(channel))
            if seen is None:
                continue  # the channel began after the snapshot did: it saw only part of it
            others = [c for c in self._channels_on(channel.topic) if c is not channel]
            for key in sorted(channel.known_keys - seen):
                channel.known_keys.discard(key)
                if any(key in other.known_keys for other in others):
                    continue
                self.sink.send(OutRecord(channel.topic, key, None, [("bridge.reconciled", "1")]))
                self.stats.reconciled += 1

    # -- topics, channels, status, dead letters -----------------------------------------------

    def _channels_of(self, label: str) -> list[Channel]:
        return [c for (lab, _), c in self._channels.items() if lab == label and c is not None]

    def _channels_on(self, topic: str) -> list[Channel]:
        return [c for c in self._channels.values() if c is not None and c.topic == topic]

    def _channel(self, label: str, mtyp: str) -> Channel | None:
        ident = (label, mtyp)
        if ident in self._channels:
            return self._channels[ident]
        spec = self.catalog.get(mtyp)
        sub = self.subscriptions[label]
        channel = None
        if spec is not None:
            options = TransformOptions(view=view_names(sub.view), rename=sub.rename, drop=sub.drop)
            history = SchemaHistory(compile_plan(spec, options, self.catalog))
            topic = self.settings.topic_for(sub, spec.name)
            ctx = SerializationContext(topic, history.current)
            prefix = self.serializer.cached_prefix(ctx)
            channel = Channel(label, topic, history, ctx, ("mlink.msg", mtyp), prefix)
        self._channels[ident] = channel
        return channel

    def _status(self, label: str, state: str, **extra: Any) -> None:
        before = self.states.get(label)
        if before != state or label not in self._since:
            self._since[label] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if before != state:
            log.info(
                "subscription %s: %s -> %s",
                label,
                before,
                state,
                extra={"subscription": label, "state": state, **extra},
            )
        self.states[label] = state
        body = {
            "subscription": label,
            "state": state,
            "epoch": self.epochs.get(label, 0),
            "since": self._since[label],
            "highwaterTs": self._highwater(label) if self._highwater else None,
            **extra,
        }
        if isinstance(body.get("detail"), str):  # failure texts: never a credential in Kafka
            body["detail"] = redactor().redact(body["detail"])
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


_MAX_SIGNATURES = 1024


def _all_null(fields: Mapping[str, Any]) -> bool:
    return all(value is None for value in fields.values())


def _signature(unknown: Mapping[str, Any]) -> tuple[tuple[str, str | None], ...]:
    return tuple(sorted((name, infer_kind(value)) for name, value in unknown.items()))


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
    by_type: dict[str, list[SubscriptionSpec]] = {}
    for sub, built in zip(subs, specs, strict=True):
        by_type.setdefault(sub.msg_name.lower(), []).append(built)
    for same in by_type.values():
        if len(same) > 1 and any(s.accepts is None for s in same):
            # Data records carry no subscription label: only a filter tells them apart.
            names = ", ".join(s.label for s in same)
            raise ConfigError(
                f"BRIDGE_SUBSCRIPTIONS: {names} stream one message type; each needs a where "
                "clause or keys that tell its records apart (MLink does not label them)"
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
        # A message whose key cannot be read raises here; the session takes that as "not
        # this subscription's" (one guard for every filter, where clauses too).
        return lambda message: plan.key_of(message) in keys
    if sub.where:
        try:
            return compile_where(sub.where, spec, catalog=catalog)
        except ValueError as exc:
            raise ConfigError(f"BRIDGE_SUBSCRIPTIONS: {sub.name}: where: {exc}") from None
    return None


def credentials_for(settings: Settings) -> Callable[[], Credentials]:
    def credentials() -> Credentials:
        jwt = settings.jwt()
        redactor().add_secret(jwt)  # a rotated JWT file holds a new secret
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


def connector_for(settings: Settings, specs: Sequence[SubscriptionSpec]) -> Connector:
    """The MLink connector MLINK_* describe, for these subscriptions."""
    return Connector(
        ConnectorConfig(
            settings.mlink_url,
            credentials_for(settings),
            header_auth=settings.mlink_auth is AuthMode.HEADER,
            max_message=settings.mlink_max_message_bytes,
            ping_interval=settings.mlink_ping_interval,
            ping_timeout=settings.mlink_ping_timeout,
            resume_highwater=settings.mlink_resume is ResumeMode.HIGHWATER,
            jwt_file=settings.mlink_jwt_file,
            proto_descriptors=settings.mlink_proto_descriptors,
        ),
        specs,
        policy=ReconnectPolicy.from_limits(
            settings.mlink_reconnect_min,
            settings.mlink_reconnect_max,
            settings.mlink_auth_backoff_min,
            settings.mlink_auth_backoff_max,
        ),
    )


def registry_client(settings: Settings) -> SchemaRegistryClient | None:
    """The Schema Registry client SCHEMA_REGISTRY_* describe (None without a URL). A mock://
    URL gives the client's in-memory registry (tests, trials)."""
    if not settings.schema_registry_url:
        return None
    conf: dict[str, Any] = {
        "url": settings.schema_registry_url,
        "timeout": settings.schema_registry_timeout,
    }
    if settings.schema_registry_basic_auth_user_info is not None:
        conf["basic.auth.user.info"] = (
            settings.schema_registry_basic_auth_user_info.get_secret_value()
        )
    tls = {
        "ssl.ca.location": settings.schema_registry_ssl_ca_location,
        "ssl.certificate.location": settings.schema_registry_ssl_certificate_location,
        "ssl.key.location": settings.schema_registry_ssl_key_location,
    }
    conf.update({name: str(path) for name, path in tls.items() if path is not None})
    return SchemaRegistryClient.new_client(conf)


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

        try:
            self._sink.send_acked(
                OutRecord(self._topic, fingerprint_hex.encode(), schema_json),
                delivered,
                self._timeout,
            )
        except BufferError:
            full = f"cannot publish schema {fingerprint_hex}: the producer queue stayed full"
            raise RegistryUnavailable(full) from None
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
    settings.require_credentials()
    catalog = catalog or default_catalog()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    parts = Parts()
    health = None
    if settings.bridge_http_port:
        # First, so that /livez answers while the broker is still being waited for.
        health = HealthServer(parts, settings.bridge_http_host, settings.bridge_http_port)
        await health.start()
    try:
        return await _run(settings, catalog, stop, on_pipeline, registry, parts)
    finally:
        if health is not None:
            await health.stop()


async def _run(  # noqa: PLR0917 - run_bridge's body, split for the health server
    settings: Settings,
    catalog: Catalog,
    stop: asyncio.Event,
    on_pipeline: Callable[[Pipeline, KafkaSink, Connector], None] | None,
    registry: SchemaRegistryClient | None,
    parts: Parts,
) -> int:
    subs = settings.subscriptions()
    specs = subscription_specs(settings, subs, catalog)
    kafka = dict(settings.kafka_properties)
    loop = asyncio.get_running_loop()
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
    admin = admin_client(kafka)
    await _ensure_topics_with_retry(admin, topic_specs(settings, subs, catalog), settings, stop)
    if stop.is_set():
        sink.close()
        return 0
    serializer: ValueSerializer
    registry = registry or registry_client(settings)
    if registry is not None:
        serializer = ConfluentSerializer(registry)
    else:
        serializer = SingleObjectSerializer(SchemaTopicPublisher(sink, settings.schemas_topic))

    connector = connector_for(settings, specs)
    failures: list[str] = []  # why the pipeline cannot go on (registry refusals, bugs)

    def pipeline_failed(reason: str) -> None:
        failures.append(reason)
        stop.set()

    def job_failed(error: BaseException) -> None:
        log.error("internal error in a schema registration callback", exc_info=error)
        pipeline_failed(f"internal error: {error!r}")

    jobs = LoopJobs(loop, job_failed)
    pipeline = Pipeline(
        settings=settings,
        subscriptions=subs,
        serializer=serializer,
        sink=sink,
        jobs=jobs,
        highwater=connector.highwater_ts,
        on_fatal=pipeline_failed,
    )
    parts.pipeline, parts.sink, parts.connector = pipeline, sink, connector
    if on_pipeline is not None:
        on_pipeline(pipeline, sink, connector)

    async def pump() -> None:
        while True:
            sink.pump()
            await asyncio.sleep(0.02)

    async def read() -> None:
        handle = pipeline.handle_batch
        cap = settings.bridge_overflow_max_records
        held_cap = settings.bridge_held_max_records
        async for batch in connector.batches():
            handle(batch)
            if sink.overflowing >= cap:
                await paused(_wait_for_room(sink, cap, connector))
            if pipeline.held >= held_cap:
                why = f"{held_cap} records wait for a schema registration"
                await paused(_pause_reading(why, still_held, connector))

    def still_held() -> bool:
        return pipeline.held >= settings.bridge_held_max_records * 0.9

    async def paused(wait: Awaitable[None]) -> None:
        parts.reading_paused = True  # /readyz says so
        try:
            await wait
        finally:
            parts.reading_paused = False

    pumper = asyncio.create_task(pump(), name="sink-pump")
    reader = asyncio.create_task(read(), name="mlink-reader")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
    budget = time.monotonic() + settings.bridge_flush_timeout  # from the stop signal on
    connector.stop()
    await asyncio.wait({reader}, timeout=min(5.0, settings.bridge_flush_timeout / 2))
    if not reader.done():
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
    stopper.cancel()
    while pipeline.held and jobs.running and time.monotonic() < budget:
        await asyncio.sleep(0.05)  # a registration under way may still release its records
    held = pipeline.held
    jobs.close()
    pumper.cancel()
    left = await asyncio.to_thread(sink.flush, max(budget - time.monotonic(), 1.0))
    sink.close()
    stats = sink.stats
    log.info(
        "shutdown: %d produced, %d delivered, %d failed, %d not delivered, %d waiting for a schema",
        stats.produced_total,
        stats.delivered,
        stats.lost,
        left,
        held,
        extra={
            "produced": stats.produced_total,
            "delivered": stats.delivered,
            "failed": stats.lost,
            "undelivered": left,
            "held": held,
            "conflated": stats.conflated,
        },
    )
    if reader.done() and not reader.cancelled() and reader.exception() is not None:
        log.error("reader failed", exc_info=reader.exception())
        return 1
    if failures:
        log.error("stopped: %s", "; ".join(failures))
        return 1
    if fatal:
        log.error("stopped on a fatal producer error: %s", fatal[0])
        return 1
    if held:
        log.error("shutdown: %d records were still waiting for their schema's registration", held)
        return 1
    if left:
        log.error(
            "shutdown: %d records were not delivered within %.0fs",
            left,
            settings.bridge_flush_timeout,
        )
        return 1
    if sink.stats.lost:
        log.error("shutdown: %d records failed delivery: %s", sink.stats.lost, sink.stats.errors)
        return 1
    log.info("shutdown: every record delivered (%d)", sink.stats.delivered)
    return 0


async def _wait_for_room(sink: KafkaSink, cap: int, connector: Connector) -> None:
    """Back-pressure for a long broker outage: stop reading until the overflow map is below
    90% of its cap, moving records on meanwhile."""
    why = f"the overflow map is at its cap ({cap} records)"
    await _pause_reading(why, lambda: sink.overflowing >= cap * 0.9, connector, sink.pump)


async def _pause_reading(
    why: str,
    still_full: Callable[[], bool],
    connector: Connector,
    step: Callable[[], object] | None = None,
) -> None:
    """Stop reading MLink while `still_full()`. MLink may drop a reader that stops; that is
    resumed like any other disconnect (highwater or a fresh snapshot): delayed, not lost."""
    log.warning("%s: reading from MLink paused", why)
    started = time.monotonic()
    while still_full() and not connector.stopping:
        if step is not None:
            step()
        await asyncio.sleep(0.05)
    log.warning("reading from MLink resumed after %.1fs", time.monotonic() - started)


async def _unless_stopped(call: Callable[[], T], stop: asyncio.Event) -> T | None:
    """`call()` in a daemon thread; None as soon as `stop` is set, without waiting for it (an
    admin request to a broker that is not there takes up to its 15 s timeout, longer than a
    pod's grace period allows after SIGTERM)."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()

    def succeed(result: T) -> None:
        if not outcome.done():
            outcome.set_result(result)

    def fail(error: Exception) -> None:
        if not outcome.done():
            outcome.set_exception(error)

    def work() -> None:
        try:
            result = call()
        except Exception as exc:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(fail, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(succeed, result)

    threading.Thread(target=work, name="kafka-admin", daemon=True).start()
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    waiting: set[asyncio.Future[Any]] = {outcome, stopping}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not outcome.done():
        outcome.cancel()
        return None
    return outcome.result()


async def _ensure_topics_with_retry(
    admin: AdminClient, specs: list[TopicSpec], settings: Settings, stop: asyncio.Event
) -> None:
    delay = 0.5
    while not stop.is_set():
        try:
            report = await _unless_stopped(
                lambda: ensure_topics(
                    admin,
                    specs,
                    create=settings.bridge_create_topics,
                    allow_non_compacted=settings.bridge_allow_non_compacted,
                ),
                stop,
            )
            if report is None:
                return  # stopping: the admin call is left to its (daemon) thread
            log.info("topics ready: created %s, verified %s", report.created, report.verified)
            return
        except TopicError as exc:
            log.warning("Kafka not ready (%s); retrying in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            delay = min(delay * 2, 30.0)
