"""Tokenizer and normalisation: round trips through their files and their inverse."""

import numpy as np
import pytest

from daptq_ros.errors import ModelError
from daptq_ros.policy import InstructionTokenizer, Normalizer
from daptq_ros.policy.images import resize_image
from daptq_ros.policy.preprocess import image_tensor


def test_tokenizer_round_trip_through_tokenizer_json(tmp_path):
    tokenizer = InstructionTokenizer.train(["Push the puck to the goal!", "reach the goal"], 8)
    loaded = InstructionTokenizer.load(tokenizer.save(tmp_path / "tokenizer.json"))
    texts = ["PUSH the puck, to the goal.", "reach the goal"]
    for a, b in zip(tokenizer.encode(texts), loaded.encode(texts), strict=True):
        np.testing.assert_array_equal(a, b)
    ids, mask = loaded.encode(texts)
    assert ids.shape == mask.shape == (2, 8) and loaded.max_length == 8
    assert loaded.decode(ids[0]) == "push the puck to the goal"
    assert mask[1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


def test_tokenizer_maps_unknown_words_and_truncates():
    tokenizer = InstructionTokenizer.train(["reach the goal"], 4)
    ids, mask = tokenizer.encode(["reach the red goal now please"])
    assert ids.shape == (1, 4) and mask.all()
    assert ids[0, 2] == 1  # [UNK]


def test_tokenizer_load_errors_name_the_file(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        InstructionTokenizer.load(tmp_path / "tokenizer.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"bad\.json"):
        InstructionTokenizer.load(tmp_path / "bad.json")


def test_normalizer_round_trip_and_ranges():
    rng = np.random.default_rng(0)
    states = rng.normal(3.0, 2.0, size=(500, 4))
    states[:, 3] = 1.5  # constant: the std floor keeps it finite
    actions = rng.uniform(-0.3, 0.7, size=(500, 2))
    normalizer = Normalizer.fit(states, actions)
    z = normalizer.normalize_state(states)
    np.testing.assert_allclose(z[:, :3].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :3].std(0), 1, atol=1e-4)
    assert np.isfinite(normalizer.normalize_state(states + 1)).all()
    unit = normalizer.normalize_actions(actions)
    assert unit.min() >= -1 - 1e-6 and unit.max() <= 1 + 1e-6
    np.testing.assert_allclose(normalizer.unnormalize_actions(unit), actions, atol=1e-6)
    assert normalizer.unnormalize_actions(np.array([5.0, -5.0])).tolist() == pytest.approx(
        [actions[:, 0].max(), actions[:, 1].min()]
    )
    again = Normalizer.from_dict(normalizer.to_dict())
    np.testing.assert_array_equal(again.state_std, normalizer.state_std)
    np.testing.assert_array_equal(again.action_max, normalizer.action_max)


def test_mean_std_actions_spread_small_typical_actions_that_rare_extremes_squash():
    """Joint deltas: mostly a few hundredths of a rad, now and then half a rad."""
    rng = np.random.default_rng(1)
    actions = rng.normal(0.0, 0.03, size=(2000, 2))
    actions[:5, 0] = -0.45  # rare extremes
    actions[:, 1] = 0.0  # a joint that never moves
    states = rng.normal(size=(2000, 3))
    squashed = Normalizer.fit(states, actions).normalize_actions(actions)
    spread = Normalizer.fit(states, actions, "mean_std")
    unit = spread.normalize_actions(actions)
    # The typical actions' spread in normalised units: min/max squashes it, mean/std keeps it.
    assert spread.action_mode == "mean_std" and unit[5:, 0].std() > 0.5
    assert squashed[5:, 0].std() < 0.15
    np.testing.assert_allclose(spread.unnormalize_actions(unit), actions, atol=1e-6)
    assert np.isfinite(unit).all() and (unit[:, 1] == 0).all()
    again = Normalizer.from_dict(spread.to_dict())
    assert again.action_mode == "mean_std"


def test_normalizer_from_dict_rejects_missing_entries():
    with pytest.raises(ModelError, match="lack"):
        Normalizer.from_dict({"state": {"mode": "mean_std"}})


def test_resize_and_image_tensor():
    image = np.full((32, 64, 3), 255, dtype=np.uint8)
    small = resize_image(image, (16, 32))
    assert small.shape == (16, 32, 3)
    tensor = image_tensor(small[None])
    assert tensor.shape == (1, 3, 16, 32) and float(tensor.max()) == 1.0
