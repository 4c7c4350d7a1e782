"""The precision ladder: up after a run of loud comparisons, down after a longer quiet run."""

from __future__ import annotations

import pytest

from daptq_ros.control.ladder import PrecisionLadder
from daptq_ros.errors import ControlError

RUNGS = ("daptq_b3", "w8a8", "bf16")


def ladder(start: str = "daptq_b3") -> PrecisionLadder:
    return PrecisionLadder(RUNGS, start, up_m=0.01, down_m=0.003, up_count=3, down_count=5)


def feed(rule: PrecisionLadder, values: list[float]) -> list[int]:
    """Observe each value, taking every switch it asks for; the directions taken."""
    taken = []
    for k, value in enumerate(values):
        if direction := rule.observe(value):
            rule.move(direction, float(k))
            taken.append(direction)
    return taken


def test_a_run_of_loud_comparisons_moves_one_rung_up_and_the_runs_start_over():
    rule = ladder()
    assert feed(rule, [0.02, 0.02]) == [] and rule.rung == "daptq_b3"
    assert feed(rule, [0.02]) == [+1] and rule.rung == "w8a8"
    assert feed(rule, [0.02, 0.02]) == []  # a new run of three is needed for the next rung
    assert feed(rule, [0.02]) == [+1] and rule.rung == "bf16"
    assert feed(rule, [0.02] * 10) == []  # the top rung stays
    (first, second) = rule.switches
    assert (first.rung_from, first.rung_to) == ("daptq_b3", "w8a8")
    assert "3 divergences above 0.01 m" in first.reason and second.rung_to == "bf16"


def test_no_flapping_between_the_thresholds_or_on_one_outlier():
    rule = ladder("w8a8")
    # between down_m and up_m: the rung stays; an outlier does not make a run
    assert feed(rule, [0.005, 0.02, 0.005, 0.02, 0.02, 0.005, 0.001] * 5) == []
    assert rule.rung == "w8a8"
    # the last 0.001 above began a quiet run: three more, and the fifth moves down
    assert feed(rule, [0.001] * 3) == [] and feed(rule, [0.001]) == [-1]
    assert rule.rung == "daptq_b3" and feed(rule, [0.001] * 20) == []  # the bottom rung stays


@pytest.mark.parametrize(
    ("rungs", "start", "up", "down", "message"),
    [
        (("bf16",), "bf16", 0.01, 0.003, "two or more distinct"),
        (RUNGS, "fp32", 0.01, 0.003, "is not a rung"),
        (RUNGS, "bf16", 0.003, 0.01, "ladder_down_m"),
    ],
)
def test_bad_settings_are_refused(rungs, start, up, down, message):
    with pytest.raises(ControlError, match=message):
        PrecisionLadder(rungs, start, up, down, 3, 5)
