"""No tensor is ever left at random initialisation: import and load compare every tensor first.

Checkpoints are a tiny pi0 saved by transformers (its own layout on disk) and the embedded
model directories of both families, each with one tensor dropped, renamed or reshaped; the
refusal must come before the model is built (the build is made to fail if it is reached).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pi0_checkpoint import save_tiny_pi0
from safetensors.numpy import load_file, save_file

from daptq_ros.cli import main
from daptq_ros.errors import ModelError
from daptq_ros.policy import importer, model_dir
from daptq_ros.policy.checkpoint_tensors import (
    meta_model,
    safetensors_shapes,
    tensor_mismatch,
)
from daptq_ros.policy.model_dir import default_model_dir, load_model_dir

pytestmark = [pytest.mark.slow]
STATE_PROJ = "state_proj.weight"  # transformers' pi0 saves the original layout's names


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_pi0(tmp_path_factory.mktemp("ckpt") / "my_pi0")


def edited(source: Path, folder: Path, edit) -> Path:
    """A copy of the model folder `source` whose model.safetensors went through `edit`."""
    folder = shutil.copytree(source, folder)
    weights = load_file(folder / "model.safetensors")
    edit(weights)
    save_file(weights, folder / "model.safetensors")
    return folder


def drop(name: str):
    return lambda weights: weights.pop(name)


def rename(name: str, new: str):
    return lambda weights: weights.update({new: weights.pop(name)})


def reshape(name: str):
    return lambda weights: weights.update({name: np.zeros((3, 5), weights[name].dtype)})


def never_built(monkeypatch) -> None:
    """Make building a real model fail: a refusal must come before it."""

    def fail(*args, **kwargs):
        raise AssertionError("the model was built before the checkpoint was checked")

    monkeypatch.setattr(importer.Pi0Adapter, "from_pretrained", fail)
    monkeypatch.setattr(model_dir, "build_for_loading", fail)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (drop(STATE_PROJ), ("1 missing", "embed_action_time.state_proj.weight")),
        (rename(STATE_PROJ, "state_projection.weight"), ("1 unexpected", "state_projection")),
        (reshape(STATE_PROJ), ("1 of another shape", "(3, 5)")),
    ],
    ids=["missing", "renamed", "reshaped"],
)
def test_import_refuses_a_checkpoint_that_does_not_fill_the_model(
    checkpoint, tmp_path, capsys, monkeypatch, edit, words
):
    folder = edited(checkpoint, tmp_path / "bad", edit)
    never_built(monkeypatch)
    out = tmp_path / "model"
    argv = ["import", "--checkpoint", str(folder), "--robot", "sawyer_sim", "--out", str(out)]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("daptq import: "), lines
    assert all(word in lines[0] for word in words), lines[0]
    assert "random" in lines[0] and not out.exists()


def test_many_mismatches_show_the_first_few_names_and_the_count(checkpoint, tmp_path):
    from transformers import PI0Config, PI0ForConditionalGeneration

    config = PI0Config.from_pretrained(checkpoint)
    model = meta_model(lambda: PI0ForConditionalGeneration(config))
    shapes = safetensors_shapes([checkpoint / "model.safetensors"])
    vision = [name for name in shapes if ".vision_tower." in name]
    mismatch = tensor_mismatch(model, {k: v for k, v in shapes.items() if k not in vision})
    assert len(mismatch.missing) == len(vision) > 3
    assert f"{len(vision)} missing (" in mismatch.describe()
    assert mismatch.describe().count("vision_tower") == 3 and ", ...)" in mismatch.describe()


def test_lerobot_key_names_map_onto_the_model(checkpoint):
    """LeRobot's PI0Policy saves its PI0Pytorch under `model.`: transformers maps those names."""
    from transformers import PI0Config, PI0ForConditionalGeneration

    config = PI0Config.from_pretrained(checkpoint)
    model = meta_model(lambda: PI0ForConditionalGeneration(config))
    shapes = safetensors_shapes([checkpoint / "model.safetensors"])
    assert not tensor_mismatch(model, {f"model.{k}": v for k, v in shapes.items()})


@pytest.mark.parametrize("family", ["pi0", "cogact"])
@pytest.mark.parametrize("how", ["missing", "reshaped"])
def test_loading_a_model_directory_refuses_a_tensor_that_does_not_fit(
    family, how, tmp_path, monkeypatch
):
    source = default_model_dir(family)
    first = sorted(load_file(source / "model.safetensors"))[0]
    edit = drop(first) if how == "missing" else reshape(first)
    folder = edited(source, tmp_path / family, edit)
    never_built(monkeypatch)
    with pytest.raises(ModelError, match="do not fit the model") as error:
        load_model_dir(folder)
    assert first in str(error.value)


@pytest.mark.parametrize("family", ["pi0", "cogact"])
def test_the_embedded_models_fill_their_model_exactly(family):
    assert load_model_dir(default_model_dir(family)).meta.family == family
