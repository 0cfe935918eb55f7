"""Simulator /mlink/proto -> bridge -> Tansu: the topics converge to the simulator's truth."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.embedded import EmbeddedBroker
from bridge.simulator.server import Simulator, SimulatorConfig
from tests.e2e.test_pipeline import (
    TYPES,
    assert_topics_match_truth,
    env_for,
    run_until,
    schemas_from_topic,
)

pytestmark = pytest.mark.integration
DESCRIPTORS = Path(__file__).resolve().parents[2] / "bridge" / "mlink" / "data" / "mlink.protoset"


async def test_protobuf_topics_converge_to_the_simulators_truth(
    tmp_path: Path, read_topic: Any
) -> None:
    truth = tmp_path / "truth.jsonl"
    config = SimulatorConfig(rate=800, tickers=20, truth=truth, delete_rate=0.02, msg_names=TYPES)
    with EmbeddedBroker() as broker:
        async with Simulator(config) as sim:
            env = env_for(
                sim,
                broker,
                "p1.",
                MLINK_URL=sim.url("/mlink/proto"),
                MLINK_PROTO_DESCRIPTORS=str(DESCRIPTORS),  # as a user points at a compiled set
            )
            code, pipeline = await run_until(
                env,
                lambda p, s, c: (
                    sum(p.stats.records_out.values()) > 3000
                    and all(v == "live" for v in p.states.values())
                ),
            )
        assert code == 0
        assert pipeline.stats.dead_letters == 0
        assert pipeline.stats.tombstones > 0
        lookup = schemas_from_topic(read_topic, broker, "p1.")
        checked = await asyncio.to_thread(
            assert_topics_match_truth, read_topic, broker, "p1.", truth, lookup
        )
        assert checked > 300
        status = read_topic(broker.bootstrap, "p1._status", 1)
        last = {m.key().decode(): json.loads(m.value()) for m in status.messages}
        assert {v["state"] for v in last.values()} == {"live"}
