"""SIGTERM in the middle of a burst: the real `mlink-bridge run` process stops reading, flushes,
and exits 0 only if every record it produced is in Kafka; with the broker gone it exits 1 and
says how many records were not delivered."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from bridge.embedded import EmbeddedBroker, free_port
from bridge.simulator.server import Simulator, SimulatorConfig

pytestmark = pytest.mark.integration
TYPES = ("StockBookQuote", "OptionNbboQuote", "StockPrint")


def bridge_env(sim: Simulator, broker: EmbeddedBroker, prefix: str, port: int) -> dict[str, str]:
    subs = [{"msgName": name, "activeLatency": 0} for name in TYPES]
    return {
        **os.environ,
        "MLINK_URL": sim.url("/mlink/jsonf"),
        "MLINK_API_KEY": "demo-key",
        "BRIDGE_SUBSCRIPTIONS": json.dumps(subs),
        "BRIDGE_TOPIC_PREFIX": prefix,
        "BRIDGE_TOPIC_PARTITIONS": "3",
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "BRIDGE_HTTP_HOST": "127.0.0.1",
        "BRIDGE_HTTP_PORT": str(port),
        "BRIDGE_FLUSH_TIMEOUT": "5",
        "LOG_FORMAT": "json",
    }


async def delivered_so_far(port: int) -> float:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0.0
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: bridge\r\n\r\n")
    await writer.drain()
    text = (await asyncio.wait_for(reader.read(), 5)).decode()
    writer.close()
    for line in text.splitlines():
        if line.startswith("mlink_bridge_delivered_total "):
            return float(line.split()[1])
    return 0.0


async def start_and_wait_for_flow(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run"], env=env, stderr=subprocess.PIPE
    )
    for _ in range(600):
        if proc.poll() is not None or await delivered_so_far(port) > 2000:
            break
        await asyncio.sleep(0.05)
    assert proc.poll() is None, "the bridge stopped by itself"
    return proc


def summary(stderr: bytes) -> dict[str, Any]:
    logs = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    (line,) = [doc for doc in logs if "undelivered" in doc]
    return line


async def test_sigterm_mid_burst_flushes_everything_and_exits_0(read_topic: Any) -> None:
    port = free_port()
    config = SimulatorConfig(rate=4000, tickers=30, msg_names=TYPES)
    with EmbeddedBroker() as broker:
        async with Simulator(config) as sim:
            proc = await start_and_wait_for_flow(bridge_env(sim, broker, "s1.", port), port)
            proc.send_signal(signal.SIGTERM)  # records are still streaming in
            _, stderr = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        done = summary(stderr)
        assert done["undelivered"] == 0
        assert done["failed"] == 0
        assert done["delivered"] == done["produced"] > 2000
        topics = [f"s1.{name}" for name in TYPES] + ["s1._status", "s1._schemas", "s1._dlq"]
        in_kafka = 0
        for topic in topics:
            partitions = 3 if topic.removeprefix("s1.") in TYPES else 1
            got = read_topic(broker.bootstrap, topic, partitions)
            assert got.errors == []
            in_kafka += len(got.messages)
        assert in_kafka == done["delivered"]  # every acknowledged record is there
        assert "demo-key" not in stderr.decode()  # the API key never reaches the logs


async def test_sigterm_with_the_broker_gone_exits_1_and_counts_what_was_lost() -> None:
    port = free_port()
    config = SimulatorConfig(rate=2000, tickers=30, msg_names=TYPES)
    broker = EmbeddedBroker()
    broker.start()
    try:
        async with Simulator(config) as sim:
            proc = await start_and_wait_for_flow(bridge_env(sim, broker, "s2.", port), port)
            broker.kill()
            await asyncio.sleep(1.0)  # records keep arriving; nothing can be delivered
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        broker.stop()
    assert proc.returncode == 1
    done = summary(stderr)
    assert done["undelivered"] > 0
    assert "were not delivered within" in stderr.decode()
