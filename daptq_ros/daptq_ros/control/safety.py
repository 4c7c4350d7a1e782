"""The safety filter: turns whatever the policy asks for into commands that respect the limits.

Invariants, for any sequence of targets, measurements and enable / disable / estop / hold
calls, given a constant command period dt:

- nothing is published before the first successful enable();
- every published position lies in [lower, upper];
- consecutive published positions differ by at most velocity * dt per axis;
- consecutive published velocities differ by at most acceleration * dt per axis;
- once a hold (e-stop, hold(), or a rejected step) has brought the command to rest, it stays
  exactly there until motion is allowed again; a disable brings it to rest and then releases
  the arm: nothing more is published (the controller holds its last target) until the next
  enable, which starts from the measured position like the first.

Design choices:

- A hold, an e-stop included, decelerates to rest as fast as the acceleration limit allows and
  then keeps that position. A command that stops instantly would break the acceleration
  invariant and spike the controller's torques; the hardware e-stop is the instant stop, this
  is a controlled stop (IEC 60204-1 category 2). No invariant has an exemption.
- The command can always stop inside the limits: each step's velocity is at most the stopping
  speed of the distance left to the limit, computed for the discrete plan that decelerates by
  acceleration * dt per period (see `stopping_speed`), so the braking that follows never
  leaves [lower, upper]. The same braking profile approaches the target, so a distant target
  is reached without overshoot; the target's own motion is fed forward, so a target that moves
  within the limits is tracked without lag.
- The published command is one continuous stream while it lasts: a re-enable after a hold or
  an e-stop continues from the last command (and is refused when the robot is further from it
  than deviation_threshold). A disable ends the stream once at rest, since the arm may then be
  moved by something else (another controller, a simulator's reset); the next enable starts a
  new stream from the measured position.
- The target is blended in from the held position over blend_time with a smoothstep (zero
  velocity at both ends, so the blend itself never asks for a jump in velocity). The blend
  restarts whenever motion resumes after any hold, since the target may be far away by then.
- If dt shrinks mid-motion, the stopping plan made for the longer period may need more than
  the acceleration limit; the position and velocity limits then win and clipped_acceleration
  counts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import StrEnum

import numpy as np

from daptq_ros.control.limits import AxisLimits
from daptq_ros.errors import ControlError

# A measured axis this far outside its limits at enable is rounding, not a fault: clipped in.
_ENABLE_TOLERANCE = 1e-6
# Differences below this (in rad/s or m/s) are rounding and are not reported as clipping.
_REPORT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class SafetyConfig:
    """Settings of a SafetyFilter, validated on construction (ControlError names the field)."""

    deviation_threshold: float = 0.25  # max |command - measured| per axis before holding
    blend_time: float = 1.0  # s over which the target is blended in after enable or a hold

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ControlError(
                    f"SafetyConfig.{f.name}: need a finite number > 0, got {value!r}"
                )


class Status(StrEnum):
    """What the filter is doing (the filter's mode, or what one command did)."""

    DISABLED = "disabled"
    ESTOPPED = "estopped"
    HOLD = "hold"
    BLENDING = "blending"
    ACTIVE = "active"


@dataclass(frozen=True, eq=False)
class SafeCommand:
    """One command of the filter; position None means publish nothing."""

    position: np.ndarray | None
    velocity: np.ndarray | None  # (position - previous position) / dt
    status: Status
    reasons: tuple[str, ...]  # why the command was held or limited; empty when it was not


def stopping_speed(distance: np.ndarray, acceleration: np.ndarray, dt: float) -> np.ndarray:
    """Largest speed v whose step plus braking by acceleration * dt per step stays in distance.

    The plan moves v*dt, then (v - a*dt)*dt, (v - 2*a*dt)*dt, ... until rest, covering
    f(v) = dt * sum_k max(v - k*a*dt, 0). With D = distance / (a*dt^2) and v = a*dt*(m + r),
    m whole and 0 <= r < 1, f(v) = a*dt^2 * (m + 1) * (m/2 + r); solving f(v) = distance gives
    m = floor((sqrt(8D + 1) - 1) / 2) and r = (D - m(m + 1)/2) / (m + 1). The continuous
    sqrt(2*a*d) over-estimates it and would let a command overshoot a limit; v(d) <= d/dt.
    """
    steps = np.maximum(distance, 0.0) / (acceleration * dt * dt)
    whole = np.floor((np.sqrt(8.0 * steps + 1.0) - 1.0) / 2.0)
    fraction = (steps - whole * (whole + 1.0) / 2.0) / (whole + 1.0)
    return acceleration * dt * (whole + fraction)


class SafetyFilter:
    """Limits, blends or holds each command of the fixed-rate command timer (see the module).

    counters: rejected_nonfinite / rejected_shape (targets or measurements refused),
    clipped_position / clipped_velocity / clipped_acceleration (steps a limit shaped),
    deviation_holds / stale_holds (steps held for those reasons), commands (published).
    """

    def __init__(self, limits: AxisLimits, config: SafetyConfig | None = None) -> None:
        self.limits = limits
        self.config = config if config is not None else SafetyConfig()
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "rejected_nonfinite",
                "rejected_shape",
                "clipped_position",
                "clipped_velocity",
                "clipped_acceleration",
                "deviation_holds",
                "stale_holds",
                "commands",
            ),
            0,
        )
        self._position: np.ndarray | None = None  # last command (or the enable position)
        self._velocity = np.zeros(len(limits))  # velocity of the last command
        self._enabled = False
        self._estop_reason: str | None = None
        self._hold_reason: str | None = None
        self._blend_start: float | None = None  # None: the next moving step starts a blend
        self._blend_from = np.zeros(len(limits))
        self._last_goal: np.ndarray | None = None  # the previous step's goal, for feed-forward
        self._now = -math.inf

    @property
    def status(self) -> Status:
        """The filter's mode (a single step may still hold, e.g. for a missing target)."""
        if self._estop_reason is not None:
            return Status.ESTOPPED
        if not self._enabled:
            return Status.DISABLED
        if self._hold_reason is not None:
            return Status.HOLD
        return Status.BLENDING if self._blending() else Status.ACTIVE

    @property
    def enabled(self) -> bool:
        """Whether motion toward targets is allowed (enabled and not e-stopped)."""
        return self._enabled

    @property
    def estopped(self) -> bool:
        """Whether the e-stop latch is set."""
        return self._estop_reason is not None

    @property
    def last_command(self) -> np.ndarray | None:
        """A copy of the last command (the enable position before the first step), or None."""
        return None if self._position is None else self._position.copy()

    def enable(self, measured: np.ndarray, now: float) -> tuple[bool, str]:
        """Allow motion from the held position; (False, why) when that would be unsafe."""
        if self._estop_reason is not None:
            return (
                False,
                f"e-stopped ({self._estop_reason}); call the ~/reset_estop service, then ~/enable",
            )
        if self._enabled:
            return True, "already enabled"
        if problem := self._problem("measured", measured):
            return False, problem[1]
        vector = np.asarray(measured, dtype=np.float64)
        lower, upper = self.limits.lower, self.limits.upper
        outside = np.maximum(lower - vector, vector - upper)
        worst = int(np.argmax(outside))
        if outside[worst] > _ENABLE_TOLERANCE:
            return False, (
                f"measured {self.limits.names[worst]} = {vector[worst]:.4f} is "
                f"{outside[worst]:.4f} outside [{lower[worst]:.4f}, {upper[worst]:.4f}]; "
                "move it inside its limits first"
            )
        start = np.clip(vector, lower, upper)
        if self._position is None:
            self._position = start
        else:
            gap = np.abs(start - self._position)
            worst = int(np.argmax(gap))
            if gap[worst] > self.config.deviation_threshold:
                return False, (
                    f"measured {self.limits.names[worst]} is {gap[worst]:.4f} from the held "
                    f"command (deviation_threshold {self.config.deviation_threshold}); "
                    "wait for the controller to reach the held position"
                )
        self._enabled, self._now = True, now
        self._blend_start, self._blend_from = now, self._position.copy()
        self._last_goal = None
        return True, "enabled"

    def disable(self) -> None:
        """Stop moving toward targets: steps hold the last command (DISABLED)."""
        self._enabled = False

    def release(self) -> None:
        """Disable and stop publishing at once, without the controlled stop.

        Only for when the command stream has ended anyway: the clock it was timed on
        restarted (a new simulator), so its braking commands would reach an arm that never
        received the ones before them. The next enable starts from the measured position.
        """
        self._enabled = False
        self._position = None
        self._velocity = np.zeros(len(self.limits))

    def estop(self, reason: str) -> None:
        """Latch an e-stop: steps hold (decelerate to rest) until reset_estop() and enable()."""
        self._estop_reason = reason or "e-stop"
        self._enabled = False

    def reset_estop(self) -> None:
        """Clear the e-stop latch; the filter stays DISABLED until enable()."""
        self._estop_reason = None

    def hold(self, reason: str) -> None:
        """Hold from outside (stale inputs, watchdog) until resume()."""
        self._hold_reason = reason or "hold"

    def resume(self) -> None:
        """End a hold() request; motion resumes with a new blend."""
        self._hold_reason = None

    def step(
        self, target: np.ndarray | None, measured: np.ndarray | None, now: float, dt: float
    ) -> SafeCommand:
        """The command for this period: toward `target` within the limits, or a hold."""
        if not (math.isfinite(dt) and dt > 0):
            raise ControlError(f"dt: need the command period in s (> 0), got {dt!r}")
        if not math.isfinite(now):
            raise ControlError(f"now: need a finite time in s, got {now!r}")
        self._now = now
        if self._position is None:
            return SafeCommand(None, None, self.status, ("released",))
        if self.status is Status.DISABLED and not self._velocity.any():
            self._position = None  # at rest and disabled: release the arm
            return SafeCommand(None, None, self.status, ("released",))
        hold = self._hold_reason_for(target, measured)
        if hold is None:
            desired, status, reasons = self._toward(target, now, dt)
        else:
            # Whatever the hold, motion afterwards starts a new blend from where it stopped.
            self._blend_start, self._last_goal = None, None
            speed = np.maximum(np.abs(self._velocity) - self.limits.acceleration * dt, 0.0)
            desired = np.sign(self._velocity) * speed
            status, reasons = hold
        position, velocity, limited = self._limit(desired, dt)
        self._position, self._velocity = position, velocity
        self.counters["commands"] += 1
        return SafeCommand(_frozen(position), _frozen(velocity), status, reasons + limited)

    def _blending(self) -> bool:
        return self._blend_start is None or self._now - self._blend_start < self.config.blend_time

    def _problem(self, label: str, value: object) -> tuple[str, str] | None:
        """Why `value` is not a finite float vector [N]: (counter, reason), or None."""
        try:
            vector = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            vector = np.empty(0)
        if vector.shape != (len(self.limits),):
            shape = f"shape {vector.shape}, need ({len(self.limits)},)"
            return "rejected_shape", f"{label} rejected: {shape}"
        if names := self._names(~np.isfinite(vector)):
            return "rejected_nonfinite", f"{label} rejected: non-finite {names}"
        return None

    def _hold_reason_for(
        self, target: np.ndarray | None, measured: np.ndarray | None
    ) -> tuple[Status, tuple[str, ...]] | None:
        """Why this step must hold, with its status, or None to move toward the target."""
        if self._estop_reason is not None:
            return Status.ESTOPPED, (f"e-stop: {self._estop_reason}",)
        if not self._enabled:
            return Status.DISABLED, ("disabled",)
        if self._hold_reason is not None:
            self.counters["stale_holds"] += 1
            return Status.HOLD, (f"hold: {self._hold_reason}",)
        if target is None:
            return Status.HOLD, ("no target",)
        for label, value in (("target", target), ("measured", measured)):
            if value is not None and (problem := self._problem(label, value)):
                self.counters[problem[0]] += 1
                return Status.HOLD, (problem[1],)
        if measured is not None:
            assert self._position is not None
            gap = np.abs(self._position - np.asarray(measured, dtype=np.float64))
            worst = int(np.argmax(gap))
            if gap[worst] > self.config.deviation_threshold:
                self.counters["deviation_holds"] += 1
                return Status.HOLD, (
                    f"deviation {self.limits.names[worst]}: |command - measured| = "
                    f"{gap[worst]:.4f} > {self.config.deviation_threshold}",
                )
        return None

    def _toward(
        self, target: np.ndarray, now: float, dt: float
    ) -> tuple[np.ndarray, Status, tuple[str, ...]]:
        """Desired velocity toward the (clipped, blended) target, the status and reasons."""
        assert self._position is not None
        lower, upper = self.limits.lower, self.limits.upper
        raw = np.asarray(target, dtype=np.float64)
        clipped = np.clip(raw, lower, upper)
        reasons: tuple[str, ...] = ()
        if names := self._names(clipped != raw):
            self.counters["clipped_position"] += 1
            reasons = (f"position clipped: {names}",)
        if self._blend_start is None:
            self._blend_start, self._blend_from = now, self._position.copy()
        s = min(max((now - self._blend_start) / self.config.blend_time, 0.0), 1.0)
        goal = self._blend_from + s * s * (3.0 - 2.0 * s) * (clipped - self._blend_from)
        previous = goal if self._last_goal is None else self._last_goal
        self._last_goal = goal
        # Feed the goal's own motion forward; close the remaining error with the braking
        # profile, which never covers more than the error, so a still goal is not overshot.
        error = previous - self._position
        correction = stopping_speed(np.abs(error), self.limits.acceleration, dt)
        desired = (goal - previous) / dt + np.sign(error) * correction
        return desired, Status.BLENDING if s < 1.0 else Status.ACTIVE, reasons

    def _limit(
        self, desired: np.ndarray, dt: float
    ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """The next position and velocity: `desired` within the invariants, and what bound."""
        assert self._position is not None
        limits, position, velocity = self.limits, self._position, self._velocity
        speed_up = np.minimum(
            limits.velocity, stopping_speed(limits.upper - position, limits.acceleration, dt)
        )
        speed_down = np.minimum(
            limits.velocity, stopping_speed(position - limits.lower, limits.acceleration, dt)
        )
        accel_low = velocity - limits.acceleration * dt
        accel_high = velocity + limits.acceleration * dt
        # The acceleration window first, the speed bounds last: when they do not meet (only
        # after dt shrank mid-motion) the position and velocity limits win.
        chosen = np.clip(np.clip(desired, accel_low, accel_high), -speed_down, speed_up)
        reasons = []
        tol = _REPORT_TOLERANCE
        if names := self._names((desired > speed_up + tol) | (desired < -speed_down - tol)):
            self.counters["clipped_velocity"] += 1
            reasons.append(f"velocity clipped: {names}")
        broken = (accel_low > speed_up + tol) | (accel_high < -speed_down - tol)
        shaped = (desired > accel_high + tol) | (desired < accel_low - tol)
        if broken.any():
            self.counters["clipped_acceleration"] += 1
            reasons.append(f"acceleration limit exceeded to stay in limits: {self._names(broken)}")
        elif shaped.any():
            self.counters["clipped_acceleration"] += 1
            reasons.append(f"acceleration clipped: {self._names(shaped)}")
        # Rounding in the stopping speed must never put a command outside the range.
        new_position = np.clip(position + chosen * dt, limits.lower, limits.upper)
        return new_position, (new_position - position) / dt, tuple(reasons)

    def _names(self, mask: np.ndarray) -> str:
        return ", ".join(n for n, hit in zip(self.limits.names, mask, strict=True) if hit)


def _frozen(array: np.ndarray) -> np.ndarray:
    """A read-only copy, so a published command cannot be changed afterwards."""
    out = array.copy()
    out.flags.writeable = False
    return out
