"""The sim bridge and the policy node logic in lockstep: a recorded episode `daptq drift` reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from daptq_ros.bags.typestore import make_typestore
from daptq_ros.cli import main
from daptq_ros.robot.lockstep import Recorder, episode_metadata, run_lockstep
from daptq_ros.robot.policy_core import PolicyNodeCore
from daptq_ros.robot.sim_bridge_core import SimBridgeCore

pytestmark = [pytest.mark.sim, pytest.mark.slow]
TYPES = make_typestore().types
STEPS = 60
RECORDED = {
    "/camera/image_raw",
    "/joint_states",
    "/ee_pose",
    "/instruction",
    "/clock",
    "/cartesian_motion_controller/target_frame",
    "/policy_node/action_chunk",
    "/policy_node/gripper",
    "/policy_node/status",
    "/sim_bridge/episode",
}


def record(tmp_path, bits: str, seed: int = 100000):
    """One lockstep episode of the embedded default model at `bits`, recorded to a bag."""
    bridge = SimBridgeCore({"task": "push", "seed": seed, "max_steps": STEPS}, TYPES)
    node = PolicyNodeCore(
        {"bit_config": bits, "dry_run": False, "command_hz": 80.0, "num_threads": 1}, TYPES
    )
    recorder = Recorder(tmp_path / bits)
    try:
        result = run_lockstep(bridge, node, STEPS, recorder)
        recorder.close(episode_metadata(bridge, node, result.success))
    finally:
        node.close()
        bridge.close()
    return result


def test_recorded_episodes_are_analysed_by_daptq_drift(tmp_path, sim_renders, capsys):
    fp = record(tmp_path, "fp32")
    assert fp.steps == STEPS and fp.commands >= STEPS - 10 and fp.chunks >= STEPS // 8 - 1
    quantized = record(tmp_path, "w4a16")
    assert quantized.steps == STEPS
    with AnyReader([tmp_path / "fp32"]) as reader:
        assert {c.topic for c in reader.connections} == RECORDED
        poses = [
            reader.deserialize(raw, c.msgtype)
            for c, _, raw in reader.messages()
            if c.topic == "/ee_pose"
        ]
    path = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in poses])
    assert np.linalg.norm(path[-1] - path[0]) > 0.01  # the node moved the simulated arm

    code = main(
        [
            "drift",
            "--run",
            str(tmp_path / "w4a16"),
            "--reference",
            str(tmp_path / "fp32"),
            "--out",
            str(tmp_path / "report"),
            "--json",
        ]
    )
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert "w4a16" in metrics["configurations"]
    assert (tmp_path / "report" / "report.md").is_file()
