"""Whether `ros2 bag record` can record MCAP here, checked before a launch starts recording.

A launch that was asked to record must fail at start when it cannot, rather than run and
record nothing. The check reads the ament index (AMENT_PREFIX_PATH), as `ros2 pkg list` does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from daptq_ros.share import AMENT_MARKER

# ros2bag: the `ros2 bag` verb; rosbag2_storage_mcap: the MCAP storage plugin.
RECORDER_PACKAGES = ("ros2bag", "rosbag2_storage_mcap")


def ros2_bag_problem(env: Mapping[str, str] | None = None) -> str:
    """Why `ros2 bag record -s mcap` cannot run with `env` (default: os.environ); "" if it can."""
    env = os.environ if env is None else env
    if shutil.which("ros2", path=env.get("PATH", "")) is None:
        return "record:=true needs the ros2 command, which is not on PATH; source ROS 2 first"
    prefixes = [Path(p) for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    missing = [
        package
        for package in RECORDER_PACKAGES
        if not any((prefix / AMENT_MARKER / package).is_file() for prefix in prefixes)
    ]
    if not missing:
        return ""
    return (
        f"record:=true needs `ros2 bag` with MCAP storage, but {', '.join(missing)} is not "
        "installed in this ROS 2 (AMENT_PREFIX_PATH); install rosbag2 (e.g. apt install "
        "ros-$ROS_DISTRO-rosbag2 ros-$ROS_DISTRO-rosbag2-storage-mcap), or launch with "
        "record:=false"
    )
