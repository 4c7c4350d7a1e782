"""Model directories (safetensors only, clear errors) and VlaPolicy over them."""

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from policy_data import HORIZON, IMAGE_SIZE, synthetic_episodes

from daptq_ros.errors import ModelError, PolicyError
from daptq_ros.policy import ActionChunk, Policy, TrainConfig, VlaPolicy, load_policy, train
from daptq_ros.policy.model_dir import load_model_dir, save_model_dir
from daptq_ros.policy.model_meta import REQUIRED_FILES, WEIGHTS_FILE

CONFIG = TrainConfig(
    family="cogact",
    dt=0.05,
    action_names=("dx", "gripper"),
    size="tiny",
    horizon=HORIZON,
    steps=2,
    batch_size=4,
    warmup_steps=1,
    max_text_length=6,
)


@pytest.fixture(scope="module", params=["cogact", "pi0"])
def model_dir(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "model"
    config = dataclasses.replace(CONFIG, family=request.param)
    return train(synthetic_episodes(2, length=5), out, config, progress=False).model_dir


def _observation(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(*IMAGE_SIZE, 3), dtype=np.uint8)
    return image, "push the puck to the goal", rng.normal(size=3).astype(np.float32)


def test_predict_returns_a_valid_action_chunk(model_dir):
    policy = load_policy(model_dir)
    assert isinstance(policy, Policy)
    chunk = policy.predict(*_observation())
    assert isinstance(chunk, ActionChunk)
    assert chunk.actions.shape == (HORIZON, 2) and chunk.names == ("dx", "gripper")
    assert chunk.dt == 0.05 and chunk.space == "ee_delta"
    normalizer = policy.loaded.meta.normalizer
    assert (chunk.actions >= normalizer.action_min - 1e-6).all()
    assert (chunk.actions <= normalizer.action_max + 1e-6).all()


def test_predict_is_deterministic_per_seed_and_resizes_images(model_dir):
    policy = load_policy(model_dir, seed=3)
    image, text, state = _observation()
    first, again = policy.predict(image, text, state), policy.predict(image, text, state)
    np.testing.assert_array_equal(first.actions, again.actions)
    big = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)  # another camera resolution
    assert policy.predict(big, text, state).actions.shape == first.actions.shape


def test_predict_rejects_bad_inputs(model_dir):
    policy = load_policy(model_dir)
    image, text, state = _observation()
    with pytest.raises(PolicyError, match="uint8"):
        policy.predict(image.astype(np.float32), text, state)
    with pytest.raises(PolicyError, match="HxWx3"):
        policy.predict(image[..., 0], text, state)
    with pytest.raises(PolicyError, match="NaN"):
        policy.predict(image, text, np.array([0.0, np.nan, 0.0]))


def test_save_load_round_trip_gives_identical_predictions(model_dir, tmp_path):
    loaded = load_model_dir(model_dir)
    copy = save_model_dir(
        tmp_path / "copy", loaded.model, loaded.config, loaded.tokenizer, loaded.meta
    )
    observation = _observation(1)
    a = VlaPolicy(loaded).predict(*observation)
    b = load_policy(copy).predict(*observation)
    np.testing.assert_array_equal(a.actions, b.actions)
    for (name, x), (_, y) in zip(
        loaded.model.state_dict().items(),
        load_model_dir(copy).model.state_dict().items(),
        strict=True,
    ):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_loading_skips_random_initialisation_and_reads_every_tensor(model_dir):
    from safetensors.torch import load_file

    normal = torch.nn.init.normal_
    state = load_model_dir(model_dir).model.state_dict()
    assert torch.nn.init.normal_ is normal  # the initialisers are back after loading
    saved = load_file(str(model_dir / WEIGHTS_FILE))
    for name, tensor in saved.items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=0, msg=name)
    assert set(state) <= set(saved) | {n for n in state if n.endswith("lm_head.weight")}


@pytest.mark.parametrize("missing", REQUIRED_FILES)
def test_a_missing_file_is_named(model_dir, tmp_path, missing):
    broken = shutil.copytree(model_dir, tmp_path / "broken")
    (broken / missing).unlink()
    with pytest.raises(ModelError, match=missing.replace(".", r"\.") + " is missing"):
        load_model_dir(broken)


def test_a_pickle_instead_of_safetensors_is_refused(model_dir, tmp_path):
    broken = shutil.copytree(model_dir, tmp_path / "pickled")
    (broken / WEIGHTS_FILE).unlink()
    (broken / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelError, match=r"pickle checkpoint pytorch_model\.bin.*never loaded"):
        load_model_dir(broken)


def test_a_missing_directory_and_mismatched_weights_are_model_errors(model_dir, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model_dir(tmp_path / "nowhere")
    broken = shutil.copytree(model_dir, tmp_path / "other")
    (broken / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"model\.safetensors"):
        load_model_dir(broken)


@pytest.mark.parametrize("family", ["pi0", "cogact"])
def test_embedded_default_model_loads_and_carries_its_manifest(family):
    from daptq_ros.policy.model_dir import default_model_dir

    directory = default_model_dir(family)
    assert all((directory / name).stat().st_size <= 25e6 for name in REQUIRED_FILES)
    policy = load_policy(directory)
    meta = policy.loaded.meta
    assert meta.family == family
    provenance = meta.provenance
    assert provenance["command"].startswith("bash scripts/train_default_models.sh")
    assert len(provenance["git_revision"]) == 40
    overall = provenance["metrics"]["overall"]  # measured by `daptq eval --record`
    assert overall["episodes"] >= 50 and 0.0 <= overall["success_rate"] <= 1.0
    height, width = meta.image_size
    image = np.zeros((height, width, 3), np.uint8)
    chunk = policy.predict(image, "push the puck to the goal", np.zeros(4), seed=0)
    assert chunk.actions.shape == (meta.horizon, 4) and np.isfinite(chunk.actions).all()
