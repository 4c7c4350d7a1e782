"""A tf2-like transform buffer over a whole recording: every edge in time, looked up per stamp.

As tf2's BufferCore: each frame has one parent; each edge keeps its transforms by header stamp;
a lookup at time t interpolates every edge of the chain at t (translation linearly, rotation by
slerp) and composes them; an edge whose samples do not bracket t cannot be looked up there (tf2's
extrapolation error), except a static edge (/tf_static), which holds at every time. Transforms
stamped ahead of the others (a localisation's map -> odom published ~1 s in the future) are
simply looked up at their own stamps: nothing is reordered.
numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from daptq_ros.errors import BagError


def frame_id(name: str) -> str:
    """A tf frame name as tf2 compares it: without a leading slash."""
    return name.lstrip("/")


@dataclass
class _Edge:
    """parent <- child over time: stamps [N] (s), translations [N, 3], quaternions xyzw [N, 4]."""

    parent: str
    static: bool
    stamps: list[float] = field(default_factory=list)
    translations: list[NDArray[np.float64]] = field(default_factory=list)
    quats: list[NDArray[np.float64]] = field(default_factory=list)
    _sorted: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]] | None = None

    def samples(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Sorted by stamp; of equal stamps the last received wins (as tf2 overwrites)."""
        if self._sorted is None:
            t = np.array(self.stamps)
            order = np.argsort(t, kind="stable")
            t = t[order]
            last = np.append(t[1:] != t[:-1], True)
            self._sorted = (
                t[last],
                np.array(self.translations)[order][last],
                np.array(self.quats)[order][last],
            )
        return self._sorted

    def at(self, t: NDArray[np.float64]) -> tuple[NDArray[np.bool_], NDArray[np.float64], Rotation]:
        """Which times the edge covers, and its interpolated translation and rotation there."""
        stamps, translations, quats = self.samples()
        if self.static:
            last = np.full(len(t), len(stamps) - 1)
            return np.ones(len(t), bool), translations[last], Rotation.from_quat(quats[last])
        if len(stamps) == 1:
            valid = t == stamps[0]
            zero = np.zeros(len(t), np.intp)
            return valid, translations[zero], Rotation.from_quat(quats[zero])
        valid = (t >= stamps[0]) & (t <= stamps[-1])
        hi = np.clip(np.searchsorted(stamps, t, side="left"), 1, len(stamps) - 1)
        lo = hi - 1
        fraction = np.clip((t - stamps[lo]) / (stamps[hi] - stamps[lo]), 0.0, 1.0)[:, None]
        moved = translations[lo] + fraction * (translations[hi] - translations[lo])
        start, end = Rotation.from_quat(quats[lo]), Rotation.from_quat(quats[hi])
        turned = start * Rotation.from_rotvec((start.inv() * end).as_rotvec() * fraction)
        return valid, moved, turned


@dataclass(frozen=True)
class ChainPoses:
    """The chain's pose at the stamps it could be looked up at, and which edges it took."""

    stamps: NDArray[np.float64]
    positions: NDArray[np.float64]
    quats: NDArray[np.float64]
    dropped: int  # stamps of the driving edge that some other edge did not cover


