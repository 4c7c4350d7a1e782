"""`daptq import`: a user's transformers pi0 checkpoint becomes a model directory that runs here.

The checkpoint is built and saved with transformers' own classes (pi0_checkpoint.py), then
imported, quantized with every method from bags recorded on the simulated arm, and evaluated.
The policy node drives it on the real ROS 2 graph in test_ros_imported_pi0.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from pi0_checkpoint import ACTION_STD, VIEW, save_tiny_pi0

from daptq_ros.cli import main
from daptq_ros.errors import ModelError
from daptq_ros.policy.importer import load_mapping, mapping_from_dict
from daptq_ros.policy.inference import load_policy
from daptq_ros.policy.model_dir import load_model_dir
from daptq_ros.quant.layers import QuantLinear

pytestmark = [pytest.mark.slow]
METHODS = ("rtn", "smoothquant", "awq", "gptq", "qvla", "daptq")
SMALL = ["--bins", "1", "--batches", "2", "--batch-size", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_pi0(tmp_path_factory.mktemp("ckpt") / "my_pi0")


@pytest.fixture(scope="module")
def imported(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "model"
    assert main(["import", "--checkpoint", str(checkpoint), "--robot", "sawyer_sim",
                 "--out", str(out)]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def demos(tmp_path_factory, sim_renders) -> Path:
    """Three reach episodes recorded on the simulated arm at the checkpoint's view size."""
    out = tmp_path_factory.mktemp("demos") / "reach"
    collect = ["collect", "--tasks", "reach", "--episodes", "3", "--image-size", str(VIEW)]
    assert main([*collect, "--out", str(out)]) == 0
    return out


