"""The precision ladder: when to move the deployed model one rung up or down in precision.

Rungs go from the lowest precision to the highest (e.g. daptq_b3, w8a8, bf16). Each comparison
of a deployed chunk with the shadow's (robot/shadow.py) gives a hand divergence in metres:

- above `up_m` it is loud; `up_count` loud comparisons in a row move one rung up;
- below `down_m` it is quiet; `down_count` quiet comparisons in a row move one rung down;
- anything between resets both runs.

down_m < up_m and a down_count longer than up_count give hysteresis: a rung whose divergence
sits between the two thresholds stays, and after a switch both runs start over, so the ladder
never flaps between two rungs on one noisy comparison. Pure Python: the node applies a switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from daptq_ros.errors import ControlError


@dataclass(frozen=True)
class Switch:
    """One move of the ladder, and why."""

    stamp: float
    rung_from: str
    rung_to: str
    reason: str


class PrecisionLadder:
    """Counts loud and quiet comparisons and says when to switch rungs."""

    def __init__(
        self,
        rungs: Sequence[str],
        start: str,
        up_m: float,
        down_m: float,
        up_count: int,
        down_count: int,
    ) -> None:
        self.rungs = tuple(rungs)
        if len(self.rungs) < 2 or len(set(self.rungs)) != len(self.rungs):
            raise ControlError(
                f"precision_ladder {list(self.rungs)}: need two or more distinct bit configs, "
                "lowest precision first"
            )
        if start not in self.rungs:
            raise ControlError(
                f"bit_config {start!r} is not a rung of precision_ladder {list(self.rungs)}; "
                "start on one of them"
            )
        if not 0 <= down_m < up_m:
            raise ControlError(
                f"ladder thresholds: need 0 <= ladder_down_m ({down_m}) < ladder_up_m ({up_m}), "
                "so that a rung between them stays"
            )
        if up_count < 1 or down_count < 1:
            raise ControlError("ladder_up_count and ladder_down_count must be 1 or more")
        self.index = self.rungs.index(start)
        self.up_m, self.down_m = float(up_m), float(down_m)
        self.up_count, self.down_count = int(up_count), int(down_count)
        self.loud = self.quiet = 0
        self.switches: list[Switch] = []

    @property
    def rung(self) -> str:
        return self.rungs[self.index]

    def target(self, direction: int) -> str | None:
        """The rung one step up (+1) or down (-1), None past either end."""
        index = self.index + direction
        return self.rungs[index] if 0 <= index < len(self.rungs) else None

    def observe(self, divergence_m: float) -> int:
        """One comparison's hand divergence; the direction a switch is due in (+1, -1), else 0."""
        if divergence_m > self.up_m:
            self.loud, self.quiet = self.loud + 1, 0
        elif divergence_m < self.down_m:
            self.loud, self.quiet = 0, self.quiet + 1
        else:
            self.loud = self.quiet = 0
        if self.loud >= self.up_count and self.target(+1) is not None:
            return +1
        if self.quiet >= self.down_count and self.target(-1) is not None:
            return -1
        return 0

    def move(self, direction: int, stamp: float) -> Switch:
        """Take the step `observe` asked for; both runs start over."""
        target = self.target(direction)
        if target is None:
            raise ControlError(f"precision ladder: no rung {direction:+d} from {self.rung}")
        if direction > 0:
            reason = f"{self.loud} divergences above {self.up_m:g} m in a row"
        else:
            reason = f"{self.quiet} divergences below {self.down_m:g} m in a row"
        switch = Switch(stamp, self.rung, target, reason)
        self.index += direction
        self.loud = self.quiet = 0
        self.switches.append(switch)
        return switch
