"""ROS-free checks of the ROS packaging: package.xml, setup.py, messages (import layering:
test_layers.py)."""

import os
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
from rosbags.typesys import get_types_from_msg

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO = PACKAGE_ROOT.parent
SOURCE = PACKAGE_ROOT / "daptq_ros"
INTERFACES = REPO / "daptq_ros_interfaces"

NODE_EXEC_DEPENDS = {
    "rclpy",
    "sensor_msgs",
    "std_msgs",
    "std_srvs",
    "trajectory_msgs",
    "geometry_msgs",
    "diagnostic_msgs",
    "cv_bridge",
    "launch_ros",
    "daptq_ros_interfaces",
}


def _package_xml(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "package" and root.get("format") == "3"
    return root


def test_daptq_ros_package_xml_declares_node_dependencies():
    root = _package_xml(PACKAGE_ROOT / "package.xml")
    assert root.findtext("name") == "daptq_ros"
    exec_depends = {e.text for e in root.findall("exec_depend")}
    assert exec_depends >= NODE_EXEC_DEPENDS
    assert root.find("export/build_type").text == "ament_python"


def test_interfaces_package_generates_messages():
    root = _package_xml(INTERFACES / "package.xml")
    assert root.findtext("name") == "daptq_ros_interfaces"
    assert root.find("export/build_type").text == "ament_cmake"
    assert "rosidl_default_generators" in {e.text for e in root.findall("buildtool_depend")}
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
    assert "rosidl_generate_interfaces" in (INTERFACES / "CMakeLists.txt").read_text()


@pytest.mark.parametrize("msg", sorted(INTERFACES.glob("msg/*.msg")), ids=lambda p: p.name)
def test_every_message_parses(msg):
    types = get_types_from_msg(msg.read_text(), f"daptq_ros_interfaces/msg/{msg.stem}")
    assert f"daptq_ros_interfaces/msg/{msg.stem}" in types


def test_drift_report_has_the_architecture_fields():
    name = "daptq_ros_interfaces/msg/DriftReport"
    fields = {
        f[0]
        for f in get_types_from_msg((INTERFACES / "msg/DriftReport.msg").read_text(), name)[name][1]
    }
    assert {
        "joint_rms_error",
        "joint_max_error",
        "joint_final_error",
        "ee_position_rmse",
        "ee_rotation_rmse",
        "dtw_distance",
        "dtw_lag",
        "level",
        "bit_config",
    } <= fields


def test_setup_cfg_puts_scripts_where_ros_finds_them():
    text = (PACKAGE_ROOT / "setup.cfg").read_text()
    assert (
        "script_dir=$base/lib/daptq_ros" in text and "install_scripts=$base/lib/daptq_ros" in text
    )


@pytest.mark.slow
def test_wheel_installs_resource_marker_package_xml_and_configs(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(PACKAGE_ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("daptq_ros-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = [n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n]
    assert "share/ament_index/resource_index/packages/daptq_ros" in data
    assert "share/daptq_ros/package.xml" in data
    shipped_presets = {Path(n).name for n in data if n.startswith("share/daptq_ros/config/bits/")}
    assert shipped_presets == {p.name for p in (PACKAGE_ROOT / "config/bits").glob("*.yaml")}
    shipped_models = {
        f"share/daptq_ros/models/{f.parent.name}/{f.name}"
        for f in (PACKAGE_ROOT / "models").glob("*/*")
        if f.is_file()
    }
    assert shipped_models <= set(data)
    launch_files = {p.name for p in (PACKAGE_ROOT / "launch").glob("*.py")}
    assert launch_files == {Path(n).name for n in data if n.startswith("share/daptq_ros/launch/")}
    assert any(n.endswith("entry_points.txt") for n in names)
    assert "bin/daptq" not in data  # pip writes the console script; bin/daptq is for colcon
    # Installed (not editable) and imported from outside the checkout, it finds its own data.
    prefix = tmp_path / "prefix"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--ignore-installed",
            "--prefix",
            str(prefix),
            wheel,
        ],
        check=True,
        capture_output=True,
    )
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    # -S: no site hooks, so the checkout's editable install cannot shadow the installed copy;
    # the dependencies still come from this interpreter's site-packages, after it.
    dependencies = sysconfig.get_paths()["purelib"]
    path = os.pathsep.join([str(site / "site-packages"), dependencies])
    env = {**os.environ, "PYTHONPATH": path, "AMENT_PREFIX_PATH": ""}
    probe = (
        "import daptq_ros.share as s, daptq_ros.robot.presets as r, daptq_ros.policy.model_dir "
        "as m; print(s.__file__, s.share_dir(), r.load_robot('panda').name, "
        "m.default_model_dir('pi0'))"
    )
    found = subprocess.run(
        [sys.executable, "-S", "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr
    module, share, robot, model = found.stdout.split()
    assert Path(module).is_relative_to(site) and robot == "panda"
    assert Path(share) == prefix / "share" / "daptq_ros"
    assert Path(model) == prefix / "share" / "daptq_ros" / "models" / "pi0_default"
