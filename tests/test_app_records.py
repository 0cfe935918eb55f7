"""The pipeline's record path without a broker: schemas registered off the reader's path (records
held meanwhile, latest per key), refused schema versions rolled back, reconciliation, status."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import pytest

from bridge.app import InlineJobs, Pipeline, _wait_for_room, subscription_specs
from bridge.errors import ConfigError
from bridge.io.connector import ConnectionDown, ConnectionUp
from bridge.io.policy import Failure
from bridge.mlink.catalog import default_catalog
from bridge.mlink.framing import encode_frame
from bridge.mlink.messages import DataRecord
from bridge.mlink.session import MLinkSession, Record, Subscription
from bridge.ops.logs import redactor
from bridge.settings import load_settings
from bridge.sink import avro
from bridge.sink.avro import SchemaHistory
from bridge.sink.kafka import OutRecord
from bridge.sink.serialization import (
    RegistryError,
    RegistryUnavailable,
    SchemaLookup,
    SchemaRejected,
    SingleObjectSerializer,
    decode_value,
)


class FakeSink:
    def __init__(self) -> None:
        self.records: list[OutRecord] = []

    def send(self, record: OutRecord) -> None:
        self.records.append(record)

    def on(self, topic: str) -> list[OutRecord]:
        return [r for r in self.records if r.topic == topic]


class Registry:
    """Schema publishing that can be made to fail: `outcome` is None (accept), or an exception
    to raise for every schema, or a callable deciding per schema."""

    def __init__(self) -> None:
        self.schemas: dict[str, bytes] = {}
        self.calls = 0
        self.outcome: Exception | Callable[[bytes], Exception | None] | None = None

    def publish(self, fingerprint: str, schema: bytes) -> None:
        self.calls += 1
        outcome = self.outcome(schema) if callable(self.outcome) else self.outcome
        if outcome is not None:
            raise outcome
        self.schemas[fingerprint] = schema


def msg(mtyp: str, message: dict[str, Any], **header: Any) -> bytes:
    return orjson.dumps({"header": {"mTyp": mtyp, **header}, "message": message})


def book(tk: str, bid: float, **extra: Any) -> bytes:
    pkey = {"ticker": {"at": "EQT", "ts": "NMS", "tk": tk}}
    return msg("StockBookQuote", {"pkey": pkey, "bidPrice1": bid, **extra})


def deleted(tk: str) -> bytes:
    pkey = {"ticker": {"at": "EQT", "ts": "NMS", "tk": tk}}
    return msg("StockBookQuote", {"pkey": pkey}, isDel=True)


ADMIN = msg("MLinkAdmin", {"state": "LoggedOn"})
ACK = msg("MLinkStreamAck", {"msgName": "StockBookQuote", "result": "OK"})
BEGIN = msg("MLinkStreamCheckPt", {"state": "Begin"})
COMPLETE = msg("MLinkStreamCheckPt", {"state": "Complete"})


class Rig:
    def __init__(
        self,
        subs: list[dict[str, Any]],
        env: dict[str, str] | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.settings = load_settings({"BRIDGE_SUBSCRIPTIONS": json.dumps(subs), **(env or {})})
        configs = self.settings.subscriptions()
        specs = subscription_specs(self.settings, configs, default_catalog())
        self.subscriptions = [Subscription(s.label, s.request(None), s.accepts) for s in specs]
        self.session = MLinkSession(self.subscriptions)
        self.session.connected()
        self.registry = Registry()
        self.jobs = InlineJobs()
        self.sink = FakeSink()
        self.marks: dict[str, int] = {}
        self.fatal: list[str] = []
        self.pipeline = Pipeline(
            settings=self.settings,
            subscriptions=configs,
            serializer=SingleObjectSerializer(self.registry.publish),
            sink=self.sink,  # type: ignore[arg-type]
            jobs=self.jobs,
            highwater=self.marks.get,
            on_fatal=self.fatal.append,
            clock_ns=clock_ns,
        )

    def feed(self, payloads: Iterable[bytes]) -> None:
        """As the bridge does: one payload's events at a time."""
        for payload in payloads:
            self.pipeline.handle_batch(self.session.receive(payload))

    def reconnect(self, highwater: int | None = None) -> None:
        """A new connection, as the connector makes one: a new session, subscribed afresh, or
        resumed from `highwater` (ns) when given."""
        subscriptions = self.subscriptions
        if highwater is not None:
            configs = self.settings.subscriptions()
            specs = subscription_specs(self.settings, configs, default_catalog())
            subscriptions = [Subscription(s.label, s.request(highwater), s.accepts) for s in specs]
        self.session = MLinkSession(subscriptions)
        self.session.connected()

    def fire_timers(self) -> None:
        timers, self.jobs.timers = self.jobs.timers, []
        for _, call in timers:
            call()

    def values(self, topic: str) -> list[tuple[bytes, dict[str, Any] | None]]:
        lookup = SchemaLookup(schemas=self.registry.schemas)
        return [
            (r.key, decode_value(r.value, lookup) if r.value is not None else None)
            for r in self.sink.on(topic)
        ]

    def dead_letters(self) -> list[dict[str, str]]:
        return [
            {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in r.headers}
            for r in self.sink.on(self.settings.dlq_topic)
        ]


