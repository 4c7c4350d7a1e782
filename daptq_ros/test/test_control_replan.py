"""The replanner: when a chunk is due, the RTC prefix, injected latency and the timeline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from daptq_ros.control.chunks import ChunkScheduler
from daptq_ros.control.replan import DELAY_WINDOW, RATE_SLEW, Replanner, Timeline
from daptq_ros.errors import ControlError

DT = 0.02  # s per chunk row
ROWS = 10  # a chunk covers 0.2 s
TICK = 0.01  # command period


def replanner(overrun: str = "slow", latency: float = 0.05, rtc: bool = True) -> Replanner:
    return Replanner(ChunkScheduler(), rtc, overrun, 0.2, latency)


def chunk(start: float = 0.0) -> np.ndarray:
    return start + np.arange(ROWS, dtype=float)[:, None] * np.ones((1, 2))


def run(plan: Replanner, start: float, ticks: int) -> list[float]:
    """Advance `ticks` command ticks from `start`; the timeline seconds gained at each."""
    return [plan.tick(start + k * TICK, TICK) for k in range(ticks)]


def test_a_chunk_is_due_only_when_none_is_in_flight_and_a_period_has_passed() -> None:
    plan = replanner()
    assert plan.due(0.0, False, 0.1, TICK)
    plan.submit(0.0, 0.0)
    assert not plan.due(0.5, False, 0.1, TICK)  # in flight until it arrives
    plan.arrived(0.05, 0.0)
    assert not plan.due(0.05, False, 0.1, TICK)  # arrived, but the period has not passed
    assert plan.due(0.1, False, 0.1, TICK)
    assert not plan.due(0.1, True, 0.1, TICK)  # the worker is busy (e.g. after a swap)


def test_the_timeline_waits_for_the_first_chunk_then_plays_it_from_row_0() -> None:
    plan = replanner()
    run(plan, 0.0, 10)  # 0.1 s with nothing to play
    assert plan.chunk_time(0.1) == pytest.approx(0.0)
    tau = plan.arrived(0.1, 0.0)  # an observation of time 0, arriving 0.1 s later
    assert tau == pytest.approx(0.0)
    assert plan.scheduler.add(chunk(), tau, DT, plan.chunk_time(0.1))
    np.testing.assert_array_equal(plan.scheduler.sample(plan.chunk_time(0.1)), [0.0, 0.0])


def test_slow_mode_stretches_a_chunk_until_the_next_is_expected_without_steps() -> None:
    plan = replanner("slow", latency=0.5)  # inference takes 2.5 chunk spans
    plan.arrived(0.0, 0.0)
    plan._latencies.extend([0.5] * DELAY_WINDOW)
    plan.scheduler.add(chunk(), 0.0, DT, 0.0)
    plan.submit(0.0, 0.0)
    gains, reasons = [], set()
    for k in range(60):
        gains.append(plan.tick(TICK + k * TICK, TICK))
        reasons.add(plan.overrun_reason)
    rates = np.array(gains[1:]) / TICK  # the first tick starts the timeline
    assert rates.min() < 0.6  # slowed down
    assert np.all(np.abs(np.diff(rates)) <= RATE_SLEW * TICK + 1e-9)  # never a step in rate
    assert any("slow mode" in reason for reason in reasons)
    assert plan.chunk_time(TICK * 60) <= ROWS * DT + 1e-12  # never past the chunk's end


def test_hold_mode_plays_at_full_rate_and_stops_at_the_chunks_end() -> None:
    plan = replanner("hold", latency=0.5)
    plan.arrived(0.0, 0.0)
    plan._latencies.extend([0.5] * DELAY_WINDOW)
    plan.scheduler.add(chunk(), 0.0, DT, 0.0)
    plan.submit(0.0, 0.0)
    gains = run(plan, TICK, 40)
    assert gains[1] == pytest.approx(TICK)  # full speed while the chunk lasts
    assert plan.chunk_time(0.4) == pytest.approx(ROWS * DT)  # then held at its end
    assert "holding" in plan.overrun_reason


def test_the_delay_estimate_is_a_median_one_spike_does_not_move() -> None:
    plan = replanner(latency=0.04)
    for k in range(DELAY_WINDOW - 1):
        plan.timeline.reset()
        plan.submit(k, k)
        plan.arrived(k + 0.04, k)
    plan.submit(100.0, 100.0)
    plan.arrived(101.0, 100.0)  # one 1 s spike
    assert plan.latency() == pytest.approx(0.04)


def test_the_rtc_prefix_is_the_held_chunks_rows_from_the_observation_on() -> None:
    plan = replanner(latency=0.05)
    plan.scheduler.add(chunk(), 0.0, DT, 0.0)
    prefix = plan.submit(0.1, 0.1)  # observation at 0.1 s: row 5 of the held chunk
    assert prefix is not None
    np.testing.assert_array_equal(prefix.actions[:, 0], [5, 6, 7, 8, 9])
    assert prefix.delay == math.ceil(0.05 / DT)  # 3 rows run before the new chunk arrives
    assert replanner(rtc=False).submit(0.1, 0.1) is None


def test_rows_past_the_held_chunks_end_are_its_last_row() -> None:
    """The timeline stops at the end (hold, or a late chunk): the arm stands at the last row."""
    plan = replanner(latency=0.15)  # inference outlasts the 10-row chunk's rest
    plan.scheduler.add(chunk(), 0.0, DT, 0.0)
    last = plan.scheduler.last_action()
    prefix = plan.submit(0.16, 0.16)  # observed at row 8: rows 8, 9, then the arm waits at 9
    assert prefix is not None and prefix.delay == math.ceil(0.15 / DT)
    np.testing.assert_array_equal(prefix.actions[:2], chunk()[8:])
    np.testing.assert_array_equal(prefix.actions[2:], np.repeat(last[None], prefix.delay - 2, 0))
    beyond = plan.submit(5.0, 5.0)  # long after the end: every frozen row is the last one
    assert beyond is not None
    np.testing.assert_array_equal(beyond.actions, np.repeat(last[None], beyond.delay, 0))


def test_injected_latency_holds_results_until_it_has_passed() -> None:
    plan = replanner()
    plan.inject(0.3)
    plan.submit(1.0, 1.0)
    plan.hold("chunk", 1.01)
    assert plan.released(1.2) == []
    assert not plan.due(1.25, False, 0.1, TICK)  # a held result is still in flight
    assert plan.released(1.3) == ["chunk"]


def test_an_injected_latency_above_the_estimates_becomes_them_at_once() -> None:
    """A fresh node's estimates start from its (unpadded) probe: RTC would freeze too few rows."""
    plan = replanner(latency=0.02)
    plan.inject(0.3)
    assert plan.latency() == plan.delay() == 0.3
    plan.scheduler.add(chunk(), 1.0, DT, 1.0)
    prefix = plan.submit(1.05, 1.05)
    assert prefix is not None and prefix.delay == math.ceil(0.3 / DT)
    plan.inject(0.1)  # below the estimates: they follow what is measured, as before
    assert plan.latency() == plan.delay() == 0.3


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ControlError, match="overrun"):
        Replanner(ChunkScheduler(), True, "stop", 0.2, 0.05)
    with pytest.raises(ControlError, match="min_rate"):
        Timeline(1.5)
