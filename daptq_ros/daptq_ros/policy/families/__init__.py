"""The registry of VLA families: name -> adapter."""

from __future__ import annotations

from daptq_ros.errors import ModelError
from daptq_ros.policy.families.base import Batch, FamilyAdapter
from daptq_ros.policy.families.cogact import CogactAdapter
from daptq_ros.policy.families.pi0 import Pi0Adapter

FAMILIES: dict[str, FamilyAdapter] = {"cogact": CogactAdapter(), "pi0": Pi0Adapter()}


def get_family(name: str) -> FamilyAdapter:
    """The adapter of family `name`; a ModelError lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelError(
            f"unknown VLA family {name!r}; choose one of {', '.join(sorted(FAMILIES))}"
        ) from None


__all__ = ["FAMILIES", "Batch", "FamilyAdapter", "get_family"]