BOOKS = [{"msgName": "StockBookQuote", "topic": "books", "label": "b"}]


def test_while_the_registry_is_down_records_wait_latest_per_key_and_none_is_lost() -> None:
    rig = Rig(BOOKS)
    rig.registry.outcome = RegistryUnavailable("registry unreachable (ConnectError)")
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), book("MSFT", 2.0), COMPLETE])
    rig.feed([book("AAPL", 1.5), deleted("MSFT"), book("IBM", 3.0)])
    assert rig.sink.on("books") == []
    assert rig.dead_letters() == []
    assert rig.pipeline.held == 3  # AAPL (1.5), MSFT (deleted), IBM
    assert rig.pipeline.stats.held_conflated == 2
    assert [delay for delay, _ in rig.jobs.timers] == [1.0]  # one retry, not one per record

    rig.fire_timers()  # still down: the back-off doubles
    assert [delay for delay, _ in rig.jobs.timers] == [2.0]
    assert rig.pipeline.stats.registry_failures == 2

    rig.registry.outcome = None
    rig.fire_timers()
    assert rig.pipeline.held == 0
    values = [(key, v["bidPrice1"] if v else None) for key, v in rig.values("books")]
    assert values == [(b"AAPL-NMS-EQT", 1.5), (b"MSFT-NMS-EQT", None), (b"IBM-NMS-EQT", 3.0)]
    rig.feed([book("AAPL", 1.75)])  # registered now: straight through
    assert rig.values("books")[-1][1]["bidPrice1"] == 1.75  # type: ignore[index]
    assert rig.registry.calls == 3


def test_a_channel_with_a_registered_schema_goes_on_while_another_waits() -> None:
    subs = [
        {"msgName": "StockBookQuote", "topic": "books", "label": "b"},
        {"msgName": "StockPrint", "topic": "prints", "label": "p"},
    ]
    rig = Rig(subs)
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), COMPLETE])
    assert len(rig.sink.on("books")) == 1
    rig.registry.outcome = RegistryUnavailable("registry unreachable")
    pkey = {"ticker": {"at": "EQT", "ts": "NMS", "tk": "AAPL"}, "prtNumber": 1}
    rig.feed([msg("StockPrint", {"pkey": pkey, "prtPrice": 10.0}), book("AAPL", 1.25)])
    assert rig.pipeline.held == 1  # the print waits for its schema ...
    assert [v["bidPrice1"] for _, v in rig.values("books") if v] == [1.0, 1.25]  # ... books don't
    assert rig.dead_letters() == []


