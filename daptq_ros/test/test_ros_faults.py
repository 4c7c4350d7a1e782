"""Faults injected on the live graph: the arm holds and the node says why (status, diagnostics).

`ros2 launch daptq_ros bringup.launch.py robot:=sawyer_sim dry_run:=false` drives a fake arm
that the test plays: camera, joint states and end-effector pose, whose hand follows the pose
commands. Each fault is injected as it happens on a robot (a stream stops, a bad parameter, an
e-stop; a model that returns NaN in test_ros_nan_policy.py) and checked within the watchdog
timeout (plus the status period). The stopped /clock and the restarted simulator are in
test_ros_sim_graph.py.
Skipped without ROS 2 (CI installs it and sets DAPTQ_REQUIRE_ROS=1, so it never skips there).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from ros_graph import (
    SAWYER_JOINTS,
    FakeArm,
    Launch,
    Probe,
    diagnostic,
    enable,
    enabled_and_moving,
    latest,
    level,
    moving,
    patience,
    reaction,
    require_ros,
    ros2,
    since,
    wait_for,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

COMMAND_TOPIC = "/cartesian_motion_controller/target_frame"
HOME = (0.0, 0.6, 0.2)
IMAGE_TIMEOUT_S = 0.5  # policy_node.yaml
JOINT_STATES_TIMEOUT_S = 0.2
NODE_STATUS = "daptq policy_node"
OK, WARN, ERROR, STALE = 0, 1, 2, 3


def start(folder: Path, probe: Probe, **arguments: str) -> Launch:
    """bringup.launch.py on the sawyer_sim preset, real time, commanding the fake arm."""
    args = {"robot": "sawyer_sim", "dry_run": "false", "blend_time_s": "0.1", **arguments}
    return Launch("bringup.launch.py", args, folder / "launch.log")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A copy of the embedded pi0 that the node runs (a test damages its weights on disk)."""
    import shutil

    from daptq_ros.policy.model_dir import default_model_dir

    return shutil.copytree(default_model_dir("pi0"), tmp_path_factory.mktemp("model") / "pi0")


@pytest.fixture(scope="module")
def arm(tmp_path_factory, model):
    """The launched policy node and drift monitor, the fake arm, and the probe's records."""
    require_ros()
    from daptq_ros_interfaces.msg import PolicyStatus
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String

    from daptq_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    folder = tmp_path_factory.mktemp("faults")
    probe = Probe()
    fake = FakeArm(probe, SAWYER_JOINTS, np.zeros(9), pose=HOME)
    status = probe.record(PolicyStatus, "/policy_node/status", LATCHED_QOS)
    diagnostics = probe.record(DiagnosticArray, "/diagnostics", RELIABLE_QOS)
    probe.publisher(String, "/instruction", LATCHED_QOS).publish(String(data="reach the goal"))
    launch = start(folder, probe, model=str(model))
    try:
        wait_for(lambda: latest(status), 120, "the policy node's status\n" + launch.tail())
        yield launch, probe, fake, status, diagnostics
    finally:
        launch.stop()
        probe.close()


@pytest.mark.parametrize(
    ("stream", "timeout"), [("camera", IMAGE_TIMEOUT_S), ("joint_states", JOINT_STATES_TIMEOUT_S)]
)
def test_a_stopped_input_holds_the_arm_and_the_reason_is_reported(arm, stream, timeout):
    _, probe, fake, status, diagnostics = arm
    reason = "image" if stream == "camera" else stream
    enabled_and_moving(probe, status)
    fake.streams[stream] = False
    try:
        held = wait_for(
            lambda: (s := latest(status)).safety_status == "hold" and s,
            reaction(timeout, status),
            f"hold after the {stream} stopped",
        )
        assert any(r.startswith(reason) for r in held.hold_reasons), held.hold_reasons
        # A WARN may already stand for another reason (inference outlasting a chunk on a slow
        # CPU): wait for the one that names the stopped stream.
        wait_for(
            lambda: (
                (d := diagnostic(diagnostics, NODE_STATUS))
                and level(d) == WARN
                and reason in d.message
            ),
            reaction(timeout, status),
            f"/diagnostics WARN naming {reason}",
        )
        # Held: the commanded hand position comes to rest.
        time.sleep(0.5)
        settled = time.monotonic()
        time.sleep(0.3)
        moves = [m.pose.position.x for _, m in since(fake.commands, settled)]
        assert moves and np.ptp(moves) < 1e-3
    finally:  # a failure here must not leave the stream stopped for the next tests
        fake.streams[stream] = True
    wait_for(
        lambda: moving(status), patience(10, status), f"driving again once the {stream} is back"
    )


