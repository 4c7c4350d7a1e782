"""Real-time chunking on pi0: the guided sampler against transformers' own and the old chunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from daptq_ros.errors import PolicyError
from daptq_ros.policy.contract import ChunkPrefix
from daptq_ros.policy.inference import load_policy
from daptq_ros.policy.model_dir import default_model_dir
from daptq_ros.policy.rtc import RtcGuide, guidance_scale, prefix_weights


def test_prefix_weights_freeze_the_delay_then_decay_to_zero() -> None:
    weights = prefix_weights(horizon=12, delay=3, prefix=8).numpy()
    np.testing.assert_array_equal(weights[:3], 1.0)
    assert np.all(np.diff(weights[3:8]) < 0) and 0 < weights[7] < weights[3] < 1
    np.testing.assert_array_equal(weights[8:], 0.0)


def test_guidance_scale_is_clipped_at_pure_noise_and_zero_at_the_data() -> None:
    assert guidance_scale(1.0, 5.0) == 5.0
    assert guidance_scale(0.5, 5.0) == pytest.approx(2.0)  # (0.25 + 0.25) / 0.25
    assert guidance_scale(0.0, 5.0) == 0.0


def test_a_bad_guide_is_refused() -> None:
    with pytest.raises(PolicyError, match="delay"):
        RtcGuide(torch.zeros(4, 2), delay=5)
    with pytest.raises(PolicyError, match="jacobian"):
        RtcGuide(torch.zeros(4, 2), delay=1, jacobian="exact")
    with pytest.raises(PolicyError, match="finite"):
        ChunkPrefix(np.full((3, 2), np.nan), 1)


@pytest.fixture(scope="module")
def policy():
    torch.set_num_threads(1)
    return load_policy(default_model_dir("pi0"), num_steps=6)


def observation(seed: int):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (96, 192, 3), dtype=np.uint8)
    state = np.array([0.0, 0.68, 0.16, 0.8]) + rng.normal(0, 0.03, 4)
    return image, "push the puck to the goal", state


def test_the_unguided_sampler_equals_transformers_sample_actions(policy) -> None:
    model, adapter = policy.model, policy.loaded.adapter
    batch = policy.preprocess(*observation(0))
    noise = torch.randn(
        (1, model.config.chunk_size, model.config.max_action_dim),
        generator=torch.Generator().manual_seed(4),
    )
    with torch.inference_mode():
        reference = model.sample_actions(**adapter._inputs(model, batch), noise=noise, num_steps=6)
        ours = adapter.sample(model, batch, 6, torch.Generator().manual_seed(4))
    torch.testing.assert_close(ours, reference[..., : ours.shape[-1]], rtol=0, atol=0)


@pytest.mark.parametrize("jacobian", ["identity", "vjp"])
def test_rtc_pulls_the_frozen_rows_onto_the_old_chunk(policy, jacobian) -> None:
    """Old chunks from other noise stand in for the chunk executing: guided new chunks land
    closer to its frozen rows than unguided ones (on every observation with J = I, on average
    with the VJP, whose pull is weaker on this model: docs/robot.md)."""
    before, after = [], []
    for seed in range(4):
        image, text, state = observation(seed)
        old = policy.predict(image, text, state, seed=100 + seed).actions
        target = old[2:]  # the old chunk two rows on: its rows 2.. land on the new rows 0..
        free = policy.predict(image, text, state, seed=200 + seed)
        prefix = ChunkPrefix(target, delay=3, jacobian=jacobian)
        guided = policy.predict(image, text, state, seed=200 + seed, prefix=prefix)
        assert guided.guidance == f"rtc ({jacobian})" and free.guidance == ""
        assert np.isfinite(guided.actions).all()
        before.append(np.abs(free.actions[:3] - target[:3]).mean())
        after.append(np.abs(guided.actions[:3] - target[:3]).mean())
    assert np.mean(after) < np.mean(before)
    stages = policy.last_timing  # the node's inference breakdown on /diagnostics
    assert set(stages) == {"preprocess", "model", "postprocess"} and stages["model"] > 0
    if jacobian == "identity":
        assert all(a < 0.7 * b for a, b in zip(after, before, strict=True))
