"""The sink's latency histogram: each observation lands in the first bucket whose bound holds it."""

from __future__ import annotations

from bridge.sink.kafka import LATENCY_BUCKETS_MS, SinkStats


def test_latencies_land_in_the_first_bucket_that_holds_them() -> None:
    stats = SinkStats()
    for ms in (0.2, 1.0, 1.01, 2.0, 9.99, 10.0, 10_000.0, 10_000.5, 3e9):
        stats.observe_latency(ms)
    counts = dict(zip((*LATENCY_BUCKETS_MS, "+Inf"), stats.latency_ms, strict=True))
    assert counts[1] == 2  # 0.2 and exactly 1.0
    assert counts[2] == 2  # 1.01 and 2.0
    assert counts[10] == 2  # 9.99 and 10.0
    assert counts[10_000] == 1
    assert counts["+Inf"] == 2
    assert sum(stats.latency_ms) == 9
    assert stats.latency_sum_ms == sum((0.2, 1.0, 1.01, 2.0, 9.99, 10.0, 10_000.0, 10_000.5, 3e9))