def test_invalid_parameter_values_are_refused_with_the_reason(arm):
    _, _, _, status, _ = arm
    too_fast = ros2("param", "set", "/policy_node", "velocity_scale", "5.0")
    assert "out of range" in too_fast.stdout + too_fast.stderr
    unknown = ros2("param", "set", "/policy_node", "bit_config", "w5a5")
    assert "w5a5" in unknown.stdout + unknown.stderr
    static = ros2("param", "set", "/policy_node", "command_hz", "10.0")
    assert "read-only" in (static.stdout + static.stderr).lower()
    assert latest(status).bit_config == "fp32"


def test_a_swap_while_enabled_is_refused(arm):
    _, probe, _, status, _ = arm
    enabled_and_moving(probe, status)
    refused = ros2("param", "set", "/policy_node", "bit_config", "w8a16")
    assert "enabled" in refused.stdout + refused.stderr
    # Still enabled on the old model; a loaded CPU may briefly hold for a late camera frame.
    assert latest(status).bit_config == "fp32" and latest(status).enabled
    wait_for(lambda: moving(status), patience(10, status), "the old model still driving")


def test_a_config_no_kernel_runs_is_refused_when_set(arm, tmp_path):
    _, probe, _, status, _ = arm
    assert enable(probe, False)[0]
    config = tmp_path / "g96.yaml"  # valid for simulation: no deployed kernel takes groups of 96
    config.write_text("method: rtn\nweight_bits: 4\ngranularity: group\ngroup_size: 96\n")
    refused = ros2("param", "set", "/policy_node", "bit_config", str(config))
    said = refused.stdout + refused.stderr
    assert "group_size 96" in said and "32, 64, 128" in said, said
    assert latest(status).bit_config == "fp32"


def test_a_swap_that_fails_to_build_keeps_the_old_model_and_says_why(arm, model):
    _, probe, _, status, diagnostics = arm
    assert enable(probe, False)[0]
    # The weights damaged on disk after start: the new bit config cannot be built from them.
    weights = model / "model.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[: len(intact) // 2])
    try:
        accepted = ros2("param", "set", "/policy_node", "bit_config", "w8a16")
        assert "Set parameter successful" in accepted.stdout, accepted.stdout + accepted.stderr
        wait_for(
            lambda: (d := diagnostic(diagnostics, NODE_STATUS)) and "swap failed" in d.message,
            patience(60, status),
            "the failed swap on /diagnostics",
        )
    finally:
        weights.write_bytes(intact)
    error = diagnostic(diagnostics, NODE_STATUS)
    assert level(error) == ERROR and "model.safetensors" in error.message, error.message
    assert latest(status).bit_config == "fp32"
    enabled_and_moving(probe, status)  # the old model still drives


def test_estop_holds_and_enable_is_refused_until_reset(arm):
    _, probe, _, status, diagnostics = arm
    enabled_and_moving(probe, status)
    stopped = ros2("service", "call", "/policy_node/estop", "std_srvs/srv/Trigger")
    assert "success=True" in stopped.stdout
    wait_for(lambda: latest(status).estopped, reaction(0.0, status), "estopped on status")
    error = wait_for(
        lambda: (d := diagnostic(diagnostics, NODE_STATUS)) and level(d) == ERROR and d,
        reaction(1.0, status),
        "/diagnostics ERROR after the e-stop",
    )
    assert "e-stop" in error.message
    ok, message = enable(probe)
    assert not ok and "reset_estop" in message and "()" not in message
    reset = ros2("service", "call", "/policy_node/reset_estop", "std_srvs/srv/Trigger")
    assert "success=True" in reset.stdout
    enabled_and_moving(probe, status)


def test_a_swap_while_disabled_serves_the_new_bit_config(arm):
    _, probe, _, status, _ = arm
    assert enable(probe, False)[0]
    swapped = ros2("param", "set", "/policy_node", "bit_config", "w4a16")
    assert "Set parameter successful" in swapped.stdout, swapped.stdout + swapped.stderr
    wait_for(lambda: latest(status).bit_config == "w4a16", 60, "bit_config w4a16 on status")
    enabled_and_moving(probe, status)


def test_the_drift_monitor_is_stale_without_a_reference_and_can_ask_for_estops(arm):
    _, _, _, status, diagnostics = arm
    monitor = wait_for(
        lambda: diagnostic(diagnostics, "daptq drift_monitor"),
        patience(5, status),
        "the drift monitor's diagnostics",
    )
    assert level(monitor) == STALE and "reference_bag" in monitor.message
    switched = ros2("param", "set", "/drift_monitor", "estop_on_error", "true")
    assert "Set parameter successful" in switched.stdout, switched.stdout + switched.stderr
