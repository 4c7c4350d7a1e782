"""A joint-space pi0 of a geometry no other test uses, from transformers and from LeRobot.

Two layers, widths 48 / 24, SigLIP MLP 72, 64 px views, chunk 20, 8-D state and action (the
`sawyer_joint_sim` mapping: seven arm joints and a finger joint in, seven joint targets and the
gripper out). Saved by transformers' save_pretrained and rewritten in LeRobot's layout, it goes
through import -> quantize (daptq with the real arm's Jacobian, gptq, rtn) from joint-space
recordings of the simulated Sawyer -> eval on the joint-space simulator. The policy node drives
it on the real ROS 2 graph in test_ros_joint_sim.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from pi0_checkpoint import WORDS, lerobot_tables, save_lerobot_folder, save_tiny_pi0

from daptq_ros.cli import main
from daptq_ros.policy import lerobot
from daptq_ros.policy.importer import load_mapping
from daptq_ros.policy.inference import load_policy
from daptq_ros.policy.model_dir import load_model_dir
from daptq_ros.quant.layers import QuantLinear

pytestmark = [pytest.mark.slow]
VIEW = 64
MAPPING = "sawyer_joint_sim"
SMALL = ["--bins", "1", "--batches", "2", "--batch-size", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "joint_pi0"
    geometry = {"layers": 2, "widths": (48, 24), "vision_mlp": 72, "view": VIEW, "dims": 8}
    return save_tiny_pi0(folder, chunk_size=20, **geometry)


@pytest.fixture(scope="module")
def imported(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "model"
    args = ["import", "--checkpoint", str(checkpoint), "--robot", MAPPING, "--out", str(out)]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def demos(tmp_path_factory, sim_renders) -> Path:
    """Three reach episodes recorded in joint space, at the checkpoint's view size."""
    out = tmp_path_factory.mktemp("demos") / "reach"
    collect = ["collect", "--tasks", "reach", "--episodes", "3", "--image-size", str(VIEW)]
    assert main([*collect, "--control", "joint_position", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def plain(demos, tmp_path_factory) -> Path:
    """The demonstrations as a plain `ros2 bag record /camera/image_raw /joint_states` gives
    them: no instruction, no tool pose, no policy topics."""
    from daptq_ros.bags import BagReader, BagWriter, find_bag_dirs

    out = tmp_path_factory.mktemp("plain")
    topics = {"/camera/image_raw": "sensor_msgs/msg/Image", "/joint_states": ""}
    for index, bag in enumerate(find_bag_dirs(demos)):
        with BagReader(bag) as reader, BagWriter(out / f"rec_{index}") as writer:
            writer.add_topic("/camera/image_raw", topics["/camera/image_raw"])
            writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
            for message in reader.messages(list(topics)):
                writer.write(message.topic, message.msg, message.stamp_ns)
    return out


def error_of(capsys, argv: list[str]) -> str:
    """The one-line error of a command that must fail with status 2."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("daptq ")]  # besides progress bars
    assert len(errors) == 1 and errors[0] == lines[-1], lines
    return errors[0]


def test_the_import_takes_its_state_from_the_named_joints(imported):
    meta = json.loads((imported / "daptq.json").read_text())
    mapping = load_mapping(MAPPING)
    assert meta["state_source"] == "joint_positions"
    assert meta["state_names"] == list(mapping.state_names)
    assert meta["action_space"] == "joint_position" and meta["horizon"] == 20
    assert meta["image_size"] == [VIEW, 2 * VIEW]


@pytest.fixture(scope="module")
def from_lerobot(checkpoint, tmp_path_factory) -> Path:
    """The checkpoint rewritten in LeRobot's layout, imported (its tokenizer passed)."""
    variants, vision = lerobot_tables(checkpoint)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lerobot, "GEMMA_VARIANTS", {**lerobot.GEMMA_VARIANTS, **variants})
        patch.setattr(lerobot, "PALIGEMMA_VISION", vision)
        patch.setattr(lerobot, "VOCAB_SIZE", len(WORDS))
        folder = save_lerobot_folder(checkpoint, tmp_path_factory.mktemp("lerobot") / "pi0")
        out = folder.parent / "imported"
        args = ["import", "--checkpoint", str(folder), "--robot", MAPPING, "--tokenizer"]
        assert main([*args, str(checkpoint), "--out", str(out)]) == 0
    return out


def test_the_lerobot_layout_predicts_what_the_transformers_one_does(from_lerobot, imported):
    # At the model's size: LeRobot letterboxes other sizes, this transformers processor stretches.
    image = np.random.default_rng(3).integers(0, 255, (VIEW, 2 * VIEW, 3), dtype=np.uint8)
    state = np.linspace(-0.8, 1.9, 8)
    models = (from_lerobot, imported)
    chunks = [load_policy(m).predict(image, "reach the goal", state) for m in models]
    assert chunks[0].actions.shape == (20, 8) and chunks[0].space == "joint_position"
    np.testing.assert_allclose(chunks[0].actions, chunks[1].actions, rtol=0, atol=1e-6)


def test_the_lerobot_import_quantizes_and_runs_on_the_joint_space_arm(
    from_lerobot, demos, tmp_path, capsys
):
    quantized, run = tmp_path / "quantized", tmp_path / "run"
    args = ["quantize", "--model", str(from_lerobot), "--calib", str(demos), "--method", "daptq"]
    args += ["--scores", "jacobian", "--urdf", "sawyer_sim"]
    assert main([*args, *SMALL, "--out", str(quantized)]) == 0
    args = ["eval", "--model", str(quantized), "--tasks", "reach", "--episodes", "1"]
    assert main([*args, "--threads", "1", "--out", str(run), "--json"]) == 0
    summary = json.loads((run / "eval.json").read_text())
    assert summary["control"] == "joint_position" and summary["overall"]["episodes"] == 1


@pytest.mark.parametrize("method", ["daptq", "gptq", "rtn"])
def test_quantize_from_joint_space_recordings(imported, demos, tmp_path, capsys, method):
    out = tmp_path / "quantized"
    args = ["quantize", "--model", str(imported), "--calib", str(demos), "--method", method]
    if method == "daptq":  # the real arm's Jacobian over the recorded joint states
        args += ["--scores", "jacobian", "--urdf", "sawyer_sim"]
    assert main([*args, *SMALL, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    loaded = load_model_dir(out)
    assert any(isinstance(m, QuantLinear) for m in loaded.model.modules())
    assert loaded.meta.state_spec == load_model_dir(imported).meta.state_spec
    # 24-, 48- and 72-wide inputs fit no 128-wide group: each fallback is listed.
    assert report["kernel_fallbacks"], report.keys()
    if method == "daptq":
        scores = report["drift_scores"]
        assert len(scores) == 8 and len(set(np.round(scores[:7], 6))) > 1


def test_eval_runs_the_quantized_model_on_the_joint_space_arm(imported, demos, tmp_path, capsys):
    quantized = tmp_path / "quantized"
    args = ["quantize", "--model", str(imported), "--calib", str(demos), "--method", "rtn"]
    assert main([*args, *SMALL, "--out", str(quantized)]) == 0
    run = tmp_path / "run"
    args = ["eval", "--model", str(quantized), "--tasks", "reach", "--episodes", "1"]
    assert main([*args, "--threads", "1", "--out", str(run), "--json"]) == 0
    summary = json.loads((run / "eval.json").read_text())
    assert summary["control"] == "joint_position" and summary["overall"]["episodes"] == 1
    assert summary["state"]["names"] == list(load_mapping(MAPPING).state_names)


def test_statistics_from_joint_space_recordings(checkpoint, demos, tmp_path):
    out = tmp_path / "model"
    args = ["import", "--checkpoint", str(checkpoint), "--robot", MAPPING]
    assert main([*args, "--stats-from", str(demos), "--out", str(out)]) == 0
    stats = json.loads((out / "daptq.json").read_text())["normalization"]
    assert len(stats["state"]["mean"]) == 8 and len(stats["action"]["min"]) == 8
    assert stats["state"]["mean"][1] < -0.3  # right_j1 of the Sawyer's home, not a hand position


def test_recordings_without_the_mappings_gripper_joint_name_it(checkpoint, demos, tmp_path, capsys):
    mapping = yaml.safe_load(load_mapping_file(MAPPING).read_text())
    mapping["state_names"][-1] = "robotiq_85_left_knuckle_joint"
    path = tmp_path / "ur_gripper.yaml"
    path.write_text(yaml.safe_dump(mapping))
    args = ["import", "--checkpoint", str(checkpoint), "--robot", str(path)]
    line = error_of(capsys, [*args, "--stats-from", str(demos), "--out", str(tmp_path / "m")])
    assert "lack robotiq_85_left_knuckle_joint" in line and "r_close" in line


def load_mapping_file(name: str) -> Path:
    from daptq_ros.policy.importer import mappings_dir

    return mappings_dir() / f"{name}.yaml"


def test_quantize_and_statistics_from_plain_recordings(
    imported, checkpoint, plain, tmp_path, capsys
):
    args = ["quantize", "--model", str(imported), "--calib", str(plain), "--method", "daptq"]
    args += [*SMALL[2:], "--instruction", "reach the goal"]
    line = error_of(capsys, [*args, "--bins", "3", "--out", str(tmp_path / "q6")])
    assert "no /ee_pose" in line and "--urdf" in line and "--bins 1" in line
    assert main([*args, "--bins", "1", "--out", str(tmp_path / "q"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calibration_episodes"] == 3
    assert any(isinstance(m, QuantLinear) for m in load_model_dir(tmp_path / "q").model.modules())
    out = tmp_path / "stats"
    args = ["import", "--checkpoint", str(checkpoint), "--robot", MAPPING]
    assert main([*args, "--stats-from", str(plain), "--out", str(out)]) == 0
    stats = json.loads((out / "daptq.json").read_text())["normalization"]
    assert len(stats["state"]["mean"]) == 8 and stats["state"]["mean"][1] < -0.3


def test_the_node_acts_as_the_checkpoints_own_pipeline(checkpoint, imported):
    """Two cameras of another size and joint states in the arm's order, through the policy
    node's core: its chunk equals PI0Processor -> sample_actions -> unnormalise, same noise."""
    from pi0_checkpoint import checkpoint_actions
    from robot_fakes import SAWYER_JOINTS, TYPES, instruction, joints, wait_idle

    from daptq_ros.bags.convert import image_msg, sec_to_ns
    from daptq_ros.robot.policy_core import PolicyNodeCore

    rng = np.random.default_rng(7)
    views = [rng.integers(0, 255, (90, 120, 3), dtype=np.uint8) for _ in range(2)]
    positions = np.array([0.3, -1.1, 0.2, 1.4, -0.5, 0.9, 1.7, -0.02, 0.03])
    params = {
        "robot": "sawyer_sim",
        "model": str(imported),
        "command_interface": "joint_trajectory",
    }
    core = PolicyNodeCore({**params, "image_topics": ["/cam/a", "/cam/b"]}, TYPES)
    try:
        core.on_instruction(instruction("reach the goal"), 1.0)
        for camera, view in enumerate(views):
            core.on_image(image_msg(TYPES, sec_to_ns(1.0), view, "camera"), 1.0, camera=camera)
        core.on_joint_states(joints(1.0, positions, SAWYER_JOINTS), 1.0)
        assert core.control_tick(1.0)
        wait_idle(core, timeout=120)
        (result,) = core.worker.take_results()
    finally:
        core.close()
    state = positions[[SAWYER_JOINTS.index(n) for n in load_mapping(MAPPING).state_names]]
    expected = checkpoint_actions(checkpoint, views, "reach the goal", state, seed=0)
    np.testing.assert_allclose(result.actions, expected, rtol=0, atol=1e-5)


def test_episodes_of_other_actions_are_refused_before_calibration(imported, tmp_path, capsys):
    """joint_delta episodes have the model's width but not its actions: named, not used."""
    deltas = tmp_path / "deltas"
    collect = ["collect", "--tasks", "reach", "--episodes", "1", "--image-size", str(VIEW)]
    assert main([*collect, "--control", "joint_delta", "--out", str(deltas)]) == 0
    capsys.readouterr()
    args = ["quantize", "--model", str(imported), "--calib", str(deltas), "--method", "rtn"]
    line = error_of(capsys, [*args, "--bins", "1", "--out", str(tmp_path / "q")])
    assert "records joint_delta actions" in line and "takes joint_position" in line
    assert "--control joint_position" in line
