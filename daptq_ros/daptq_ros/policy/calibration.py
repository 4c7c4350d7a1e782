"""The calibration set of DA-PTQ: episodes stratified by motion direction, then model batches.

METHOD.md §5: calibration trajectories are stratified into 6 spatial bins by the dominant axis
of their end-effector translation (+x, -x, +y, -y, +z, -z), so that every direction the arm
moves in shapes the statistics and sensitivities. This module works on in-memory episodes
(anything with the fields of `CalibrationEpisode`, e.g. bags.EpisodeData); reading the bags is
the CLI's job. The batches are built by training's own ChunkSampler, so the model sees its
inputs normalised exactly as in training, without augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
from numpy.typing import ArrayLike

from daptq_ros.errors import PolicyError
from daptq_ros.policy.families import Batch
from daptq_ros.policy.images import model_image
from daptq_ros.policy.model_meta import ModelMeta
from daptq_ros.policy.tokenizer import InstructionTokenizer
from daptq_ros.policy.training import ChunkSampler, Demonstration, _check_episodes

AXIS_BINS = ("+x", "-x", "+y", "-y", "+z", "-z")
# Allowed bin counts and the names of their bins: 3 merges the two signs of an axis, 1 turns
# stratification off. Other counts would merge unrelated directions.
BIN_NAMES: dict[int, tuple[str, ...]] = {6: AXIS_BINS, 3: ("x", "y", "z"), 1: ("all",)}
FIELDS = ("images", "instruction", "states", "actions", "ee_positions")


class CalibrationEpisode(Demonstration, Protocol):
    """A demonstration with its end-effector positions, which decide its bin."""

    ee_positions: np.ndarray  # [T, 3] m, in the world frame


Episode = TypeVar("Episode", bound=CalibrationEpisode)


@dataclass
class _Resized:
    """A demonstration whose images were resized to the model's input size."""

    images: np.ndarray
    instruction: str
    states: np.ndarray
    actions: np.ndarray


def dominant_axis_bin(ee_positions: ArrayLike) -> int:
    """The bin 0..5 (+x, -x, +y, -y, +z, -z) of the largest net end-effector translation.

    The net translation is last position minus first; an episode that ends where it started
    falls into bin 0 (+x).
    """
    positions = np.asarray(ee_positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or positions.shape[0] == 0:
        raise PolicyError(f"ee_positions must be a non-empty [T, 3] array, got {positions.shape}")
    if not np.isfinite(positions).all():
        raise PolicyError("ee_positions hold NaN or inf")
    net = positions[-1] - positions[0]
    axis = int(np.argmax(np.abs(net)))
    return 2 * axis + int(net[axis] < 0)


def check_calibration_set(episodes: Sequence[CalibrationEpisode], num_bins: int = 6) -> list[int]:
    """Each episode's bin; a PolicyError before any heavy work if the set cannot be stratified.

    Refused: an episode without images, instruction, states, actions or ee_positions (or with
    step counts that disagree), and fewer episodes than bins. A bin no episode falls into is
    allowed (a task set may never move along -x): `bin_counts` shows it in the report.
    """
    _bin_names(num_bins)  # refuses bin counts other than 1, 3 and 6
    for index, episode in enumerate(episodes):
        _check_fields(episode, index)
    if len(episodes) < num_bins:
        raise PolicyError(
            f"calibration set: {len(episodes)} episodes for {num_bins} bins; every bin needs "
            "at least one: record more episodes or lower --bins (3 merges the signs of an "
            "axis, 1 turns stratification off)"
        )
    return [dominant_axis_bin(e.ee_positions) // (6 // num_bins) for e in episodes]


def bin_counts(bins: Sequence[int], num_bins: int) -> dict[str, int]:
    """Episodes per bin, by the bin's name (e.g. '+y': 80)."""
    counts = np.bincount(np.asarray(bins, dtype=np.int64), minlength=num_bins)
    return dict(zip(_bin_names(num_bins), (int(c) for c in counts), strict=True))


def stratify(
    episodes: Sequence[Episode], num_bins: int = 6, per_bin: int | None = None, seed: int = 0
) -> list[Episode]:
    """Episodes drawn evenly across the bins, in their original order; seeded.

    `per_bin` episodes from each bin (all of a bin that holds fewer); None takes as many from
    each bin as the smallest non-empty bin holds, so that every direction seen weighs the same.
    """
    if per_bin is not None and per_bin < 1:
        raise PolicyError(f"per_bin must be at least 1 episode, got {per_bin}")
    bins = np.array(check_calibration_set(episodes, num_bins))
    counts = np.bincount(bins, minlength=num_bins)
    take = int(counts[counts > 0].min()) if per_bin is None else per_bin
    rng = np.random.default_rng(seed)
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(bins == b), size=min(take, counts[b]), replace=False)
            for b in range(num_bins)
        ]
    )
    return [episodes[i] for i in np.sort(chosen)]


