"""Simulator -> bridge -> Tansu, end to end, checked against the simulator's truth log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.schema_registry import SchemaRegistryClient

from bridge.app import Pipeline, run_bridge
from bridge.embedded import EmbeddedBroker, free_port
from bridge.io.connector import Connector
from bridge.mlink.catalog import default_catalog
from bridge.mlink.keys import canonical_key
from bridge.settings import load_settings
from bridge.simulator.server import Faults, Simulator, SimulatorConfig
from bridge.simulator.truth import latest_state, reconciled_state
from bridge.sink.kafka import KafkaSink
from bridge.sink.serialization import SchemaLookup, decode_value
from bridge.tail import tail_topic

pytestmark = pytest.mark.integration
TYPES = ("StockBookQuote", "OptionNbboQuote", "StockPrint", "LiveAtmVol")


def env_for(sim: Simulator, broker: EmbeddedBroker, prefix: str, **extra: str) -> dict[str, str]:
    subs = [{"msgName": name, "activeLatency": 0} for name in TYPES]
    return {
        "MLINK_URL": sim.url("/mlink/jsonf"),
        "MLINK_API_KEY": "demo-key",
        "BRIDGE_SUBSCRIPTIONS": json.dumps(subs),
        "BRIDGE_TOPIC_PREFIX": prefix,
        "BRIDGE_TOPIC_PARTITIONS": "3",
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "BRIDGE_HTTP_HOST": "127.0.0.1",
        "BRIDGE_HTTP_PORT": str(free_port()),
        "MLINK_RECONNECT_MIN": "0.05",
        "MLINK_RECONNECT_MAX": "0.2",
        **extra,
    }


async def run_until(
    env: dict[str, str],
    done: Callable[[Pipeline, KafkaSink, Connector], bool],
    timeout: float = 60,
    registry: SchemaRegistryClient | None = None,
) -> tuple[int, Pipeline]:
    settings = load_settings(env)
    stop = asyncio.Event()
    seen: list[tuple[Pipeline, KafkaSink, Connector]] = []

    async def watch() -> None:
        while not seen or not done(*seen[0]):
            await asyncio.sleep(0.1)
        stop.set()

    watcher = asyncio.create_task(watch())
    try:
        async with asyncio.timeout(timeout):
            code = await run_bridge(
                settings, stop=stop, on_pipeline=lambda *a: seen.append(a), registry=registry
            )
    finally:
        watcher.cancel()
    return code, seen[0][0]


def topic_state(
    read_topic: Any, bootstrap: str, topic: str, partitions: int, lookup: SchemaLookup
) -> dict[str, dict[str, Any] | None]:
    got = read_topic(bootstrap, topic, partitions)
    assert got.errors == []
    state: dict[str, dict[str, Any] | None] = {}
    for msg in sorted(got.messages, key=lambda m: (m.partition(), m.offset())):
        key = msg.key()
        assert key, "no null or empty keys"
        value = msg.value()
        state[key.decode()] = None if value is None else decode_value(value, lookup)
    return state


def assert_topics_match_truth(
    read_topic: Any,
    broker: EmbeddedBroker,
    prefix: str,
    truth: Path,
    lookup: SchemaLookup,
    *,
    expected: dict[tuple[str, str], dict[str, Any] | None] | None = None,
) -> int:
    catalog = default_catalog()
    expected = latest_state(truth) if expected is None else expected
    checked = 0
    for name in TYPES:
        spec = catalog.get(name)
        assert spec is not None
        topic = topic_state(read_topic, broker.bootstrap, f"{prefix}{name}", 3, lookup)
        want = {key: value for (msg, key), value in expected.items() if msg == name}
        assert set(topic) == set(want), f"{name}: keys differ"
        for key, wire in want.items():
            got = topic[key]
            if wire is None:
                assert got is None, f"{name} {key}: expected a tombstone"
                continue
            assert got is not None, f"{name} {key}: unexpected tombstone"
            assert canonical_key(spec, wire["pkey"]) == key
            for field_name, value in wire.items():
                if field_name == "pkey":
                    continue
                field = spec.field(field_name)
                assert field is not None, f"{name}.{field_name} is not in the catalog"
                if field.type == "DateTime":
                    assert got[field_name] == datetime_ns(value), (name, key, field_name)
                elif isinstance(value, float):
                    assert got[field_name] == pytest.approx(value, rel=1e-9), (
                        name,
                        key,
                        field_name,
                    )
                elif not field.is_group:
                    assert got[field_name] == value, (name, key, field_name)
            assert got["pkey"] is not None
            checked += 1
    return checked


def datetime_ns(text: str) -> int:
    """MLink DateTime text (UTC, up to 9 fraction digits) -> ns, independently of transforms."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0")[:9] or 0)