def test_a_refused_schema_version_is_rolled_back_and_its_records_dead_lettered() -> None:
    rig = Rig(BOOKS)
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), COMPLETE])
    rig.registry.outcome = lambda schema: (
        SchemaRejected("refused as incompatible") if b"brandNewField" in schema else None
    )
    rig.feed(
        [book("AAPL", 2.0, brandNewField=7), book("MSFT", 3.0), book("IBM", 4.0, brandNewField=8)]
    )
    letters = rig.dead_letters()
    assert [d["dlq.stage"] for d in letters] == ["SchemaRejected", "SchemaRejected"]
    assert "refused as incompatible" in letters[0]["dlq.reason"]
    assert rig.registry.calls == 2  # v1, then the refused v2 once: not once per record
    values = rig.values("books")
    assert [(k, v["bidPrice1"]) for k, v in values if v] == [
        (b"AAPL-NMS-EQT", 1.0),
        (b"MSFT-NMS-EQT", 3.0),  # written with version 1, still current
    ]
    assert all("brandNewField" not in (v or {}) for _, v in values)
    assert rig.pipeline.stats.schema_versions == 0


def test_an_accepted_new_field_becomes_a_new_version() -> None:
    rig = Rig(BOOKS)
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), COMPLETE, book("AAPL", 2.0, brandNewField=7)])
    values = rig.values("books")
    assert values[-1][1] is not None
    assert values[-1][1]["brandNewField"] == 7
    assert rig.pipeline.stats.schema_versions == 1
    assert len(rig.registry.schemas) == 2


def test_a_new_field_seen_only_as_null_costs_no_evolution_until_it_has_a_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forks = 0
    fork = SchemaHistory.fork

    def counting(self: SchemaHistory) -> SchemaHistory:
        nonlocal forks
        forks += 1
        return fork(self)

    monkeypatch.setattr(SchemaHistory, "fork", counting)
    rig = Rig(BOOKS)
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), COMPLETE])
    rig.feed([book("AAPL", 1.0 + i, laterField=None) for i in range(50)])
    assert forks == 0  # a null names no type: nothing to try, record after record
    values = rig.values("books")
    assert [v["bidPrice1"] for _, v in values if v] == [1.0] + [1.0 + i for i in range(50)]
    assert all("laterField" not in (v or {}) for _, v in values)
    assert len(rig.registry.schemas) == 1

    rig.feed([book("AAPL", 99.0, laterField=5), book("AAPL", 100.0, laterField=None)])
    assert forks == 1  # the first value evolves the schema once
    assert [v["laterField"] for _, v in rig.values("books")[-2:] if v] == [5, None]
    assert rig.pipeline.stats.schema_versions == 1
    assert rig.dead_letters() == []


def test_a_schema_the_registry_refuses_outright_sends_records_to_the_dead_letter_topic() -> None:
    rig = Rig(BOOKS)
    rig.registry.outcome = SchemaRejected("refused as invalid")
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), book("MSFT", 2.0), COMPLETE])
    assert [d["dlq.stage"] for d in rig.dead_letters()] == ["SchemaRejected", "SchemaRejected"]
    assert rig.pipeline.held == 0
    assert rig.registry.calls == 1


RECONCILE = {"BRIDGE_RECONCILE": "true"}


def test_reconcile_tombstones_only_keys_a_new_snapshot_no_longer_has() -> None:
    rig = Rig(BOOKS, RECONCILE)
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), book("MSFT", 2.0), book("IBM", 3.0)])
    rig.feed([COMPLETE])
    rig.reconnect()
    # A fresh snapshot: IBM is gone; MSFT's record cannot be converted.
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.1), msg("StockBookQuote", _bad_msft()), COMPLETE])
    assert [d["dlq.stage"] for d in rig.dead_letters()] == ["SchemaMismatch"]
    tombstones = [r.key for r in rig.sink.on("books") if r.value is None]
    assert tombstones == [b"IBM-NMS-EQT"]  # not MSFT: it is still there, only unreadable
    assert rig.pipeline.stats.reconciled == 1


def _bad_msft() -> dict[str, Any]:
    return {"pkey": {"ticker": {"at": "EQT", "ts": "NMS", "tk": "MSFT"}}, "bidPrice1": "x"}


