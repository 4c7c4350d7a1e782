"""control.chunks: time-indexed sampling, stale and out-of-order chunks, merging, interpolation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daptq_ros.control.chunks import ChunkScheduler, ChunkState, TimedChunk
from daptq_ros.errors import ControlError

DT = 0.1


def ramp(rows: int, dims: int = 2, start: float = 0.0) -> np.ndarray:
    """A chunk whose row i is start + i in every dimension: the row index is readable."""
    return np.repeat(start + np.arange(rows, dtype=np.float64)[:, None], dims, axis=1)


def test_state_by_time_before_active_and_past_end() -> None:
    scheduler = ChunkScheduler()
    assert scheduler.state(0.0) is ChunkState.EMPTY
    assert scheduler.add(ramp(4), stamp=10.0, dt=DT, now=9.0)
    assert scheduler.state(9.9) is ChunkState.BEFORE_START
    assert scheduler.state(10.0) is ChunkState.ACTIVE
    assert scheduler.state(10.39) is ChunkState.ACTIVE
    assert scheduler.state(10.4) is ChunkState.PAST_END
    assert scheduler.sample(9.9) is None and scheduler.sample(10.4) is None


def test_rows_are_indexed_by_time_not_by_calls() -> None:
    scheduler = ChunkScheduler()
    scheduler.add(ramp(5), stamp=10.0, dt=DT, now=10.0)
    for _ in range(3):  # sampling the same time again does not advance
        np.testing.assert_array_equal(scheduler.sample(10.0 + 2 * DT), [2.0, 2.0])


def test_latency_skips_the_rows_already_past() -> None:
    dt, latency = 0.05, 0.3
    scheduler = ChunkScheduler()
    scheduler.add(ramp(10), stamp=100.0 - latency, dt=dt, now=100.0)
    # Row 6 although 0.3 / 0.05 == 5.999... in float64: rows are placed with a small time slack.
    np.testing.assert_array_equal(scheduler.sample(100.0), [round(latency / dt)] * 2)


def test_stale_chunk_is_dropped_and_counted() -> None:
    scheduler = ChunkScheduler()
    assert not scheduler.add(ramp(3), stamp=1.0, dt=DT, now=1.3)
    assert scheduler.counters["dropped_stale"] == 1
    assert scheduler.state(1.3) is ChunkState.EMPTY


def test_out_of_order_chunk_is_dropped() -> None:
    scheduler = ChunkScheduler()
    assert scheduler.add(ramp(10, start=100), stamp=2.0, dt=DT, now=2.1)
    assert not scheduler.add(ramp(10), stamp=1.9, dt=DT, now=2.1)
    assert scheduler.counters == {
        "added": 1,
        "dropped_stale": 1,
        "samples": 0,
        "empty_samples": 0,
    }
    np.testing.assert_array_equal(scheduler.sample(2.1), [101.0, 101.0])


def test_latest_merge_switches_to_the_new_chunk_at_its_stamp() -> None:
    scheduler = ChunkScheduler(merge="latest")
    scheduler.add(ramp(10), stamp=0.0, dt=DT, now=0.0)
    scheduler.add(ramp(10, start=100), stamp=0.5, dt=DT, now=0.6)
    np.testing.assert_array_equal(scheduler.sample(0.45), [4.0, 4.0])
    np.testing.assert_array_equal(scheduler.sample(0.5), [100.0, 100.0])
    np.testing.assert_array_equal(scheduler.sample(0.75), [102.0, 102.0])


def test_ensemble_weights_match_a_hand_computation() -> None:
    decay = 0.5
    scheduler = ChunkScheduler(merge="ensemble", ensemble_decay=decay)
    scheduler.add(ramp(10), stamp=0.0, dt=DT, now=0.0)
    scheduler.add(ramp(10, start=100), stamp=0.2, dt=DT, now=0.2)
    # At t = 0.5 the older chunk is on row 5 (weight 1), the newer on row 3, value 103
    # (weight exp(-0.5)).
    w_old, w_new = 1.0, math.exp(-decay)
    expected = (w_old * 5.0 + w_new * 103.0) / (w_old + w_new)
    np.testing.assert_allclose(scheduler.sample(0.5), [expected, expected])


def test_interpolation_midway_between_rows() -> None:
    actions = np.array([[0.0, 10.0], [1.0, 30.0], [5.0, 30.0]])
    held, blended = ChunkScheduler(), ChunkScheduler(interpolate=True)
    for scheduler in (held, blended):
        scheduler.add(actions, stamp=0.0, dt=DT, now=0.0)
    np.testing.assert_array_equal(held.sample(0.15), [1.0, 30.0])
    np.testing.assert_allclose(blended.sample(0.15), [3.0, 30.0])
    # The last row has no successor: it is held until the chunk ends.
    np.testing.assert_array_equal(blended.sample(0.29), [5.0, 30.0])


def test_remaining_counts_to_the_end_of_the_last_chunk() -> None:
    scheduler = ChunkScheduler()
    assert scheduler.remaining(0.0) == 0.0
    scheduler.add(ramp(10), stamp=0.0, dt=DT, now=0.0)
    assert scheduler.remaining(0.25) == pytest.approx(0.75)
    assert scheduler.remaining(2.0) == 0.0


def test_adding_prunes_ended_chunks_and_keeps_at_most_max_chunks() -> None:
    scheduler = ChunkScheduler(merge="ensemble", ensemble_decay=0.0, max_chunks=2)
    for k in range(3):
        scheduler.add(ramp(10, start=100 * k), stamp=0.1 * k, dt=DT, now=0.1 * k)
    # Chunk 0 was evicted: the plain average at t = 0.2 is of rows 1 (101) and 0 (200).
    np.testing.assert_allclose(scheduler.sample(0.2), [150.5, 150.5])


def test_clear_empties_and_allows_a_new_action_size() -> None:
    scheduler = ChunkScheduler()
    scheduler.add(ramp(4, dims=2), stamp=0.0, dt=DT, now=0.0)
    with pytest.raises(ControlError, match="3 action dimensions but earlier chunks had 2"):
        scheduler.add(ramp(4, dims=3), stamp=0.1, dt=DT, now=0.1)
    scheduler.clear()
    assert scheduler.state(0.1) is ChunkState.EMPTY
    assert scheduler.add(ramp(4, dims=3), stamp=0.0, dt=DT, now=0.1)


def test_counters_count_samples_and_empty_samples() -> None:
    scheduler = ChunkScheduler()
    scheduler.sample(0.0)
    scheduler.add(ramp(4), stamp=0.0, dt=DT, now=0.0)
    scheduler.sample(0.0)
    scheduler.sample(0.1)
    assert scheduler.counters == {
        "added": 1,
        "dropped_stale": 0,
        "samples": 2,
        "empty_samples": 1,
    }


def test_chunk_keeps_a_read_only_copy() -> None:
    actions = ramp(3)
    chunk = TimedChunk(actions, stamp=1.0, dt=DT)
    actions[0, 0] = 99.0
    assert chunk.actions[0, 0] == 0.0 and not chunk.actions.flags.writeable
    assert chunk.end() == pytest.approx(1.3)


@pytest.mark.parametrize(
    ("actions", "dt", "match"),
    [
        (np.array([[0.0, np.nan]]), DT, "NaN or inf"),
        (np.zeros(3), DT, r"must be \[H, D\]"),
        (np.zeros((0, 2)), DT, r"must be \[H, D\]"),
        (np.zeros((2, 2)), 0.0, "dt 0.0 must be"),
    ],
    ids=["nan", "1d", "empty", "zero_dt"],
)
def test_invalid_chunk_is_refused(actions: np.ndarray, dt: float, match: str) -> None:
    with pytest.raises(ControlError, match=match):
        ChunkScheduler().add(actions, stamp=0.0, dt=dt, now=0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"merge": "mean"}, "use one of latest, ensemble"),
        ({"ensemble_decay": -1.0}, "finite number >= 0"),
        ({"max_chunks": 0}, "integer >= 1"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ControlError, match=match):
        ChunkScheduler(**kwargs)  # type: ignore[arg-type]


def test_nan_time_is_refused() -> None:
    with pytest.raises(ControlError, match="t nan is not a finite time"):
        ChunkScheduler().sample(math.nan)


finite = st.floats(-1e3, 1e3, allow_nan=False)
chunk_strategy = st.tuples(
    st.lists(st.tuples(finite, finite), min_size=1, max_size=6),  # rows of a 2-D action
    st.floats(0.0, 1.0),  # stamp offset from the previous chunk
    st.floats(0.01, 0.5),  # dt
)


@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(chunk_strategy, min_size=1, max_size=5),
    merge=st.sampled_from(["latest", "ensemble"]),
    interpolate=st.booleans(),
    t_offset=st.floats(-0.5, 4.0),
)
def test_sample_stays_within_the_rows_of_the_chunks_covering_t(
    chunks: list[tuple[list[tuple[float, float]], float, float]],
    merge: str,
    interpolate: bool,
    t_offset: float,
) -> None:
    scheduler = ChunkScheduler(merge=merge, interpolate=interpolate)
    held, stamp = [], 0.0
    for rows, offset, dt in chunks:
        stamp += offset
        if scheduler.add(np.array(rows), stamp=stamp, dt=dt, now=stamp):
            held.append(TimedChunk(np.array(rows), stamp, dt))
    t = t_offset
    action = scheduler.sample(t)
    if scheduler.state(t) is not ChunkState.ACTIVE:
        assert action is None
        return
    assert action is not None and np.isfinite(action).all()
    # `held` includes chunks the scheduler pruned and a little time slack: a superset of the
    # chunks it samples, so the bounds below can only be looser than the exact ones.
    covering = [c.actions for c in held if c.stamp - 2e-6 <= t < c.end()]
    rows = np.concatenate(covering)
    slack = 1e-9 * (1 + np.abs(rows).max())
    assert (action >= rows.min(axis=0) - slack).all()
    assert (action <= rows.max(axis=0) + slack).all()


def test_planned_gives_the_held_rows_on_a_new_chunks_grid_until_they_run_out() -> None:
    scheduler = ChunkScheduler()
    assert scheduler.planned(0.0, DT) is None and scheduler.newest_dt is None
    scheduler.add(ramp(5), stamp=1.0, dt=DT, now=1.0)
    # A chunk stamped 1.2 (row 2 of the held one) with rows half as long: 6 rows are covered,
    # of which a chunk of the held one's length (5 rows) takes 5.
    rows = scheduler.planned(1.2, DT / 2)
    np.testing.assert_array_equal(rows[:, 0], [2, 2, 3, 3, 4])
    assert scheduler.newest_dt == DT
    assert scheduler.planned(1.5, DT) is None  # past the held chunk's end
    assert scheduler.counters["samples"] == 0  # planning is not execution


def test_a_chunk_that_ended_before_it_arrived_is_dropped() -> None:
    scheduler = ChunkScheduler()
    assert not scheduler.add(ramp(4), stamp=1.0, dt=DT, now=1.4)
    assert scheduler.counters["dropped_stale"] == 1


def test_crossfade_blends_from_the_old_chunk_into_the_new_one() -> None:
    scheduler = ChunkScheduler(crossfade=0.2)
    scheduler.add(np.zeros((20, 1)), stamp=0.0, dt=DT, now=0.0)
    scheduler.add(np.ones((20, 1)), stamp=0.9, dt=DT, now=1.0)
    np.testing.assert_allclose(scheduler.sample(1.0), [0.0])  # arrival: still the old chunk
    np.testing.assert_allclose(scheduler.sample(1.1), [0.5])
    np.testing.assert_allclose(scheduler.sample(1.2), [1.0])
    # Without crossfade the switch is a jump at arrival.
    jump = ChunkScheduler()
    jump.add(np.zeros((20, 1)), stamp=0.0, dt=DT, now=0.0)
    jump.add(np.ones((20, 1)), stamp=0.9, dt=DT, now=1.0)
    np.testing.assert_allclose(jump.sample(1.0), [1.0])
