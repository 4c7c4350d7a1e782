"""The policy's state vector, built from what an arm publishes, as the model's mapping says.

A model names where its state comes from (`state_source` in daptq.json, from the import
mapping) and what each dimension is (`state_names`):

- `ee_position_gripper`: the tool position x, y, z (m, from /ee_pose) and the gripper opening in
  [0, 1] that the simulated Sawyer's two finger joints imply. The embedded models use it.
- `joint_positions`: the positions of the joints named by `state_names`, in that order, taken
  from /joint_states by name: the arm's joints and the gripper's own joint (a Robotiq knuckle, a
  Panda finger, an SO-101 jaw), as LeRobot-trained joint-space models expect them.

One function serves the node (one joint state), the simulator and the episode reader (arrays
of T steps), so a model sees the same state from a recording as on the robot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daptq_ros.errors import BagError

STATE_SOURCES = ("ee_position_gripper", "joint_positions")
EE_STATE_NAMES = ("x", "y", "z", "gripper")

# The gripper opening, as MetaWorld's Sawyer defines it: the distance between the two fingers
# over its fully open value, clipped to [0, 1]. Both fingers slide along the hand's y axis from
# -/+ FINGER_GAP / 2, so their distance is FINGER_GAP + l_close - r_close.
GRIPPER_JOINTS = ("r_close", "l_close")
FINGER_GAP = 0.1  # m


def gripper_opening(right: ArrayLike, left: ArrayLike) -> NDArray[np.float64]:
    """Gripper opening in [0, 1] from the right and left finger joint positions (m)."""
    gap = FINGER_GAP + np.asarray(left, dtype=np.float64) - np.asarray(right, dtype=np.float64)
    return np.clip(gap / FINGER_GAP, 0.0, 1.0)


@dataclass(frozen=True)
class StateSpec:
    """Where a model's state comes from and what its dimensions are called."""

    source: str = STATE_SOURCES[0]
    names: tuple[str, ...] = EE_STATE_NAMES

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if self.source not in STATE_SOURCES:
            raise BagError(f"state_source {self.source!r} is not one of {', '.join(STATE_SOURCES)}")
        if self.source == STATE_SOURCES[0] and len(self.names) != len(EE_STATE_NAMES):
            raise BagError(
                f"state_source {self.source} has {len(EE_STATE_NAMES)} dimensions "
                f"{EE_STATE_NAMES}, but {len(self.names)} state names are given"
            )
        if not self.names or len(set(self.names)) != len(self.names):
            raise BagError(f"state names must be distinct and non-empty, got {self.names}")

    @property
    def joints(self) -> tuple[str, ...]:
        """The /joint_states names the state needs."""
        return GRIPPER_JOINTS if self.source == STATE_SOURCES[0] else self.names

    def missing(self, joint_names: Sequence[str]) -> list[str]:
        """The needed joints that `joint_names` lacks (empty when the state can be built)."""
        return [n for n in self.joints if n not in tuple(joint_names)]

    def describe_missing(self, joint_names: Sequence[str]) -> str:
        """One line naming the joints expected and the ones found."""
        return (
            f"joint_states lack {', '.join(self.missing(joint_names))} of the model's state "
            f"({self.source}: {', '.join(self.joints)}); they name "
            f"{', '.join(joint_names) or 'no joint'}: record those joints, or import the model "
            "with a mapping whose state_names are your arm's joint names"
        )

    def vector(
        self,
        joint_names: Sequence[str],
        joint_positions: ArrayLike,
        ee_position: ArrayLike | None = None,
    ) -> NDArray[np.float64]:
        """The state [S] (or [T, S] from [T, J] positions and [T, 3] tool positions).

        BagError when a needed joint is missing, or the tool position for ee_position_gripper.
        """
        names = tuple(joint_names)
        if self.missing(names):
            raise BagError(self.describe_missing(names))
        positions = np.asarray(joint_positions, dtype=np.float64)
        columns = positions[..., [names.index(n) for n in self.joints]]
        if self.source == "joint_positions":
            return columns
        if ee_position is None:
            raise BagError(f"state_source {self.source} needs the tool position (/ee_pose)")
        opening = gripper_opening(columns[..., 0], columns[..., 1])
        tool = np.asarray(ee_position, dtype=np.float64)
        return np.concatenate([tool, opening[..., None]], axis=-1)


EE_STATE = StateSpec()  # the embedded models' state
