"""The bench's own arithmetic (the runs themselves are measurements, not tests)."""

from __future__ import annotations

import os
from pathlib import Path

from bridge.bench import (
    Result,
    Steal,
    _spread,
    _window,
    bracketed_ratios,
    pin_layout,
    pin_threads,
    quantiles,
    source_limited,
)
from bridge.sink.kafka import SinkStats


def test_quantiles_are_exact_order_statistics() -> None:
    samples = [float(x) for x in range(1000, 0, -1)]  # 1..1000 ms, in any order
    assert quantiles(samples) == (501.0, 991.0)
    assert quantiles([4.0]) == (4.0, 4.0)
    assert quantiles([]) == (None, None)


def test_a_window_keeps_every_latency_from_its_start() -> None:
    stats = SinkStats()
    stats.observe_latency(50.0)  # before the window: in the histogram only
    stats.delivered = 7
    assert _window(stats) == 7
    for ms in (3.0, 1.5, 12.0):
        stats.observe_latency(ms)
    assert stats.latency_samples == [3.0, 1.5, 12.0]
    assert sum(stats.latency_ms) == 4


def test_result_lines_show_rate_latency_and_cpu() -> None:
    line = Result("bridge", 21_400.4, 7.25, 18.5, 0.97).line()
    assert "21,400 records/s" in line
    assert "p50 7.2 ms, p99 18.5 ms" in line
    assert "97% of a core" in line
    assert Result("ceiling", 100.0).line().endswith("100 records/s")


def test_pin_threads_pins_every_thread_of_a_process() -> None:
    cores = os.sched_getaffinity(0)
    pin_threads(os.getpid(), cores)
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        assert os.sched_getaffinity(int(task)) == cores


def test_steal_counts_only_the_given_cores_over_the_window(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal: the 8th number is stolen time, in ticks
    lines = "cpu  9 9 9 9 9 9 9 {all}\ncpu0 1 1 1 1 1 1 1 {c0}\ncpu1 1 1 1 1 1 1 1 {c1}\nintr 5\n"
    stat.write_text(lines.format(all=0, c0=0, c1=0))
    steal = Steal({1}, str(stat))
    steal.started -= 2.0  # the window opened two seconds ago
    hz = os.sysconf("SC_CLK_TCK")
    stat.write_text(lines.format(all=10 * hz, c0=10 * hz, c1=hz // 10))
    fraction = steal.fraction()
    assert fraction is not None
    # core 1 lost 0.1 s in two seconds (5%); core 0's much larger steal is not ours
    assert 0.049 < fraction <= 0.05
    assert Steal({1}, str(tmp_path / "absent")).fraction() is None


def test_busy_is_the_share_of_the_given_cores_time_not_idle(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal, in ticks; core 0 is the one watched
    stat.write_text("cpu0 10 0 10 100 5 0 0 0\ncpu1 0 0 0 500 0 0 0 0\n")
    window = Steal({0}, str(stat))
    assert window.busy() is None  # no time has passed
    # then 60 ticks busy (user, system, softirq, steal), 20 idle and 20 waiting on I/O
    stat.write_text("cpu0 40 0 20 120 25 0 10 10\ncpu1 0 0 0 900 0 0 0 0\n")
    assert window.busy() == 0.6
    assert Steal({0}, str(tmp_path / "absent")).busy() is None


def test_result_lines_show_steal_and_the_source_side() -> None:
    assert Result("bridge", 1.0, steal=0.034).line().endswith("steal 3.4%")
    line = Result("bridge", 1.0, cpu=0.84, steal=0.001, source_busy=0.996).line()
    assert line.endswith("84% of a core, simulator's core 100% busy, steal 0.1%")


def test_each_bridge_run_is_compared_with_the_ceilings_around_it() -> None:
    # ceiling 1 drifts 40k -> 30k -> 50k across the run; ceiling 2 is 100k
    ratios = bracketed_ratios([21_000, 24_000], [40_000, 30_000, 50_000], 100_000)
    assert ratios == [21_000 / 35_000, 24_000 / 40_000]
    # a raw producer slower than the reader is the lower ceiling
    assert bracketed_ratios([10_000], [40_000, 40_000], 20_000) == [0.5]


def test_the_summary_gives_the_median_and_every_figure_behind_it() -> None:
    assert _spread([0.59, 0.64, 0.61], "{:.0%}") == "median 61% of 59%, 64%, 61%"
    assert _spread([19.6, 14.3], "{:.1f}") == "median 17.0 of 19.6, 14.3"  # the mean of two
    assert _spread([], "{:.1f}") == "none measured"


def test_a_run_is_source_limited_when_the_source_core_is_full_and_the_bridge_core_is_not() -> None:
    assert source_limited(Result("bridge", 1.0, cpu=0.84, source_busy=0.99))
    assert not source_limited(Result("bridge", 1.0, cpu=0.98, source_busy=0.99))  # both full
    assert not source_limited(Result("bridge", 1.0, cpu=0.84, source_busy=0.80))  # neither
    assert not source_limited(Result("bridge", 1.0, cpu=0.84))  # not pinned: not known


def test_pin_layout_gives_each_process_its_own_core_when_there_are_three() -> None:
    assert pin_layout([0]) is None
    assert pin_layout([0, 1]) == ({0}, {0}, {1})  # the simulator and the broker share
    assert pin_layout([2, 5, 7]) == ({2}, {5}, {7})
    assert pin_layout([0, 1, 2, 3]) == ({0}, {1}, {2, 3})