def schemas_from_topic(read_topic: Any, broker: EmbeddedBroker, prefix: str) -> SchemaLookup:
    got = read_topic(broker.bootstrap, f"{prefix}_schemas", 1)
    return SchemaLookup(schemas={m.key().decode(): m.value() for m in got.messages})


# The protobuf endpoint with a descriptor set given, as a user points at a compiled one.
DESCRIPTORS = Path(__file__).resolve().parents[2] / "bridge" / "mlink" / "data" / "mlink.protoset"
WIRE_FORMS = {
    "framed-json": {},
    "protobuf": {"path": "/mlink/proto", "MLINK_PROTO_DESCRIPTORS": str(DESCRIPTORS)},
}


@pytest.mark.parametrize("form", WIRE_FORMS)
async def test_topics_converge_to_the_simulators_truth(
    tmp_path: Path, read_topic: Any, form: str
) -> None:
    truth = tmp_path / "truth.jsonl"
    config = SimulatorConfig(rate=800, tickers=20, truth=truth, delete_rate=0.02, msg_names=TYPES)
    extra = dict(WIRE_FORMS[form])
    path = extra.pop("path", "/mlink/jsonf")
    with EmbeddedBroker() as broker:
        async with Simulator(config) as sim:
            code, pipeline = await run_until(
                env_for(sim, broker, "e1.", MLINK_URL=sim.url(path), **extra),
                lambda p, s, c: (
                    sum(p.stats.records_out.values()) > 3000
                    and all(v == "live" for v in p.states.values())
                ),
            )
        assert code == 0
        assert pipeline.stats.dead_letters == 0
        assert pipeline.stats.tombstones > 0
        lookup = schemas_from_topic(read_topic, broker, "e1.")
        checked = await asyncio.to_thread(
            assert_topics_match_truth, read_topic, broker, "e1.", truth, lookup
        )
        assert checked > 300  # hundreds of keys over several message types
        status = read_topic(broker.bootstrap, "e1._status", 1)
        last = {m.key().decode(): json.loads(m.value()) for m in status.messages}
        assert {v["state"] for v in last.values()} == {"live"}


async def test_reconnects_mid_snapshot_and_mid_live_still_converge(
    tmp_path: Path, read_topic: Any
) -> None:
    truth = tmp_path / "truth.jsonl"
    faults = Faults(drop_after=150, connections=3)  # cut 1: in the first snapshot
    config = SimulatorConfig(
        rate=800, tickers=20, truth=truth, delete_rate=0.02, msg_names=TYPES, faults=faults
    )
    with EmbeddedBroker() as broker:
        async with Simulator(config) as sim:
            code, _pipeline = await run_until(
                env_for(sim, broker, "e2."),
                lambda p, s, c: (
                    c.connections >= 4
                    and all(v == "live" for v in p.states.values())
                    and sum(p.stats.records_out.values()) > 2000
                ),
            )
        assert code == 0
        lookup = schemas_from_topic(read_topic, broker, "e2.")
        checked = await asyncio.to_thread(
            assert_topics_match_truth, read_topic, broker, "e2.", truth, lookup
        )
        assert checked > 300


async def test_reconcile_tombstones_keys_deleted_while_disconnected(
    tmp_path: Path, read_topic: Any
) -> None:
    """Fresh snapshots after reconnects (no highwater resume): deletes that happened while the
    bridge was away reach the topic only through reconciliation."""
    truth = tmp_path / "truth.jsonl"
    faults = Faults(drop_after=400, connections=4)
    config = SimulatorConfig(
        rate=800, tickers=20, truth=truth, delete_rate=0.05, msg_names=TYPES, faults=faults
    )
    with EmbeddedBroker() as broker:
        async with Simulator(config) as sim:
            env = env_for(
                sim,
                broker,
                "e8.",
                BRIDGE_RECONCILE="true",
                MLINK_RESUME="snapshot",
                MLINK_RECONNECT_MIN="0.5",
                MLINK_RECONNECT_MAX="1",
            )
            code, pipeline = await run_until(
                env,
                lambda p, s, c: (
                    c.connections >= 5
                    and all(v == "live" for v in p.states.values())
                    and sum(p.stats.records_out.values()) > 2000
                ),
            )
        assert code == 0
        assert pipeline.stats.reconciled > 0
        lookup = schemas_from_topic(read_topic, broker, "e8.")
        expected = reconciled_state(truth)
        assert expected != latest_state(truth)  # some keys went while the bridge was away
        checked = await asyncio.to_thread(
            assert_topics_match_truth, read_topic, broker, "e8.", truth, lookup, expected=expected
        )
        assert checked > 300


