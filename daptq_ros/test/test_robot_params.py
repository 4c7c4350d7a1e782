"""Node parameter declarations, the shipped params files and the robot presets, without ROS."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import yaml

from daptq_ros.control.commands import COMMAND_INTERFACES
from daptq_ros.drift.monitor import MonitorConfig
from daptq_ros.errors import ControlError
from daptq_ros.robot.param_spec import ParamSpec
from daptq_ros.robot.params import (
    NODE_PARAMS,
    ROS_BUILTIN,
    SIM_BLEND_TIME_S,
    check_overrides,
    defaults,
    load_node_yaml,
    sim_node_params,
    spec,
)
from daptq_ros.sim.tasks import TASKS

CONFIG = Path(__file__).resolve().parents[1] / "config"
PRESETS = sorted((CONFIG / "robots").glob("*.yaml"))
URDF_PRESETS = {"panda": "panda", "ur5e": "ur5", "so101": "so101"}
PRESET_KEYS = {
    "name",
    "urdf",
    "ee_frame",
    "base_frame",
    "joint_names",
    "limits",
    "workspace",
    "gripper",
    "command_topics",
    "home",
}
MUTABLE = {
    "policy_node": {
        "bit_config",
        "allow_swap_while_enabled",
        "dry_run",
        "velocity_scale",
        "acceleration_scale",
        "inject_latency_s",
        "inject_latency_jitter_s",
    },
    "drift_monitor": {"estop_on_error"},
    "sim_bridge": {"task", "seed"},
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


# ParamSpec.check


def test_check_accepts_values_of_the_defaults_type() -> None:
    assert ParamSpec("flag", False, "d").check(True) is None
    assert ParamSpec("count", 2, "d", low=1, high=64).check(64) is None
    assert ParamSpec("rate", 10.0, "d", low=0.5, high=100.0).check(0.5) is None
    assert ParamSpec("topic", "/a", "d").check("") is None


def test_check_accepts_an_integer_for_a_number() -> None:
    assert ParamSpec("rate", 10.0, "d", low=0.5, high=100.0).check(20) is None


@pytest.mark.parametrize(
    ("default", "value"),
    [(False, 1), (False, "true"), (2, True), (2, 2.5), (2, "2"), (1.0, True), (1.0, "1"), ("a", 1)],
)
def test_check_rejects_another_type(default: object, value: object) -> None:
    reason = ParamSpec("p", default, "d").check(value)  # type: ignore[arg-type]
    assert reason is not None and reason.startswith("p: ") and repr(value) in reason
    assert "wrong type" in reason


@pytest.mark.parametrize("value", [0.49, 100.01, math.nan, math.inf, -math.inf])
def test_check_rejects_numbers_out_of_range(value: float) -> None:
    reason = ParamSpec("control_hz", 10.0, "d", low=0.5, high=100.0).check(value)
    assert reason is not None
    assert reason.startswith("control_hz: ") and "from 0.5 to 100" in reason


def test_check_names_the_choices() -> None:
    param = ParamSpec("device", "cpu", "d", choices=("cpu", "cuda"))
    assert param.check("cuda") is None
    assert param.check("tpu") == "device: 'tpu' is not allowed; need one of 'cpu', 'cuda'"


def test_integer_ranges_print_as_integers() -> None:
    assert spec("sim_bridge", "seed").allowed == "an integer from 0 to 2147483647"


def test_a_default_that_breaks_its_own_declaration_is_refused() -> None:
    with pytest.raises(ControlError, match=r"rate: 0\.1 is out of range"):
        ParamSpec("rate", 0.1, "d", low=0.5, high=100.0)


# The declarations


@pytest.mark.parametrize("node", NODE_PARAMS)
def test_declarations_are_unique_described_and_leave_use_sim_time_to_rclpy(node: str) -> None:
    names = [p.name for p in NODE_PARAMS[node]]
    assert len(names) == len(set(names))
    assert "use_sim_time" not in names
    for param in NODE_PARAMS[node]:
        assert param.description and "\n" not in param.description
        if param.low is not None or param.high is not None:
            assert param.value_type in (int, float)
        assert not param.choices or param.value_type is str


@pytest.mark.parametrize("node", NODE_PARAMS)
def test_exactly_the_intended_parameters_are_mutable(node: str) -> None:
    assert {p.name for p in NODE_PARAMS[node] if not p.read_only} == MUTABLE[node]


def test_drift_monitor_defaults_are_the_monitor_configs() -> None:
    monitor = MonitorConfig()
    declared = defaults("drift_monitor")
    internal = {"capacity", "dtw_window_s", "dtw_max_samples"}  # not worth a ROS parameter
    for field in fields(MonitorConfig):
        if field.name not in internal:
            assert declared[field.name] == getattr(monitor, field.name), field.name


def test_an_unknown_task_or_interface_is_refused_with_the_choices() -> None:
    assert "reach" in spec("sim_bridge", "task").check("fly")
    assert "twist" in spec("policy_node", "command_interface").check("torque")


def test_default_bit_config_and_robot_are_shipped_presets() -> None:
    assert (CONFIG / "bits" / f"{defaults('policy_node')['bit_config']}.yaml").is_file()
    for node in ("policy_node", "drift_monitor"):
        assert (CONFIG / "robots" / f"{defaults(node)['robot']}.yaml").is_file()


# spec, defaults, check_overrides


def test_spec_finds_declared_and_builtin_parameters() -> None:
    assert spec("policy_node", "control_hz").default == 0.0
    assert spec("drift_monitor", "use_sim_time") is ROS_BUILTIN[0]


def test_spec_names_the_known_parameters_and_a_close_match() -> None:
    with pytest.raises(ControlError, match=r"did you mean 'control_hz'\?.*command_hz"):
        spec("policy_node", "contrl_hz")
    with pytest.raises(ControlError, match="known nodes: policy_node, drift_monitor, sim_bridge"):
        spec("camera_node", "rate")


def test_defaults_cover_every_declared_parameter() -> None:
    for node, params in NODE_PARAMS.items():
        assert defaults(node) == {p.name: p.default for p in params}
    assert defaults("policy_node")["dry_run"] is True


def test_check_overrides_lists_every_problem() -> None:
    assert check_overrides("policy_node", {"control_hz": 20, "use_sim_time": True}) == []
    reasons = check_overrides(
        "policy_node", {"control_hz": 500.0, "no_such": 1, "dry_run": "false"}
    )
    assert len(reasons) == 3
    assert reasons[0].startswith("control_hz: 500.0 is out of range")
    assert "policy_node has no parameter 'no_such'" in reasons[1]
    assert reasons[2].startswith("dry_run: 'false' (str) has the wrong type")


# load_node_yaml


def test_load_reads_the_nodes_sections_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
/**:
  ros__parameters: {use_sim_time: true, control_hz: 5.0}
drift_monitor:
  ros__parameters: {window_s: 2.0}
/robot1/policy_node:
  ros__parameters: {control_hz: 20.0, device: cuda}
""",
    )
    assert load_node_yaml(path, "policy_node") == {
        "use_sim_time": True,
        "control_hz": 20.0,
        "device": "cuda",
    }


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("policy_node:\n  ros__parameters: {contrl_hz: 5.0}\n", "did you mean 'control_hz'"),
        ("policy_node:\n  ros__parameters: {dry_run: 1}\n", r"dry_run: 1 \(int\)"),
        ("policy_node:\n  ros__parameters: {control_hz: 10}\n", "write 10.0"),
        ("policy_node:\n  ros__parameters: {safety: {margin: 0.1}}\n", "'safety.margin'"),
        ("policy_node:\n  ros__parameters: {device: tpu}\n", "need one of 'cpu', 'cuda'"),
        ("policy_node:\n  control_hz: 5.0\n", "'ros__parameters' mapping"),
        ("sim_bridge:\n  ros__parameters: {task: push}\n", "no section for node 'policy_node'"),
        ("- control_hz\n", "not a ROS 2 parameters file"),
        ("policy_node: {ros__parameters: [\n", "cannot read"),
    ],
)
def test_load_rejects_bad_files_naming_the_problem(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ControlError, match=match) as error:
        load_node_yaml(path, "policy_node")
    assert str(path) in str(error.value)


