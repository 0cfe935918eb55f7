"""/livez, /readyz and /metrics through the real HTTP server, in each state of the bridge."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

import bridge.ops.http
from bridge.io.policy import Failure
from bridge.ops.http import HealthServer, Parts
from bridge.sink.kafka import SinkStats


async def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


@dataclass
class FakeStats:
    records_in: dict[str, int] = field(default_factory=lambda: {"StockBookQuote": 7})
    records_out: dict[str, int] = field(default_factory=lambda: {"StockBookQuote": 6})
    dead_letters: int = 1
    tombstones: int = 2
    reconciled: int = 0
    schema_versions: int = 0
    registry_failures: int = 0
    held_conflated: int = 0


@dataclass
class FakePipeline:
    states: dict[str, str] = field(default_factory=lambda: {"books": "snapshot"})
    stats: FakeStats = field(default_factory=FakeStats)
    held: int = 0
    snapshot_seconds: dict[str, float] = field(default_factory=dict)
    last_record_ns: dict[str, int] = field(default_factory=dict)


@dataclass
class FakeSink:
    stats: SinkStats = field(default_factory=SinkStats)
    fatal: Any = None
    brokers_down: bool = False
    overflowing: int = 0
    queue_depth: int = 3


@dataclass
class FakeConnector:
    connected: bool = True
    connections: int = 2
    failures: dict[Failure, int] = field(default_factory=lambda: dict.fromkeys(Failure, 0))


async def test_health_follows_the_bridge_through_its_states() -> None:
    parts = Parts()
    server = HealthServer(parts, host="127.0.0.1", port=0)
    await server.start()
    try:
        port = server.port
        assert await get(port, "/livez") == (200, "ok\n")
        status, body = await get(port, "/readyz")
        assert status == 503
        assert "starting" in json.loads(body)["failing"]

        pipeline, sink, connector = FakePipeline(), FakeSink(), FakeConnector()
        parts.pipeline, parts.sink, parts.connector = pipeline, sink, connector  # type: ignore[assignment]
        status, body = await get(port, "/readyz")
        assert status == 503
        assert json.loads(body)["failing"] == {"subscriptions": "books=snapshot"}

        pipeline.states["books"] = "live"
        assert (await get(port, "/readyz"))[0] == 200

        sink.brokers_down = True
        status, body = await get(port, "/readyz")
        failing = json.loads(body)["failing"]
        assert (status, failing) == (503, {"producer": "all Kafka brokers are down; records wait"})
        sink.queue_depth = 0  # nothing waits: a quiet feed is not kept unready by an old error
        assert (await get(port, "/readyz"))[0] == 200
        sink.brokers_down = False
        parts.reading_paused = True  # the overflow map or the held records reached their cap
        assert (await get(port, "/readyz"))[0] == 503
        parts.reading_paused = False

        connector.connected = False
        status, body = await get(port, "/readyz")
        assert json.loads(body)["failing"] == {"mlink": "not connected"}
        assert (await get(port, "/livez"))[0] == 200  # liveness never depends on MLink or Kafka

        assert (await get(port, "/nothing"))[0] == 404
        assert (await get(port, "/livez", "POST"))[0] == 405
    finally:
        await server.stop()


async def test_metrics_are_read_from_the_counters_when_scraped() -> None:
    parts = Parts()
    server = HealthServer(parts, host="127.0.0.1", port=0)
    await server.start()
    try:
        pipeline, sink, connector = FakePipeline(), FakeSink(), FakeConnector()
        parts.pipeline, parts.sink, parts.connector = pipeline, sink, connector  # type: ignore[assignment]
        sink.stats.delivered = 5
        sink.stats.observe_latency(3.0)
        sink.stats.observe_latency(700.0)
        connector.failures[Failure.KEEPALIVE] = 4
        pipeline.snapshot_seconds["books"] = 1.5
        status, text = await get(server.port, "/metrics")
        assert status == 200
        assert 'mlink_bridge_records_in_total{type="StockBookQuote"} 7.0' in text
        assert 'mlink_bridge_records_out_total{type="StockBookQuote"} 6.0' in text
        assert "mlink_bridge_delivered_total 5.0" in text
        assert "mlink_bridge_dead_letters_total 1.0" in text
        assert 'mlink_bridge_reconnects_total{reason="keepalive"} 4.0' in text
        assert 'mlink_bridge_latency_seconds_bucket{le="0.005"} 1.0' in text
        assert 'mlink_bridge_latency_seconds_bucket{le="1.0"} 2.0' in text
        assert 'mlink_bridge_latency_seconds_bucket{le="+Inf"} 2.0' in text
        assert "mlink_bridge_producer_queue_depth 3.0" in text
        assert 'mlink_bridge_snapshot_duration_seconds{subscription="books"} 1.5' in text
        assert 'mlink_bridge_subscription_state{state="snapshot",subscription="books"} 1.0' in text
        pipeline.stats.records_in["StockBookQuote"] = 9  # moves when records flow
        _, text = await get(server.port, "/metrics")
        assert 'mlink_bridge_records_in_total{type="StockBookQuote"} 9.0' in text
    finally:
        await server.stop()


async def test_a_malformed_or_silent_client_gets_an_answer_and_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bridge.ops.http, "_READ_TIMEOUT", 0.3)
    server = HealthServer(Parts(), host="127.0.0.1", port=0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"garbage\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        assert data.startswith(b"HTTP/1.1 400")
        writer.close()

        silent_reader, silent = await asyncio.open_connection("127.0.0.1", server.port)
        data = await asyncio.wait_for(silent_reader.read(), 5)  # says nothing at all
        assert data.startswith(b"HTTP/1.1 400")
        silent.close()

        status, body = await get(server.port, "/livez", "HEAD")
        assert (status, body) == (200, "")  # the headers only
    finally:
        await server.stop()


async def test_idle_connections_never_starve_the_liveness_probe() -> None:
    server = HealthServer(Parts(), host="127.0.0.1", port=0)
    await server.start()
    idle = []
    try:
        for _ in range(bridge.ops.http._MAX_CONNECTIONS + 8):  # more than it holds, all silent
            idle.append(await asyncio.open_connection("127.0.0.1", server.port))
        await asyncio.sleep(0.1)
        for _ in range(3):
            assert await get(server.port, "/livez") == (200, "ok\n")
        assert server._open <= bridge.ops.http._MAX_CONNECTIONS + 1
    finally:
        for _, writer in idle:
            writer.close()
        await server.stop()