async def test_registry_path_with_mock_registry(tmp_path: Path, read_topic: Any) -> None:
    truth = tmp_path / "truth.jsonl"
    config = SimulatorConfig(rate=500, tickers=10, truth=truth, msg_names=TYPES)
    with EmbeddedBroker() as broker:
        async with Simulator(config) as sim:
            registry = SchemaRegistryClient.new_client({"url": "mock://e2e"})
            env = env_for(sim, broker, "e3.", SCHEMA_REGISTRY_URL="mock://e2e")
            code, _ = await run_until(
                env,
                lambda p, s, c: (
                    sum(p.stats.records_out.values()) > 1000
                    and all(v == "live" for v in p.states.values())
                ),
                registry=registry,
            )
        assert code == 0
        lookup = SchemaLookup(registry=registry)
        checked = await asyncio.to_thread(
            assert_topics_match_truth, read_topic, broker, "e3.", truth, lookup
        )
        assert checked > 100
        subjects = registry.get_subjects()
        assert "e3.StockBookQuote-value" in subjects
        # `mlink-bridge tail` reads the registry's framing too, with the same consumer settings.
        lines = await asyncio.to_thread(
            tail_topic,
            broker.bootstrap,
            "e3.StockBookQuote",
            "e3._schemas",
            3,
            registry=registry,
            config={"client.id": "e2e-tail"},
        )
        assert len(lines) == 3
        assert all('"bidPrice1"' in line for line in lines), lines


async def test_bad_records_go_to_the_dead_letter_topic_and_the_stream_goes_on(
    tmp_path: Path, read_topic: Any
) -> None:
    truth = tmp_path / "truth.jsonl"
    faults = Faults(malformed_rate=0.01, nan_rate=0.01, unknown_type_rate=0.01)
    config = SimulatorConfig(rate=800, tickers=10, truth=truth, msg_names=TYPES, faults=faults)
    with EmbeddedBroker() as broker:
        async with Simulator(config) as sim:
            code, pipeline = await run_until(
                env_for(sim, broker, "e4."),
                lambda p, s, c: (
                    p.stats.dead_letters >= 10 and sum(p.stats.records_out.values()) > 1500
                ),
            )
        assert code == 0
        dlq = read_topic(broker.bootstrap, "e4._dlq", 1)
        stages = {dict(m.headers())["dlq.stage"].decode() for m in dlq.messages}
        assert "protocol" in stages  # malformed and NaN frames
        assert "catalog" in stages  # the unknown message type
        assert len(dlq.messages) == pipeline.stats.dead_letters
        lookup = schemas_from_topic(read_topic, broker, "e4.")
        checked = await asyncio.to_thread(
            assert_topics_match_truth, read_topic, broker, "e4.", truth, lookup
        )
        assert checked > 50


