"""Time association of two pose streams, as evo 1.38 does it by default.

evo pairs each pose of the stream with fewer poses with the pose of the other stream nearest in
time, and keeps the pair only when the two stamps are at most `t_max_diff` apart (10 ms by
default); poses without a partner are dropped, nothing is interpolated, and a gap in either
stream simply leaves no pairs. An optional `offset` is added to the run's stamps first. With
`method="interpolate"` the longer stream is interpolated (linear, slerp) at the matched stamps of
the shorter one instead, as evo's interpolation sync does, but never across a gap longer than
`max_gap`. Duplicated stamps are kept, as evo keeps them, and counted.
numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from daptq_ros.errors import DriftError

AssociationMethod = Literal["nearest", "interpolate"]
ASSOCIATION_METHODS: tuple[str, ...] = get_args(AssociationMethod)
DEFAULT_T_MAX_DIFF = 0.01  # s, evo's default
DEFAULT_MAX_GAP = 2.0  # s: a longer interval between two poses of a stream is a gap
_BLOCK = 2048  # stamps per block of the brute-force search over unsorted stamps


@dataclass(frozen=True)
class PoseStream:
    """Poses of one side: stamps [N] (s), positions [N, 3], quaternions xyzw [N, 4]."""

    stamps: NDArray[np.float64]
    positions: NDArray[np.float64]
    quats: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.stamps)

    def take(self, ids: NDArray[np.intp]) -> PoseStream:
        """The poses at `ids`, in that order."""
        return PoseStream(self.stamps[ids], self.positions[ids], self.quats[ids])


@dataclass(frozen=True)
class AssociationSettings:
    """How run poses meet reference poses in time (daptq drift --association etc.)."""

    method: AssociationMethod = "nearest"
    t_max_diff: float = DEFAULT_T_MAX_DIFF
    offset: float = 0.0  # s added to the run's stamps
    max_gap: float = DEFAULT_MAX_GAP

    def __post_init__(self) -> None:
        if self.method not in ASSOCIATION_METHODS:
            raise DriftError(
                f"association {self.method!r}: unknown; pass one of "
                f"{', '.join(ASSOCIATION_METHODS)} (--association)"
            )
        for name in ("t_max_diff", "max_gap"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                flag = name.replace("_", "-")
                raise DriftError(f"{name} {value!r}: need a number of seconds > 0 (--{flag})")
        if not np.isfinite(self.offset):
            raise DriftError(f"offset {self.offset!r}: need a finite number of seconds (--offset)")

    def to_dict(self) -> dict[str, object]:
        """The settings as a JSON-ready dict."""
        return {
            "method": self.method,
            "t_max_diff": self.t_max_diff,
            "offset": self.offset,
            "max_gap": self.max_gap,
        }


@dataclass(frozen=True)
class Association:
    """Paired poses (run[i] with reference[i]) and what the pairing left out."""

    run: PoseStream
    reference: PoseStream  # stamps: the reference's own (interpolated ones: the run's)
    settings: AssociationSettings
    run_poses: int  # poses read, each side
    reference_poses: int
    run_duplicates: int  # poses whose stamp equals the previous pose's
    reference_duplicates: int
    run_gaps: int  # intervals longer than max_gap between consecutive poses
    reference_gaps: int
    longest_reference_gap: float

    @property
    def pairs(self) -> int:
        return len(self.run)

    def to_dict(self) -> dict[str, object]:
        """Counts and settings, JSON-ready."""
        return {
            **self.settings.to_dict(),
            "pairs": self.pairs,
            "run_poses": self.run_poses,
            "reference_poses": self.reference_poses,
            "run_dropped": self.run_poses - self.pairs,
            "reference_dropped": self.reference_poses - self.pairs,
            "run_duplicate_stamps": self.run_duplicates,
            "reference_duplicate_stamps": self.reference_duplicates,
            "run_gaps": self.run_gaps,
            "reference_gaps": self.reference_gaps,
            "longest_reference_gap_s": self.longest_reference_gap,
        }


def nearest_matches(
    stamps_1: NDArray[np.float64], stamps_2: NDArray[np.float64], max_diff: float
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Indices (i1, i2): each stamp of `stamps_1` with its nearest in `stamps_2` within max_diff.

    Sorted `stamps_2`: the binary-search rule of evo 1.38 (of two equally near stamps the
    earlier wins; past the end the last stamp is the candidate). Unsorted: the first nearest.
    """
    if len(stamps_2) == 0 or len(stamps_1) == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    if np.all(np.diff(stamps_2) >= 0):
        return _sorted_matches(stamps_1, stamps_2, max_diff)
    return _unsorted_matches(stamps_1, stamps_2, max_diff)


