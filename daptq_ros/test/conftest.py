"""Shared test settings: small CPUs, quiet torchao, offscreen rendering, the simulator check."""

import logging
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# MuJoCo fixes its GL backend when first imported, possibly by a test module's importorskip.
os.environ.setdefault("MUJOCO_GL", "egl")
logging.getLogger("torchao").setLevel(logging.ERROR)
# Kernel timings measured by the tests (and the nodes they launch) stay out of ~/.cache.
os.environ.setdefault(
    "DAPTQ_KERNEL_CACHE", str(Path(tempfile.mkdtemp(prefix="daptq-kernels-")) / "timings.json")
)


from robot_rig import rig  # noqa: E402, F401 (the fixture, for the robot tests)


@pytest.fixture
def daptq_logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """caplog that sees the daptq_ros loggers: once ROS 2's `launch` is imported (the launch
    tests are collected with the rest), loggers created afterwards are LaunchLoggers, which do
    not propagate to the root logger that caplog listens on."""
    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith("daptq_ros") and isinstance(logger, logging.Logger):
            monkeypatch.setattr(logger, "propagate", True)
    return caplog


@pytest.fixture(scope="session")
def sim_renders() -> None:
    """Skip unless MetaWorld, MuJoCo and an offscreen GL backend (EGL) work on this machine."""
    pytest.importorskip("mujoco")
    pytest.importorskip("metaworld")
    from daptq_ros.errors import SimError
    from daptq_ros.sim.env import SimEnv

    try:
        with SimEnv("reach", image_size=16) as env:
            env.reset(0)
    except SimError as error:
        pytest.skip(f"the simulator cannot render here: {error}")


# Real rosbag2 files recorded by ROS 2 itself (read-only, never copied into the repository):
# the workplace keeps them in shared/data beside the checkout; DAPTQ_ROS2_BAGS overrides.
ROS2_BAGS = Path(
    os.environ.get(
        "DAPTQ_ROS2_BAGS", Path(__file__).resolve().parents[3] / "shared" / "data" / "ros2_bags"
    )
)


def require_ros2_bags() -> Path:
    """The folder of the real ROS 2 bags; skips the calling test when it is not there."""
    if not (ROS2_BAGS / "mcap_cdr_test" / "metadata.yaml").is_file():
        pytest.skip(f"the real rosbag2 fixtures are not at {ROS2_BAGS}; set DAPTQ_ROS2_BAGS")
    return ROS2_BAGS