async def test_a_registry_that_hangs_holds_records_and_the_connection_stays_up(
    read_topic: Any,
) -> None:
    """A registry that accepts connections but never answers: registration runs off the event
    loop, so pings and reading go on; the records wait (latest per key) instead of being dead-
    lettered, and a shutdown with records still waiting exits 1."""
    over = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await over.wait()  # accept, read nothing, answer nothing until the test is over
        finally:
            writer.close()  # also a connection accepted just as the server closed

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = SimulatorConfig(rate=300, tickers=5, msg_names=TYPES)
    try:
        with EmbeddedBroker() as broker:
            async with Simulator(config) as sim:
                env = env_for(
                    sim,
                    broker,
                    "e5.",
                    SCHEMA_REGISTRY_URL=f"http://127.0.0.1:{port}",
                    SCHEMA_REGISTRY_TIMEOUT="1",
                    MLINK_PING_INTERVAL="0.5",
                    MLINK_PING_TIMEOUT="0.5",
                    BRIDGE_FLUSH_TIMEOUT="2",
                )
                connectors: list[Connector] = []

                def until(p: Pipeline, s: KafkaSink, c: Connector) -> bool:
                    connectors[:] = [c]
                    return p.stats.registry_failures >= 4 and p.held >= 20

                code, pipeline = await run_until(env, until)
            # Pings every 0.5 s with 0.5 s to answer went on while registrations hung.
            assert connectors[0].connections == 1
            assert code == 1  # records were still waiting for the registry
            # Their snapshots are not in the topics: no subscription was announced live.
            assert set(pipeline.states.values()) == {"snapshot"}
            assert pipeline.stats.dead_letters == 0
            assert pipeline.stats.held_conflated > 0  # latest per key, memory bounded by keys
            assert sum(pipeline.stats.records_out.values()) == 0
            dlq = read_topic(broker.bootstrap, "e5._dlq", 1)
            assert dlq.messages == []
    finally:
        over.set()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.1)  # the handlers close their connections


class FlakyRegistry:
    """The client's mock:// registry behind a switch: while `down` is set every call fails as an
    unreachable registry does, after blocking a little as a slow one would."""

    def __init__(self, url: str) -> None:
        self._registry = SchemaRegistryClient.new_client({"url": url})
        self.down = threading.Event()
        self.down.set()
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._registry, name)

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.down.is_set():
                self.failed += 1
                time.sleep(0.2)
                raise ConnectionError("registry unreachable")
            return call(*args, **kwargs)

        return guarded


async def test_records_held_while_the_registry_is_down_arrive_once_it_is_back(
    tmp_path: Path, read_topic: Any
) -> None:
    truth = tmp_path / "truth.jsonl"
    config = SimulatorConfig(rate=500, tickers=10, truth=truth, delete_rate=0.02, msg_names=TYPES)
    registry = FlakyRegistry("mock://e7")
    with EmbeddedBroker() as broker:
        async with Simulator(config) as sim:
            env = env_for(sim, broker, "e7.", SCHEMA_REGISTRY_URL="mock://e7")

            connectors: list[Connector] = []

            def until(p: Pipeline, s: KafkaSink, c: Connector) -> bool:
                connectors[:] = [c]
                if registry.down.is_set() and p.held > 50 and p.stats.registry_failures >= 2:
                    registry.down.clear()  # the registry comes back
                return (
                    not registry.down.is_set()
                    and p.held == 0
                    and sum(p.stats.records_out.values()) > 1500
                    and all(v == "live" for v in p.states.values())
                )

            code, pipeline = await run_until(env, until, registry=registry)  # type: ignore[arg-type]
        assert code == 0
        assert pipeline.stats.dead_letters == 0
        assert registry.failed >= 2
        assert connectors[0].connections == 1  # waiting on the registry never broke the feed
        lookup = SchemaLookup(registry=registry._registry)
        checked = await asyncio.to_thread(
            assert_topics_match_truth, read_topic, broker, "e7.", truth, lookup
        )
        assert checked > 100


async def test_a_fatal_producer_error_stops_the_bridge_with_exit_code_1() -> None:
    config = SimulatorConfig(rate=300, tickers=5, msg_names=TYPES)
    with EmbeddedBroker() as broker:
        async with Simulator(config) as sim:
            settings = load_settings(env_for(sim, broker, "e6."))
            stop = asyncio.Event()

            def inject(pipeline: Pipeline, sink: KafkaSink, connector: Connector) -> None:
                # What librdkafka reports when idempotence can no longer be guaranteed; it calls
                # the error callback from the thread that polls, not the event loop's.
                error = KafkaError(KafkaError._FATAL, "UNKNOWN_PRODUCER_ID (simulated)", fatal=True)
                timer = threading.Timer(1.0, sink._on_error, args=(error,))
                timer.daemon = True
                timer.start()

            async with asyncio.timeout(60):
                code = await run_bridge(settings, stop=stop, on_pipeline=inject)
    assert code == 1


