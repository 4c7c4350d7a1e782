"""Drift windows from the policy's shadow, for a monitor that has no reference recording.

The policy node's shadow (robot/shadow.py) compares each k-th deployed chunk with a
higher-precision copy's chunk for the same observation and reports the hand divergence of the
two. Grouped into windows of `window_s` (by observation stamp), these become DriftWindows: the
end-effector position RMSE is the RMS of the chunks' largest hand divergences, the max error
their largest, the final error the last chunk's hand divergence at its last row; the level is
graded with the same ee_position_rmse thresholds as a recorded reference's windows. Fields the
shadow cannot give (joints, rotation, DTW) stay empty.
numpy only.
"""

from __future__ import annotations

import numpy as np

from daptq_ros.drift.monitor import DriftWindow, Level, MonitorConfig, grade

SOURCE = "shadow"  # what a shadow window's reason names as its reference


class ShadowWindows:
    """Accumulates shadow divergences and closes a DriftWindow every `window_s` of stamps."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self._start: float | None = None
        self._stamps: list[float] = []
        self._largest: list[float] = []
        self._final: list[float] = []
        self.dropped = 0  # reports without a hand divergence, or out of order

    def add(
        self, stamp: float, hand_max: float | None, hand_final: float | None
    ) -> DriftWindow | None:
        """One shadow report; the window it closed (the report then opens the next), else None."""
        if hand_max is None or hand_final is None or (self._stamps and stamp < self._stamps[-1]):
            self.dropped += 1
            return None
        closed = None
        if self._start is not None and stamp - self._start >= self.config.window_s:
            closed = self._close(stamp)
        if self._start is None:
            self._start = stamp
        self._stamps.append(stamp)
        self._largest.append(float(hand_max))
        self._final.append(float(hand_final))
        return closed

    def flush(self) -> DriftWindow | None:
        """Close the partial window at its last report (the episode ended); None if empty. The
        next report opens a new window."""
        if not self._stamps:
            return None
        window = self._close(self._stamps[-1])
        self._start = None
        return window

    def _close(self, end: float) -> DriftWindow:
        largest = np.array(self._largest)
        rmse = float(np.sqrt(np.mean(largest**2)))
        verdicts: list[tuple[Level, str]] = []
        grade(verdicts, rmse, "ee_position_rmse", "shadow hand divergence RMS", self.config)
        level = max((v[0] for v in verdicts), default=Level.OK)
        reason = "; ".join(v[1] for v in verdicts) or f"against the {SOURCE}"
        window = DriftWindow(
            window_start=float(self._start),
            window_end=end,
            joint_samples=0,
            pose_samples=len(largest),
            joint_names=(),
            joint_rms_error=(),
            joint_max_error=(),
            joint_final_error=(),
            ee_position_rmse=rmse,
            ee_position_max_error=float(largest.max()),
            ee_position_final_error=self._final[-1],
            ee_rotation_rmse=None,
            cumulative_drift=None,
            drift_growth_rate=None,
            dtw_distance=None,
            dtw_lag=None,
            level=level,
            reason=reason,
            dropped=self.dropped,
            rejected=0,
            held=0,
        )
        self._start, self._stamps, self._largest, self._final = end, [], [], []
        self.dropped = 0
        return window