def calibration_batches(
    tokenizer: InstructionTokenizer,
    meta: ModelMeta,
    episodes: Sequence[Demonstration],
    num_batches: int,
    batch_size: int,
    seed: int = 0,
) -> list[Batch]:
    """`num_batches` normalised batches of random steps with their action chunks; seeded.

    Built by training's ChunkSampler with the model's tokenizer, normalisation, horizon and
    views, and no shift augmentation (the deployed policy sees unshifted images). Images of
    another size are resized to the model's input, as inference does.
    """
    if num_batches < 1 or batch_size < 1:
        raise PolicyError(
            f"num_batches ({num_batches}) and batch_size ({batch_size}) must be at least 1"
        )
    if not episodes:
        raise PolicyError("no calibration episodes; pass the episodes to calibrate on")
    normalizer = meta.normalizer
    model_dims = (normalizer.state_dim, normalizer.action_dim)
    for index, episode in enumerate(episodes):
        # Checked before training's own checks, which only compare episodes with each other.
        dims = (np.shape(episode.states)[-1:], np.shape(episode.actions)[-1:])
        if dims != ((model_dims[0],), (model_dims[1],)):
            raise PolicyError(
                f"{_name(episode, index)}: has states and actions of shapes "
                f"{np.shape(episode.states)} and {np.shape(episode.actions)}, but the model takes "
                f"{model_dims[0]} state and {model_dims[1]} action dimensions "
                f"({', '.join(meta.action_names)}); calibrate with episodes recorded for this "
                "model's robot and action space"
            )
    inputs = [_at_model_size(e, meta) for e in episodes]
    _check_episodes(inputs, meta.num_views)
    sampler = ChunkSampler(inputs, tokenizer, normalizer, meta.horizon, meta.num_views)
    rng = np.random.default_rng(seed)
    return [sampler.sample(rng, batch_size, shift_pixels=0) for _ in range(num_batches)]


def _bin_names(num_bins: int) -> tuple[str, ...]:
    """The names of the bins of a supported bin count."""
    if num_bins not in BIN_NAMES:
        raise PolicyError(
            f"--bins {num_bins} is not supported; use 6 (axis and sign), 3 (axis) or 1 (none)"
        )
    return BIN_NAMES[num_bins]


def _name(episode: object, index: int) -> str:
    """How errors name an episode: its bag path when it has one, else its index."""
    path = getattr(episode, "path", None)
    return f"episode {index} ({path})" if path is not None else f"episode {index}"


def _check_fields(episode: Any, index: int) -> None:
    """The episode has every field a calibration episode needs, with matching step counts."""
    name = _name(episode, index)
    if missing := [f for f in FIELDS if getattr(episode, f, None) is None]:
        raise PolicyError(
            f"{name} lacks {', '.join(missing)}; a calibration episode needs "
            f"{', '.join(FIELDS)} (read episode bags with daptq_ros.bags.episode.read_episode)"
        )
    lengths = {f: (np.shape(getattr(episode, f)) or (0,))[0] for f in FIELDS if f != "instruction"}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        listed = ", ".join(f"{count} {field}" for field, count in lengths.items())
        raise PolicyError(f"{name}: has {listed}; every step needs one of each: record it again")
    ee_positions = np.asarray(episode.ee_positions)
    if ee_positions.shape[1:] != (3,) or not np.isfinite(ee_positions).all():
        raise PolicyError(
            f"{name}: ee_positions must be a finite [T, 3] array, got shape "
            f"{ee_positions.shape}; check the bag's /ee_pose"
        )


def _at_model_size(episode: Demonstration, meta: ModelMeta) -> Demonstration:
    """The episode itself, or a copy with every image prepared as inference prepares it.

    Frames are resized as the model's processor resizes them (images.model_image), then held
    as 8-bit pixels, which keeps a long calibration set in memory (4x less than floats).
    """
    images = np.asarray(episode.images)
    if images.ndim != 4 or tuple(images.shape[1:3]) == tuple(meta.image_size):
        return episode  # shapes that cannot be resized are reported by _check_episodes
    resized = np.stack(
        [model_image(image, meta.image_size, meta.num_views, meta.image_resize) for image in images]
    )
    pixels = np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)
    return _Resized(pixels, episode.instruction, episode.states, episode.actions)
