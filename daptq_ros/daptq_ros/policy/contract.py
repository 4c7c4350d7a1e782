"""The Policy contract: plain arrays in (image, instruction, state), an ActionChunk out.

numpy only, so the simulator and the ROS nodes can depend on it without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from daptq_ros.errors import PolicyError

# Action spaces a chunk may be expressed in; a typo must fail here, not on the robot.
ACTION_SPACES = ("ee_delta", "ee_pose", "joint_position", "joint_delta", "joint_velocity")


@dataclass(frozen=True)
class ActionChunk:
    """H future actions of D named dimensions, `dt` seconds apart, in one action space."""

    actions: np.ndarray
    dt: float
    space: str
    names: tuple[str, ...]
    guidance: str = ""  # how the chunk was fitted to the one before it ("" = not fitted)

    def __post_init__(self) -> None:
        actions = np.asarray(self.actions)
        if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] < 1:
            raise PolicyError(
                f"ActionChunk.actions must be a non-empty [H, D] array, got shape {actions.shape}"
            )
        if not np.issubdtype(actions.dtype, np.number):
            raise PolicyError(f"ActionChunk.actions must be numeric, got dtype {actions.dtype}")
        actions = np.array(actions, dtype=np.float32)  # a private copy: the chunk is immutable
        if not np.isfinite(actions).all():
            raise PolicyError("ActionChunk.actions holds NaN or inf values; the policy diverged")
        actions.setflags(write=False)
        object.__setattr__(self, "actions", actions)
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise PolicyError(f"ActionChunk.dt must be a positive number of seconds, got {self.dt}")
        object.__setattr__(self, "dt", float(self.dt))
        if self.space not in ACTION_SPACES:
            raise PolicyError(
                f"ActionChunk.space {self.space!r} is unknown; "
                f"use one of {', '.join(ACTION_SPACES)}"
            )
        names = tuple(self.names)
        if len(names) != actions.shape[1] or len(set(names)) != len(names) or not all(names):
            raise PolicyError(
                f"ActionChunk.names must be {actions.shape[1]} distinct non-empty names "
                f"(one per action dimension), got {names}"
            )
        object.__setattr__(self, "names", names)

    @property
    def horizon(self) -> int:
        """Number of actions in the chunk (H)."""
        return int(self.actions.shape[0])


@dataclass(frozen=True)
class ChunkPrefix:
    """The actions a new chunk must continue (real-time chunking, policy/rtc.py).

    Row i of `actions` [P, D] (data units) is what the robot executes at the new chunk's row i;
    the first `delay` rows execute before the chunk can arrive. `jacobian` picks the guidance's
    Jacobian: "identity" or "vjp".
    """

    actions: np.ndarray
    delay: int
    jacobian: str = "identity"

    def __post_init__(self) -> None:
        actions = np.asarray(self.actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] < 1 or not np.isfinite(actions).all():
            raise PolicyError(
                f"ChunkPrefix.actions must be a finite [P, D] array, got shape {actions.shape}"
            )
        if not 0 <= int(self.delay) <= actions.shape[0]:
            raise PolicyError(f"ChunkPrefix.delay {self.delay} must lie in [0, {actions.shape[0]}]")
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "delay", int(self.delay))


def stage_times(started: float, prepared: float, sampled: float, done: float) -> dict[str, float]:
    """A predict() call's seconds per stage from its perf_counter marks (the node's probe
    breakdown on /diagnostics)."""
    return {
        "preprocess": prepared - started,
        "model": sampled - prepared,
        "postprocess": done - sampled,
    }


@runtime_checkable
class Policy(Protocol):
    """Anything that maps one observation to an action chunk."""

    def predict(self, image: np.ndarray, instruction: str, state: np.ndarray) -> ActionChunk:
        """Image HxWx3 uint8 RGB, instruction text, state vector -> the next action chunk."""
        ...


def check_image(image: np.ndarray) -> np.ndarray:
    """Return `image` if it is an HxWx3 uint8 RGB array; raise a PolicyError saying why not."""
    if not isinstance(image, np.ndarray):
        raise PolicyError(f"image must be a numpy array (HxWx3 uint8 RGB), got {type(image)}")
    if image.dtype != np.uint8:
        raise PolicyError(
            f"image must be uint8 RGB, got dtype {image.dtype}; convert with "
            "(image * 255).clip(0, 255).astype(np.uint8) if it is float in [0, 1]"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise PolicyError(
            f"image must have shape HxWx3 (RGB), got {image.shape}; "
            "drop an alpha channel or stack a grey image to three channels"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise PolicyError(f"image is empty: shape {image.shape}")
    return image


def check_state(state: np.ndarray, dim: int) -> np.ndarray:
    """`state` as a float32 vector of length `dim`; a PolicyError if it is not, or not finite."""
    array = np.asarray(state)
    if not np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_:
        raise PolicyError(f"state must be a float array, got dtype {array.dtype}")
    array = array.astype(np.float32).reshape(-1)
    if array.shape[0] != dim:
        raise PolicyError(f"state must have {dim} values, got {array.shape[0]}")
    if not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array)).tolist()
        raise PolicyError(f"state holds NaN or inf at indices {bad}; check the state source")
    return array


def check_instruction(instruction: str) -> str:
    """`instruction` if it is a non-empty string; a PolicyError otherwise."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise PolicyError(f"instruction must be a non-empty string, got {instruction!r}")
    return instruction
