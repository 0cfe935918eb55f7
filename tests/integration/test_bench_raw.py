"""The bench's raw readers and producers against the simulator and a real broker: what they
measure, not how fast it is."""

from __future__ import annotations

import pytest

from bridge.bench import raw_produce, raw_produce_paced, raw_websocket, raw_websocket_paced
from bridge.embedded import EmbeddedBroker

pytestmark = pytest.mark.integration


def test_the_floor_measures_every_window_it_is_asked_for(broker: EmbeddedBroker) -> None:
    results = raw_produce_paced(broker.bootstrap, 0.5, 2_000, 2)
    assert [r.name for r in results] == ["floor: raw produce at 2k records/s"] * 2
    for result in results:
        assert result.rate > 0  # records were delivered in the window
        assert result.p50_ms is not None
        assert result.p99_ms is not None
        assert 0 <= result.p50_ms <= result.p99_ms
        assert result.cpu is not None


def test_the_produce_ceiling_reports_its_rate_and_latency(broker: EmbeddedBroker) -> None:
    result = raw_produce(broker.bootstrap, 3_000)
    assert result.name == "ceiling 2: raw produce (pre-serialized)"
    assert result.rate > 0
    assert result.p50_ms is not None
    assert result.p99_ms is not None
    assert 0 <= result.p50_ms <= result.p99_ms


async def test_the_read_ceiling_and_floor_read_the_simulator() -> None:
    ceiling = await raw_websocket(0.5, 2_000)
    assert ceiling.rate > 0
    floors = await raw_websocket_paced(0.5, 2_000, 2)
    assert [r.name for r in floors] == ["floor: raw websocket read at 2k records/s"] * 2
    for result in floors:
        assert result.rate > 0
        assert result.p50_ms is not None
        assert result.p99_ms is not None
        assert result.p50_ms <= result.p99_ms
