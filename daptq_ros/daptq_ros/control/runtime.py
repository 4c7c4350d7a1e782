"""Run a policy off the control thread: one worker, a one-slot observation queue, model swaps.

The control loop submits the newest observation; an observation that arrives while the worker
is busy replaces the waiting one (counted as dropped), so the policy always sees the freshest
frame. Results are collected by the caller's command timer: nothing here publishes. A swap
(e.g. a new bit configuration) builds the new policy on its own thread while the old one keeps
serving; the caller applies it between control steps, and results the old policy finishes
afterwards are discarded by their generation number.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

LATENCY_HISTORY = 64  # inference latencies kept for the mean shown in diagnostics


class ChunkPolicy(Protocol):
    """The Policy contract: one observation in, an action chunk out."""

    def predict(self, image: NDArray[np.uint8], instruction: str, state: NDArray) -> Any:
        """An object with actions [H, D], dt, space and names.

        A policy whose `chunk_guidance` is "rtc" also takes `prefix=` (policy.contract's
        ChunkPrefix) and names the method that ran in its chunk's `guidance`.
        """
        ...


@dataclass(frozen=True)
class Observation:
    """What the policy sees at one control step; `stamp` is the camera frame's time (s).

    `prefix` (a ChunkPrefix, or None) is what the new chunk must continue under real-time
    chunking.
    """

    image: NDArray[np.uint8]
    instruction: str
    state: NDArray[np.float64]
    stamp: float
    prefix: Any = None


@dataclass(frozen=True)
class InferenceResult:
    """A chunk the policy computed from the observation stamped `stamp`, or the error it raised."""

    stamp: float
    generation: int
    latency: float
    actions: NDArray[np.float64] | None = None
    dt: float = 0.0
    space: str = ""
    names: tuple[str, ...] = ()
    guidance: str = ""
    error: str = ""


class SwapState(StrEnum):
    """Where a requested policy swap stands."""

    IDLE = "idle"
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


class InferenceWorker:
    """One background thread running `policy.predict` on the newest submitted observation."""

    def __init__(
        self,
        policy: ChunkPolicy,
        label: str,
        clock: Callable[[], float] = time.monotonic,
        on_start: Callable[[], None] | None = None,
    ):
        """`on_start` runs first on the worker thread (e.g. to lower its priority)."""
        self.label = label
        self.generation = 0
        self.counters = {"submitted": 0, "dropped": 0, "completed": 0, "failed": 0}
        self.latencies: deque[float] = deque(maxlen=LATENCY_HISTORY)
        self.swap_state = SwapState.IDLE
        self.swap_label = ""
        self.swap_error = ""
        self.last_swap_s = float("nan")  # wall time the last successful swap took to build
        self._clock = clock
        self._policy = policy
        self._pending: Observation | None = None
        self._results: list[InferenceResult] = []
        self._busy = False
        self._ready_policy: ChunkPolicy | None = None
        self._closed = False
        self._lock = threading.Condition()
        self._on_start = on_start
        self._thread = threading.Thread(target=self._serve, name="inference", daemon=True)
        self._thread.start()

    def submit(self, observation: Observation) -> None:
        """Queue `observation` for the next inference, replacing one still waiting."""
        with self._lock:
            if self._pending is not None:
                self.counters["dropped"] += 1
            self._pending = observation
            self.counters["submitted"] += 1
            self._lock.notify_all()

    @property
    def busy(self) -> bool:
        """Whether an inference is running or an observation waits for one."""
        with self._lock:
            return self._busy or self._pending is not None

    @property
    def has_results(self) -> bool:
        """Whether results wait for take_results()."""
        with self._lock:
            return bool(self._results)

    @property
    def policy(self) -> ChunkPolicy:
        """The policy that serves inference now."""
        with self._lock:
            return self._policy

    def take_results(self) -> list[InferenceResult]:
        """Results finished since the last call, oldest first (for the caller's thread)."""
        with self._lock:
            results, self._results = self._results, []
        return results

    def mean_latency(self) -> float:
        """Mean of the recent inference latencies (s), NaN before the first."""
        with self._lock:
            return float(np.mean(self.latencies)) if self.latencies else float("nan")

    def request_swap(self, label: str, build: Callable[[], ChunkPolicy]) -> bool:
        """Build a new policy with `build()` on a separate thread; False if a swap is under way."""
        with self._lock:
            if self.swap_state is SwapState.BUILDING:
                return False
            self.swap_state, self.swap_label, self.swap_error = SwapState.BUILDING, label, ""
        threading.Thread(target=self._build, args=(build,), name="swap", daemon=True).start()
        return True

    def use(self, policy: ChunkPolicy, label: str) -> None:
        """Serve `policy` from the next inference on, without a hold: the chunk in flight, from
        the old policy, is still delivered (a precision-ladder switch: same model, other bits)."""
        with self._lock:
            self._policy, self.label = policy, label

    def apply_swap(self) -> str | None:
        """Serve the built policy from now on; its label, or None when none is ready."""
        with self._lock:
            if self.swap_state is not SwapState.READY or self._ready_policy is None:
                return None
            self._policy, self._ready_policy = self._ready_policy, None
            self.label = self.swap_label
            self.generation += 1
            self._pending = None  # observed before the swap; the next control step sends a new one
            self.swap_state = SwapState.IDLE
            return self.label

    def acknowledge_failed_swap(self) -> str:
        """The reason the last swap failed; the state returns to IDLE and the old policy stays."""
        with self._lock:
            reason, self.swap_error = self.swap_error, ""
            self.swap_state = SwapState.IDLE
            return reason

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker thread (after the inference in flight, if any)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout)

    def _build(self, build: Callable[[], ChunkPolicy]) -> None:
        started = time.monotonic()  # wall time, whatever clock the node follows
        try:
            policy = build()
        except Exception as error:  # any failure must leave the old policy serving
            with self._lock:
                self.swap_state, self.swap_error = SwapState.FAILED, _describe(error)
            return
        with self._lock:
            self._ready_policy, self.swap_state = policy, SwapState.READY
            self.last_swap_s = time.monotonic() - started

    def _serve(self) -> None:
        if self._on_start is not None:
            self._on_start()
        while True:
            with self._lock:
                while self._pending is None and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                observation, self._pending = self._pending, None
                policy, generation, self._busy = self._policy, self.generation, True
            start = self._clock()
            result = _run(policy, observation, generation, start, self._clock)
            with self._lock:
                self._busy = False
                self._results.append(result)
                if result.error:
                    self.counters["failed"] += 1
                else:
                    self.counters["completed"] += 1
                    self.latencies.append(result.latency)


def _run(
    policy: ChunkPolicy,
    observation: Observation,
    generation: int,
    start: float,
    clock: Callable[[], float],
) -> InferenceResult:
    """One predict call as a result; an exception becomes an error result, never a dead thread."""
    try:
        prefix = {} if observation.prefix is None else {"prefix": observation.prefix}
        chunk = policy.predict(
            observation.image, observation.instruction, observation.state, **prefix
        )
        return InferenceResult(
            stamp=observation.stamp,
            generation=generation,
            latency=clock() - start,
            actions=np.asarray(chunk.actions, dtype=np.float64),
            dt=float(chunk.dt),
            space=str(chunk.space),
            names=tuple(chunk.names),
            guidance=str(getattr(chunk, "guidance", "")),
        )
    except Exception as error:
        return InferenceResult(
            observation.stamp, generation, clock() - start, error=_describe(error)
        )


def _describe(error: BaseException) -> str:
    """One line: the exception's type and message, and where it was raised."""
    where = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    place = f" (at {where[0].filename}:{where[0].lineno})" if where else ""
    return f"{type(error).__name__}: {error}{place}"