def test_reconcile_leaves_keys_another_subscription_wrote_to_the_same_topic() -> None:
    subs = [
        {"msgName": "StockBookQuote", "where": "bidPrice1:lt:10", "topic": "books", "label": "lo"},
        {"msgName": "StockBookQuote", "where": "bidPrice1:ge:10", "topic": "books", "label": "hi"},
    ]
    rig = Rig(subs, RECONCILE)
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 5.0), COMPLETE, ACK, BEGIN, COMPLETE])
    rig.feed([book("AAPL", 15.0)])  # AAPL moves from "lo" to "hi"
    rig.reconnect()
    rig.feed([ADMIN, ACK, BEGIN, COMPLETE, ACK, BEGIN, book("AAPL", 15.0), COMPLETE])
    # "lo"'s snapshot no longer has AAPL, but "hi" wrote it to the same topic: no tombstone.
    assert [r.key for r in rig.sink.on("books") if r.value is None] == []
    assert [(r.key, r.value is not None) for r in rig.sink.on("books")] == [
        (b"AAPL-NMS-EQT", True)
    ] * 3
    assert rig.pipeline.stats.reconciled == 0


def test_a_snapshot_resumed_from_a_highwater_mark_is_not_reconciled() -> None:
    rig = Rig(BOOKS, {**RECONCILE, "MLINK_RESUME": "highwater"})
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), book("MSFT", 2.0), book("IBM", 3.0)])
    rig.feed([COMPLETE])
    rig.reconnect(highwater=1_700_000_000_000_000_000)
    # Resumed: MLink sends only what changed since the mark (AAPL); MSFT and IBM still exist.
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.1), COMPLETE])
    assert [r.key for r in rig.sink.on("books") if r.value is None] == []
    assert rig.pipeline.stats.reconciled == 0
    assert rig.pipeline.states["b"] == "live"
    # A fresh snapshot later still reconciles, against every key written so far.
    rig.reconnect()
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.2), book("IBM", 3.0), COMPLETE])
    assert [r.key for r in rig.sink.on("books") if r.value is None] == [b"MSFT-NMS-EQT"]


@pytest.mark.parametrize("second", [False, True], ids=["first snapshot", "second snapshot"])
def test_a_key_first_seen_live_while_a_completed_snapshot_waits_keeps_its_value(
    second: bool,
) -> None:
    """A snapshot that completes while its records wait for a schema is reconciled once they
    are out; a key created live meanwhile is not one the snapshot lost."""
    rig = Rig(BOOKS, RECONCILE)
    extra: dict[str, Any] = {}
    if second:
        rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), COMPLETE])
        rig.reconnect()
        extra = {"brandNewField": 1}  # the fresh snapshot needs a new schema version
    rig.registry.outcome = RegistryUnavailable("registry slow")
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.1, **extra), COMPLETE])
    rig.feed([book("NEWCO", 5.0)])  # live, after Complete
    assert rig.pipeline.held == 2
    rig.registry.outcome = None
    rig.fire_timers()
    assert rig.pipeline.held == 0
    assert [r.key for r in rig.sink.on("books") if r.value is None] == []
    assert rig.sink.on("books")[-1].key == b"NEWCO-NMS-EQT"
    assert rig.pipeline.stats.reconciled == 0
    assert rig.pipeline.states["b"] == "live"


def test_a_record_no_subscription_accepts_goes_to_the_dead_letter_topic() -> None:
    subs = [
        {"msgName": "StockBookQuote", "where": "bidPrice1:lt:10", "topic": "books", "label": "lo"},
        {"msgName": "StockBookQuote", "where": "bidPrice1:ge:100", "topic": "books", "label": "hi"},
    ]
    rig = Rig(subs)
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 5.0), COMPLETE, ACK, BEGIN, COMPLETE])
    rig.feed([book("AAPL", 50.0), book("MSFT", 500.0)])  # 50: neither clause holds
    assert {r.topic for r in rig.sink.records} == {"books", rig.settings.dlq_topic, "mlink._status"}
    assert [r.key for r in rig.sink.on("books")] == [b"AAPL-NMS-EQT", b"MSFT-NMS-EQT"]
    (dead,) = rig.dead_letters()
    assert dead["dlq.stage"] == "routing"
    assert dead["dlq.reason"] == "no subscription accepts this StockBookQuote record"
    assert b'"bidPrice1":50.0' in rig.sink.on(rig.settings.dlq_topic)[0].value  # type: ignore[operator]


def test_without_reconcile_no_keys_are_remembered() -> None:
    rig = Rig(BOOKS)
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), COMPLETE])
    rig.reconnect()
    rig.feed([ADMIN, ACK, BEGIN, COMPLETE])
    assert [r.key for r in rig.sink.on("books") if r.value is None] == []
    assert all(not c.known_keys for c in rig.pipeline._channels.values() if c)