def _sorted_matches(
    stamps_1: NDArray[np.float64], stamps_2: NDArray[np.float64], max_diff: float
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    inside = (stamps_1 >= stamps_2[0] - max_diff) & (stamps_1 <= stamps_2[-1] + max_diff)
    upper = np.minimum(np.searchsorted(stamps_2, stamps_1, side="right"), len(stamps_2) - 1)
    diff_ub = stamps_2[upper] - stamps_1
    diff_lb = np.where(upper > 0, stamps_1 - stamps_2[np.maximum(upper - 1, 0)], np.inf)
    take_upper = (diff_ub <= max_diff) & (diff_ub < diff_lb)
    take_lower = ~take_upper & (diff_lb <= max_diff) & (diff_lb <= diff_ub)
    keep = inside & (take_upper | take_lower)
    best = np.where(take_upper, upper, upper - 1)
    return np.flatnonzero(keep), best[keep].astype(np.intp)


def _unsorted_matches(
    stamps_1: NDArray[np.float64], stamps_2: NDArray[np.float64], max_diff: float
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    found_1, found_2 = [], []
    for start in range(0, len(stamps_1), _BLOCK):
        block = stamps_1[start : start + _BLOCK]
        diffs = np.abs(stamps_2[None, :] - block[:, None])
        best = np.argmin(diffs, axis=1)
        keep = diffs[np.arange(len(block)), best] <= max_diff
        found_1.append(np.flatnonzero(keep) + start)
        found_2.append(best[keep])
    return np.concatenate(found_1).astype(np.intp), np.concatenate(found_2).astype(np.intp)


def associate(
    run: PoseStream, reference: PoseStream, settings: AssociationSettings | None = None
) -> Association:
    """Pair run poses with reference poses as evo's associate_trajectories(reference, run).

    The side with fewer poses is searched from (the run on a tie), as in evo. DriftError when
    no pair is found, naming the stamps' spans and the setting to change.
    """
    settings = settings or AssociationSettings()
    run_shifted = PoseStream(run.stamps + settings.offset, run.positions, run.quats)
    run_longer = len(run) > len(reference)
    short, long = (reference, run_shifted) if run_longer else (run_shifted, reference)
    ids_short, ids_long = nearest_matches(short.stamps, long.stamps, settings.t_max_diff)
    if len(ids_short) == 0:
        raise DriftError(
            f"no run pose is within {settings.t_max_diff:g} s of a reference pose: the run spans "
            f"[{run_shifted.stamps.min():.3f}, {run_shifted.stamps.max():.3f}] s, the reference "
            f"[{reference.stamps.min():.3f}, {reference.stamps.max():.3f}] s; pass a larger "
            "--t-max-diff, an --offset, or --time-base start for recordings made at different "
            "times"
        )
    matched_short = short.take(ids_short)
    if settings.method == "interpolate":
        matched_long, kept = _interpolated(long, matched_short.stamps, settings.max_gap)
        matched_short = matched_short.take(np.flatnonzero(kept))
    else:
        matched_long = long.take(ids_long)
    paired_run, paired_ref = (
        (matched_long, matched_short) if run_longer else (matched_short, matched_long)
    )
    paired_run = PoseStream(
        paired_run.stamps - settings.offset, paired_run.positions, paired_run.quats
    )
    ref_gaps = np.diff(np.sort(reference.stamps))
    return Association(
        paired_run,
        paired_ref,
        settings,
        len(run),
        len(reference),
        duplicate_stamps(run.stamps),
        duplicate_stamps(reference.stamps),
        int(np.count_nonzero(np.diff(np.sort(run.stamps)) > settings.max_gap)),
        int(np.count_nonzero(ref_gaps > settings.max_gap)),
        float(ref_gaps.max()) if len(ref_gaps) else 0.0,
    )


def duplicate_stamps(stamps: NDArray[np.float64]) -> int:
    """How many stamps equal another stamp of the same stream (beyond its first)."""
    return int(len(stamps) - len(np.unique(stamps)))


def _interpolated(
    stream: PoseStream, stamps: NDArray[np.float64], max_gap: float
) -> tuple[PoseStream, NDArray[np.bool_]]:
    """`stream` interpolated at `stamps` (linear, slerp), and which stamps it could be.

    A stamp is kept when it lies between two poses at most `max_gap` apart (or on a pose).
    Of poses with equal stamps the last one counts.
    """
    order = np.argsort(stream.stamps, kind="stable")
    t = stream.stamps[order]
    last = np.append(t[1:] != t[:-1], True)
    t, positions, quats = t[last], stream.positions[order][last], stream.quats[order][last]
    if len(t) < 2:
        raise DriftError("--association interpolate: a side has fewer than 2 distinct stamps")
    upper = np.clip(np.searchsorted(t, stamps, side="left"), 1, len(t) - 1)
    exact = np.isin(stamps, t)
    within = (stamps >= t[0]) & (stamps <= t[-1])
    kept = within & (exact | (t[upper] - t[upper - 1] <= max_gap))
    lo, hi = upper[kept] - 1, upper[kept]
    fraction = ((stamps[kept] - t[lo]) / np.where(t[hi] > t[lo], t[hi] - t[lo], 1.0))[:, None]
    moved = positions[lo] + fraction * (positions[hi] - positions[lo])
    start, end = Rotation.from_quat(quats[lo]), Rotation.from_quat(quats[hi])
    turned = start * Rotation.from_rotvec((start.inv() * end).as_rotvec() * fraction)
    return PoseStream(stamps[kept], moved, turned.as_quat()), kept
