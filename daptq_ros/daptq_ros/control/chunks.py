"""Time-indexed action-chunk scheduler: the action a policy's chunks give for a time t.

A chunk's row i is meant for time `stamp + i * dt`, where stamp is the time of the observation
the chunk was computed from. Sampling by time rather than by count pays for inference latency
automatically: when a chunk arrives, its first rows are already in the past and are skipped.

Inference overlaps execution (LeRobot's asynchronous inference): the robot follows the current
chunk while the next one is computed. Times here are the replanner's timeline (control/replan.py),
which slows or stops when inference outlasts a chunk. At the switch from one chunk to the next,
`crossfade` seconds blend the old chunk's rows into the new one's, so the commanded action has
no jump at the chunk boundary without changing the model; real-time chunking (policy/rtc.py)
instead makes the new chunk continue the old one, using `planned`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daptq_ros.control.checks import is_number, require_time
from daptq_ros.errors import ControlError

MERGES = ("latest", "ensemble")

# Slack (s) when placing t on a chunk's rows: t = stamp + i * dt computed in float64 must land
# on row i, not i - 1. 1 us is above the rounding of epoch-second stamps (about 2.4e-7 s) and
# far below any control period.
_TIME_SLACK = 1e-6


class ChunkState(StrEnum):
    """Where a time t lies relative to the chunks a scheduler holds."""

    EMPTY = "empty"  # no chunk held
    BEFORE_START = "before_start"  # no chunk covers t, but one starts after t
    ACTIVE = "active"  # at least one chunk covers t
    PAST_END = "past_end"  # every chunk held ended at or before t


@dataclass(frozen=True)
class TimedChunk:
    """A policy's action chunk: row i of actions [H, D] is meant for time stamp + i * dt (s)."""

    actions: NDArray[np.float64]
    stamp: float
    dt: float

    def __post_init__(self) -> None:
        try:
            actions = np.array(self.actions, dtype=np.float64)  # a copy the caller cannot change
        except (TypeError, ValueError) as error:
            raise ControlError(
                f"action chunk is not numeric ({error}); pass the policy's [H, D] float array"
            ) from None
        if actions.ndim != 2 or 0 in actions.shape:
            raise ControlError(
                f"action chunk has shape {actions.shape}; it must be [H, D] with H, D >= 1 "
                "(reshape a single action to [1, D])"
            )
        if not np.isfinite(actions).all():
            raise ControlError(
                "action chunk holds NaN or inf values; drop it and check the policy's output "
                "(a low-bit model can overflow)"
            )
        require_time("chunk stamp", self.stamp)
        if not (is_number(self.dt) and math.isfinite(self.dt) and self.dt > 0):
            raise ControlError(f"chunk dt {self.dt!r} must be a finite number of seconds > 0")
        actions.flags.writeable = False
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "stamp", float(self.stamp))
        object.__setattr__(self, "dt", float(self.dt))

    def end(self) -> float:
        """Time (s) the last row stops being valid: stamp + H * dt."""
        return self.stamp + len(self.actions) * self.dt


