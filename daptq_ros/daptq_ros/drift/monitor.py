"""Online drift monitor: the ROS-free state machine that the drift monitor node wraps.

Fed executed joint states and/or end-effector poses one at a time, it interpolates the active
reference at each stamp with a cursor that only moves forward (O(1) amortised per update),
keeps the window's samples in preallocated ring buffers and, when a window closes, scores them
with drift.metrics into a DriftWindow that carries the fields of DriftReport.msg.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np
from numpy.typing import ArrayLike

from daptq_ros.drift import metrics, pose_errors
from daptq_ros.drift.metrics import Trajectory
from daptq_ros.errors import ConfigError, DriftError


class Level(IntEnum):
    """Drift level of a window; the values are DriftReport.LEVEL_*."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


_GRADED = ("joint_rms", "ee_position_rmse", "ee_rotation_rmse")


@dataclass(frozen=True)
class MonitorConfig:
    """Static settings of a DriftMonitor, validated on construction (ConfigError names the field).

    Thresholds apply to a window's RMS errors (the worst joint for joints): above *_warn the
    level is WARN, above *_error ERROR. Joint thresholds are in rad (m for prismatic joints).
    """

    window_s: float = 1.0  # duration of one window, s
    capacity: int = 4096  # samples kept per stream and window; the newest win
    stale_timeout_s: float = 0.5  # check(now) reports STALE after this long without input, s
    dtw_window_s: float = 0.25  # DTW band half-width, s: longer lags are not recovered
    dtw_max_samples: int = 256  # a window is decimated to at most this many samples for DTW
    joint_rms_warn: float = 0.05
    joint_rms_error: float = 0.2
    ee_position_rmse_warn: float = 0.01  # m
    ee_position_rmse_error: float = 0.05  # m
    ee_rotation_rmse_warn: float = 0.1  # rad
    ee_rotation_rmse_error: float = 0.3  # rad

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("capacity", "dtw_max_samples"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 4:
                    raise ConfigError(
                        f"MonitorConfig.{f.name}: need an integer >= 4, got {value!r}"
                    )
            elif (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigError(
                    f"MonitorConfig.{f.name}: need a finite number > 0, got {value!r}"
                )
        for key in _GRADED:
            warn, error = getattr(self, f"{key}_warn"), getattr(self, f"{key}_error")
            if warn > error:
                raise ConfigError(
                    f"MonitorConfig.{key}_warn ({warn}) exceeds {key}_error ({error}); "
                    "set the warn threshold at or below the error threshold"
                )


@dataclass(frozen=True)
class DriftWindow:
    """Drift over one closed window: the fields of DriftReport.msg, plus input counters.

    Errors are None when no sample of that kind arrived (ee fields need poses; the rotation
    needs a reference with quaternions). DTW uses end-effector positions when poses arrived,
    else joint positions. dropped: duplicate, out-of-order or late stamps; rejected: samples
    with NaN or inf values; held: samples outside the reference's time span.
    """

    window_start: float
    window_end: float
    joint_samples: int
    pose_samples: int
    joint_names: tuple[str, ...]
    joint_rms_error: tuple[float, ...]
    joint_max_error: tuple[float, ...]
    joint_final_error: tuple[float, ...]
    ee_position_rmse: float | None
    ee_position_max_error: float | None
    ee_position_final_error: float | None
    ee_rotation_rmse: float | None
    cumulative_drift: float | None
    drift_growth_rate: float | None
    dtw_distance: float | None
    dtw_lag: float | None
    level: Level
    reason: str
    dropped: int
    rejected: int
    held: int

    @property
    def samples(self) -> int:
        """Executed samples in the window: those of the busier stream."""
        return max(self.joint_samples, self.pose_samples)

    def to_dict(self) -> dict[str, object]:
        """The window as a JSON-ready dict (tuples become lists, the level an int)."""
        out: dict[str, object] = {"samples": self.samples}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["level"] = int(self.level)
        return out


@dataclass(frozen=True)
class StreamStatus:
    """Liveness of the input: STALE with the age (s) of the newest input, else OK."""

    level: Level
    age: float | None
    reason: str


class _Ring:
    """Preallocated ring of (stamp, executed row, reference row); keeps the newest `capacity`."""

    def __init__(self, capacity: int, width: int) -> None:
        self.capacity = capacity
        self.stamps = np.empty(capacity)
        self.executed = np.empty((capacity, width))
        self.reference = np.empty((capacity, width))
        self.head = 0
        self.count = 0  # pushed since the last clear; more than capacity means truncation

    def push(self, stamp: float) -> None:
        """Commit the rows already written at `head` under `stamp`."""
        self.stamps[self.head] = stamp
        self.head = (self.head + 1) % self.capacity
        self.count += 1

    def window(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the kept (stamps, executed, reference), oldest first."""
        n = min(self.count, self.capacity)
        index = np.arange(self.head - n, self.head) % self.capacity
        return self.stamps[index], self.executed[index], self.reference[index]


class _Cursor:
    """A reference signal evaluated at increasing times, its segment found by a forward cursor."""

    def __init__(self, stamps: np.ndarray, values: np.ndarray) -> None:
        self.t = stamps.tolist()  # Python floats: scalar compares are cheaper than numpy's
        self.values = values
        self.k = -1  # current segment; -1 until the first query places it by bisection

    def at(self, tq: float, out: np.ndarray) -> int:
        """Write the signal at tq into out; -1/0/+1: before, inside, after its span (held)."""
        t = self.t
        if tq < t[0]:
            out[:] = self.values[0]
            return -1
        if tq > t[-1]:
            out[:] = self.values[-1]
            return 1
        k = self.k
        if k < 0:
            k = min(bisect_right(t, tq) - 1, len(t) - 2)
        while t[k + 1] < tq:
            k += 1
        self.k = k
        self._interpolate(k, tq, out)
        return 0

    def _interpolate(self, k: int, tq: float, out: np.ndarray) -> None:
        raise NotImplementedError


class _LinearCursor(_Cursor):
    """x(t) = v_k + (t - t_k) * slope_k, the slopes precomputed per segment."""

    def __init__(self, stamps: np.ndarray, values: np.ndarray) -> None:
        super().__init__(stamps, values)
        self.slope = np.diff(values, axis=0) / np.diff(stamps)[:, None]

    def _interpolate(self, k: int, tq: float, out: np.ndarray) -> None:
        np.multiply(self.slope[k], tq - self.t[k], out=out)
        out += self.values[k]


class _SlerpCursor(_Cursor):
    """Slerp of unit quaternions (xyzw), the shortest arc of each segment precomputed."""

    def __init__(self, stamps: np.ndarray, quaternions: np.ndarray) -> None:
        super().__init__(stamps, quaternions)
        self.q0 = quaternions[:-1]
        self.q1 = quaternions[1:].copy()
        dot = np.sum(self.q0 * self.q1, axis=1)
        self.q1[dot < 0] *= -1.0  # q and -q are one rotation: take the shorter way round
        self.theta = np.arccos(np.clip(np.abs(dot), 0.0, 1.0)).tolist()
        self.inv_dt = (1.0 / np.diff(stamps)).tolist()

    def _interpolate(self, k: int, tq: float, out: np.ndarray) -> None:
        w, theta = (tq - self.t[k]) * self.inv_dt[k], self.theta[k]
        if theta < 1e-9:  # equal rotations: sin(theta) ~ 0, the plain blend is exact
            a, b = 1.0 - w, w
        else:
            s = math.sin(theta)
            a, b = math.sin((1.0 - w) * theta) / s, math.sin(w * theta) / s
        np.multiply(self.q0[k], a, out=out)
        out += b * self.q1[k]


class DriftMonitor:
    """Online drift of executed joint states and/or end-effector poses against a reference.

    Use: set_reference(), start_episode(stamp), then update_joints() / update_pose() per
    message; each returns the DriftWindow its stamp closed, else None. check(now) reports a
    stale input. Updates outside an episode, or of a signal the reference lacks, are ignored.
    """

    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config or MonitorConfig()
        self._reference: Trajectory | None = None
        self._ref_start: float | None = None
        self._joint_cursor: _LinearCursor | None = None
        self._position_cursor: _LinearCursor | None = None
        self._rotation_cursor: _SlerpCursor | None = None
        self._joints = _Ring(self.config.capacity, 0)
        self._poses = _Ring(self.config.capacity, 7)  # position xyz + quaternion xyzw
        self._names_seen: Sequence[str] | None = None
        self._order = np.empty(0, dtype=np.intp)
        self._in_shape: tuple[int, ...] = (0,)
        self._active = False
        self._episode_start = 0.0
        self._offset = 0.0
        self._last_input = 0.0
        self._joint_last = self._pose_last = -math.inf
        self._open_window(0)

    @property
    def active(self) -> bool:
        """Whether an episode is running."""
        return self._active

    def set_reference(self, reference: Trajectory, start: float | None = None) -> None:
        """Compare against `reference` from now on, mid-episode too.

        Its first sample applies at executed stamp `start` (default: the episode start).
        Samples already in the window keep the reference they were compared with. DriftError
        on a reference without joint names, or mid-episode with other joints than before.
        """
        if len(reference) < 2:
            raise DriftError("set_reference: the reference needs at least 2 samples")
        if reference.joint_positions is not None and reference.joint_names is None:
            raise DriftError("set_reference: the monitor matches joints by name; give joint_names")
        if start is not None and not math.isfinite(start):
            raise DriftError(f"set_reference: start must be a finite stamp, got {start!r}")
        if self._active and self._reference is not None:
            old, new = self._reference.joint_names, reference.joint_names
            if old != new:
                raise DriftError(
                    f"set_reference: the new reference's joints {new} differ from the current "
                    f"{old}; stop the episode before swapping to other joints"
                )
        self._reference, self._ref_start = reference, start
        t = reference.stamps
        q, p, r = reference.joint_positions, reference.ee_positions, reference.ee_quaternions
        self._joint_cursor = None if q is None else _LinearCursor(t, q)
        self._position_cursor = None if p is None else _LinearCursor(t, p)
        self._rotation_cursor = None if r is None else _SlerpCursor(t, r)
        width = 0 if q is None else q.shape[1]
        if self._joints.executed.shape[1] != width:
            self._joints = _Ring(self.config.capacity, width)
        self._names_seen = None
        self._set_offset()

    def start_episode(self, stamp: float) -> None:
        """Start (or restart) an episode at `stamp`: windows, counters and streams are reset."""
        if not math.isfinite(stamp):
            raise DriftError(f"start_episode: stamp must be finite, got {stamp!r}")
        self._active = True
        self._episode_start = self._last_input = stamp
        self._joint_last = self._pose_last = -math.inf
        self._set_offset()
        self._open_window(0)

    def stop_episode(self) -> DriftWindow | None:
        """End the episode; returns the partial last window when it holds any input."""
        if not self._active:
            return None
        self._active = False
        if not (self._joints.count or self._poses.count or self._dropped or self._rejected):
            return None
        last = max(self._joint_last, self._pose_last)
        return self._score(last if math.isfinite(last) else self._window_start)

    def update_joints(
        self, stamp: float, names: Sequence[str], positions: ArrayLike
    ) -> DriftWindow | None:
        """Feed one joint state; returns the window its stamp closed, else None.

        Duplicate, out-of-order or late stamps are dropped and counted; a sample with a NaN or
        inf position is rejected and counted (WARN). DriftError when the names do not match the
        reference's or the positions do not fit the names.
        """
        cursor = self._joint_cursor
        if not self._active or cursor is None:
            return None
        if not stamp > self._joint_last or stamp < self._window_start:  # `not >` catches NaN
            self._dropped += 1
            return None
        if names != self._names_seen:
            self._match_names(names)
        pos = np.asarray(positions, dtype=float)
        if pos.shape != self._in_shape:
            raise DriftError(
                f"update_joints: positions of shape {pos.shape} for {len(names)} names "
                f"{list(names)}; give one position per name"
            )
        self._joint_last = self._last_input = stamp
        closed = self._roll(stamp) if stamp >= self._window_end else None
        ring = self._joints
        head = ring.head
        row = ring.executed[head]
        np.take(pos, self._order, out=row)
        if not math.isfinite(row.sum()):  # one reduction instead of an isfinite array
            self._rejected += 1
            return closed
        tq = stamp - self._offset
        state = cursor.at(tq, ring.reference[head])
        if state:
            self._note_held(state, tq)
        ring.push(stamp)
        return closed

    def update_pose(
        self, stamp: float, position: ArrayLike, quaternion: ArrayLike
    ) -> DriftWindow | None:
        """Feed one end-effector pose (xyz m, quaternion xyzw); like update_joints otherwise."""
        cursor = self._position_cursor
        if not self._active or cursor is None:
            return None
        if not stamp > self._pose_last or stamp < self._window_start:
            self._dropped += 1
            return None
        p, q = np.asarray(position, dtype=float), np.asarray(quaternion, dtype=float)
        if p.shape != (3,) or q.shape != (4,):
            raise DriftError(
                f"update_pose: position {p.shape} and quaternion {q.shape}; give 3 and 4 values"
            )
        self._pose_last = self._last_input = stamp
        closed = self._roll(stamp) if stamp >= self._window_end else None
        norm = math.sqrt(float(q @ q))
        if not (math.isfinite(norm) and norm > 1e-9 and math.isfinite(float(p.sum()))):
            self._rejected += 1
            return closed
        ring = self._poses
        head = ring.head
        executed, reference = ring.executed[head], ring.reference[head]
        executed[:3] = p
        np.divide(q, norm, out=executed[3:])
        tq = stamp - self._offset
        state = cursor.at(tq, reference[:3])
        if self._rotation_cursor is None:
            reference[3:] = math.nan  # no reference rotation: left out of the rotation error
        else:
            self._rotation_cursor.at(tq, reference[3:])
        if state:
            self._note_held(state, tq)
        ring.push(stamp)
        return closed

    def check(self, now: float) -> StreamStatus:
        """STALE with the age of the newest input when none came within stale_timeout_s."""
        if not self._active:
            return StreamStatus(Level.OK, None, "")
        if self._reference is None:
            return StreamStatus(Level.STALE, None, "no reference trajectory: call set_reference")
        age, timeout = now - self._last_input, self.config.stale_timeout_s
        if age > timeout:
            return StreamStatus(
                Level.STALE, age, f"no joint state or pose for {age:.3g} s (timeout {timeout:g} s)"
            )
        return StreamStatus(Level.OK, age, "")

    def _set_offset(self) -> None:
        if self._reference is not None:
            anchor = self._episode_start if self._ref_start is None else self._ref_start
            self._offset = anchor - float(self._reference.stamps[0])
        for cursor in (self._joint_cursor, self._position_cursor, self._rotation_cursor):
            if cursor is not None:
                cursor.k = -1  # a new time base: place the cursor again

    def _match_names(self, names: Sequence[str]) -> None:
        assert self._reference is not None and self._reference.joint_names is not None
        self._order = metrics.joint_order(names, self._reference.joint_names)
        self._in_shape = (len(names),)
        # A copy, so that a caller reusing and mutating one list is still noticed.
        self._names_seen = names.copy() if isinstance(names, list) else tuple(names)

    def _note_held(self, state: int, tq: float) -> None:
        if state < 0:
            self._held_before += 1
        else:
            self._held_after += 1
            assert self._reference is not None
            self._overshoot = max(self._overshoot, tq - float(self._reference.stamps[-1]))

    def _open_window(self, index: int) -> None:
        self._window_index = index
        self._window_start = self._episode_start + index * self.config.window_s
        self._window_end = self._episode_start + (index + 1) * self.config.window_s
        self._joints.count = self._poses.count = 0
        self._dropped = self._rejected = self._held_before = self._held_after = 0
        self._overshoot = 0.0

    def _roll(self, stamp: float) -> DriftWindow:
        closed = self._score(self._window_end)
        # Window bounds are multiples of window_s from the episode start: no accumulated
        # rounding, and a gap in the input skips the empty windows.
        self._open_window(math.floor((stamp - self._episode_start) / self.config.window_s))
        return closed

    def _score(self, end: float) -> DriftWindow:
        cfg = self.config
        jt, jx, jr = self._joints.window()
        pt, px, pr = self._poses.window()
        verdicts: list[tuple[Level, str]] = []
        joint = self._joint_scores(jx, jr, verdicts)
        pose = self._pose_scores(pt, px, pr, verdicts)
        verdicts += self._input_verdicts()
        if len(pt) >= 2:
            dtw = _window_dtw(pt, px[:, :3], pr[:, :3], cfg)
        elif len(jt) >= 2:
            dtw = _window_dtw(jt, jx, jr, cfg)
        else:
            dtw = None
        return DriftWindow(
            window_start=self._window_start,
            window_end=end,
            joint_samples=len(jt),
            pose_samples=len(pt),
            **joint,
            **pose,
            dtw_distance=None if dtw is None else dtw.distance,
            dtw_lag=None if dtw is None else dtw.lag,
            level=max((level for level, _ in verdicts), default=Level.OK),
            reason="; ".join(text for _, text in verdicts),
            dropped=self._dropped,
            rejected=self._rejected,
            held=self._held_before + self._held_after,
        )

    def _joint_scores(
        self, executed: np.ndarray, reference: np.ndarray, verdicts: list[tuple[Level, str]]
    ) -> dict[str, tuple]:
        if len(executed) == 0:
            return dict.fromkeys(
                ("joint_names", "joint_rms_error", "joint_max_error", "joint_final_error"), ()
            )
        assert self._reference is not None and self._reference.joint_names is not None
        names = self._reference.joint_names
        rms, worst, final = metrics.joint_errors(executed, reference)
        j = int(np.argmax(rms))
        grade(verdicts, float(rms[j]), "joint_rms", f"joint '{names[j]}' rms error", self.config)
        self._truncation(self._joints, "joint", verdicts)
        return {
            "joint_names": names,
            "joint_rms_error": tuple(rms.tolist()),
            "joint_max_error": tuple(worst.tolist()),
            "joint_final_error": tuple(final.tolist()),
        }

    def _pose_scores(
        self,
        stamps: np.ndarray,
        executed: np.ndarray,
        reference: np.ndarray,
        verdicts: list[tuple[Level, str]],
    ) -> dict[str, float | None]:
        keys = ("ee_position_rmse", "ee_position_max_error", "ee_position_final_error")
        out: dict[str, float | None] = dict.fromkeys(
            (*keys, "ee_rotation_rmse", "cumulative_drift", "drift_growth_rate")
        )
        if len(stamps) == 0:
            return out
        d = pose_errors.position_deviation(executed[:, :3], reference[:, :3])
        out.update(
            zip(keys, pose_errors.position_errors(executed[:, :3], reference[:, :3]), strict=True)
        )
        out["cumulative_drift"] = float(metrics.cumulative_drift(stamps, d)[-1])
        out["drift_growth_rate"] = metrics.drift_growth_rate(stamps, d)
        grade(
            verdicts, out["ee_position_rmse"], "ee_position_rmse", "ee position rmse", self.config
        )
        has_rotation = np.isfinite(reference[:, 3])
        if has_rotation.any():
            rot = pose_errors.rotation_rmse(executed[has_rotation, 3:], reference[has_rotation, 3:])
            out["ee_rotation_rmse"] = rot
            grade(verdicts, rot, "ee_rotation_rmse", "ee rotation rmse", self.config)
        self._truncation(self._poses, "pose", verdicts)
        return out

    def _truncation(self, ring: _Ring, kind: str, verdicts: list[tuple[Level, str]]) -> None:
        if ring.count > ring.capacity:
            verdicts.append(
                (
                    Level.WARN,
                    f"{ring.count} {kind} samples in the window, only the newest {ring.capacity} "
                    "kept; raise MonitorConfig.capacity or shorten window_s",
                )
            )

    def _input_verdicts(self) -> list[tuple[Level, str]]:
        out: list[tuple[Level, str]] = []
        if self._rejected:
            out.append((Level.WARN, f"{self._rejected} samples rejected for NaN or inf values"))
        if self._held_after:
            out.append(
                (
                    Level.WARN,
                    f"{self._held_after} samples after the reference end (by up to "
                    f"{self._overshoot:.3g} s): holding its last point",
                )
            )
        if self._held_before:
            out.append(
                (
                    Level.WARN,
                    f"{self._held_before} samples before the reference start: "
                    "holding its first point",
                )
            )
        if not (self._joints.count or self._poses.count or self._rejected):
            out.append((Level.STALE, "no samples accepted in the window"))
        return out


def grade(
    verdicts: list[tuple[Level, str]], value: float, key: str, what: str, cfg: MonitorConfig
) -> None:
    """Append ERROR / WARN when `value` exceeds the config's `key`_error / `key`_warn."""
    warn, error = getattr(cfg, f"{key}_warn"), getattr(cfg, f"{key}_error")
    if value > error:
        verdicts.append((Level.ERROR, f"{what} {value:.4g} > {key}_error {error:g}"))
    elif value > warn:
        verdicts.append((Level.WARN, f"{what} {value:.4g} > {key}_warn {warn:g}"))


def _window_dtw(
    stamps: np.ndarray, executed: np.ndarray, reference: np.ndarray, cfg: MonitorConfig
) -> metrics.DtwResult:
    """DTW of a window's executed samples against their reference, decimated to a bounded size."""
    stride = math.ceil(len(stamps) / cfg.dtw_max_samples)
    t = stamps[::stride]
    window = metrics.dtw_window_samples(t, cfg.dtw_window_s)
    return metrics.dtw(executed[::stride], reference[::stride], t, t, window)
