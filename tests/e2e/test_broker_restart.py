"""Simulator -> bridge -> Tansu on durable (S3) storage, with the broker restarted mid-stream.

Tansu keeps its log in an S3 bucket served by a local emulator (moto), so a restarted broker on
the same port finds the records it stored. The restart is graceful (SIGTERM); even so Tansu 0.6
loses a few records it acknowledges right after such a restart, in one partition, and gives
those acknowledgements impossible offsets (-1, or offsets it had already given to other
records); see README, "Tested against Tansu". The bridge cannot tell such an acknowledgement from
a good one, so the test proves what the bridge owns: it rides out the outage, everything
acknowledged before the restart is still there, and anything missing is exactly what Tansu
acknowledged with an impossible offset. When Tansu does not misbehave, the topics must match the
simulator's truth exactly.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from bridge.app import Pipeline
from bridge.embedded import EmbeddedBroker, free_port
from bridge.io.connector import Connector
from bridge.simulator.server import Simulator, SimulatorConfig
from bridge.simulator.truth import latest_state
from bridge.sink.kafka import KafkaSink
from tests.e2e.test_pipeline import (
    TYPES,
    _http_get,
    assert_topics_match_truth,
    env_for,
    run_until,
    schemas_from_topic,
)

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class S3Storage:
    """A bucket in a local S3 emulator, and how Tansu reaches it."""

    url: str  # Tansu's --storage-engine
    env: dict[str, str]


@pytest.fixture
def s3_storage(tmp_path: Path) -> Iterator[S3Storage]:
    """moto's S3 server on 127.0.0.1 with one bucket; stopped by its PID at the end."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = (tmp_path / "moto.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}),
        **credentials,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with code {proc.returncode}: see {log.name}")
            try:
                s3.create_bucket(Bucket="tansu")
                break
            except Exception:  # not listening yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield S3Storage(
            "s3://tansu/",
            {
                "AWS_ENDPOINT": endpoint,
                "AWS_ALLOW_HTTP": "true",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": credentials["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": credentials["aws_secret_access_key"],
            },
        )
    finally:
        s3.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f}s: {what}")
        await asyncio.sleep(0.05)


def assert_order_kept_per_key(read_topic: Any, bootstrap: str, topic: str) -> int:
    """Per key, the records are in the order the bridge received them (its `bridge.recv_ns`
    header never goes back): a retried batch did not overtake a later one across the restart."""
    got = read_topic(bootstrap, topic, 3)
    assert got.errors == []
    last: dict[bytes, int] = {}
    for msg in sorted(got.messages, key=lambda m: (m.partition(), m.offset())):
        recv_ns = int(dict(msg.headers())["bridge.recv_ns"])
        assert recv_ns >= last.get(msg.key(), 0), f"{topic} {msg.key()!r}: out of order"
        last[msg.key()] = recv_ns
    return len(got.messages)


@dataclass(frozen=True)
class Ack:
    topic: str
    partition: int
    offset: int | None  # None: librdkafka had no offset (Tansu answered "duplicate sequence")
    key: bytes
    value: bytes | None
    at: float  # time.monotonic()

    @property
    def record(self) -> tuple[str, int, bytes, bytes | None]:
        return (self.topic, self.partition, self.key, self.value)


def spy_on_acks(monkeypatch: pytest.MonkeyPatch) -> list[Ack]:
    """Every successful delivery report the bridge's producer gets, in order."""
    acks: list[Ack] = []
    delivered = KafkaSink._delivered

    def spy(self: KafkaSink, timed: bool, err: Any, msg: Any) -> None:
        if err is None:
            at = time.monotonic()
            acks.append(Ack(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), at))
        delivered(self, timed, err, msg)

    monkeypatch.setattr(KafkaSink, "_delivered", spy)
    return acks


def impossible_acks(acks: list[Ack]) -> list[Ack]:
    """Acknowledgements without an offset, or at an offset already acknowledged for another
    record of the same partition: a broker that keeps its log cannot give them."""
    seen: set[tuple[str, int, int]] = set()
    odd = []
    for ack in acks:
        where = (ack.topic, ack.partition, ack.offset)
        if ack.offset is None or ack.offset < 0 or where in seen:
            odd.append(ack)
        elif ack.offset is not None:
            seen.add((ack.topic, ack.partition, ack.offset))
    return odd


