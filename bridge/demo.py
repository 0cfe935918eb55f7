"""`mlink-bridge demo`: a newcomer's first five minutes.

Starts an embedded Kafka-protocol broker (Tansu), the MLink simulator and the bridge in one
process, and shows the compacted topics filling live: records per topic, rates, deliveries,
dead letters, latency and each subscription's state. At the end it reads a few records back
from Kafka and decodes them, as a downstream consumer would.
"""

from __future__ import annotations

import asyncio
import json
import time

from bridge.app import Pipeline, run_bridge
from bridge.embedded import EmbeddedBroker, free_port
from bridge.io.connector import Connector
from bridge.settings import load_settings
from bridge.simulator.market import DEFAULT_TYPES
from bridge.simulator.server import Simulator, SimulatorConfig
from bridge.sink.kafka import KafkaSink
from bridge.tail import tail_topic


def _view(pipeline: Pipeline, sink: KafkaSink, connector: Connector, elapsed: float) -> str:
    stats = sink.stats
    out = [
        f"[{elapsed:5.1f}s] MLink connections {connector.connections}  "
        f"delivered {stats.delivered:,}  in flight {sink.queue_depth:,}  "
        f"conflated {stats.conflated:,}  dead letters {pipeline.stats.dead_letters}  "
        f"latency p50 <= {stats.latency_quantile(0.5) or 0:g} ms, "
        f"p99 <= {stats.latency_quantile(0.99) or 0:g} ms"
    ]
    for name in sorted(pipeline.stats.records_out):
        label = next((s for s in pipeline.subscriptions if s.startswith(name)), "")
        out.append(
            f"    mlink.{name:<18} {pipeline.stats.records_out[name]:>8,} records  "
            f"[{pipeline.states.get(label, '?')}]"
        )
    return "\n".join(out)


async def run_demo(seconds: float, rate: float) -> int:
    print("starting an embedded Kafka broker (Tansu) ...", flush=True)
    with EmbeddedBroker() as broker:
        config = SimulatorConfig(rate=rate, msg_names=DEFAULT_TYPES)
        async with Simulator(config) as sim:
            http = free_port()
            print(f"MLink simulator on {sim.url('/mlink/jsonf')}, Kafka on {broker.bootstrap}")
            print(f"bridge health and metrics on http://127.0.0.1:{http}/readyz and /metrics")
            subs = [{"msgName": name, "activeLatency": 100} for name in DEFAULT_TYPES]
            env = {
                "MLINK_URL": sim.url("/mlink/jsonf"),
                "MLINK_API_KEY": "demo-key",
                "BRIDGE_SUBSCRIPTIONS": json.dumps(subs),
                "BRIDGE_TOPIC_PARTITIONS": "3",
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "BRIDGE_HTTP_HOST": "127.0.0.1",
                "BRIDGE_HTTP_PORT": str(http),
            }
            stop = asyncio.Event()
            parts: list[tuple[Pipeline, KafkaSink, Connector]] = []

            async def show() -> None:
                started = time.monotonic()
                while not stop.is_set():
                    await asyncio.sleep(2)
                    elapsed = time.monotonic() - started
                    if parts:
                        print(_view(*parts[0], elapsed), flush=True)
                    if seconds and elapsed >= seconds:
                        stop.set()

            viewer = asyncio.create_task(show())
            code = await run_bridge(
                load_settings(env), stop=stop, on_pipeline=lambda *p: parts.append(p)
            )
            viewer.cancel()
        print("\nwhat a consumer reads back (mlink.StockBookQuote, decoded):")
        for line in await asyncio.to_thread(
            tail_topic, broker.bootstrap, "mlink.StockBookQuote", "mlink._schemas", 3
        ):
            print("   ", line)
    print(f"demo stopped (exit code {code})")
    return code
