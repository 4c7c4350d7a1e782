"""LeRobot pi0 folders import directly; pi0.5 and SmolVLA are refused by type.

The LeRobot folder is written here in LeRobot's published layout (config.json with "type": "pi0"
and variant names, model.safetensors under PI0Policy's `model.` names, the two processor
pipelines with their normaliser state files, the tokenizer only named) from the tiny pi0 that
transformers saves. LeRobot's variants are full size (gemma_2b, PaliGemma's SigLIP), so the
test registers tiny ones of the same shape of table; everything else runs as for a real folder.
Imported, it must predict exactly what the transformers import of the same weights predicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pi0_checkpoint import VIEW, WORDS, lerobot_tables, save_lerobot_folder, save_tiny_pi0
from safetensors.numpy import load_file, save_file

from daptq_ros.cli import main
from daptq_ros.policy import lerobot
from daptq_ros.policy.inference import load_policy
from daptq_ros.policy.model_dir import load_model_dir

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_pi0(tmp_path_factory.mktemp("ckpt") / "my_pi0")


@pytest.fixture(autouse=True)
def tiny_variants(monkeypatch, checkpoint):
    """LeRobot's variant table with the tiny checkpoint's sizes (LeRobot ships full-size ones)."""
    variants, vision = lerobot_tables(checkpoint)
    monkeypatch.setattr(lerobot, "GEMMA_VARIANTS", {**lerobot.GEMMA_VARIANTS, **variants})
    monkeypatch.setattr(lerobot, "PALIGEMMA_VISION", vision)
    monkeypatch.setattr(lerobot, "VOCAB_SIZE", len(WORDS))


def with_tokenizer(folder: Path, out: Path, checkpoint: Path) -> list[str]:
    return import_args(folder, out, "--tokenizer", str(checkpoint))


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("daptq import: "), lines
    return lines[0]


def import_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return ["import", "--checkpoint", str(folder), "--robot", "sawyer_sim", "--out", str(out),
            *extra]  # fmt: skip


@pytest.mark.parametrize("action_mode", ["MEAN_STD", "MIN_MAX"])
def test_a_lerobot_pi0_predicts_what_its_transformers_twin_predicts(
    checkpoint, tmp_path, capsys, action_mode
):
    folder = save_lerobot_folder(checkpoint, tmp_path / "lerobot_pi0", action_mode)
    ours, twin = tmp_path / "from_lerobot", tmp_path / "from_transformers"
    assert main(import_args(folder, ours, "--tokenizer", str(checkpoint), "--json")) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint_layout"] == "lerobot"
    assert main(import_args(checkpoint, twin)) == 0
    image = np.random.default_rng(0).integers(0, 255, (VIEW, 2 * VIEW, 3), dtype=np.uint8)
    state = np.array([0.05, 0.62, 0.18, 0.9])
    chunks = [load_policy(m).predict(image, "reach the goal", state) for m in (ours, twin)]
    np.testing.assert_allclose(chunks[0].actions, chunks[1].actions, rtol=0, atol=1e-6)
    assert load_model_dir(ours).tokenizer.max_length == 48


def test_the_prompt_is_the_processors_bos_instruction_newline(checkpoint, tmp_path):
    """The same ids as transformers' PI0Processor gives the language model."""
    from transformers import PI0Processor

    out = tmp_path / "model"
    assert main(import_args(checkpoint, out)) == 0
    ids, mask = load_model_dir(out).tokenizer.encode(["reach the goal"])
    processor = PI0Processor.from_pretrained(checkpoint, local_files_only=True)
    processor.image_seq_length = (VIEW // 16) ** 2  # the tiny SigLIP's 16 px patches
    image = np.zeros((VIEW, VIEW, 3), np.uint8)
    expected = processor(images=[image], text="reach the goal")["input_ids"][0].tolist()
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    text = [t for t in expected if t != image_token and t != processor.tokenizer.pad_token_id]
    assert ids[0][mask[0] == 1].tolist() == text
    assert text[0] == processor.tokenizer.bos_token_id


@pytest.mark.parametrize(
    ("kind", "words"), [("pi05", "adaRMS"), ("smolvla", "SmolVLM"), ("act", "'act'")]
)
def test_other_lerobot_policies_are_refused_by_type(checkpoint, tmp_path, capsys, kind, words):
    folder = save_lerobot_folder(checkpoint, tmp_path / kind)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "type": kind}))
    line = one_line_error(capsys, with_tokenizer(folder, tmp_path / "m", checkpoint))
    assert f"LeRobot '{kind}' policy cannot be imported" in line and words in line


def test_a_lerobot_folder_without_a_tokenizer_says_which_and_how(checkpoint, tmp_path, capsys):
    folder = save_lerobot_folder(checkpoint, tmp_path / "pi0")
    line = one_line_error(capsys, import_args(folder, tmp_path / "m"))
    assert "google/paligemma-3b-pt-224" in line and "--tokenizer" in line and "LeRobot" in line


def test_a_lerobot_folder_without_its_processor_is_named(checkpoint, tmp_path, capsys):
    folder = save_lerobot_folder(checkpoint, tmp_path / "pi0")
    (folder / "policy_postprocessor.json").unlink()
    line = one_line_error(capsys, with_tokenizer(folder, tmp_path / "m", checkpoint))
    assert "policy_postprocessor.json is missing" in line


def test_a_lerobot_folder_with_a_renamed_tensor_is_refused_before_loading(
    checkpoint, tmp_path, capsys
):
    folder = save_lerobot_folder(checkpoint, tmp_path / "pi0")
    weights = load_file(folder / "model.safetensors")
    weights["model.state_projection.weight"] = weights.pop("model.state_proj.weight")
    save_file(weights, folder / "model.safetensors")
    line = one_line_error(capsys, with_tokenizer(folder, tmp_path / "m", checkpoint))
    assert "1 missing (embed_action_time.state_proj.weight)" in line and "state_projection" in line


def test_a_state_width_other_than_the_mappings_is_refused(checkpoint, tmp_path, capsys):
    folder = save_lerobot_folder(checkpoint, tmp_path / "pi0")
    config = json.loads((folder / "config.json").read_text())
    config["input_features"]["observation.state"]["shape"] = [7]
    (folder / "config.json").write_text(json.dumps(config))
    line = one_line_error(capsys, with_tokenizer(folder, tmp_path / "m", checkpoint))
    assert "7 state" in line and "sawyer_sim" in line


def test_the_full_size_variants_are_transformers_own_pi0_defaults(monkeypatch):
    """gemma_2b + gemma_300m on PaliGemma's SigLIP: the sizes of the released pi0."""
    from transformers import PI0Config

    monkeypatch.undo()  # the real tables
    data = {"type": "pi0", "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m"}
    ours, released = lerobot._pi0_config(data, Path("x")).to_dict(), PI0Config().to_dict()
    for part in ("text_config", "vision_config"):
        for key, value in ours["vlm_config"][part].items():
            if key in lerobot.GEMMA_VARIANTS["gemma_2b"] or key in lerobot.PALIGEMMA_VISION:
                assert value == released["vlm_config"][part][key], (part, key)
    for key in lerobot.GEMMA_VARIANTS["gemma_300m"]:
        assert ours["dit_config"][key] == released["dit_config"][key], key
