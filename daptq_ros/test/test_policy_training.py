"""Training: export to a model directory, loss goes down, resume reproduces an unbroken run."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from policy_data import ACTION_DIM, HORIZON, STATE_DIM, synthetic_episodes
from safetensors.torch import load_file

from daptq_ros.errors import ModelError, PolicyError
from daptq_ros.policy import TrainConfig, load_model_dir, train
from daptq_ros.policy.model_meta import WEIGHTS_FILE
from daptq_ros.policy.normalize import Normalizer
from daptq_ros.policy.tokenizer import InstructionTokenizer
from daptq_ros.policy.training import ChunkSampler, learning_rate

CONFIG = TrainConfig(
    family="cogact",
    dt=0.05,
    action_names=("dx", "gripper"),
    size="tiny",
    horizon=HORIZON,
    steps=6,
    batch_size=8,
    lr=1e-3,
    warmup_steps=2,
    checkpoint_every=2,
    max_text_length=6,
)


@pytest.mark.parametrize("family", ["cogact", "pi0"])
def test_train_exports_a_loadable_model_directory(tmp_path, family):
    config = dataclasses.replace(CONFIG, family=family)
    result = train(
        synthetic_episodes(),
        tmp_path / "model",
        config,
        provenance={"data_seed": 7},
        progress=False,
    )
    assert result.step == 6 and len(result.losses) == 6 and np.isfinite(result.losses).all()
    loaded = load_model_dir(result.model_dir)
    assert loaded.meta.family == family and loaded.meta.horizon == HORIZON
    provenance = json.loads((result.model_dir / "daptq.json").read_text())["provenance"]
    assert provenance["data_seed"] == 7 and provenance["training"]["steps"] == 6
    assert provenance["metrics"]["steps"] == 6


def test_training_loss_decreases(tmp_path):
    config = dataclasses.replace(CONFIG, steps=40, lr=3e-3, checkpoint_every=100, shift_pixels=0)
    losses = train(synthetic_episodes(), tmp_path / "m", config, progress=False).losses
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    episodes = synthetic_episodes()
    whole = train(episodes, tmp_path / "whole", CONFIG, progress=False)
    first = train(episodes, tmp_path / "split", CONFIG, stop_at=3, progress=False)
    assert first.model_dir is None and first.step == 3
    second = train(episodes, tmp_path / "split", CONFIG, resume=True, progress=False)
    assert second.step == 6 and len(second.losses) == 3
    assert second.losses == whole.losses[3:]
    a = load_file(str(whole.model_dir / WEIGHTS_FILE))
    b = load_file(str(second.model_dir / WEIGHTS_FILE))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_resume_refuses_other_settings_or_a_missing_checkpoint(tmp_path):
    episodes = synthetic_episodes()
    train(episodes, tmp_path / "m", CONFIG, stop_at=2, progress=False)
    with pytest.raises(ModelError, match=r"other training settings \(lr\)"):
        train(episodes, tmp_path / "m", dataclasses.replace(CONFIG, lr=1.0), resume=True)
    longer = train(
        episodes, tmp_path / "m", dataclasses.replace(CONFIG, steps=8), resume=True, progress=False
    )
    assert longer.step == 8 and len(longer.losses) == 6
    with pytest.raises(ModelError, match="no checkpoint"):
        train(episodes, tmp_path / "new", CONFIG, resume=True, progress=False)


def test_bad_demonstrations_are_named():
    episodes = synthetic_episodes(2)
    episodes[1].states = episodes[1].states[:-1]
    with pytest.raises(PolicyError, match="demonstration 1"):
        train(episodes, "unused", CONFIG, progress=False)
    episodes = synthetic_episodes(1)
    episodes[0].images = episodes[0].images.astype(np.float32)
    with pytest.raises(PolicyError, match="uint8"):
        train(episodes, "unused", CONFIG, progress=False)


def test_chunks_repeat_the_last_action_and_mask_it():
    episodes = synthetic_episodes(1, length=3)
    tokenizer = InstructionTokenizer.train([episodes[0].instruction], 6)
    normalizer = Normalizer.fit(episodes[0].states, episodes[0].actions)
    sampler = ChunkSampler(episodes, tokenizer, normalizer, horizon=4, num_views=2)
    batch = sampler.sample(np.random.default_rng(0), 16, shift_pixels=4)
    assert batch.images.shape == (16, 3, 16, 32) and batch.state.shape == (16, STATE_DIM)
    assert batch.actions.shape == (16, 4, ACTION_DIM)
    for row in range(16):
        valid = int(batch.action_mask[row].sum())
        assert valid in (1, 2, 3)
        assert (batch.actions[row, valid:] == batch.actions[row, valid - 1]).all()


def test_learning_rate_warms_up_then_decays_to_zero():
    assert learning_rate(CONFIG, 0) == pytest.approx(CONFIG.lr / 2)
    assert learning_rate(CONFIG, 2) == pytest.approx(CONFIG.lr)
    assert learning_rate(CONFIG, 6) == pytest.approx(0.0)


def test_fine_tuning_starts_from_the_model_and_keeps_its_statistics(tmp_path):
    episodes = synthetic_episodes()
    base = train(episodes, tmp_path / "base", CONFIG, progress=False).model_dir
    # A learning rate of zero: the fine-tuned export must be the base model, bit for bit.
    frozen = dataclasses.replace(CONFIG, steps=2, lr=0.0, init_from=str(base))
    other = synthetic_episodes(seed=1)
    tuned = train(other, tmp_path / "tuned", frozen, progress=False).model_dir
    a, b = load_file(str(base / WEIGHTS_FILE)), load_file(str(tuned / WEIGHTS_FILE))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    base_meta, tuned_meta = load_model_dir(base).meta, load_model_dir(tuned).meta
    assert tuned_meta.normalizer.to_dict() == base_meta.normalizer.to_dict()
    assert tuned_meta.provenance["training"]["init_from"] == str(base)
    assert (base / "tokenizer.json").read_text() == (tuned / "tokenizer.json").read_text()
    # Training on from there changes the weights.
    moving = dataclasses.replace(frozen, lr=1e-2, checkpoint_every=100)
    moved = train(other, tmp_path / "moved", moving, progress=False).model_dir
    c = load_file(str(moved / WEIGHTS_FILE))
    assert any(not torch.equal(a[key], c[key]) for key in a)


def test_fine_tuning_applies_settings_that_keep_the_weights(tmp_path):
    base = train(synthetic_episodes(), tmp_path / "base", CONFIG, progress=False).model_dir
    guided = dataclasses.replace(
        CONFIG,
        steps=2,
        lr=0.0,
        init_from=str(base),
        model_overrides={"condition_dropout": 0.1, "guidance_scale": 1.5},
    )
    tuned = train(synthetic_episodes(), tmp_path / "tuned", guided, progress=False).model_dir
    config = load_model_dir(tuned).config
    assert (config["condition_dropout"], config["guidance_scale"]) == (0.1, 1.5)
    a, b = load_file(str(base / WEIGHTS_FILE)), load_file(str(tuned / WEIGHTS_FILE))
    assert all(torch.equal(a[key], b[key]) for key in a)  # lr 0: the base weights
    reshaped = dataclasses.replace(guided, model_overrides={"hidden_size": 64})
    with pytest.raises(ModelError, match=r"hidden_size.*shapes of its weights"):
        train(synthetic_episodes(), tmp_path / "reshaped", reshaped, progress=False)
    unknown = dataclasses.replace(guided, model_overrides={"guidance": 2.0})
    with pytest.raises(ModelError, match=r"model settings \{'guidance': 2.0\}"):
        train(synthetic_episodes(), tmp_path / "unknown", unknown, progress=False)


def test_fine_tuning_pi0_to_another_horizon_keeps_its_weights_cogact_is_refused(tmp_path):
    pi0 = dataclasses.replace(CONFIG, family="pi0")
    base = train(synthetic_episodes(), tmp_path / "base", pi0, progress=False).model_dir
    longer = dataclasses.replace(pi0, steps=2, lr=0.0, horizon=HORIZON + 3, init_from=str(base))
    tuned = train(synthetic_episodes(), tmp_path / "tuned", longer, progress=False).model_dir
    loaded = load_model_dir(tuned)
    assert loaded.meta.horizon == loaded.config["chunk_size"] == HORIZON + 3
    a, b = load_file(str(base / WEIGHTS_FILE)), load_file(str(tuned / WEIGHTS_FILE))
    assert all(torch.equal(a[key], b[key]) for key in a)  # lr 0: the base weights
    cogact = train(synthetic_episodes(), tmp_path / "cogact", CONFIG, progress=False).model_dir
    reshaped = dataclasses.replace(CONFIG, horizon=HORIZON + 3, init_from=str(cogact))
    with pytest.raises(ModelError, match=r"horizon.*shapes of its weights"):
        train(synthetic_episodes(), tmp_path / "cogact_tuned", reshaped, progress=False)


def test_fine_tuning_refuses_a_model_made_for_other_data(tmp_path):
    base = train(synthetic_episodes(), tmp_path / "base", CONFIG, progress=False).model_dir
    wrong = dataclasses.replace(CONFIG, family="pi0", init_from=str(base))
    with pytest.raises(ModelError, match=r"cannot fine-tune.*family 'cogact' vs 'pi0'"):
        train(synthetic_episodes(), tmp_path / "tuned", wrong, progress=False)
    with pytest.raises(ModelError, match="missing"):
        train(
            synthetic_episodes(),
            tmp_path / "tuned",
            dataclasses.replace(CONFIG, init_from=str(tmp_path / "missing")),
            progress=False,
        )
