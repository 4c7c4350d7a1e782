"""The policy node runs an exported OpenVINO model on the real ROS 2 sim graph, and swaps it.

The README's OpenVINO command lines, run as written in tmp_path after its joint-space import and
collection lines: `daptq quantize --runtime openvino` of a tiny pi0 (two layers, widths 64/32,
32 px views, chunks of 16), `daptq eval --runtime openvino`, then `ros2 launch daptq_ros
sim.launch.py runtime:=openvino`. Asserted: the node reports the OpenVINO runtime on
/diagnostics, drives the simulated arm within the filter's joint limits, and a `bit_config` set
to another exported directory swaps to it; a directory without an exported model runs on torch
and says so on /diagnostics. Skipped without ROS 2 (never in CI: DAPTQ_REQUIRE_ROS=1).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pi0_checkpoint import save_tiny_pi0
from ros_graph import (
    Probe,
    command_limits,
    daptq,
    diagnostic,
    enabled_and_moving,
    latest,
    level,
    patience,
    readme_commands,
    readme_launch,
    require_ros,
    ros2,
    wait_for,
)

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.slow]
COMMAND_TOPIC = "/joint_trajectory_controller/joint_trajectory"
README_LINES = (
    "daptq import --checkpoint my_pi0/ --robot sawyer_joint_sim --out models/my_pi0_sim",
    "daptq collect --control joint_position --tasks reach --episodes 6 --out my_sim_demos",
    "daptq quantize --model models/my_pi0_sim --calib my_sim_demos --method rtn --runtime "
    "openvino --out models/my_pi0_ov",
    "daptq eval --model models/my_pi0_ov --runtime openvino --tasks reach --episodes 10 --out "
    "runs/my_pi0_ov",
    "ros2 launch daptq_ros sim.launch.py task:=reach model:=models/my_pi0_ov runtime:=openvino "
    "command_interface:=joint_trajectory",
)


def diagnostic_values(status) -> dict[str, str]:
    return {item.key: item.value for item in status.values}


def test_the_node_runs_and_swaps_exported_openvino_models(tmp_path):
    require_ros()
    from daptq_ros_interfaces.msg import PolicyStatus
    from diagnostic_msgs.msg import DiagnosticArray
    from trajectory_msgs.msg import JointTrajectory

    from daptq_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS
    from daptq_ros.policy.runtime_openvino import weight_files

    *steps, launch_line = readme_commands(*README_LINES)
    save_tiny_pi0(tmp_path / "my_pi0", chunk_size=16, layers=2, widths=(64, 32), view=32, dims=8)
    for words in steps:  # import, collect, quantize --runtime openvino, eval --runtime openvino
        daptq(*words[1:], cwd=tmp_path)
    evaluated = json.loads((tmp_path / "runs/my_pi0_ov/eval.json").read_text())
    assert evaluated["overall"]["episodes"] == 10 and not evaluated["failed_runs"]
    exported = weight_files(tmp_path / "models/my_pi0_ov")
    assert evaluated["weight_bytes"] == sum(f.stat().st_size for f in exported)
    # A second export (W8A8) to swap to, and a quantized directory without an exported model.
    calib = ["--calib", "my_sim_demos", "--method", "rtn", "--bins", "1"]
    daptq("quantize", "--model", "models/my_pi0_sim", *calib, "--config", "w8a8",
          "--runtime", "openvino", "--out", "models/my_pi0_ov8", cwd=tmp_path)  # fmt: skip
    daptq("quantize", "--model", "models/my_pi0_sim", *calib, "--out", "models/my_pi0_torch",
          cwd=tmp_path)  # fmt: skip

    probe = Probe("daptq_openvino_probe")
    status = probe.record(PolicyStatus, "/policy_node/status", LATCHED_QOS)
    diagnostics = probe.record(DiagnosticArray, "/diagnostics", RELIABLE_QOS)
    commands = probe.record(JointTrajectory, COMMAND_TOPIC, RELIABLE_QOS)
    launch = readme_launch(launch_line, tmp_path / "log", cwd=tmp_path)
    try:
        wait_for(lambda: latest(status), 120, "the policy node's status\n" + launch.tail())
        node = wait_for(lambda: diagnostic(diagnostics, "daptq policy_node"), 30, "diagnostics")
        values = diagnostic_values(node)
        assert values["runtime"] == "openvino" and not values["runtime_warning"], values
        enabled_and_moving(probe, status)
        wait_for(lambda: len(commands) > 20, patience(30, status), "joint commands to the arm")
        _, limits, _ = command_limits("sawyer_sim")
        points = np.array([p.positions for _, msg in list(commands) for p in msg.points])
        assert np.all(points >= limits.lower - 1e-9) and np.all(points <= limits.upper + 1e-9)
        assert ros2("service", "call", "/policy_node/enable", "std_srvs/srv/SetBool",
                    "{data: false}").returncode == 0  # fmt: skip

        swapped = str(tmp_path / "models/my_pi0_ov8")
        assert ros2("param", "set", "/policy_node", "bit_config", swapped).returncode == 0
        wait_for(
            lambda: latest(status).bit_config == swapped and not latest(status).swap_in_progress,
            patience(60, status),
            "the swap to the W8A8 export\n" + launch.tail(),
        )

        def swap_time() -> float:  # the swap's build time, measured by the node
            found = diagnostic(diagnostics, "daptq policy_node")
            return float(diagnostic_values(found).get("last_swap_s", 0.0))

        wait_for(lambda: swap_time() > 0, patience(10, status), "the swap time on /diagnostics")
        unexported = str(tmp_path / "models/my_pi0_torch")
        assert ros2("param", "set", "/policy_node", "bit_config", unexported).returncode == 0

        def warned():
            found = diagnostic(diagnostics, "daptq policy_node")
            return found if "running torch" in found.message else None

        warning = wait_for(warned, patience(60, status), "the torch fallback's warning")
        assert level(warning) == 1 and "my_pi0_torch" in warning.message
        assert diagnostic_values(warning)["runtime"] == "torch"
    finally:
        launch.stop()
        probe.close()
