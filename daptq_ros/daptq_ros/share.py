"""Where the package's data (config/, models/, launch/) lives, however daptq_ros was installed.

Three layouts, searched in this order:
- the source tree (a checkout, or `pip install -e`): the folder holding setup.py;
- a ROS 2 install (`colcon build`, with or without --symlink-install): the ament index, i.e.
  `<prefix>/share/daptq_ros` for each prefix of AMENT_PREFIX_PATH that registers the package,
  and the install prefix this module itself was installed under;
- a plain `pip install`: `<sys.prefix>/share/daptq_ros`, where setup.py's data_files go.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

from daptq_ros.errors import DaptqError

PACKAGE = "daptq_ros"
AMENT_MARKER = Path("share") / "ament_index" / "resource_index" / "packages"


def share_candidates(package: str = PACKAGE) -> list[Path]:
    """Every folder that may hold `package`'s data, in search order (existing or not)."""
    candidates: list[Path] = []
    if package == PACKAGE:
        # share.py -> daptq_ros (module) -> daptq_ros (the ROS package folder, with config/)
        candidates.append(Path(__file__).resolve().parents[1])
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    registered = [p for p in prefixes if (Path(p) / AMENT_MARKER / package).is_file()]
    candidates += [Path(p) / "share" / package for p in registered]
    # <prefix>/lib/pythonX.Y/site-packages/daptq_ros/share.py -> <prefix>
    installed_prefix = Path(__file__).resolve().parents[4]
    candidates.append(installed_prefix / "share" / package)
    candidates.append(Path(sys.prefix) / "share" / package)
    return candidates


@cache
def share_dir() -> Path:
    """The folder with daptq_ros's config/ (and models/, launch/); the first that has it."""
    candidates = share_candidates()
    for candidate in candidates:
        if (candidate / "config" / "robots").is_dir():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise DaptqError(
        f"cannot find daptq_ros's data (config/, models/) in {searched}; run from the source "
        "checkout, `pip install daptq_ros/`, or `colcon build` and `source install/setup.bash`"
    )


def share_path(*parts: str) -> Path:
    """A path inside the package's data folder, e.g. share_path('config', 'bits')."""
    return share_dir().joinpath(*parts)