def test_a_producer_configuration_that_cannot_work_exits_non_zero() -> None:
    env = {
        **os.environ,
        "BRIDGE_SUBSCRIPTIONS": '[{"msgName": "StockPrint"}]',
        "MLINK_API_KEY": "demo-key",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "KAFKA_ACKS": "1",  # idempotence needs acks=all
        "BRIDGE_CREATE_TOPICS": "false",
        "BRIDGE_HTTP_PORT": "0",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "run"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert b"Traceback" not in proc.stderr


async def test_a_broker_down_at_start_is_waited_for_and_nothing_is_lost(
    tmp_path: Path, read_topic: Any
) -> None:
    truth = tmp_path / "truth.jsonl"
    config = SimulatorConfig(rate=400, tickers=10, truth=truth, delete_rate=0.02, msg_names=TYPES)
    broker = EmbeddedBroker()  # its port is chosen, nothing listens on it yet
    try:
        async with Simulator(config) as sim:

            async def start_broker_late() -> None:
                await asyncio.sleep(3.0)
                await asyncio.to_thread(broker.start)

            late = asyncio.create_task(start_broker_late())
            code, pipeline = await run_until(
                env_for(sim, broker, "e7."),
                lambda p, s, c: (
                    broker.pid is not None
                    and sum(p.stats.records_out.values()) > 1500
                    and all(v == "live" for v in p.states.values())
                ),
            )
            await late
        assert code == 0
        assert pipeline.stats.dead_letters == 0
        lookup = schemas_from_topic(read_topic, broker, "e7.")
        checked = await asyncio.to_thread(
            assert_topics_match_truth, read_topic, broker, "e7.", truth, lookup
        )
        assert checked > 100
    finally:
        broker.stop()


async def _http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bridge\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def test_health_and_metrics_follow_a_running_bridge() -> None:
    config = SimulatorConfig(rate=500, tickers=10, msg_names=TYPES)
    with EmbeddedBroker() as broker:
        async with Simulator(config) as sim:
            env = env_for(sim, broker, "e9.")
            port = int(env["BRIDGE_HTTP_PORT"])
            stop = asyncio.Event()
            seen: dict[str, Any] = {}

            async def probe() -> None:
                try:
                    for _ in range(200):  # the server starts before anything else
                        with contextlib.suppress(OSError):
                            seen["livez"] = await _http_get(port, "/livez")
                            break
                        await asyncio.sleep(0.05)
                    for _ in range(300):
                        status, body = await _http_get(port, "/readyz")
                        if status == 200:
                            seen["ready"] = json.loads(body)
                            break
                        await asyncio.sleep(0.1)
                    seen["before"] = (await _http_get(port, "/metrics"))[1]
                    await asyncio.sleep(1.5)
                    seen["after"] = (await _http_get(port, "/metrics"))[1]
                finally:
                    stop.set()

            prober = asyncio.create_task(probe())
            async with asyncio.timeout(90):
                code = await run_bridge(load_settings(env), stop=stop)
            await prober
    assert code == 0
    assert seen["livez"] == (200, "ok\n")
    assert seen["ready"] == {"ready": True, "failing": {}}
    before, after = seen["before"], seen["after"]
    for name in (
        "mlink_bridge_records_in_total",
        "mlink_bridge_records_out_total",
        "mlink_bridge_delivered_total",
        "mlink_bridge_latency_seconds_count",
    ):
        assert _metric(after, name) > _metric(before, name), name
    assert _metric(after, "mlink_bridge_connected") == 1
    assert _metric(after, 'mlink_bridge_subscription_state{state="live"') == len(TYPES)
    assert _metric(after, "mlink_bridge_snapshot_duration_seconds") > 0


async def test_a_reader_that_fails_still_flushes_what_it_produced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = SimulatorConfig(rate=500, tickers=10, msg_names=TYPES)
    with EmbeddedBroker() as broker:
        async with Simulator(config) as sim:
            settings = load_settings(env_for(sim, broker, "e10."))
            seen: list[tuple[Pipeline, KafkaSink, Connector]] = []

            def break_after_a_while(p: Pipeline, s: KafkaSink, c: Connector) -> None:
                seen.append((p, s, c))
                real = p.handle_batch

                def handle_batch(events: Any) -> None:
                    if sum(p.stats.records_out.values()) >= 500:
                        raise RuntimeError("a bug in the record path")
                    real(events)

                p.handle_batch = handle_batch  # type: ignore[method-assign]

            async with asyncio.timeout(60):
                code = await run_bridge(settings, on_pipeline=break_after_a_while)
    assert code == 1
    sink = seen[0][1]
    assert sink.stats.produced >= 500
    assert sink.stats.delivered == sink.stats.produced_total  # flushed despite the failure
    assert "reader failed" in caplog.text
