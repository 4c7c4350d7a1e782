"""Per-axis position, velocity and acceleration limits, read from a URDF or a YAML mapping.

An axis is anything the safety filter commands one number for: a joint of an arm (rad or m)
or one coordinate of an end-effector position (m, with a workspace box as its range).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daptq_ros.errors import ControlError

# A continuous joint has no position limit in its URDF; two turns each way lets it reach any
# angle from anywhere in the first turn. Multi-turn joints need a limits file (from_mapping).
CONTINUOUS_RANGE = 2.0 * math.pi

_ARRAYS = ("lower", "upper", "velocity", "acceleration")
_KEYS = ("names", *_ARRAYS)
_MOVABLE = ("revolute", "prismatic", "continuous")


@dataclass(frozen=True, eq=False)
class AxisLimits:
    """Validated limits of N named axes; arrays are read-only float64 [N] in `names` order."""

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray  # max |v| per axis, > 0 (rad/s or m/s)
    acceleration: np.ndarray  # max |a| per axis, > 0 (rad/s^2 or m/s^2)

    def __post_init__(self) -> None:
        names = tuple(self.names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ControlError(f"AxisLimits.names: need non-empty strings, got {names!r}")
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ControlError(f"AxisLimits.names: {twice} appear twice; name each axis once")
        object.__setattr__(self, "names", names)
        for field in _ARRAYS:
            try:
                values = np.array(getattr(self, field), dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise ControlError(f"AxisLimits.{field}: need numbers, got {error}") from None
            if values.shape != (len(names),):
                raise ControlError(
                    f"AxisLimits.{field}: need {len(names)} values (one per name), "
                    f"got shape {values.shape}"
                )
            for name, value in zip(names, values, strict=True):
                if not math.isfinite(value):
                    raise ControlError(f"AxisLimits.{field} of {name!r}: need a finite number")
                if field in ("velocity", "acceleration") and value <= 0:
                    raise ControlError(
                        f"AxisLimits.{field} of {name!r}: need a limit > 0, got {value}"
                    )
            values.flags.writeable = False
            object.__setattr__(self, field, values)
        for name, low, high in zip(names, self.lower, self.upper, strict=True):
            if not low < high:
                raise ControlError(
                    f"AxisLimits of {name!r}: lower ({low}) must be below upper ({high})"
                )

    def __len__(self) -> int:
        """Number of axes."""
        return len(self.names)

    def with_margin(self, margin: float) -> AxisLimits:
        """These limits with [lower, upper] shrunk by `margin` on each side."""
        if not math.isfinite(margin) or margin < 0:
            raise ControlError(f"margin: need a finite number >= 0, got {margin!r}")
        lower, upper = self.lower + margin, self.upper - margin
        for name, low, high in zip(self.names, lower, upper, strict=True):
            if not low < high:
                raise ControlError(
                    f"margin {margin} leaves no range for {name!r} "
                    f"({high - low + 2 * margin:g} wide); use a margin below half its range"
                )
        return AxisLimits(self.names, lower, upper, self.velocity, self.acceleration)

    def scaled(self, velocity_scale: float, acceleration_scale: float) -> AxisLimits:
        """These limits with velocity and acceleration scaled by factors in (0, 1]."""
        for label, scale in (
            ("velocity_scale", velocity_scale),
            ("acceleration_scale", acceleration_scale),
        ):
            if not (math.isfinite(scale) and 0 < scale <= 1):
                raise ControlError(f"{label}: need a factor in (0, 1], got {scale!r}")
        return AxisLimits(
            self.names,
            self.lower,
            self.upper,
            self.velocity * velocity_scale,
            self.acceleration * acceleration_scale,
        )

    def subset(self, names: Sequence[str]) -> AxisLimits:
        """The limits of `names`, in that order."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise ControlError(
                f"axes {missing} have no limits; known axes: {', '.join(self.names)}"
            )
        index = [self.names.index(n) for n in names]
        return AxisLimits(
            tuple(names),
            self.lower[index],
            self.upper[index],
            self.velocity[index],
            self.acceleration[index],
        )

    @classmethod
    def from_urdf(
        cls,
        urdf: str | Path,
        joint_names: Sequence[str] | None = None,
        default_acceleration: float = 5.0,
        default_velocity: float = 1.0,
    ) -> AxisLimits:
        """Limits of the revolute, prismatic and continuous joints of a URDF (a path or XML).

        Fixed, mimic and multi-DoF joints are skipped. A URDF has no acceleration limit, so
        every joint gets `default_acceleration`; a <limit> without velocity gets
        `default_velocity`. Continuous joints get [-CONTINUOUS_RANGE, CONTINUOUS_RANGE].
        """
        text = str(urdf)
        source = "the URDF string" if text.lstrip().startswith("<") else text
        try:
            root = ET.fromstring(text) if source == "the URDF string" else ET.parse(text).getroot()
        except OSError as error:
            raise ControlError(f"URDF {source}: cannot read it ({error}); check the path") from None
        except ET.ParseError as error:
            raise ControlError(f"URDF {source}: not valid XML ({error})") from None
        found: dict[str, tuple[float, float, float]] = {}
        for joint in root.iter("joint"):
            # A mimic joint follows another joint, so it is never commanded itself.
            if joint.get("type") in _MOVABLE and joint.find("mimic") is None:
                found[joint.get("name", "")] = _urdf_joint(joint, source, default_velocity)
        if not found:
            raise ControlError(f"URDF {source}: no revolute, prismatic or continuous joint")
        names = list(found) if joint_names is None else list(joint_names)
        if not names:
            raise ControlError("joint_names: empty; name at least one joint, or pass None for all")
        unknown = [n for n in names if n not in found]
        if unknown:
            raise ControlError(
                f"URDF {source}: no movable joint named {unknown}; "
                f"its movable joints are {', '.join(found)}"
            )
        low, high, velocity = np.array([found[n] for n in names]).T
        acceleration = np.full(len(names), default_acceleration)
        try:
            return cls(tuple(names), low, high, velocity, acceleration)
        except ControlError as error:
            raise ControlError(f"URDF {source}: {error}") from None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "limits") -> AxisLimits:
        """Limits from a YAML-style mapping; velocity and acceleration may be one number."""
        if not isinstance(data, Mapping):
            raise ControlError(f"{source}: need a mapping with keys {list(_KEYS)}")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise ControlError(f"{source}: unknown keys {unknown}; the keys are {list(_KEYS)}")
        missing = [key for key in _KEYS if key not in data]
        if missing:
            raise ControlError(f"{source}: missing keys {missing}; the keys are {list(_KEYS)}")
        names = data["names"]
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise ControlError(f"{source}: 'names' must be a list of axis names, got {names!r}")
        arrays = {}
        for key in _ARRAYS:
            value = data[key]
            if key in ("velocity", "acceleration") and isinstance(value, int | float):
                value = [value] * len(names)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ControlError(f"{source}: {key!r} must be a list of numbers, got {value!r}")
            if len(value) != len(names):
                raise ControlError(
                    f"{source}: {key!r} has {len(value)} values for {len(names)} names; "
                    "give one value per name"
                )
            try:
                arrays[key] = np.array(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise ControlError(f"{source}: {key!r} must hold numbers, got {value!r}") from None
        try:
            return cls(tuple(names), **arrays)
        except ControlError as error:
            raise ControlError(f"{source}: {error}") from None

    def to_mapping(self) -> dict[str, list[str] | list[float]]:
        """The limits as a YAML-ready mapping (the form from_mapping reads)."""
        return {"names": list(self.names)} | {k: getattr(self, k).tolist() for k in _ARRAYS}


def _urdf_joint(
    joint: ET.Element, source: str, default_velocity: float
) -> tuple[float, float, float]:
    """(lower, upper, velocity) of one revolute, prismatic or continuous URDF joint."""
    name, kind, limit = joint.get("name", ""), joint.get("type"), joint.find("limit")
    if limit is None and kind != "continuous":
        raise ControlError(
            f"URDF {source}: {kind} joint {name!r} has no <limit>; add one to the URDF "
            "or give the limits in a YAML limits file"
        )

    def number(key: str, default: float) -> float:
        text = None if limit is None else limit.get(key)
        if text is None:
            return default
        try:
            return float(text)
        except ValueError:
            raise ControlError(
                f"URDF {source}: joint {name!r} has <limit {key}={text!r}>, not a number; "
                "fix the URDF or give the limits in a YAML limits file"
            ) from None

    velocity = number("velocity", default_velocity)
    if kind == "continuous":
        return -CONTINUOUS_RANGE, CONTINUOUS_RANGE, velocity
    # The URDF spec makes lower and upper default to 0.
    return number("lower", 0.0), number("upper", 0.0), velocity
