"""Per-dimension normalisation of states and actions, fitted on demonstrations, kept with the model.

- State: z-score, (s - mean) / std. The std is floored at STD_FLOOR so that a dimension that
  was constant in the demonstrations cannot blow up when it varies at run time.
- Actions: min/max to [-1, 1], the convention of diffusion policies. Both action heads start
  from unit Gaussian noise, so targets in [-1, 1] keep noise and data on one scale, and the
  DDIM sampler can clip its clean-action estimate to the demonstrated range. Unnormalising clips
  to [-1, 1] first: a policy never commands more than the demonstrations did.
- Imported checkpoints (transformers' PI0Processor, LeRobot) z-score their actions instead:
  mode mean_std. It is the same affine map with the band [mean - std, mean + std] in place of
  [min, max], and unnormalising does not clip (the model was trained to leave the band).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from daptq_ros.errors import ModelError

STD_FLOOR = 1e-2
ACTION_MODES = ("min_max", "mean_std")
RANGE_FLOOR = 1e-6


def _vector(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 1 or not np.isfinite(array).all():
        raise ModelError(f"normalisation statistic {name!r} must be a finite vector, got {values}")
    return array


@dataclass(frozen=True)
class Normalizer:
    """State mean/std and action min/max, one value per dimension."""

    state_mean: np.ndarray
    state_std: np.ndarray
    action_min: np.ndarray
    action_max: np.ndarray
    action_mode: str = "min_max"  # or "mean_std": action_min/max = mean -/+ std, no clipping

    def __post_init__(self) -> None:
        for name in ("state_mean", "state_std", "action_min", "action_max"):
            object.__setattr__(self, name, _vector(getattr(self, name), name))
        if self.state_mean.shape != self.state_std.shape:
            raise ModelError("normalisation: state_mean and state_std differ in length")
        if self.action_min.shape != self.action_max.shape:
            raise ModelError("normalisation: action_min and action_max differ in length")
        if (self.state_std <= 0).any() or (self.action_max < self.action_min).any():
            raise ModelError("normalisation: a state std is <= 0 or an action max is below its min")
        if self.action_mode not in ACTION_MODES:
            raise ModelError(
                f"normalisation: action mode {self.action_mode!r}; use one of {ACTION_MODES}"
            )

    @classmethod
    def from_mean_std(
        cls, state_mean: Any, state_std: Any, action_mean: Any, action_std: Any
    ) -> Normalizer:
        """z-scored states and actions, as transformers' PI0Processor stores them."""
        mean = _vector(action_mean, "action_mean")
        std = np.maximum(_vector(action_std, "action_std"), RANGE_FLOOR)
        # The checkpoint was trained with these exact statistics: no STD_FLOOR here.
        state_std = np.maximum(_vector(state_std, "state_std"), RANGE_FLOOR)
        return cls(state_mean, state_std, mean - std, mean + std, "mean_std")

    @classmethod
    def fit(
        cls, states: np.ndarray, actions: np.ndarray, action_mode: str = "min_max"
    ) -> Normalizer:
        """Statistics over all rows of states [N, S] and actions [N, D].

        Actions as `action_mode` says: their min/max, or (mean_std) their mean -/+ std, which
        keeps small typical actions apart when rare extremes set the min/max (joint deltas).
        """
        states = np.asarray(states, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.float64)
        low, high = actions.min(axis=0), actions.max(axis=0)
        if action_mode == "mean_std":
            std = np.maximum(actions.std(axis=0), RANGE_FLOOR)
            low, high = actions.mean(axis=0) - std, actions.mean(axis=0) + std
        return cls(
            state_mean=states.mean(axis=0),
            state_std=np.maximum(states.std(axis=0), STD_FLOOR),
            action_min=low,
            action_max=high,
            action_mode=action_mode,
        )

    @property
    def state_dim(self) -> int:
        """Number of state dimensions."""
        return int(self.state_mean.shape[0])

    @property
    def action_dim(self) -> int:
        """Number of action dimensions."""
        return int(self.action_min.shape[0])

    def _action_range(self) -> np.ndarray:
        return np.maximum(self.action_max - self.action_min, RANGE_FLOOR)

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        """States in data units -> z-scores (any leading shape)."""
        return ((state - self.state_mean) / self.state_std).astype(np.float32)

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Actions in data units -> [-1, 1] (any leading shape)."""
        return (2.0 * (actions - self.action_min) / self._action_range() - 1.0).astype(np.float32)

    def unnormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """[-1, 1] model outputs -> actions in data units, clipped to the demonstrated range."""
        if self.action_mode == "min_max":
            actions = np.clip(actions, -1.0, 1.0)
        unit = (actions + 1.0) / 2.0
        return (unit * self._action_range() + self.action_min).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form stored in daptq.json."""
        return {
            "state": {
                "mode": "mean_std",
                "mean": self.state_mean.tolist(),
                "std": self.state_std.tolist(),
            },
            "action": self._action_dict(),
        }

    def _action_dict(self) -> dict[str, Any]:
        if self.action_mode == "min_max":
            return {
                "mode": "min_max",
                "min": self.action_min.tolist(),
                "max": self.action_max.tolist(),
            }
        mean = (self.action_min + self.action_max) / 2
        std = (self.action_max - self.action_min) / 2
        return {"mode": "mean_std", "mean": mean.tolist(), "std": std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalizer:
        """Inverse of to_dict; a ModelError names a missing or malformed entry."""
        try:
            state, action = data["state"], data["action"]
            if state["mode"] != "mean_std" or action["mode"] not in ACTION_MODES:
                raise ModelError(
                    f"normalisation modes {state['mode']!r}/{action['mode']!r} are not supported; "
                    f"expected mean_std for the state and one of {ACTION_MODES} for actions"
                )
            if action["mode"] == "mean_std":
                return cls.from_mean_std(state["mean"], state["std"], action["mean"], action["std"])
            return cls(state["mean"], state["std"], action["min"], action["max"])
        except (KeyError, TypeError) as error:
            raise ModelError(f"normalisation statistics lack the entry {error}") from None
