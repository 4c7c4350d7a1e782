"""Whether a policy's action chunks, the control rate and the inference latency work together.

With asynchronous inference the arm follows one chunk while the next is computed. A chunk
computed from an observation at time s is used from its arrival, about s + latency, and
must last until the next chunk arrives, one control period later:

    horizon * dt  >=  latency + control_period          (no gap between chunks)

The latency is wall time and the rest node-clock time: under a simulator that runs slower
than real time the check is conservative, faster than real time optimistic.

The default control rate replans at half the horizon, as `daptq eval` executes 4 of a chunk's
8 rows before predicting again. When the inequality fails, the node says so at start with the
numbers; late chunks are then delayed (control.chunks), never dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from daptq_ros.errors import ControlError

AUTO = 0.0  # control_hz value that picks the rate from the chunk's horizon
REPLAN_FRACTION = 0.5  # auto rate: replan after this fraction of the horizon


@dataclass(frozen=True)
class ChunkTiming:
    """A chunk's time span against the control period and the measured inference latency."""

    horizon: int  # rows per chunk
    dt: float  # s per row
    latency: float  # s, one inference measured at start (wall clock); NaN if it failed
    control_period: float  # s between inferences

    @property
    def span(self) -> float:
        """Seconds one chunk covers: horizon * dt."""
        return self.horizon * self.dt

    @property
    def slack(self) -> float:
        """Seconds a chunk outlasts the arrival of the next one (negative: a gap)."""
        latency = 0.0 if math.isnan(self.latency) else self.latency
        return self.span - latency - self.control_period

    @property
    def feasible(self) -> bool:
        """Whether each chunk lasts until the next arrives."""
        return self.slack >= 0

    def describe(self) -> str:
        """One line with the numbers, and what to change when they do not work together."""
        numbers = (
            f"chunks of {self.horizon} x {self.dt * 1e3:.1f} ms cover {self.span:.3f} s; "
            f"inference takes {self.latency:.3f} s and the control period is "
            f"{self.control_period:.3f} s ({1 / self.control_period:.1f} Hz)"
        )
        if self.feasible:
            return f"{numbers}: each chunk lasts until the next arrives (slack {self.slack:.3f} s)"
        fastest = self.span - self.latency
        fix = (
            f"set control_hz to at least {1 / fastest:.1f} Hz"
            if fastest > 0
            else "inference alone outlasts a chunk: use a faster bit config, more num_threads, "
            "or a model with a longer horizon"
        )
        return (
            f"{numbers}: a chunk ends {-self.slack:.3f} s before the next arrives, so late "
            f"chunks are delayed by up to that much; {fix}"
        )


def control_period(control_hz: float, horizon: int, dt: float) -> float:
    """The period (s) between inferences: 1 / control_hz, or half the horizon when AUTO."""
    if horizon < 1 or not (math.isfinite(dt) and dt > 0):
        raise ControlError(
            f"a policy chunk of {horizon} rows x {dt} s cannot be scheduled; the model's "
            "daptq.json must give horizon >= 1 and dt > 0"
        )
    if control_hz == AUTO:
        return REPLAN_FRACTION * horizon * dt
    if not (math.isfinite(control_hz) and control_hz > 0):
        raise ControlError(f"control_hz {control_hz!r} must be > 0, or 0 for the automatic rate")
    return 1.0 / control_hz
