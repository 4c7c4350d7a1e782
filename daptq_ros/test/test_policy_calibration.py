"""The calibration set: direction bins, stratification, early refusals, training-exact batches."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from policy_data import HORIZON, IMAGE_SIZE, synthetic_episodes

from daptq_ros.errors import PolicyError
from daptq_ros.policy.calibration import (
    bin_counts,
    calibration_batches,
    check_calibration_set,
    dominant_axis_bin,
    stratify,
)
from daptq_ros.policy.training import ChunkSampler, TrainConfig, _model_setup

DIRECTIONS = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=float
)
CONFIG = TrainConfig(
    family="cogact", dt=0.05, action_names=("dx", "gripper"), size="tiny", horizon=HORIZON
)


@dataclass(eq=False)  # arrays have no truth value: compare episodes by identity
class CalEpisode:
    """A synthetic calibration episode: a demonstration plus its end-effector path."""

    images: np.ndarray
    instruction: str
    states: np.ndarray
    actions: np.ndarray
    ee_positions: np.ndarray
    path: Path | None = None


def episodes_moving(bins: list[int], length: int = 10, seed: int = 0) -> list[CalEpisode]:
    """One episode per entry of `bins`, its end effector moving mainly along that bin."""
    rng = np.random.default_rng(seed)
    demos = synthetic_episodes(len(bins), length, seed)
    episodes = []
    for demo, b in zip(demos, bins, strict=True):
        direction = DIRECTIONS[b] + rng.uniform(-0.3, 0.3, 3) * (DIRECTIONS[b] == 0)
        path = np.linspace(0.0, 0.2, length)[:, None] * direction + rng.normal(0, 1e-3, 3)
        episodes.append(CalEpisode(demo.images, demo.instruction, demo.states, demo.actions, path))
    return episodes


@pytest.mark.parametrize("index", range(6))
def test_dominant_axis_bin_is_the_sign_and_axis_of_the_net_translation(index):
    path = np.stack([np.zeros(3), 0.5 * DIRECTIONS[index], DIRECTIONS[index]])
    assert dominant_axis_bin(path) == index


def test_dominant_axis_bin_uses_the_net_translation_only():
    # A detour along +x that returns: the net motion is -y.
    path = np.array([[0, 0, 0], [0.9, 0, 0], [0.1, -0.3, 0.2]])
    assert dominant_axis_bin(path) == 3
    assert dominant_axis_bin(np.zeros((4, 3))) == 0
    with pytest.raises(PolicyError, match=r"\[T, 3\]"):
        dominant_axis_bin(np.zeros((4, 2)))


def test_check_returns_the_bins_and_merges_signs_with_three_bins():
    episodes = episodes_moving([0, 1, 2, 3, 4, 5, 5])
    assert check_calibration_set(episodes) == [0, 1, 2, 3, 4, 5, 5]
    assert check_calibration_set(episodes, 3) == [0, 0, 1, 1, 2, 2, 2]
    assert check_calibration_set(episodes[:1], 1) == [0]


def test_check_refuses_too_few_episodes_and_counts_empty_bins():
    with pytest.raises(PolicyError, match=r"4 episodes for 6 bins.*lower --bins"):
        check_calibration_set(episodes_moving([0, 1, 2, 3]))
    bins = check_calibration_set(episodes_moving([0, 0, 1, 2, 3, 3]))
    assert bin_counts(bins, 6) == {"+x": 2, "-x": 1, "+y": 1, "-y": 2, "+z": 0, "-z": 0}
    with pytest.raises(PolicyError, match="--bins 4 is not supported"):
        check_calibration_set(episodes_moving([0, 1, 2, 3]), 4)


def test_check_names_the_episode_that_lacks_a_field():
    episodes = episodes_moving([0, 1, 2, 3, 4, 5])
    episodes[2].path = Path("/data/run_7")
    episodes[2].ee_positions = None
    with pytest.raises(PolicyError, match=r"episode 2 \(/data/run_7\) lacks ee_positions"):
        check_calibration_set(episodes)
    episodes[2].ee_positions = np.zeros((3, 3))
    with pytest.raises(PolicyError, match=r"episode 2 .*10 images.*3 ee_positions"):
        check_calibration_set(episodes)


def test_stratify_draws_evenly_in_the_original_order_and_is_seeded():
    bins = [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5]
    episodes = episodes_moving(bins)
    chosen = stratify(episodes, seed=3)
    assert len(chosen) == 12
    positions = [episodes.index(e) for e in chosen]
    assert positions == sorted(positions)
    assert sorted(bins[i] for i in positions) == sorted(2 * list(range(6)))
    assert stratify(episodes, seed=3) == chosen
    capped = stratify(episodes, per_bin=3, seed=0)
    assert len(capped) == 3 + 2 * 4 + 3
    with pytest.raises(PolicyError, match="per_bin"):
        stratify(episodes, per_bin=0)


def test_batches_are_the_training_samplers_without_shifts_and_seeded():
    episodes = episodes_moving([0, 1, 2, 3, 4, 5])
    _, _, tokenizer, meta = _model_setup(episodes, CONFIG)
    batches = calibration_batches(tokenizer, meta, episodes, num_batches=3, batch_size=5, seed=4)
    assert len(batches) == 3
    sampler = ChunkSampler(episodes, tokenizer, meta.normalizer, meta.horizon, meta.num_views)
    rng = np.random.default_rng(4)
    for batch in batches:
        expected = sampler.sample(rng, 5, shift_pixels=0)
        for field in ("images", "input_ids", "state", "actions", "action_mask"):
            torch.testing.assert_close(getattr(batch, field), getattr(expected, field))
    assert batches[0].images.shape == (5, 3, *IMAGE_SIZE)
    assert batches[0].actions.shape == (5, HORIZON, 2) and batches[0].actions.abs().max() <= 1
    again = calibration_batches(tokenizer, meta, episodes, 3, 5, seed=4)
    assert all(torch.equal(a.images, b.images) for a, b in zip(batches, again, strict=True))


def test_batches_resize_images_to_the_model_input():
    episodes = episodes_moving([0, 1, 2, 3, 4, 5])
    _, _, tokenizer, meta = _model_setup(episodes, CONFIG)
    for episode in episodes:
        episode.images = np.repeat(np.repeat(episode.images, 2, axis=1), 2, axis=2)
    batches = calibration_batches(tokenizer, meta, episodes, 1, 4)
    assert batches[0].images.shape == (4, 3, *IMAGE_SIZE)


def test_batches_refuse_episodes_of_another_robot():
    episodes = episodes_moving([0, 1, 2, 3, 4, 5])
    _, _, tokenizer, meta = _model_setup(episodes, CONFIG)
    episodes[1].actions = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(
        PolicyError,
        match=r"episode 1: .*\(10, 3\), but the model takes 3 state and 2 action.*\(dx, gripper\)",
    ):
        calibration_batches(tokenizer, meta, episodes, 1, 4)
    with pytest.raises(PolicyError, match="at least 1"):
        calibration_batches(tokenizer, meta, episodes, 0, 4)


def test_stratify_balances_over_the_bins_that_hold_episodes():
    episodes = episodes_moving([2, 2, 2, 5, 5, 5, 5])  # only +y and -z
    chosen = stratify(episodes, 6, None, seed=0)
    assert sorted(dominant_axis_bin(e.ee_positions) for e in chosen) == [2, 2, 2, 5, 5, 5]
