"""control.watchdog: stream ages, stale streams and the reasons given for them."""

from __future__ import annotations

import math

import pytest

from daptq_ros.control.watchdog import Watchdog
from daptq_ros.errors import ControlError

TIMEOUTS = {"image": 0.2, "joint_states": 0.2, "instruction": 0.0}


def test_never_seen_streams_are_stale() -> None:
    watchdog = Watchdog(TIMEOUTS)
    assert watchdog.stale(5.0) == ["image", "joint_states", "instruction"]
    assert watchdog.age("image", 5.0) == math.inf


def test_freshly_fed_streams_are_not_stale() -> None:
    watchdog = Watchdog(TIMEOUTS)
    for name in TIMEOUTS:
        watchdog.feed(name, 5.0)
    assert watchdog.stale(5.1) == []
    assert watchdog.age("image", 5.1) == pytest.approx(0.1)


def test_stream_times_out_after_its_timeout() -> None:
    watchdog = Watchdog({"image": 0.2})
    watchdog.feed("image", 5.0)
    assert watchdog.stale(5.19) == []
    assert watchdog.stale(5.21) == ["image"]


def test_latched_stream_stays_fresh_once_seen() -> None:
    watchdog = Watchdog({"instruction": 0.0})
    assert watchdog.stale(0.0) == ["instruction"]
    watchdog.feed("instruction", 0.0)
    assert watchdog.stale(3600.0) == []


def test_backwards_stamps_are_ignored() -> None:
    watchdog = Watchdog({"image": 0.2})
    watchdog.feed("image", 5.0)
    watchdog.feed("image", 4.0)
    assert watchdog.age("image", 5.1) == pytest.approx(0.1)


def test_reasons_name_each_stale_stream() -> None:
    watchdog = Watchdog(TIMEOUTS)
    watchdog.feed("joint_states", 1.0)
    watchdog.feed("instruction", 0.0)
    assert watchdog.reasons(1.42) == [
        "image: no message yet",
        "joint_states: 0.42 s old (timeout 0.2 s)",
    ]


def test_reset_forgets_every_message() -> None:
    watchdog = Watchdog(TIMEOUTS)
    watchdog.feed("instruction", 0.0)
    watchdog.reset()
    assert "instruction" in watchdog.stale(0.0)


def test_unknown_stream_lists_the_known_ones() -> None:
    with pytest.raises(ControlError, match="'camera' is unknown; known streams: image, joint"):
        Watchdog(TIMEOUTS).feed("camera", 0.0)


@pytest.mark.parametrize(
    ("timeouts", "match"),
    [({}, "at least one stream"), ({"image": math.nan}, "give seconds as a number")],
    ids=["empty", "nan"],
)
def test_invalid_timeouts_are_refused(timeouts: dict[str, float], match: str) -> None:
    with pytest.raises(ControlError, match=match):
        Watchdog(timeouts)


def test_non_finite_stamp_is_refused() -> None:
    with pytest.raises(ControlError, match="stamp of 'image' nan is not a finite time"):
        Watchdog(TIMEOUTS).feed("image", math.nan)