def test_load_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match=r"missing\.yaml: cannot read"):
        load_node_yaml(tmp_path / "missing.yaml", "policy_node")


def _node_param_files() -> list[Path]:
    return sorted(
        p
        for p in CONFIG.rglob("*.yaml")
        if isinstance(doc := yaml.safe_load(p.read_text()), dict)
        and any(isinstance(v, dict) and "ros__parameters" in v for v in doc.values())
    )


def test_each_node_has_a_shipped_params_file() -> None:
    assert {p.name for p in _node_param_files()} >= {f"{node}.yaml" for node in NODE_PARAMS}


@pytest.mark.parametrize("path", _node_param_files(), ids=lambda p: p.name)
def test_shipped_params_files_set_only_declared_parameters_with_valid_values(path: Path) -> None:
    for key in yaml.safe_load(path.read_text()):
        node = str(key).rstrip("/").rsplit("/", 1)[-1]
        nodes = list(NODE_PARAMS) if node in ("*", "**") else [node]
        assert set(nodes) <= set(NODE_PARAMS), f"{path.name} configures unknown node {key!r}"
        for name in nodes:
            assert load_node_yaml(path, name)


def test_sim_node_params_are_the_shipped_file_with_the_sim_launchs_blend() -> None:
    shipped = yaml.safe_load((CONFIG / "policy_node.yaml").read_text())
    values = shipped["policy_node"]["ros__parameters"]
    params = sim_node_params()
    assert params.keys() == defaults("policy_node").keys()
    assert all(params[name] == value for name, value in values.items() if name != "image_topics")
    assert list(params["image_topics"]) == values["image_topics"]
    # The node's own default blends for 1 s (a real arm); the sim's episodes last ~2 s.
    assert params["blend_time_s"] == SIM_BLEND_TIME_S < defaults("policy_node")["blend_time_s"]


