"""A policy that returns NaN on the live graph: every chunk is refused and the arm holds.

`ros2 launch daptq_ros bringup.launch.py model:=DIR` with a copy of the embedded model whose
weights are NaN, commanding the fake arm of test_ros_faults.py (a module of its own: one
policy_node at a time). Skipped without ROS 2 (never in CI: DAPTQ_REQUIRE_ROS=1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ros_graph import (
    SAWYER_JOINTS,
    FakeArm,
    Probe,
    diagnostic,
    enable,
    latest,
    level,
    patience,
    require_ros,
    wait_for,
)
from test_ros_faults import ERROR, HOME, NODE_STATUS, start

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_nan_chunks_are_refused_and_the_arm_holds(tmp_path):
    """A model whose weights hold NaN: every chunk is refused, the arm never moves."""
    require_ros()
    from daptq_ros_interfaces.msg import PolicyStatus
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String

    from daptq_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    model = nan_model(tmp_path / "nan_model")
    probe = Probe("daptq_nan_probe")
    fake = FakeArm(probe, SAWYER_JOINTS, np.zeros(9), pose=HOME)
    status = probe.record(PolicyStatus, "/policy_node/status", LATCHED_QOS)
    diagnostics = probe.record(DiagnosticArray, "/diagnostics", RELIABLE_QOS)
    probe.publisher(String, "/instruction", LATCHED_QOS).publish(String(data="reach the goal"))
    launch = start(tmp_path, probe, model=str(model))
    try:
        wait_for(lambda: latest(status), 120, "the policy node's status\n" + launch.tail())
        wait_for(lambda: enable(probe)[0], patience(10, status), "~/enable to succeed")
        held = wait_for(
            lambda: (
                (s := latest(status)).safety_status == "hold"
                and any("NaN" in r for r in s.hold_reasons)
                and s
            ),
            patience(5.0, status),
            "hold, with the refused NaN chunks as the reason",
        )
        assert held.enabled and held.inference_hz == 0.0
        error = wait_for(
            lambda: (d := diagnostic(diagnostics, NODE_STATUS)) and level(d) == ERROR and d,
            patience(2.0, status),
            "/diagnostics ERROR",
        )
        assert "NaN" in error.message
        moves = [m.pose.position for _, m in list(fake.commands)]
        assert all(abs(p.x - HOME[0]) < 1e-6 for p in moves)
    finally:
        launch.stop()
        probe.close()


def nan_model(folder: Path) -> Path:
    """A copy of the embedded pi0 whose action head's output layer is NaN."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from daptq_ros.policy.model_dir import default_model_dir

    shutil.copytree(default_model_dir("pi0"), folder)
    weights = load_file(folder / "model.safetensors")
    for name, value in weights.items():
        if value.dtype.kind == "f":
            weights[name] = np.full_like(value, np.nan)
    save_file(weights, folder / "model.safetensors")
    return folder
