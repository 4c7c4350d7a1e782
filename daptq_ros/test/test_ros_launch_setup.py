"""What a colcon install gives a user before any node runs: data, `daptq` on PATH, launch checks.

Skipped without ROS 2 (CI installs it and sets DAPTQ_REQUIRE_ROS=1, so it never skips there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ros_graph import require_ros

pytestmark = [pytest.mark.ros]


def installed_prefix() -> Path:
    """The colcon install prefix of daptq_ros, from the ament index."""
    from ament_index_python.packages import get_package_prefix

    return Path(get_package_prefix("daptq_ros"))


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=env, check=False, cwd="/"
    )


def test_the_colcon_install_finds_its_own_data_outside_the_source_tree():
    require_ros()
    prefix = installed_prefix()
    found = run(
        [
            "python",
            "-c",
            "import daptq_ros, daptq_ros.share as s; print(daptq_ros.__file__, s.share_dir())",
        ]
    )
    assert found.returncode == 0, found.stderr
    module, share = found.stdout.split()
    assert Path(module).is_relative_to(prefix)  # the installed copy, not the checkout
    assert Path(share) == prefix / "share" / "daptq_ros"
    presets = run(
        ["python", "-c", "from daptq_ros.robot.presets import list_robots as l; print(l())"]
    )
    assert "sawyer_sim" in presets.stdout, presets.stderr


def test_daptq_is_on_path_after_sourcing_the_install():
    require_ros()
    assert shutil.which("daptq") == str(installed_prefix() / "bin" / "daptq")
    shown = run(["daptq", "--help"])
    assert shown.returncode == 0 and "drift" in shown.stdout, shown.stderr


def test_record_without_ros2_bag_fails_at_start_with_the_reason():
    require_ros()
    # The same ROS 2, but with rosbag2 left out of the ament index.
    keep = [p for p in os.environ["AMENT_PREFIX_PATH"].split(os.pathsep) if "daptq" in p]
    env = {**os.environ, "AMENT_PREFIX_PATH": os.pathsep.join(keep)}
    done = run(["ros2", "launch", "daptq_ros", "bringup.launch.py", "record:=true"], env)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "record:=true needs `ros2 bag`" in output and "ros2bag" in output
    assert "process started" not in output  # nothing ran


def test_the_sim_launch_offers_only_the_interfaces_the_bridge_takes():
    require_ros()
    done = run(
        ["ros2", "launch", "daptq_ros", "sim.launch.py", "command_interface:=position_array"]
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "process started" not in output
    assert "'pose', 'twist', 'joint_trajectory'" in output, output[-2000:]


def test_a_bad_preset_or_reference_bag_stops_the_nodes_with_one_line_each():
    require_ros()
    bringup = ["ros2", "launch", "daptq_ros", "bringup.launch.py"]
    done = run([*bringup, "robot:=no_such_arm", "reference_bag:=/no/such/bag"])
    output = done.stdout + done.stderr
    assert "robot 'no_such_arm' is neither a preset nor a YAML file" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
