"""Which bit config ran when, from a recording, and the drift around each switch.

The policy node publishes its active bit config on ~/status (PolicyStatus.bit_config); a
recording of it (`record:=true`) tells when the drift guard's precision ladder switched. For
one episode this gives the time spent on each bit config and, for every switch, the mean
deviation from the reference over `window_s` before and after it.
numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

SWITCH_WINDOW_S = 1.0  # seconds of deviation averaged on each side of a switch


@dataclass(frozen=True)
class RungSummary:
    """Time per bit config (s) and each switch with the mean deviation around it."""

    time_s: dict[str, float]
    switches: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"time_s": self.time_s, "switches": list(self.switches)}


def changes(timeline: Sequence[tuple[float, str]]) -> list[tuple[float, str]]:
    """The (stamp, bit config) entries where the bit config changed, in time order."""
    found: list[tuple[float, str]] = []
    for stamp, bits in sorted(timeline, key=lambda entry: entry[0]):
        if bits and (not found or found[-1][1] != bits):
            found.append((stamp, bits))
    return found


def summarize_rungs(
    timeline: Sequence[tuple[float, str]],
    start: float,
    end: float,
    stamps: np.ndarray,
    deviation: np.ndarray,
    window_s: float = SWITCH_WINDOW_S,
) -> RungSummary | None:
    """Time per bit config over [start, end] and the drift around each switch (None: no data).

    `stamps` and `deviation` (per sample, e.g. end-effector distance in m) are on the same
    clock as the timeline's stamps.
    """
    steps = changes(timeline)
    if not steps:
        return None
    time_s: dict[str, float] = {}
    for k, (stamp, bits) in enumerate(steps):
        begin = max(stamp, start) if k else start
        finish = min(steps[k + 1][0], end) if k + 1 < len(steps) else end
        time_s[bits] = time_s.get(bits, 0.0) + max(0.0, finish - begin)
    switches = []
    for (_, before_bits), (stamp, bits) in pairwise(steps):
        if not start <= stamp <= end:
            continue
        before = deviation[(stamps >= stamp - window_s) & (stamps < stamp)]
        after = deviation[(stamps >= stamp) & (stamps < stamp + window_s)]
        switches.append(
            {
                "at_s": stamp - start,
                "from": before_bits,
                "to": bits,
                "deviation_before": float(before.mean()) if before.size else None,
                "deviation_after": float(after.mean()) if after.size else None,
            }
        )
    return RungSummary(time_s, tuple(switches))