def error_of(capsys, argv: list[str]) -> str:
    """The one-line error of a command that must fail with status 2."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("daptq ")]
    assert len(errors) == 1 and errors[0] == lines[-1], lines
    return errors[0]


def test_the_imported_checkpoint_predicts_the_mapped_chunk(imported):
    meta = json.loads((imported / "daptq.json").read_text())
    assert meta["family"] == "pi0" and meta["action_space"] == "ee_delta"
    assert meta["horizon"] == 10 and meta["image_size"] == [VIEW, 2 * VIEW]
    assert meta["normalization"]["action"] == {"mode": "mean_std", "mean": [0.0] * 4,
                                               "std": pytest.approx([ACTION_STD] * 4)}  # fmt: skip
    loaded = load_model_dir(imported)
    assert loaded.tokenizer.max_length == 48
    policy = load_policy(imported)
    chunk = policy.predict(np.zeros((96, 192, 3), np.uint8), "reach the goal", np.zeros(4))
    assert chunk.actions.shape == (10, 4) and chunk.space == "ee_delta" and chunk.dt == 0.0125
    # mean_std actions are not clipped to the band: z-scores of a random model spread past 1.
    assert np.isfinite(chunk.actions).all()


def test_the_weights_are_the_checkpoints(checkpoint, imported):
    from transformers import PI0ForConditionalGeneration

    original = PI0ForConditionalGeneration.from_pretrained(checkpoint, local_files_only=True)
    loaded = load_model_dir(imported).model
    ours = dict(loaded.named_parameters())
    for name, value in original.named_parameters():
        np.testing.assert_array_equal(ours[name].detach().numpy(), value.detach().numpy())


def test_statistics_from_the_users_bags(checkpoint, demos, tmp_path, capsys):
    out = tmp_path / "model"
    args = ["import", "--checkpoint", str(checkpoint), "--robot", "sawyer_sim"]
    assert main([*args, "--stats-from", str(demos), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["normalization"] == "fitted on the user's recordings"
    action = json.loads((out / "daptq.json").read_text())["normalization"]["action"]
    assert action["mode"] == "min_max" and action["max"][0] > action["min"][0]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_quantizes_the_imported_model_from_recorded_bags(
    imported, demos, tmp_path, capsys, method
):
    bits = tmp_path / "w4a8_g32.yaml"  # the tiny model is 32-64 wide: groups of 32
    bits.write_text("method: rtn\nweight_bits: 4\nactivation_bits: 8\ngroup_size: 32\n")
    out = tmp_path / "quantized"
    args = ["quantize", "--model", str(imported), "--calib", str(demos), "--method", method]
    assert main([*args, "--config", str(bits), *SMALL, "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    loaded = load_model_dir(out)
    assert any(isinstance(m, QuantLinear) for m in loaded.model.modules())
    assert loaded.meta.provenance["imported_from"]


def test_eval_runs_the_imported_model(imported, sim_renders, tmp_path):
    run = tmp_path / "run"
    args = ["eval", "--model", str(imported), "--tasks", "reach", "--episodes", "1"]
    assert main([*args, "--threads", "1", "--out", str(run), "--json"]) == 0
    summary = json.loads((run / "eval.json").read_text())
    assert summary["overall"]["episodes"] == 1  # random weights: the pipeline runs, not succeeds


def test_pickle_weights_are_refused(checkpoint, tmp_path, capsys):
    folder = shutil.copytree(checkpoint, tmp_path / "pickled")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    args = ["import", "--checkpoint", str(folder), "--robot", "sawyer_sim"]
    line = error_of(capsys, [*args, "--out", str(tmp_path / "m")])
    assert "pytorch_model.bin" in line and "pickle" in line


def test_missing_processor_files_are_named(checkpoint, tmp_path, capsys):
    folder = shutil.copytree(checkpoint, tmp_path / "bare")
    (folder / "processor_config.json").unlink()
    args = ["import", "--checkpoint", str(folder), "--robot", "sawyer_sim"]
    line = error_of(capsys, [*args, "--out", str(tmp_path / "m")])
    assert "processor_config.json" in line and "PI0Processor" in line


def mapping_dict(name: str) -> dict:
    """A shipped mapping as the plain dict its YAML holds."""
    fields = load_mapping(name).__dict__.items()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields}


def test_a_mapping_wider_than_the_checkpoint_is_refused(checkpoint, tmp_path, capsys):
    wide = tmp_path / "wide.yaml"
    # The checkpoint's max_state_dim is 8.
    wide.write_text(
        yaml.safe_dump(
            {
                **mapping_dict("sawyer_sim"),
                "state_source": "joint_positions",
                "state_names": list("abcdefghi"),
            }
        )
    )
    args = ["import", "--checkpoint", str(checkpoint), "--robot", str(wide)]
    line = error_of(capsys, [*args, "--out", str(tmp_path / "m")])
    assert "9 state dimensions" in line and "max_state_dim" in line


def test_statistics_that_do_not_match_the_mapping_are_refused(checkpoint, tmp_path, capsys):
    # The panda mapping has 8 state and action dimensions, the processor's statistics 4.
    args = ["import", "--checkpoint", str(checkpoint), "--robot", "panda"]
    line = error_of(capsys, [*args, "--out", str(tmp_path / "m")])
    assert "4 state and 4 action" in line and "8 and 8" in line


def test_a_checkpoint_without_statistics_needs_bags(tmp_path, capsys):
    folder = save_tiny_pi0(tmp_path / "nostats", processor_stats=False)
    args = ["import", "--checkpoint", str(folder), "--robot", "sawyer_sim"]
    line = error_of(capsys, [*args, "--out", str(tmp_path / "m")])
    assert "--stats-from" in line


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"action_space": "teleport"}, "action_space"),
        ({"dt": 0}, "dt"),
        ({"num_views": "two"}, "num_views"),
        ({"state_names": []}, "state_names"),
        ({"cameras": 2}, "cameras"),
    ],
)
def test_a_bad_mapping_names_the_field(change, field):
    data = {**mapping_dict("panda"), **change}
    with pytest.raises(ModelError, match=field):
        mapping_from_dict(data, "my_arm.yaml")
