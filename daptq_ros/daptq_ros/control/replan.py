"""Latency-aware replanning: when to ask for a chunk, what it must continue, and the timeline.

Chunks are placed on a *timeline* (chunk time tau) that follows the node clock at a rate in
[min_rate, 1]. At rate 1 it is the node clock. When inference takes longer than the chunk held
still covers, the overrun policy decides:

- "slow": the rate drops to the constant rate at which each chunk lasts until the next one
  arrives, with OVERLAP_ROWS to spare (time scaling: the arm follows the same path, slower).
  The rate changes by at most RATE_SLEW per second, so the commanded velocity never steps.
- "hold": the rate stays 1 and the arm holds at the chunk's end until the next one arrives.

In both, when the next chunk is not expected before the end of the chunks held, the timeline
brakes (at RATE_SLEW) to stop there; it never passes that end and waits while no chunk is held:
with no action to follow the arm holds (the safety filter brakes it), and the next chunk
continues from where it stopped.

A new chunk is asked for as soon as the previous one has arrived and a control period has
passed since it was asked for, never while one is in flight. Its delay (how much of the timeline
passes between its observation and its use) is the median of the recent delays, so one latency
spike does not move it. Under real-time chunking the rows the held chunk still plans from the
observation on are given to the policy to continue (`prefix`).

Injected latency (a test axis): each result is held until `inject_s` (+ up to `jitter_s`) of node
time after its observation was submitted.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daptq_ros.control.chunks import ChunkScheduler, ChunkState
from daptq_ros.errors import ControlError

METHODS = ("auto", "rtc", "crossfade")
OVERRUNS = ("slow", "hold")
DELAY_WINDOW = 8  # delays the median is taken over
HISTORY = 1024  # command ticks of timeline kept to place past observation stamps
OVERLAP_ROWS = 2  # rows of the held chunk slow mode keeps for the next chunk's arrival
RATE_SLEW = 10.0  # /s: the timeline rate goes from 1 to 0 in no less than 0.1 s
_ROW_SLACK = 1e-6  # rows: a delay of exactly k rows is k, not k + 1


@dataclass(frozen=True)
class Prefix:
    """What a new chunk must continue: actions [P, D] on its rows, the first `delay` frozen."""

    actions: NDArray[np.float64]
    delay: int


class Timeline:
    """Chunk time tau against node time t, advanced once per command tick at a bounded rate."""

    def __init__(self, min_rate: float) -> None:
        if not (math.isfinite(min_rate) and 0 <= min_rate <= 1):
            raise ControlError(f"min_rate {min_rate!r} must be a number from 0 to 1")
        self.min_rate = float(min_rate)
        self.rate = 1.0
        self._times: deque[float] = deque(maxlen=HISTORY)
        self._taus: deque[float] = deque(maxlen=HISTORY)

    def at(self, t: float) -> float:
        """tau at node time t: interpolated over the ticks kept, at the last rate beyond them."""
        if not self._times:
            return float(t)
        if t >= self._times[-1]:
            return self._taus[-1] + self.rate * (t - self._times[-1])
        if t <= self._times[0]:
            return self._taus[0] - (self._times[0] - t)
        return float(np.interp(t, self._times, self._taus))

    @property
    def last(self) -> float:
        """tau at the last tick (-inf before the first)."""
        return self._taus[-1] if self._taus else -math.inf

    def advance(
        self, now: float, target_rate: float, end: float | None, brake: bool = True
    ) -> float:
        """Move to node time `now`, the rate toward `target_rate`, never past `end` (braking
        to stop there when `brake`); the tau gained."""
        if not self._times:
            self.reset(now)
            return 0.0
        elapsed = max(now - self._times[-1], 0.0)
        step = RATE_SLEW * elapsed
        before = self._taus[-1]
        target = min(max(target_rate, self.min_rate), 1.0)
        if end is not None and brake:
            # Brake in time to stop at `end`: slewing down from r in ticks of `elapsed` covers
            # r^2 / (2 a) + r * elapsed / 2 of timeline, which must fit in what is left.
            left, slew = max(end - before, 0.0), step
            target = min(target, (math.sqrt(slew**2 + 8 * RATE_SLEW * left) - slew) / 2)
        self.rate = min(max(target, self.rate - step), self.rate + step)
        tau = before + self.rate * elapsed
        if end is not None and tau > end:
            tau = max(end, before)
            # Stopped at `end`: the rate is what was achieved, so it ramps up again from there.
            self.rate = (tau - before) / elapsed if elapsed > 0 else 0.0
        self._times.append(float(now))
        self._taus.append(tau)
        return tau - before

    def reset(self, now: float | None = None) -> None:
        """Follow the node clock again, from `now` or from the next tick."""
        self._times.clear()
        self._taus.clear()
        self.rate = 1.0
        if now is not None:
            self._times.append(float(now))
            self._taus.append(float(now))


class Replanner:
    """The node's chunk flow: submissions, injected latency, delay estimates, the timeline."""

    def __init__(
        self,
        scheduler: ChunkScheduler,
        rtc: bool,
        overrun: str,
        min_rate: float,
        first_latency: float,
        seed: int = 0,
    ) -> None:
        if overrun not in OVERRUNS:
            raise ControlError(f"overrun {overrun!r}: use one of {', '.join(OVERRUNS)}")
        self.scheduler = scheduler
        self.rtc = rtc
        self.overrun = overrun
        self.timeline = Timeline(min_rate)
        self.inject_s = 0.0
        self.jitter_s = 0.0
        self._rng = np.random.default_rng(seed)
        first = first_latency if math.isfinite(first_latency) else 0.0
        self._latencies: deque[float] = deque([first], maxlen=DELAY_WINDOW)  # node time
        self._delays: deque[float] = deque([first], maxlen=DELAY_WINDOW)  # timeline
        self._submitted_at: float | None = None  # node time of the submission in flight
        self._last_submit = -math.inf
        self._held: list[tuple[float, Any]] = []  # (release time, result), injected latency
        self.overrun_reason = ""

    # ----- submissions -----
    def due(self, now: float, busy: bool, period: float, command_period: float) -> bool:
        """Whether to ask for a chunk now: none in flight, a control period since the last."""
        if busy or self._held or self._submitted_at is not None:
            return False
        return now - self._last_submit >= period - command_period / 2

    def submit(self, now: float, stamp: float) -> Prefix | None:
        """Record a submission at `now` of an observation stamped `stamp`; the RTC prefix."""
        self._submitted_at = self._last_submit = float(now)
        if not self.rtc:
            return None
        return self.prefix(stamp)

    def prefix(self, stamp: float) -> Prefix | None:
        """The held chunk's rows on a new chunk's grid from `stamp`, and the frozen rows.

        The timeline never passes the end of the chunks held: rows past it are the last row,
        where the arm stands until the new chunk arrives.
        """
        dt = self.scheduler.newest_dt
        last = self.scheduler.last_action()
        if dt is None or last is None:
            return None
        start = self.timeline.at(stamp)
        delay = max(math.ceil(self.delay() / dt - _ROW_SLACK), 0)
        rows = self.scheduler.planned(start, dt)
        if rows is None:
            rows = last[None]
        if len(rows) < delay:
            rows = np.vstack([rows, np.repeat(rows[-1:], delay - len(rows), axis=0)])
        return Prefix(rows, delay)

    def delay(self) -> float:
        """Median of the recent delays, in timeline seconds (observation to use)."""
        return float(np.median(self._delays))

    def latency(self) -> float:
        """Median of the recent latencies, in node seconds (submission to arrival)."""
        return float(np.median(self._latencies))

    def inject(self, latency_s: float, jitter_s: float = 0.0) -> None:
        """Pad every inference to `latency_s` (+ up to `jitter_s`) of node time (a test axis).

        Estimates below the padded latency rise to it at once: the next chunks take at least
        that long, and a median over earlier, faster ones would freeze too few rows (a fresh
        node's estimates start from its start-up probe, which is not padded).
        """
        self.inject_s, self.jitter_s = float(latency_s), float(jitter_s)
        if self.inject_s > self.latency():
            self._latencies = deque([self.inject_s], maxlen=DELAY_WINDOW)
        if self.inject_s > self.delay():
            self._delays = deque([self.inject_s], maxlen=DELAY_WINDOW)

    # ----- results -----
    def hold(self, result: Any, now: float) -> None:
        """Keep `result` until the injected latency since its submission has passed."""
        extra = self.jitter_s * float(self._rng.random()) if self.jitter_s > 0 else 0.0
        start = self._submitted_at if self._submitted_at is not None else now
        self._held.append((start + self.inject_s + extra, result))

    def released(self, now: float) -> list[Any]:
        """Results whose injected latency has passed, oldest first."""
        ready = [result for release, result in self._held if release <= now]
        self._held = [(release, result) for release, result in self._held if release > now]
        return ready

    def arrived(self, now: float, stamp: float | None) -> float:
        """A result arrived at `now` (stamp None: it failed); its observation's tau."""
        if self._submitted_at is not None:
            self._latencies.append(now - self._submitted_at)
        self._submitted_at = None
        if stamp is None:
            return math.nan
        tau = self.timeline.at(stamp)
        self._delays.append(max(self.timeline.at(now) - tau, 0.0))
        return tau

    def forget(self) -> None:
        """Drop the chunks, what is held and in flight; follow the node clock again (swap,
        e-stop, a restarted clock)."""
        self._held.clear()
        self._submitted_at = None
        self.scheduler.clear()
        self.timeline.reset()

    # ----- the timeline -----
    def tick(self, now: float, period: float) -> float:
        """Advance the timeline for the command tick at `now`; the timeline seconds gained."""
        # Where the last tick left the timeline: a tick that would reach a chunk's end must
        # see it coming, not find itself past it.
        last = self.timeline.last
        tau = last if math.isfinite(last) else now
        state = self.scheduler.state(tau)
        if state is not ChunkState.ACTIVE:
            self.overrun_reason = self._holding() if state is ChunkState.PAST_END else ""
            # Nothing plays before the first chunk (or after the last): the timeline waits, so
            # a chunk computed meanwhile starts at its row 0 on arrival, as the arm stood still.
            wait = None if state is ChunkState.BEFORE_START else self.timeline.last
            return self.timeline.advance(now, 1.0, wait)
        left = self.scheduler.remaining(tau)
        wait = self._expected_wait(now, period)
        target = self.sustainable_rate(period) if self.overrun == "slow" else 1.0
        # Brake only when the next chunk is not expected before the held ones end.
        brake = wait >= left / max(self.timeline.rate, 1e-3) - period
        gained = self.timeline.advance(now, target, tau + left, brake)
        self._describe_overrun(wait, left, gained, period)
        return gained

    def sustainable_rate(self, period: float) -> float:
        """The constant rate at which each chunk lasts until the next arrives, OVERLAP_ROWS to
        spare (1 when inference is fast enough).

        In a steady state a chunk's observation is taken on the previous chunk's arrival, so
        the chunk must cover two latencies and a command period: rate * (2 L + period) =
        span - overlap. A constant rate keeps the command smooth; a rate chasing what is left
        of each chunk would change at every switch.
        """
        dt = self.scheduler.newest_dt
        if dt is None:
            return 1.0
        usable = self.scheduler.newest_span - OVERLAP_ROWS * dt
        return min(1.0, max(usable, 0.0) / (2 * self.latency() + period))

    def chunk_time(self, now: float) -> float:
        """tau at node time `now`."""
        return self.timeline.at(now)

    def _expected_wait(self, now: float, period: float) -> float:
        """Node seconds until the next chunk is expected (a command period at least)."""
        if self._submitted_at is None:
            return self.latency() + period
        waited = now - self._submitted_at
        # Overdue (a latency step the median has not caught up with): expect as long again.
        return max(self.latency() - waited, waited if waited > self.latency() else 0.0, period)

    def _describe_overrun(self, wait: float, left: float, gained: float, period: float) -> None:
        if wait <= left:
            self.overrun_reason = ""
        elif gained <= 0:
            self.overrun_reason = self._holding()
        else:
            self.overrun_reason = (
                f"inference ({self.latency():.3f} s) outlasts the chunk held ({left:.3f} s "
                f"left): {self.overrun} mode, timeline at {gained / period:.2f}x"
            )

    def _holding(self) -> str:
        return (
            f"inference ({self.latency():.3f} s) outlasts the chunks held: holding at their end "
            "until the next chunk arrives"
        )