def test_status_carries_highwater_and_keeps_since_while_the_state_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig(BOOKS)
    clock = iter(range(0, 10**6, 60))
    real_gmtime = time.gmtime
    monkeypatch.setattr(time, "gmtime", lambda: real_gmtime(next(clock)))
    rig.pipeline.handle(ConnectionUp(1))
    rig.pipeline.handle(ConnectionUp(2))
    rig.marks["b"] = 1_700_000_000_000_000_000
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), COMPLETE])
    status = [json.loads(r.value or b"") for r in rig.sink.on(rig.settings.status_topic)]
    assert [(s["state"], s["since"]) for s in status] == [
        ("connecting", "1970-01-01T00:00:00Z"),
        ("connecting", "1970-01-01T00:00:00Z"),  # unchanged state: unchanged since
        ("snapshot", "1970-01-01T00:01:00Z"),
        ("live", "1970-01-01T00:02:00Z"),
    ]
    assert status[0]["highwaterTs"] is None
    assert status[-1]["highwaterTs"] == 1_700_000_000_000_000_000
    assert status[-1]["snapshotSize"] == 1


async def test_reading_pauses_while_the_overflow_is_at_its_cap() -> None:
    class Backlog:
        """A sink whose broker takes 50 records per pump."""

        def __init__(self) -> None:
            self.overflowing = 1000
            self.pumps = 0

        def pump(self) -> int:
            self.pumps += 1
            self.overflowing = max(0, self.overflowing - 50)
            return 50

    class Reader:
        stopping = False

    sink = Backlog()
    await _wait_for_room(sink, 1000, Reader())  # type: ignore[arg-type]
    assert sink.overflowing < 900  # resumed only below 90% of the cap ...
    assert sink.overflowing >= 850  # ... and at once when it got there
    assert sink.pumps == 3

    stopping = Reader()
    stopping.stopping = True
    sink = Backlog()
    await _wait_for_room(sink, 1000, stopping)  # type: ignore[arg-type]
    assert sink.pumps == 0  # a stopping bridge does not wait for room


def statuses(rig: Rig) -> list[tuple[str, str]]:
    return [
        (doc["subscription"], doc["state"])
        for doc in (json.loads(r.value or b"") for r in rig.sink.on(rig.settings.status_topic))
    ]


def test_live_is_announced_only_once_the_snapshot_is_in_the_topic() -> None:
    rig = Rig(BOOKS)
    rig.registry.outcome = RegistryUnavailable("registry unreachable")
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), book("MSFT", 2.0), COMPLETE])
    assert statuses(rig) == [("b", "snapshot")]  # not live: the snapshot waits for its schema
    rig.registry.outcome = None
    rig.fire_timers()
    assert len(rig.sink.on("books")) == 2
    assert statuses(rig) == [("b", "snapshot"), ("b", "live")]
    assert rig.sink.records[-1].topic == rig.settings.status_topic  # after the records


def test_a_held_value_never_lands_after_the_reconciliation_tombstone_of_its_key() -> None:
    rig = Rig(BOOKS, RECONCILE)
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), book("MSFT", 2.0), COMPLETE])
    # A new field needs a new version; the registry is down: MSFT 2.5 is held.
    rig.registry.outcome = RegistryUnavailable("registry unreachable")
    rig.feed([book("MSFT", 2.5, brandNewField=1)])
    assert rig.pipeline.held == 1
    rig.reconnect()  # the fresh snapshot no longer has MSFT: it was deleted meanwhile
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.1), COMPLETE])
    rig.registry.outcome = None
    rig.fire_timers()
    msft = [(r.value is None) for r in rig.sink.on("books") if r.key == b"MSFT-NMS-EQT"]
    assert msft == [False, False, True]  # 2.0, then the held 2.5, then the tombstone
    assert rig.pipeline.stats.reconciled == 1
    assert statuses(rig)[-1] == ("b", "live")


