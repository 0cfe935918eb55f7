"""Health and metrics over HTTP on BRIDGE_HTTP_PORT, served by the bridge's own event loop.

* `/livez`: 200 while the event loop answers. It depends on nothing outside the process, so a
  broker or MLink outage never gets the pod restarted; a loop that is stuck does.
* `/readyz`: 200 when the MLink connection is up, every subscription has completed its snapshot
  and is live, and the producer is healthy (no fatal error, brokers reachable, the overflow map
  below its cap); else 503. The body is JSON and says which checks fail.
* `/metrics`: Prometheus text format. The values are read from the pipeline's, sink's and
  connector's counters when scraped: nothing is added to the per-record path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bridge.io.policy import Failure
from bridge.sink.kafka import LATENCY_BUCKETS_MS

if TYPE_CHECKING:
    from bridge.app import Pipeline
    from bridge.io.connector import Connector
    from bridge.sink.kafka import KafkaSink

__all__ = ["BridgeCollector", "HealthServer", "Parts", "readiness"]

log = logging.getLogger("mlink.http")

_MAX_REQUEST = 8192
_MAX_CONNECTIONS = 32
_READ_TIMEOUT = 5.0
PREFIX = "mlink_bridge"


@dataclass
class Parts:
    """What health and metrics read; set once the pipeline exists (None before)."""

    pipeline: Pipeline | None = None
    sink: KafkaSink | None = None
    connector: Connector | None = None
    reading_paused: bool = False  # set while the reader waits for the broker or the registry


def readiness(parts: Parts) -> dict[str, str]:
    """The failing readiness checks, by name (empty: ready)."""
    pipeline, sink, connector = parts.pipeline, parts.sink, parts.connector
    if pipeline is None or sink is None or connector is None:
        return {"starting": "topics and producer not ready yet"}
    failing: dict[str, str] = {}
    if not connector.connected:
        failing["mlink"] = "not connected"
    not_live = sorted(label for label, state in pipeline.states.items() if state != "live")
    if not_live:
        failing["subscriptions"] = ", ".join(f"{x}={pipeline.states[x]}" for x in not_live)
    if sink.fatal is not None:
        failing["producer"] = str(sink.fatal)
    elif sink.brokers_down and sink.queue_depth:
        failing["producer"] = "all Kafka brokers are down; records wait"
    elif parts.reading_paused:
        failing["producer"] = "reading from MLink paused: records wait for the broker or registry"
    if pipeline.held:
        failing["schemas"] = f"{pipeline.held} records wait for a schema registration"
    return failing


class BridgeCollector(Collector):
    """Prometheus metrics read from the running parts at scrape time."""

    def __init__(self, parts: Parts) -> None:
        self._parts = parts

    def collect(self) -> Iterator[Metric]:
        pipeline, sink, connector = self._parts.pipeline, self._parts.sink, self._parts.connector
        up = GaugeMetricFamily(f"{PREFIX}_up", "1 once the pipeline runs")
        up.add_metric([], 1.0 if pipeline is not None else 0.0)
        yield up
        if pipeline is not None:
            stats = pipeline.stats
            records_in = CounterMetricFamily(
                f"{PREFIX}_records_in", "records received from MLink", labels=["type"]
            )
            for mtyp, n in sorted(stats.records_in.items()):
                records_in.add_metric([mtyp], n)
            yield records_in
            records_out = CounterMetricFamily(
                f"{PREFIX}_records_out",
                "records handed to Kafka (values and tombstones)",
                labels=["type"],
            )
            for mtyp, n in sorted(stats.records_out.items()):
                records_out.add_metric([mtyp], n)
            yield records_out
            for name, value, text in (
                ("tombstones", stats.tombstones, "deletes written as tombstones"),
                ("dead_letters", stats.dead_letters, "records sent to the dead-letter topic"),
                ("reconciled", stats.reconciled, "tombstones written by reconciliation"),
                ("schema_versions", stats.schema_versions, "schema versions added by evolution"),
                ("registry_failures", stats.registry_failures, "failed schema registrations"),
                ("held_conflated", stats.held_conflated, "held records replaced by newer ones"),
            ):
                yield CounterMetricFamily(f"{PREFIX}_{name}", text, value=value)
            yield GaugeMetricFamily(
                f"{PREFIX}_held_records", "records waiting for a schema", value=pipeline.held
            )
            state = GaugeMetricFamily(
                f"{PREFIX}_subscription_state",
                "1 for the subscription's current state",
                labels=["subscription", "state"],
            )
            for label, current in sorted(pipeline.states.items()):
                for candidate in ("connecting", "snapshot", "live", "stale", "down"):
                    state.add_metric([label, candidate], 1.0 if current == candidate else 0.0)
            yield state
            duration = GaugeMetricFamily(
                f"{PREFIX}_snapshot_duration_seconds",
                "how long the last complete snapshot took",
                labels=["subscription"],
            )
            for label, seconds in sorted(pipeline.snapshot_seconds.items()):
                duration.add_metric([label], seconds)
            yield duration
            age = GaugeMetricFamily(
                f"{PREFIX}_last_record_age_seconds",
                "time since the subscription's last record",
                labels=["subscription"],
            )
            now = time.time_ns()
            for label, stamp in sorted(pipeline.last_record_ns.items()):
                age.add_metric([label], max(0.0, (now - stamp) / 1e9))
            yield age
        if sink is not None:
            s = sink.stats
            for name, value, text in (
                ("produced", s.produced_total, "records handed to librdkafka"),
                ("delivered", s.delivered, "records acknowledged by the broker"),
                ("conflated", s.conflated, "records replaced in the overflow map"),
                ("refused", s.refused, "records librdkafka refused to take (too large, say)"),
                ("produced_bytes", s.bytes_out, "value bytes produced"),
            ):
                yield CounterMetricFamily(f"{PREFIX}_{name}", text, value=value)
            errors = CounterMetricFamily(
                f"{PREFIX}_delivery_errors", "failed deliveries by error", labels=["error"]
            )
            for error, n in sorted(dict(s.errors).items()):
                errors.add_metric([error], n)
            yield errors
            yield GaugeMetricFamily(
                f"{PREFIX}_producer_queue_depth",
                "records waiting: librdkafka's queue plus the overflow map",
                value=sink.queue_depth,
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_overflow_records", "records in the overflow map", value=sink.overflowing
            )
            yield _latency(s.latency_ms, s.latency_sum_ms)
        if connector is not None:
            yield CounterMetricFamily(
                f"{PREFIX}_connections", "MLink connections opened", value=connector.connections
            )
            reconnects = CounterMetricFamily(
                f"{PREFIX}_reconnects", "MLink connections that ended, by reason", labels=["reason"]
            )
            for failure in Failure:
                reconnects.add_metric([failure.value], connector.failures[failure])
            yield reconnects
            yield CounterMetricFamily(
                f"{PREFIX}_auth_failures",
                "MLink authentication refusals",
                value=connector.failures[Failure.AUTH],
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_connected",
                "1 while connected to MLink",
                value=float(connector.connected),
            )


def _latency(counts: list[int], sum_ms: float) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip(LATENCY_BUCKETS_MS, counts, strict=False):
        cumulative += count
        buckets.append((repr(bound / 1000), cumulative))
    buckets.append(("+Inf", sum(counts)))
    return HistogramMetricFamily(
        f"{PREFIX}_latency_seconds",
        "live records: source timestamp to the broker's acknowledgement",
        buckets=buckets,
        sum_value=sum_ms / 1000,
    )


class HealthServer:
    """A minimal HTTP/1.1 server for the three endpoints (GET only, one request per connection)."""

    def __init__(self, parts: Parts, host: str = "0.0.0.0", port: int = 8080) -> None:
        self.parts = parts
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._open = 0
        # Connections still waiting for their request, oldest first.
        self._silent: dict[asyncio.StreamWriter, None] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BridgeCollector(parts))

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        log.info("health and metrics on port %d", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= _MAX_CONNECTIONS:
            if not self._silent:
                writer.close()  # every slot is answering: probes and scrapes are few
                return
            # A slot held by a client that has not said what it wants goes to the newcomer:
            # idle connections must not starve the liveness probe.
            oldest = next(iter(self._silent))
            del self._silent[oldest]
            oldest.close()
        self._open += 1
        try:
            await self._answer(reader, writer)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._open -= 1
            self._silent.pop(writer, None)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = b""
        try:
            self._silent[writer] = None
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            self._silent.pop(writer, None)
            status, ctype, body = self.respond(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        except Exception:
            log.exception("health server: cannot answer %r", head[:100])
            status, ctype, body = 500, "text/plain", b"internal error\n"
        header = (
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n"
            % (status, _REASONS.get(status, b"OK"), ctype.encode(), len(body))
        )
        writer.write(header if head.startswith(b"HEAD ") else header + body)
        async with asyncio.timeout(_READ_TIMEOUT):
            await writer.drain()

    def respond(self, head: bytes) -> tuple[int, str, bytes]:
        line = head.split(b"\r\n", 1)[0].split()
        if len(line) != 3 or len(head) > _MAX_REQUEST:
            return 400, "text/plain", b"bad request\n"
        method, target = line[0], line[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if target == b"/livez":
            return 200, "text/plain", b"ok\n"
        if target == b"/readyz":
            failing = readiness(self.parts)
            body = orjson.dumps({"ready": not failing, "failing": failing}) + b"\n"
            return (503 if failing else 200), "application/json", body
        if target == b"/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.registry)
        return 404, "text/plain", b"not found\n"


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
