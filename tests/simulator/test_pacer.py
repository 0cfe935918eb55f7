"""The simulator's update schedule: steady steps, a bounded catch-up, dropped backlog counted."""

from __future__ import annotations

from bridge.simulator.server import CATCH_UP, Pacer


def drain(pacer: Pacer, now: float) -> list[int]:
    steps = []
    while pacer.behind(now):
        steps.append(pacer.take(now))
    return steps


def test_on_time_it_makes_the_rate_in_small_steps() -> None:
    pacer = Pacer(10_000, start=100.0)
    assert (pacer.tick, pacer.burst) == (0.001, 10)
    made = 0
    for ms in range(1, 1001):  # a loop that wakes every millisecond for one second
        steps = drain(pacer, 100.0 + ms / 1000)
        assert all(0 < step <= pacer.burst for step in steps)
        made += sum(steps)
    assert abs(made - 10_000) <= 1  # float rounding at the last millisecond
    assert pacer.dropped == 0


def test_a_late_loop_catches_up_in_steps_without_dropping() -> None:
    pacer = Pacer(10_000, start=0.0)
    steps = drain(pacer, 0.1)  # the process was descheduled for 100 ms
    assert sum(steps) == 1000
    assert max(steps) == pacer.burst
    assert pacer.dropped == 0


def test_a_backlog_older_than_the_catch_up_window_is_dropped_and_counted() -> None:
    pacer = Pacer(10_000, start=0.0)
    steps = drain(pacer, 2.0)  # two seconds late: only CATCH_UP seconds' worth is made
    assert sum(steps) == int(10_000 * CATCH_UP)
    assert pacer.dropped == 20_000 - int(10_000 * CATCH_UP)
    assert pacer.made == 20_000


def test_slow_rates_step_one_update_per_tick() -> None:
    pacer = Pacer(5, start=0.0)
    assert (pacer.tick, pacer.burst) == (0.05, 1)
    assert drain(pacer, 0.19) == []
    assert drain(pacer, 0.2) == [1]
    assert drain(pacer, 0.6) == [1, 1]
    assert pacer.backlog_limit == 2  # at least two steps' worth, however slow the rate
    assert drain(pacer, 1.6) == [1, 1]  # five due: three dropped
    assert pacer.dropped == 3
