"""Launch files, console scripts, installed data and PolicyStatus.msg, checked without ROS."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from rosbags.typesys import get_types_from_msg

from daptq_ros.robot.params import NODE_PARAMS, ROS_BUILTIN, spec

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((PACKAGE_ROOT / "launch").glob("*.launch.py"))
SETUP = ast.parse((PACKAGE_ROOT / "setup.py").read_text())
POLICY_STATUS = PACKAGE_ROOT.parent / "daptq_ros_interfaces" / "msg" / "PolicyStatus.msg"
RECORDED = {
    "/camera/image_raw",
    "/instruction",
    "/joint_states",
    "/ee_pose",
    "/policy_node/action_chunk",
    "/policy_node/gripper",
    "/policy_node/status",
    "/drift/report",
    "/diagnostics",
    "/clock",
    "/sim_bridge/episode",
}


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Every call of a function or class named `name` (bare or as an attribute)."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == name
    ]


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def first_string(call: ast.Call) -> str:
    assert call.args and isinstance(call.args[0], ast.Constant), ast.unparse(call)
    return call.args[0].value


def declared(tree: ast.AST) -> dict[str, ast.expr | None]:
    """Launch argument name -> its default_value expression."""
    return {
        first_string(c): keyword(c, "default_value") for c in calls(tree, "DeclareLaunchArgument")
    }


def node_overrides(call: ast.Call) -> dict[str, str | None]:
    """Parameter name -> the launch argument it is set from (None: a literal) of a Node call."""
    parameters = keyword(call, "parameters")
    assert isinstance(parameters, ast.List)
    overrides: dict[str, str | None] = {}
    for item in parameters.elts:
        if isinstance(item, ast.Dict):
            for key, value in zip(item.keys, item.values, strict=True):
                assert isinstance(key, ast.Constant)
                arguments = [first_string(c) for c in calls(value, "LaunchConfiguration")]
                overrides[key.value] = arguments[0] if arguments else None
    return overrides


def console_scripts() -> dict[str, str]:
    (setup,) = calls(SETUP, "setup")
    entry_points = ast.literal_eval(keyword(setup, "entry_points"))
    return dict(
        (part.strip() for part in line.split("=", 1)) for line in entry_points["console_scripts"]
    )


@pytest.fixture(params=LAUNCH_FILES, ids=lambda p: p.name)
def launch(request: pytest.FixtureRequest) -> ast.Module:
    return ast.parse(request.param.read_text(), filename=str(request.param))


def test_both_launch_files_exist() -> None:
    assert {p.name for p in LAUNCH_FILES} == {"bringup.launch.py", "sim.launch.py"}


def test_launch_file_defines_generate_launch_description(launch: ast.Module) -> None:
    functions = {n.name for n in launch.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions


def test_every_executable_is_a_console_script_of_a_node_module(launch: ast.Module) -> None:
    scripts = console_scripts()
    for call in calls(launch, "Node"):
        assert ast.literal_eval(keyword(call, "package")) == "daptq_ros"
        executable = ast.literal_eval(keyword(call, "executable"))
        assert scripts.get(executable) == f"daptq_ros.nodes.{executable}:main"
        assert ast.literal_eval(keyword(call, "name")) == executable


def test_every_launch_argument_used_is_declared(launch: ast.Module) -> None:
    used = {first_string(c) for c in calls(launch, "LaunchConfiguration")}
    assert used <= set(declared(launch))


def test_node_overrides_are_declared_parameters(launch: ast.Module) -> None:
    for call in calls(launch, "Node"):
        node = ast.literal_eval(keyword(call, "name"))
        for name in node_overrides(call):
            spec(node, name)  # raises ControlError for an undeclared parameter


def test_launch_argument_defaults_are_the_parameter_defaults(launch: ast.Module) -> None:
    defaults = declared(launch)
    for call in calls(launch, "Node"):
        node = ast.literal_eval(keyword(call, "name"))
        for name, argument in node_overrides(call).items():
            if argument is None:
                continue
            default = spec(node, name).default
            expected = str(default).lower() if isinstance(default, bool) else str(default)
            assert ast.literal_eval(defaults[argument]) == expected, (node, name)


def test_sim_launch_blends_as_the_lockstep_runs_assume() -> None:
    sim = ast.parse((PACKAGE_ROOT / "launch" / "sim.launch.py").read_text())
    # robot.params.sim_node_params, which the lockstep runs start from, holds the same constant.
    assert ast.unparse(declared(sim)["blend_time_s"]) == "str(SIM_BLEND_TIME_S)"


def test_params_files_leave_launch_set_parameters_alone(launch: ast.Module) -> None:
    # A value there would be silently overridden by the launch argument.
    for call in calls(launch, "Node"):
        node = ast.literal_eval(keyword(call, "name"))
        path = PACKAGE_ROOT / "config" / f"{node}.yaml"
        shipped = yaml.safe_load(path.read_text())[node]["ros__parameters"]
        assert not set(node_overrides(call)) & set(shipped), node


def test_use_sim_time_is_rclpys_own() -> None:
    assert [p.name for p in ROS_BUILTIN] == ["use_sim_time"]
    assert all("use_sim_time" not in {p.name for p in ps} for ps in NODE_PARAMS.values())


def test_sim_launch_forwards_only_bringup_arguments() -> None:
    bringup = declared(ast.parse((PACKAGE_ROOT / "launch/bringup.launch.py").read_text()))
    sim = ast.parse((PACKAGE_ROOT / "launch/sim.launch.py").read_text())
    (include,) = calls(sim, "IncludeLaunchDescription")
    source = ast.unparse(include)
    assert "bringup.launch.py" in source
    forwarded = keyword(include, "launch_arguments")
    assert isinstance(forwarded, ast.Call) and isinstance(forwarded.func, ast.Attribute)
    arguments = forwarded.func.value
    assert isinstance(arguments, ast.Dict)
    names = {ast.literal_eval(k) for k in arguments.keys if k is not None}
    assert names <= set(bringup)
    assert {"robot", "use_sim_time"} <= names
    assert 'robot": "sawyer_sim"' in ast.unparse(arguments).replace("'", '"')


def test_bringup_records_the_run_as_mcap_when_asked() -> None:
    text = (PACKAGE_ROOT / "launch/bringup.launch.py").read_text()
    tree = ast.parse(text)
    (process,) = calls(tree, "ExecuteProcess")
    command = keyword(process, "cmd")
    assert isinstance(command, ast.List)
    head = [ast.literal_eval(e) for e in command.elts if isinstance(e, ast.Constant)]
    assert head == ["ros2", "bag", "record", "-s", "mcap", "-o"]
    topics = next(
        n.value
        for n in tree.body
        if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "RECORDED_TOPICS"
    )
    assert set(ast.literal_eval(topics)) == RECORDED
    (record,) = calls(tree, "OpaqueFunction")
    assert "IfCondition(LaunchConfiguration('record'))" in ast.unparse(record)
    assert ast.literal_eval(declared(tree)["record"]) == "false"
    assert ast.literal_eval(declared(tree)["dry_run"]) == "true"
    assert "ros-humble-rosbag2-storage-mcap" in text


def test_setup_installs_launch_files_and_every_config_folder() -> None:
    (setup,) = calls(SETUP, "setup")
    data_files = ast.unparse(keyword(setup, "data_files"))
    assert "glob('launch/*.py')" in data_files
    for folder in sorted({p.parent for p in (PACKAGE_ROOT / "config").rglob("*.yaml")}):
        relative = folder.relative_to(PACKAGE_ROOT).as_posix()
        assert f"(f'share/{{PACKAGE}}/{relative}', glob('{relative}/*.yaml'))" in data_files


def test_policy_status_message_parses_with_the_documented_fields() -> None:
    name = "daptq_ros_interfaces/msg/PolicyStatus"
    constants, fields = get_types_from_msg(POLICY_STATUS.read_text(), name)[name]
    assert [(c[0], c[2]) for c in constants] == [
        ("SAFETY_DISABLED", "disabled"),
        ("SAFETY_ESTOPPED", "estopped"),
        ("SAFETY_HOLD", "hold"),
        ("SAFETY_BLENDING", "blending"),
        ("SAFETY_ACTIVE", "active"),
    ]
    assert [f[0] for f in fields] == [
        "header",
        "model",
        "family",
        "bit_config",
        "instruction",
        "enabled",
        "dry_run",
        "estopped",
        "safety_status",
        "hold_reasons",
        "inference_latency",
        "inference_hz",
        "command_hz",
        "dropped_frames",
        "rejected_actions",
        "clipped_actions",
        "swap_in_progress",
        "pending_bit_config",
        "fault",
        "chunk_method",
        "timeline_rate",
    ]


def test_policy_status_round_trips_through_cdr() -> None:
    from daptq_ros.bags import make_typestore

    store = make_typestore()
    cls = store.types["daptq_ros_interfaces/msg/PolicyStatus"]
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id=""
    )
    message = cls(
        header=header,
        model="default",
        family="cogact",
        bit_config="w4a16",
        instruction="push the puck to the goal",
        enabled=True,
        dry_run=False,
        estopped=False,
        safety_status=cls.SAFETY_HOLD,
        hold_reasons=["image stale"],
        inference_latency=0.05,
        inference_hz=9.8,
        command_hz=49.9,
        dropped_frames=3,
        rejected_actions=1,
        clipped_actions=2,
        swap_in_progress=True,
        pending_bit_config="w3a16",
        fault="the node clock jumped back",
        chunk_method="rtc (identity)",
        timeline_rate=0.5,
    )
    typename = "daptq_ros_interfaces/msg/PolicyStatus"
    assert store.deserialize_cdr(store.serialize_cdr(message, typename), typename) == message
