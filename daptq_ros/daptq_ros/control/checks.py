"""Argument checks shared by the control modules."""

from __future__ import annotations

import math
import numbers

from daptq_ros.errors import ControlError


def is_number(value: object) -> bool:
    """A real number, but not a bool (True would pass as 1)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def require_time(name: str, value: float) -> None:
    """Refuse a time that is not a finite number of seconds: NaN would compare false silently."""
    if not (is_number(value) and math.isfinite(value)):
        raise ControlError(f"{name} {value!r} is not a finite time; pass seconds as a float")