async def test_a_graceful_broker_restart_mid_stream_loses_nothing_the_bridge_owns(
    tmp_path: Path, read_topic: Any, s3_storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    truth = tmp_path / "truth.jsonl"
    config = SimulatorConfig(rate=300, tickers=10, truth=truth, delete_rate=0.02, msg_names=TYPES)
    broker = EmbeddedBroker(
        storage=s3_storage.url, env=s3_storage.env, log_path=tmp_path / "tansu.log"
    )
    broker.start(timeout=60)
    acks = spy_on_acks(monkeypatch)
    seen: list[tuple[Pipeline, KafkaSink, Connector]] = []
    caught_up = asyncio.Event()
    facts: dict[str, Any] = {}
    try:
        async with Simulator(config) as sim:
            env = env_for(sim, broker, "r1.", BRIDGE_FLUSH_TIMEOUT="30")
            port = int(env["BRIDGE_HTTP_PORT"])

            async def restart_the_broker() -> None:
                await wait_for(lambda: bool(seen), 60, "the bridge started")
                pipeline, sink, _connector = seen[0]
                await wait_for(
                    lambda: (
                        all(v == "live" for v in pipeline.states.values())
                        and sink.stats.delivered > 500
                    ),
                    60,
                    "records flowing with every subscription live",
                )
                # Graceful: Tansu waits for its clients (~5 s) and answers what is in flight.
                facts["stop_code"] = await asyncio.to_thread(broker.stop, signal.SIGTERM, 40)
                down = time.monotonic()
                await wait_for(lambda: sink.brokers_down, 20, "the producer saw the broker gone")
                await asyncio.sleep(0.5)  # delivery reports of the last acks are served
                delivered_at_stop, produced_at_stop = sink.stats.delivered, sink.stats.produced
                await asyncio.sleep(max(1.0, down + 3 - time.monotonic()))
                facts["readyz_down"] = await _http_get(port, "/readyz")
                facts["delivered_while_down"] = sink.stats.delivered - delivered_at_stop
                facts["waiting_while_down"] = sink.queue_depth
                facts["produced_while_down"] = sink.stats.produced - produced_at_stop
                facts["restart_at"] = time.monotonic()
                await asyncio.to_thread(broker.start, 60)  # same port, same bucket
                produced_at_start = sink.stats.produced_total
                await wait_for(
                    lambda: sink.stats.delivered >= produced_at_start + 500,
                    60,
                    "the records that waited, and new ones, delivered after the restart",
                )
                await wait_for(lambda: not sink.brokers_down, 10, "brokers_down cleared")
                facts["readyz_up"] = await _http_get(port, "/readyz")
                caught_up.set()

            def until(p: Pipeline, s: KafkaSink, c: Connector) -> bool:
                seen[:] = [(p, s, c)]
                return caught_up.is_set()

            restarter = asyncio.create_task(restart_the_broker())
            try:
                code, pipeline = await run_until(env, until, timeout=150)
            finally:
                restarter.cancel()
            if restarter.done() and not restarter.cancelled() and restarter.exception():
                raise restarter.exception()  # type: ignore[misc]

        sink, connector = seen[0][1], seen[0][2]
        assert facts["stop_code"] == 0  # SIGTERM obeyed, not a SIGKILL after a timeout
        # While the broker was away nothing was acknowledged, records waited in the producer,
        # and readiness said so.
        assert facts["delivered_while_down"] == 0
        assert facts["produced_while_down"] > 0
        assert facts["waiting_while_down"] > 0
        status, body = facts["readyz_down"]
        assert status == 503
        assert "all Kafka brokers are down" in json.loads(body)["failing"]["producer"]
        assert facts["readyz_up"][0] == 200

        assert code == 0  # every record produced was acknowledged
        assert sink.fatal is None
        assert sink.stats.lost == 0
        assert pipeline.stats.dead_letters == 0
        assert connector.connections == 1  # the MLink feed never broke

        # Read everything back from the restarted broker.
        topics = [f"r1.{name}" for name in TYPES] + ["r1._status", "r1._schemas", "r1._dlq"]
        stored: Counter[tuple[str, int, bytes, bytes | None]] = Counter()
        for topic in topics:
            got = await asyncio.to_thread(read_topic, broker.bootstrap, topic, 3)
            assert got.errors == []
            stored.update((m.topic(), m.partition(), m.key(), m.value()) for m in got.messages)
        before = [a for a in acks if a.at < facts["restart_at"]]
        after = [a for a in acks if a.at >= facts["restart_at"]]
        assert len(acks) == sink.stats.delivered
        assert before
        assert after

        # Everything acknowledged before the restart survived it (the storage is durable).
        missing_before = Counter(a.record for a in before) - stored
        assert not missing_before, f"acknowledged before the restart, gone: {missing_before}"
        # Nothing is in a topic that was not acknowledged (no duplicate from a retried batch).
        assert not stored - Counter(a.record for a in acks)
        for topic in topics[: len(TYPES)]:
            await asyncio.to_thread(assert_order_kept_per_key, read_topic, broker.bootstrap, topic)

        # After the restart: whatever is missing is what Tansu acknowledged with an impossible
        # offset (see the module docstring); every other acknowledged record is there.
        odd = [a for a in impossible_acks(acks) if a.at >= facts["restart_at"]]
        missing_after = Counter(a.record for a in after) - stored
        assert not missing_after - Counter(a.record for a in odd), (
            f"missing without a Tansu anomaly: {missing_after}; impossible acks: {odd}; "
            f"acks of the missing: {[a for a in after if a.record in missing_after]}"
        )
        if not odd:  # Tansu behaved: the topics hold exactly what was acknowledged
            assert sum(stored.values()) == sink.stats.delivered
        # The latest value per key is the simulator's, for every key but the few whose records
        # Tansu dropped (each of them named in `missing_after`).
        lost = {(topic.removeprefix("r1."), key.decode()) for topic, _p, key, _v in missing_after}

        def read_kept(bootstrap: str, topic: str, partitions: int) -> Any:
            got = read_topic(bootstrap, topic, partitions)
            name = topic.removeprefix("r1.")
            got.messages = [m for m in got.messages if (name, m.key().decode()) not in lost]
            return got

        expected = {ident: v for ident, v in latest_state(truth).items() if ident not in lost}
        lookup = schemas_from_topic(read_topic, broker, "r1.")
        checked = await asyncio.to_thread(
            assert_topics_match_truth, read_kept, broker, "r1.", truth, lookup, expected=expected
        )
        assert checked > 100
        facts["lost_by_tansu"] = sum(missing_after.values())
        facts["impossible_acks"] = len(odd)
        print(f"broker restart: {facts}")  # shown with -s: how the restart went
    finally:
        broker.stop(timeout=40)