def test_records_needing_a_refused_version_are_recognised_without_rebuilding_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig(BOOKS)
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), COMPLETE])
    rig.registry.outcome = SchemaRejected("refused as incompatible")
    forks: list[object] = []
    real_fork = SchemaHistory.fork
    monkeypatch.setattr(SchemaHistory, "fork", lambda h: forks.append(h) or real_fork(h))
    rig.feed([book("AAPL", 2.0 + i, brandNewField=i) for i in range(20)])
    assert len(forks) == 1  # built (and refused) once, then recognised by its new fields
    assert rig.pipeline.stats.dead_letters == 20
    assert rig.registry.calls == 2


def test_a_registry_that_refuses_the_credentials_stops_the_bridge() -> None:
    rig = Rig(BOOKS)
    rig.registry.outcome = RegistryError("schema registry registering ...: HTTP 401, check ...")
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), COMPLETE])
    assert len(rig.fatal) == 1
    assert "HTTP 401" in rig.fatal[0]
    assert rig.jobs.timers == []  # not retried forever
    assert rig.pipeline.held == 1  # still held: the shutdown counts it as not delivered


def test_a_failure_while_replaying_puts_the_rest_back() -> None:
    rig = Rig(BOOKS)
    rig.registry.outcome = RegistryUnavailable("registry unreachable")
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), book("MSFT", 2.0), book("IBM", 3.0)])
    rig.registry.outcome = None
    real_send = rig.sink.send

    def send(record: OutRecord) -> None:
        if record.key == b"MSFT-NMS-EQT":
            raise RuntimeError("boom")
        real_send(record)

    rig.sink.send = send  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="boom"):
        rig.fire_timers()
    assert rig.pipeline.held == 1  # IBM is back in line; MSFT failed loudly; AAPL went out
    assert [r.key for r in rig.sink.on("books")] == [b"AAPL-NMS-EQT"]


def test_a_snapshot_released_after_its_connection_went_down_is_not_announced_live() -> None:
    rig = Rig(BOOKS)
    rig.registry.outcome = RegistryUnavailable("registry unreachable")
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0), COMPLETE])
    rig.pipeline.handle(ConnectionDown(Failure.CLOSED, "dropped", 1.0, 1))
    rig.registry.outcome = None
    rig.fire_timers()
    assert len(rig.sink.on("books")) == 1  # the records still go out ...
    assert statuses(rig)[-1] == ("b", "down")  # ... but the subscription is not live


