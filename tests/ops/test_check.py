"""`mlink-bridge check` against the simulator and a real broker: every line says ok or why not."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.admin import AdminClient

from bridge.embedded import EmbeddedBroker
from bridge.ops.check import run_check
from bridge.simulator.server import Simulator, SimulatorConfig

pytestmark = pytest.mark.integration


def env(url: str, bootstrap: str, **extra: str) -> dict[str, str]:
    subs = [{"msgName": "StockBookQuote", "label": "books"}, {"msgName": "StockPrint"}]
    return {
        "MLINK_URL": url,
        "MLINK_API_KEY": "demo-key",
        "BRIDGE_SUBSCRIPTIONS": json.dumps(subs),
        "BRIDGE_TOPIC_PREFIX": "chk.",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        **extra,
    }


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[bool, str, str]] = []

    def __call__(self, ok: bool, what: str, detail: str) -> None:
        self.lines.append((ok, what, detail))

    def failed(self) -> dict[str, str]:
        return {what: detail for ok, what, detail in self.lines if not ok}


async def test_a_good_configuration_passes_every_check() -> None:
    with EmbeddedBroker() as broker:
        async with Simulator(SimulatorConfig(rate=50)) as sim:
            out = Lines()
            code = await run_check(
                env(sim.url("/mlink/jsonf"), broker.bootstrap, SCHEMA_REGISTRY_URL="mock://chk"),
                out,
            )
        topics = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert not [t for t in topics.topics if t.startswith("chk.")]  # read-only: nothing created
    assert code == 0, out.lines
    assert [what for _, what, _ in out.lines] == [
        "settings",
        "producer",
        "Kafka",
        "schema registry",
        "MLink",
    ]
    assert "to be created: chk.StockBookQuote" in {w: d for _, w, d in out.lines}["Kafka"]


async def test_refused_credentials_and_a_bad_producer_setting_are_reported() -> None:
    with EmbeddedBroker() as broker:
        async with Simulator(SimulatorConfig(rate=0)) as sim:
            out = Lines()
            code = await run_check(
                env(
                    sim.url("/mlink/jsonf"),
                    broker.bootstrap,
                    MLINK_API_KEY="wrong-key",
                    KAFKA_ACKS="1",  # idempotence needs acks=all
                ),
                out,
            )
    assert code == 1
    failed = out.failed()
    assert set(failed) == {"producer", "MLink"}
    assert "acks" in failed["producer"].lower()
    assert "refused the credentials" in failed["MLink"]
    assert "wrong-key" not in repr(out.lines)


async def test_unreachable_kafka_and_mlink_fail_with_reasons() -> None:
    out = Lines()
    code = await run_check(env("ws://127.0.0.1:1/mlink/jsonf", "127.0.0.1:1"), out)
    assert code == 1
    failed = out.failed()
    assert set(failed) == {"Kafka", "MLink"}
    assert "cannot list topics" in failed["Kafka"]
    assert "cannot connect" in failed["MLink"]


async def test_bad_settings_exit_2_with_one_line_per_problem() -> None:
    out = Lines()
    code = await run_check(
        {"MLINK_URL": "http://x", "BRIDGE_SUBSCRIPTIONS": "[{", "MLINK_PING_INTERVAL": "-1"}, out
    )
    assert code == 2
    problems = [detail for ok, what, detail in out.lines if not ok and what == "settings"]
    assert len(problems) == 2, problems
    assert any(p.startswith("MLINK_URL") for p in problems)
    assert any(p.startswith("MLINK_PING_INTERVAL") for p in problems)
