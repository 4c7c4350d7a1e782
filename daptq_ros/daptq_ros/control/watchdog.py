"""Watchdogs: which named streams have gone quiet for longer than their timeout.

One class serves both sides of the policy node: its inputs (image, joint_states, instruction)
and its own output (the "chunk" stream), so a stalled camera and a stalled model are caught
the same way. Feed the time a message arrived on the node's clock unless the publishers'
clocks are synchronised with it: a stamp from a clock that runs ahead would look fresh.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from daptq_ros.control.checks import is_number, require_time
from daptq_ros.errors import ControlError


class Watchdog:
    """Ages of named streams; a stream is stale when older than its timeout (or never seen)."""

    def __init__(self, timeouts: Mapping[str, float]) -> None:
        """Watch the streams named in `timeouts` (s); a timeout <= 0 only needs one message."""
        if not timeouts:
            raise ControlError(
                "a Watchdog needs at least one stream; pass {name: timeout_s}, "
                'e.g. {"image": 0.2, "joint_states": 0.1}'
            )
        for name, timeout in timeouts.items():
            if not isinstance(name, str) or not name:
                raise ControlError(f"watchdog stream name {name!r} must be a non-empty string")
            if not is_number(timeout) or math.isnan(timeout):
                raise ControlError(
                    f"watchdog timeout of {name!r} is {timeout!r}; give seconds as a number, "
                    "or <= 0 for a stream that only has to be seen once (a latched instruction)"
                )
        self._timeouts = {name: float(timeout) for name, timeout in timeouts.items()}
        self._last: dict[str, float] = {}

    def feed(self, name: str, stamp: float) -> None:
        """Record a message of stream `name` at `stamp` (s); an older stamp than seen is ignored."""
        self._require_known(name)
        require_time(f"stamp of {name!r}", stamp)
        # Keep the newest: a late, reordered message must not make the stream look older.
        if stamp > self._last.get(name, -math.inf):
            self._last[name] = float(stamp)

    def age(self, name: str, now: float) -> float:
        """Seconds since stream `name` was last fed (inf when never)."""
        self._require_known(name)
        require_time("now", now)
        return now - self._last[name] if name in self._last else math.inf

    def stale(self, now: float) -> list[str]:
        """Names of the stale streams at `now`, in declaration order."""
        return [name for name in self._timeouts if self._is_stale(name, now)]

    def reasons(self, now: float) -> list[str]:
        """Why each stale stream is stale, for logs and /diagnostics."""
        reasons = []
        for name in self.stale(now):
            if name not in self._last:
                reasons.append(f"{name}: no message yet")
            else:
                age, timeout = self.age(name, now), self._timeouts[name]
                reasons.append(f"{name}: {age:.2f} s old (timeout {timeout:g} s)")
        return reasons

    def set_timeout(self, name: str, timeout: float) -> None:
        """Change stream `name`'s timeout (s), e.g. to follow a measured rate."""
        self._require_known(name)
        if not is_number(timeout) or math.isnan(timeout):
            raise ControlError(f"watchdog timeout of {name!r} is {timeout!r}; give seconds")
        self._timeouts[name] = float(timeout)

    def reset(self) -> None:
        """Forget every message seen: all streams are stale until fed again."""
        self._last.clear()

    def _is_stale(self, name: str, now: float) -> bool:
        """Never seen, or older than a positive timeout."""
        age, timeout = self.age(name, now), self._timeouts[name]
        return math.isinf(age) or (timeout > 0 and age > timeout)

    def _require_known(self, name: str) -> None:
        """Refuse a stream that was not declared, naming those that were."""
        if name not in self._timeouts:
            raise ControlError(
                f"watchdog stream {name!r} is unknown; known streams: "
                f"{', '.join(self._timeouts)} (declare it in the timeouts)"
            )
