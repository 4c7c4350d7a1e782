"""control.timing: whether chunks, the control rate and the latency work together."""

from __future__ import annotations

import math

import pytest

from daptq_ros.control.timing import AUTO, ChunkTiming, control_period
from daptq_ros.errors import ControlError


def test_auto_rate_replans_at_half_the_horizon_as_daptq_eval_does() -> None:
    assert control_period(AUTO, 8, 0.0125) == pytest.approx(0.05)
    assert control_period(10.0, 8, 0.0125) == pytest.approx(0.1)


def test_the_old_default_10_hz_with_a_100_ms_chunk_cannot_work_and_says_how_to_fix_it() -> None:
    timing = ChunkTiming(8, 0.0125, latency=0.05, control_period=0.1)
    assert not timing.feasible and timing.slack == pytest.approx(-0.05)
    text = timing.describe()
    assert "0.100 s" in text and "0.050 s" in text and "at least 20.0 Hz" in text


def test_the_auto_rate_works_with_a_fast_inference() -> None:
    timing = ChunkTiming(8, 0.0125, latency=0.022, control_period=control_period(AUTO, 8, 0.0125))
    assert timing.feasible and "slack 0.028 s" in timing.describe()


def test_an_inference_slower_than_a_chunk_asks_for_a_faster_model() -> None:
    text = ChunkTiming(8, 0.0125, latency=0.2, control_period=0.05).describe()
    assert "inference alone outlasts a chunk" in text


def test_a_failed_probe_leaves_the_latency_unknown_not_zero() -> None:
    timing = ChunkTiming(8, 0.0125, latency=math.nan, control_period=0.05)
    assert timing.feasible and "nan" in timing.describe()


@pytest.mark.parametrize(("hz", "horizon", "dt"), [(-1.0, 8, 0.01), (10.0, 0, 0.01), (10.0, 8, 0)])
def test_impossible_rates_and_chunks_are_refused(hz: float, horizon: int, dt: float) -> None:
    with pytest.raises(ControlError):
        control_period(hz, horizon, dt)
