"""A user's own pi0 on the real ROS 2 graph: imported, then driven by the policy node.

The README's three commands: `daptq import` (here from the tiny checkpoint of
pi0_checkpoint.py, saved with transformers' classes), `daptq quantize --method daptq` from bags
recorded on the simulated arm, and `ros2 launch daptq_ros sim.launch.py model:=DIR`.
Skipped without ROS 2 (never in CI: DAPTQ_REQUIRE_ROS=1).
"""

from __future__ import annotations

import subprocess

import pytest
from pi0_checkpoint import VIEW, save_tiny_pi0
from ros_graph import Launch, Probe, latest, moving, patience, require_ros, ros2, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.slow]
COMMAND_TOPIC = "/cartesian_motion_controller/target_frame"


def daptq(*args: str) -> None:
    done = subprocess.run(["daptq", *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def test_an_imported_and_quantized_pi0_drives_the_simulated_arm(tmp_path):
    require_ros()
    from daptq_ros_interfaces.msg import PolicyStatus
    from geometry_msgs.msg import PoseStamped

    from daptq_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    checkpoint = save_tiny_pi0(tmp_path / "my_pi0", chunk_size=50)  # pi0's own chunk length
    imported, quantized, demos = tmp_path / "imported", tmp_path / "quantized", tmp_path / "demos"
    daptq(
        "import", "--checkpoint", str(checkpoint), "--robot", "sawyer_sim", "--out", str(imported)
    )
    daptq("collect", "--tasks", "reach", "--episodes", "3", "--image-size", str(VIEW),
          "--out", str(demos))  # fmt: skip
    bits = tmp_path / "w4a8_g32.yaml"  # the tiny model is 32-64 wide: groups of 32
    bits.write_text("method: rtn\nweight_bits: 4\nactivation_bits: 8\ngroup_size: 32\n")
    daptq("quantize", "--model", str(imported), "--calib", str(demos), "--method", "daptq",
          "--config", str(bits), "--bins", "1", "--out", str(quantized))  # fmt: skip

    probe = Probe("daptq_import_probe")
    status = probe.record(PolicyStatus, "/policy_node/status", LATCHED_QOS)
    commands = probe.record(PoseStamped, COMMAND_TOPIC, RELIABLE_QOS)
    launch = Launch("sim.launch.py", {"task": "reach", "model": str(quantized)}, tmp_path / "log")
    try:
        ready = wait_for(lambda: latest(status), 120, "the policy node's status\n" + launch.tail())
        assert ready.family == "pi0" and ready.model == str(quantized)
        enabled = ros2("service", "call", "/policy_node/enable", "std_srvs/srv/SetBool",
                       "{data: true}")  # fmt: skip
        assert "success=True" in enabled.stdout, enabled.stdout + enabled.stderr
        wait_for(lambda: moving(status), patience(30, status), "the policy driving the arm")
        wait_for(lambda: len(commands) > 20, patience(20, status), "pose commands to the arm")
        running = wait_for(
            lambda: (s := latest(status)).inference_hz > 0 and s,
            patience(10, status),
            "a measured chunk rate",
        )
        assert running.bit_config == "daptq_topk" and not running.hold_reasons
    finally:
        launch.stop()
        probe.close()