class TfBuffer:
    """Every transform of a recording's /tf and /tf_static, keyed by child frame."""

    def __init__(self, where: str) -> None:
        self.where = where  # for errors: the bag and topics
        self.edges: dict[str, _Edge] = {}

    @property
    def frames(self) -> set[str]:
        return set(self.edges) | {edge.parent for edge in self.edges.values()}

    def add(
        self,
        parent: str,
        child: str,
        stamp: float,
        translation: NDArray[np.float64],
        quat: NDArray[np.float64],
        static: bool,
    ) -> None:
        """Store one transform parent <- child (quaternion normalised; zero refused)."""
        parent, child = frame_id(parent), frame_id(child)
        norm = float(np.linalg.norm(quat))
        if not norm > 0:
            raise BagError(
                f"{self.where}: the transform {parent} -> {child} at {stamp:.9f} s has a zero "
                "quaternion; fix the publisher"
            )
        edge = self.edges.setdefault(child, _Edge(parent, static))
        if edge.parent != parent:
            raise BagError(
                f"{self.where}: frame {child} has two parents, {edge.parent} and {parent}; tf2 "
                "allows one, so fix the publishers (or pass --tf-chain frames above the conflict)"
            )
        edge.static = edge.static and static
        edge.stamps.append(stamp)
        edge.translations.append(np.asarray(translation, np.float64))
        edge.quats.append(np.asarray(quat, np.float64) / norm)
        edge._sorted = None

    def chain(self, base: str, tool: str) -> tuple[list[str], list[str]] | None:
        """Child frames from `tool` up to the common ancestor, and from `base` up to it."""
        up_tool, up_base = self._ancestors(tool), self._ancestors(base)
        common = next((frame for frame in up_base if frame in up_tool), None)
        if common is None:
            return None
        return up_tool[: up_tool.index(common)], up_base[: up_base.index(common)]

    def _ancestors(self, frame: str) -> list[str]:
        found = [frame]
        while frame in self.edges and self.edges[frame].parent not in found:
            frame = self.edges[frame].parent
            found.append(frame)
        return found

    def lookup(self, base: str, tool: str, stamps: NDArray[np.float64] | None = None) -> ChainPoses:
        """base <- tool at `stamps` (default: the stamps of the chain's busiest moving edge).

        Stamps some moving edge does not cover are dropped, as tf2 refuses to extrapolate.
        """
        base, tool = frame_id(base), frame_id(tool)
        found = self.chain(base, tool)
        if found is None:
            raise self._unconnected(base, tool)
        up_tool, up_base = found
        moving = [c for c in (*up_tool, *up_base) if not self.edges[c].static]
        if not moving:
            raise BagError(
                f"{self.where}: only static transforms join {base} to {tool}, so it never moves; "
                "pass --tf-chain BASE TOOL with a moving frame"
            )
        if stamps is None:
            stamps = max((self.edges[c].samples()[0] for c in moving), key=len)
        valid = np.ones(len(stamps), bool)
        tool_in_common = self._compose(up_tool, stamps, valid)
        base_in_common = self._compose(up_base, stamps, valid)
        rotation = base_in_common[1].inv() * tool_in_common[1]
        position = base_in_common[1].inv().apply(tool_in_common[0] - base_in_common[0])
        quats = rotation.as_quat()
        quats[quats[:, 3] < 0] *= -1.0
        return ChainPoses(stamps[valid], position[valid], quats[valid], int((~valid).sum()))

    def _compose(
        self, frames: list[str], t: NDArray[np.float64], valid: NDArray[np.bool_]
    ) -> tuple[NDArray[np.float64], Rotation]:
        """common <- frames[0] at times t (ANDing each edge's coverage into `valid`)."""
        position = np.zeros((len(t), 3))
        rotation = Rotation.identity(len(t))
        for child in frames:  # nearest the frame first: p_parent = R p_child + t
            covered, translation, turned = self.edges[child].at(t)
            valid &= covered
            position = turned.apply(position) + translation
            rotation = turned * rotation
        return position, rotation

    def _unconnected(self, base: str, tool: str) -> BagError:
        frames = self.frames
        if missing := [f for f in (base, tool) if f not in frames]:
            why = f"no transform names the frame {' or '.join(missing)}"
        else:
            why = f"no chain of transforms joins {base} to {tool}"
        seen = ", ".join(sorted(frames)) or "none"
        return BagError(
            f"{self.where}: {why}; the frames seen are: {seen}; pass --tf-chain BASE TOOL "
            "(tf_chain=(BASE, TOOL)) with frames the recorded tf tree connects"
        )