def test_the_c_path_and_the_python_path_send_the_same_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Live records take one C call (key checked, fields known); everything else, and every
    record without the C extension, takes the Python path. Both send the same records and
    dead letters, for good values, odd ones, unknown fields and deletes."""
    feed = [
        book("AAPL", 1.5, bidSize1=3, srcTimestamp=1_726_000_000_000_000_001),
        book("MSFT", 2, askPrice1="2.5"),  # refused: text in a double
        book("IBM", 1.0, bidSize1=True),  # refused: a bool in a long
        book("AAPL", 1.75, brandNew=7),  # an unknown field: a new version
        book("AAPL", 1.8, bidSize1=2**63),  # refused: beyond a long
        deleted("MSFT"),
        msg("StockBookQuote", {"pkey": {"ticker": "AAPL"}, "bidPrice1": 1.0}),  # a bad key
        book("IBM", 3.25, srcTimestamp="late"),  # refused: text in a long
    ]
    outcomes = []
    for native in (avro._native, None):
        monkeypatch.setattr(avro, "_native", native)
        rig = Rig([{"msgName": "StockBookQuote", "activeLatency": 0}])
        rig.feed([ADMIN, ACK, BEGIN, COMPLETE, *feed])
        outcomes.append(
            [
                (r.topic, r.key, r.value, [h for h in r.headers or [] if h[0] != "bridge.recv_ns"])
                for r in rig.sink.records
            ]
        )
    assert avro._native is None  # the second run had no C
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0]) >= len(feed)


def test_an_int_too_large_for_a_double_is_dead_lettered() -> None:
    """orjson cannot make such an int, but a record from another decoder must not stop the
    reader: it goes to the dead-letter topic like any value that does not convert."""
    rig = Rig([{"msgName": "StockBookQuote", "activeLatency": 0}])
    rig.feed([ADMIN, ACK, BEGIN, COMPLETE])
    message = {"pkey": {"ticker": {"at": "EQT", "ts": "NMS", "tk": "AAPL"}}, "bidPrice1": 10**400}
    record = DataRecord("StockBookQuote", {"mTyp": "StockBookQuote"}, message, b"{}")
    label = rig.settings.subscriptions()[0].name
    rig.pipeline.handle(Record(label, record, False))
    rig.feed([book("AAPL", 1.5)])  # and the stream goes on
    (letter,) = rig.dead_letters()
    assert "OverflowError" in str(letter)
    assert [key for key, _ in rig.values("mlink.StockBookQuote")] == [b"AAPL-NMS-EQT"]


def test_records_of_one_payload_share_its_receive_time_read_once() -> None:
    reads = iter(range(1_000, 2_000))
    rig = Rig(BOOKS, clock_ns=lambda: next(reads))
    rig.feed([ADMIN, ACK, BEGIN, COMPLETE])
    before = next(reads)
    rig.feed([encode_frame(book("AAPL", 1.0)) + encode_frame(book("MSFT", 2.0)), book("IBM", 3.0)])
    stamps = [dict(r.headers)["bridge.recv_ns"] for r in rig.sink.on("books")]
    # one clock read for the two-record payload, one for the next payload
    assert stamps == [str(before + 1), str(before + 1), str(before + 2)]
    assert rig.pipeline.last_record_ns == {"b": before + 2}


def test_a_failure_text_in_the_status_topic_never_holds_a_known_secret() -> None:
    rig = Rig(BOOKS)
    redactor().add_secret("sekrit-token-31")
    rig.pipeline.handle(ConnectionDown(Failure.CONNECT, "Bearer sekrit-token-31 refused", 1.0, 1))
    (status,) = [orjson.loads(r.value or b"") for r in rig.sink.on("mlink._status")]
    assert status["state"] == "down"
    assert status["detail"] == "connect: Bearer *** refused"


def test_a_field_learnt_as_long_widens_to_double_when_a_fraction_comes() -> None:
    """MLink writes whole doubles without ".0": a new field first seen as 100 is learnt as
    long; its first fraction makes a new version with the field as double (Avro promotes long
    to double), and no record is dead-lettered."""
    rig = Rig(BOOKS)
    rig.feed([ADMIN, ACK, BEGIN, book("AAPL", 1.0, newPx=100), COMPLETE])
    rig.feed([book("AAPL", 1.1, newPx=100.25), book("MSFT", 2.0, newPx=3.5)])
    rig.feed([book("IBM", 3.0, newPx=7)])  # a whole number again: now written as a double
    assert rig.dead_letters() == []
    latest = dict(rig.values("books"))
    keys = (b"AAPL-NMS-EQT", b"MSFT-NMS-EQT", b"IBM-NMS-EQT")
    assert [latest[k]["newPx"] for k in keys] == [100.25, 3.5, 7.0]
    schemas = [json.loads(schema) for schema in rig.registry.schemas.values()]
    kinds = [
        next(f["type"] for f in s["fields"] if f["name"] == "newPx")
        for s in schemas
        if any(f["name"] == "newPx" for f in s["fields"])
    ]
    assert kinds == [["null", "long"], ["null", "double"]]


def test_same_type_subscriptions_must_each_have_a_filter() -> None:
    """Data records carry no subscription label: two unfiltered subscriptions of one type
    cannot be told apart, so every record would go to the first."""
    subs = [
        {"msgName": "StockBookQuote", "topic": "a", "label": "a"},
        {"msgName": "StockBookQuote", "where": "bidPrice1:ge:10", "topic": "b", "label": "b"},
    ]
    settings = load_settings({"BRIDGE_SUBSCRIPTIONS": json.dumps(subs)})
    with pytest.raises(ConfigError, match="a, b stream one message type; each needs a where"):
        subscription_specs(settings, settings.subscriptions(), default_catalog())
    subs[0]["where"] = "bidPrice1:lt:10"
    settings = load_settings({"BRIDGE_SUBSCRIPTIONS": json.dumps(subs)})
    assert len(subscription_specs(settings, settings.subscriptions(), default_catalog())) == 2