class ChunkScheduler:
    """Holds the chunks a policy emitted and gives the action for any time t."""

    def __init__(
        self,
        merge: str = "latest",
        ensemble_decay: float = 0.1,
        max_chunks: int = 8,
        interpolate: bool = False,
        crossfade: float = 0.0,
    ) -> None:
        """Merge overlapping chunks by `merge`; `interpolate` blends rows linearly, else holds.

        `crossfade` (s, merge "latest" only): after a new chunk arrives, its rows are blended
        with the previous chunk's over this long (0 = switch at once).
        """
        if merge not in MERGES:
            raise ControlError(f"merge {merge!r} is not known; use one of {', '.join(MERGES)}")
        if not (
            is_number(ensemble_decay) and math.isfinite(ensemble_decay) and ensemble_decay >= 0
        ):
            raise ControlError(
                f"ensemble_decay {ensemble_decay!r} must be a finite number >= 0 "
                "(0 averages the chunks equally; larger trusts older chunks more)"
            )
        if isinstance(max_chunks, bool) or not isinstance(max_chunks, int) or max_chunks < 1:
            raise ControlError(f"max_chunks {max_chunks!r} must be an integer >= 1")
        if not (is_number(crossfade) and math.isfinite(crossfade) and crossfade >= 0):
            raise ControlError(f"crossfade {crossfade!r} must be a finite number of seconds >= 0")
        self._merge = merge
        self._decay = float(ensemble_decay)
        self._max_chunks = max_chunks
        self._interpolate = interpolate
        self._crossfade = float(crossfade)
        self._chunks: list[TimedChunk] = []  # in stamp order: add() refuses older stamps
        self._arrivals: list[float] = []  # when each chunk of _chunks was added
        self._dim: int | None = None  # action size, fixed until clear()
        self._newest: float = -math.inf  # newest stamp accepted since clear()
        # Lifetime totals for diagnostics; clear() keeps them.
        self.counters: dict[str, int] = dict.fromkeys(
            ("added", "dropped_stale", "samples", "empty_samples"), 0
        )

    def add(self, actions: ArrayLike, stamp: float, dt: float, now: float) -> bool:
        """Hold a new chunk; False (counted as dropped_stale) if it is out of order or ended."""
        chunk = TimedChunk(actions, stamp, dt)
        require_time("now", now)
        dim = chunk.actions.shape[1]
        if self._dim is not None and dim != self._dim:
            raise ControlError(
                f"action chunk has {dim} action dimensions but earlier chunks had {self._dim}; "
                "call clear() when the policy or its action space changes"
            )
        # A chunk from an older observation than one already held arrived late (out of order):
        # it is staler than what the robot already follows.
        if chunk.end() <= now or chunk.stamp < self._newest:
            self.counters["dropped_stale"] += 1
            return False
        self._dim, self._newest = dim, chunk.stamp
        kept = [i for i, held in enumerate(self._chunks) if held.end() > now]
        self._chunks = [self._chunks[i] for i in kept] + [chunk]
        self._arrivals = [self._arrivals[i] for i in kept] + [float(now)]
        del self._chunks[: -self._max_chunks]
        del self._arrivals[: -self._max_chunks]
        self.counters["added"] += 1
        return True

    def state(self, t: float) -> ChunkState:
        """Whether t is before, inside or after the chunks held (EMPTY when none is held)."""
        require_time("t", t)
        if not self._chunks:
            return ChunkState.EMPTY
        if any(_covers(chunk, t) for chunk in self._chunks):
            return ChunkState.ACTIVE
        # Between two chunks counts as before the next one: actions for later are held.
        if any(_position(chunk, t) < 0 for chunk in self._chunks):
            return ChunkState.BEFORE_START
        return ChunkState.PAST_END

    def sample(self, t: float) -> NDArray[np.float64] | None:
        """The action [D] for time t, or None unless the state at t is ACTIVE."""
        require_time("t", t)
        live = [i for i, chunk in enumerate(self._chunks) if _covers(chunk, t)]
        if not live:
            self.counters["empty_samples"] += 1
            return None
        self.counters["samples"] += 1
        return self._merged(live, t)

    def _merged(self, live: list[int], t: float) -> NDArray[np.float64]:
        """The action for t from the live chunks (indices into _chunks), as merge says."""
        if self._merge == "latest":
            return self._latest(live, t)
        # Temporal ensembling of ACT (Zhao et al. 2023, "Learning Fine-Grained Bimanual
        # Manipulation with Low-Cost Hardware", arXiv:2304.13705): a weighted average of every
        # chunk's row for t with w_k = exp(-m * k), k = 0 the oldest chunk, which smooths the
        # switch from one chunk to the next.
        weights = np.exp(-self._decay * np.arange(len(live)))
        rows = np.stack([self._row(self._chunks[i], t) for i in live])
        return np.asarray(weights @ rows / weights.sum())

    def last_action(self) -> NDArray[np.float64] | None:
        """The newest chunk's last row (what the arm stands at past its end), None if none."""
        return self._chunks[-1].actions[-1].copy() if self._chunks else None

    @property
    def newest_dt(self) -> float | None:
        """Row time (s) of the newest chunk held, None when none is."""
        return self._chunks[-1].dt if self._chunks else None

    @property
    def newest_span(self) -> float:
        """Seconds the newest chunk held covers (0 when none is)."""
        return self._chunks[-1].end() - self._chunks[-1].stamp if self._chunks else 0.0

    def planned(self, start: float, dt: float) -> NDArray[np.float64] | None:
        """The actions [P, D] planned for start + i * dt, while a chunk covers them (P at most
        the newest chunk's rows).

        What a new chunk stamped `start` with rows `dt` apart must continue (real-time
        chunking); None when no chunk covers `start`. Counters are not touched.
        """
        rows = []
        for i in range(len(self._chunks[-1].actions) if self._chunks else 0):
            t = start + i * dt
            live = [k for k, chunk in enumerate(self._chunks) if _covers(chunk, t)]
            if not live:
                break
            rows.append(self._merged(live, t))
        return np.stack(rows) if rows else None

    def remaining(self, t: float) -> float:
        """Seconds from t until the last chunk held ends (0 when none is held or all ended)."""
        require_time("t", t)
        return max(0.0, max((chunk.end() for chunk in self._chunks), default=t) - t)

    def clear(self) -> None:
        """Drop every chunk and forget the action size and newest stamp (e-stop, model swap)."""
        self._chunks.clear()
        self._arrivals.clear()
        self._dim, self._newest = None, -math.inf

    def _latest(self, live: list[int], t: float) -> NDArray[np.float64]:
        """The newest live chunk's row, crossfaded from the previous one's after its arrival."""
        newest = self._row(self._chunks[live[-1]], t)
        if self._crossfade <= 0 or len(live) < 2:
            return newest
        weight = (t - self._arrivals[live[-1]]) / self._crossfade
        if weight >= 1:
            return newest
        previous = self._row(self._chunks[live[-2]], t)
        weight = max(weight, 0.0)
        return weight * newest + (1 - weight) * previous

    def _row(self, chunk: TimedChunk, t: float) -> NDArray[np.float64]:
        """The chunk's action for t (t covered): the row held, or blended toward the next."""
        last = len(chunk.actions) - 1
        i = min(max(math.floor(_position(chunk, t)), 0), last)
        if not self._interpolate or i == last:
            return chunk.actions[i].copy()
        fraction = min(max((t - chunk.stamp) / chunk.dt - i, 0.0), 1.0)
        return (1 - fraction) * chunk.actions[i] + fraction * chunk.actions[i + 1]


def _position(chunk: TimedChunk, t: float) -> float:
    """t in rows of `chunk` (row i covers [i, i + 1)), with the float slack."""
    return (t - chunk.stamp + _TIME_SLACK) / chunk.dt


def _covers(chunk: TimedChunk, t: float) -> bool:
    """Whether one of the chunk's rows is meant for t."""
    return 0 <= _position(chunk, t) < len(chunk.actions)