# Robot presets


def load_preset(path: Path) -> dict:
    preset = yaml.safe_load(path.read_text())
    assert isinstance(preset, dict)
    return preset


def test_the_four_presets_are_shipped() -> None:
    assert {p.stem for p in PRESETS} == {"panda", "ur5e", "so101", "sawyer_sim"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_is_consistent(path: Path) -> None:
    preset = load_preset(path)
    assert set(preset) == PRESET_KEYS
    assert preset["name"] == path.stem
    names, limits = preset["joint_names"], preset["limits"]
    assert limits["names"] == names and len(set(names)) == len(names)
    lower, upper = np.array(limits["lower"], float), np.array(limits["upper"], float)
    for key in ("lower", "upper", "velocity", "acceleration"):
        assert len(limits[key]) == len(names), key
    assert np.all(lower < upper)
    assert np.all(np.array(limits["velocity"]) > 0) and np.all(np.array(limits["acceleration"]) > 0)
    home = np.array(preset["home"], float)
    assert home.shape == lower.shape and np.all((lower <= home) & (home <= upper))
    workspace = preset["workspace"]
    assert len(workspace["lower"]) == len(workspace["upper"]) == 3
    assert np.all(np.array(workspace["lower"]) < np.array(workspace["upper"]))
    assert workspace["max_linear_speed"] > 0 and workspace["max_linear_acceleration"] > 0
    assert isinstance(preset["gripper"], list) and not set(preset["gripper"]) & set(names)
    assert set(preset["command_topics"]) == set(COMMAND_INTERFACES)
    assert all(t.startswith("/") for t in preset["command_topics"].values())
    assert preset["ee_frame"] and preset["base_frame"]


@pytest.mark.parametrize(("preset_name", "arm"), URDF_PRESETS.items())
def test_preset_matches_its_urdf(preset_name: str, arm: str) -> None:
    pytest.importorskip("pinocchio")
    from daptq_ros.drift.kinematics import ARMS, Kinematics, KinematicsError, arm_urdf

    preset = load_preset(CONFIG / "robots" / f"{preset_name}.yaml")
    assert preset["urdf"] == arm
    try:
        urdf = arm_urdf(arm)
    except KinematicsError as error:
        pytest.skip(str(error))
    root = ET.parse(urdf).getroot()
    joints = {j.get("name"): j.find("limit") for j in root.findall("joint")}
    limits = preset["limits"]
    for i, name in enumerate(limits["names"]):
        assert float(joints[name].get("lower")) == limits["lower"][i], name
        assert float(joints[name].get("upper")) == limits["upper"][i], name
        assert limits["velocity"][i] <= float(joints[name].get("velocity")), name
    assert set(preset["gripper"]) <= set(joints)
    links = {link.get("name") for link in root.findall("link")}
    assert {preset["ee_frame"], preset["base_frame"]} <= links
    kinematics = Kinematics.from_urdf(urdf, preset["ee_frame"], ARMS[arm].gripper_joints)
    assert list(kinematics.joint_names) == preset["joint_names"]
    # base_frame is the URDF's world here: FK of home must land inside the workspace box.
    position, _ = kinematics.fk(preset["home"])
    workspace = preset["workspace"]
    assert np.all(workspace["lower"] <= position) and np.all(position <= workspace["upper"])


@pytest.mark.sim
def test_sawyer_sim_preset_matches_the_mujoco_model() -> None:
    pytest.importorskip("mujoco")
    pytest.importorskip("metaworld")
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    from daptq_ros.bags.state import GRIPPER_JOINTS
    from daptq_ros.sim.env import ARM_JOINTS

    preset = load_preset(CONFIG / "robots" / "sawyer_sim.yaml")
    assert preset["urdf"] == ""
    assert tuple(preset["joint_names"]) == ARM_JOINTS
    assert tuple(preset["gripper"]) == GRIPPER_JOINTS
    env = ALL_V3_ENVIRONMENTS[TASKS[defaults("sim_bridge")["task"]].env_name]()  # no rendering
    try:
        ranges = np.array([env.model.joint(name).range for name in ARM_JOINTS])
        assert all(env.model.joint(name).limited[0] for name in ARM_JOINTS)
        hand_space = env._HAND_SPACE
    finally:
        env.close()
    np.testing.assert_array_equal(preset["limits"]["lower"], ranges[:, 0])
    np.testing.assert_array_equal(preset["limits"]["upper"], ranges[:, 1])
    np.testing.assert_array_equal(preset["workspace"]["lower"], hand_space.low)
    np.testing.assert_array_equal(preset["workspace"]["upper"], hand_space.high)
