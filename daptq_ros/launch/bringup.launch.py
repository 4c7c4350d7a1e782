"""Start the policy node and the drift monitor; with record:=true, record the run as MCAP.

    ros2 launch daptq_ros bringup.launch.py robot:=panda command_interface:=joint_trajectory

The launch arguments below win over params_file. dry_run defaults to true: the policy computes
and publishes on ~/debug/* only until it is relaunched with dry_run:=false (or the parameter is
set) and enabled with `ros2 service call /policy_node/enable std_srvs/srv/SetBool "{data: true}"`.
"""

import os
import time
from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from daptq_ros.control.commands import COMMAND_INTERFACES
from daptq_ros.robot.params import load_node_yaml
from daptq_ros.robot.recording import ros2_bag_problem

SHARE = Path(get_package_share_directory("daptq_ros"))
# Recorded with the command topic: what the offline drift analysis and `daptq drift` read.
RECORDED_TOPICS = [
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
]


def _command_topic(context: LaunchContext) -> str:
    """The topic the policy node commands the arm on: params_file's, else the robot preset's."""
    params_file = LaunchConfiguration("params_file").perform(context)
    if topic := load_node_yaml(params_file, "policy_node").get("command_topic"):
        return str(topic)
    robot = LaunchConfiguration("robot").perform(context)
    is_path = robot.endswith((".yaml", ".yml")) or os.sep in robot
    preset = Path(robot) if is_path else SHARE / "config" / "robots" / f"{robot}.yaml"
    interface = LaunchConfiguration("command_interface").perform(context)
    topics = yaml.safe_load(preset.read_text()).get("command_topics", {})
    if interface not in topics:
        raise RuntimeError(f"{preset}: no command topic for command_interface {interface!r}")
    return topics[interface]


def _record(context: LaunchContext) -> list[ExecuteProcess]:
    """`ros2 bag record` of the run's topics into bag_dir, as MCAP; fails the launch without it.

    On Humble, MCAP needs the apt package ros-humble-rosbag2-storage-mcap (Jazzy ships it).
    """
    if problem := ros2_bag_problem():
        raise RuntimeError(problem)
    bag_dir = LaunchConfiguration("bag_dir").perform(context)
    topics = [*RECORDED_TOPICS, _command_topic(context)]
    return [
        ExecuteProcess(
            cmd=["ros2", "bag", "record", "-s", "mcap", "-o", bag_dir, *topics], output="screen"
        )
    ]


def generate_launch_description() -> LaunchDescription:
    """The policy node, the drift monitor and, with record:=true, the recorder."""
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "model", default_value="default", description="model directory, or 'default'"
            ),
            DeclareLaunchArgument(
                "bit_config",
                default_value="fp32",
                description="bit configuration preset (config/bits/) or YAML path",
            ),
            DeclareLaunchArgument(
                "runtime",
                default_value="torch",
                choices=["torch", "openvino"],
                description="inference runtime (openvino: the model `daptq quantize --runtime "
                "openvino` exported)",
            ),
            DeclareLaunchArgument(
                "robot",
                default_value="sawyer_sim",
                description="robot preset (config/robots/: panda, ur5e, so101, sawyer_sim) or YAML",
            ),
            DeclareLaunchArgument(
                "command_interface",
                default_value="pose",
                choices=list(COMMAND_INTERFACES),
                description="how commands reach the arm controller",
            ),
            DeclareLaunchArgument(
                "dry_run",
                default_value="true",
                description="compute and publish on ~/debug/* only; nothing reaches the arm",
            ),
            DeclareLaunchArgument(
                "record", default_value="false", description="record the run with ros2 bag (MCAP)"
            ),
            DeclareLaunchArgument(
                "bag_dir",
                default_value=time.strftime("daptq_%Y%m%d_%H%M%S"),
                description="folder the recording goes to (must not exist yet)",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=str(SHARE / "config" / "policy_node.yaml"),
                description="ROS 2 parameters file (its policy_node and drift_monitor sections)",
            ),
            DeclareLaunchArgument(
                "use_sim_time", default_value="false", description="follow /clock (simulation)"
            ),
            DeclareLaunchArgument(
                "control_hz",
                default_value="0.0",
                description="inference rate, Hz (0 = half the model's chunk horizon)",
            ),
            DeclareLaunchArgument(
                "blend_time_s",
                default_value="1.0",
                description="s to blend from the measured state into the policy after ~/enable",
            ),
            DeclareLaunchArgument(
                "reference_bag",
                default_value="",
                description="rosbag2 run the drift monitor compares against (e.g. an FP32 run)",
            ),
            # First, so that a launch asked to record fails before any node starts.
            OpaqueFunction(function=_record, condition=IfCondition(LaunchConfiguration("record"))),
            Node(
                package="daptq_ros",
                executable="policy_node",
                name="policy_node",
                output="screen",
                parameters=[
                    LaunchConfiguration("params_file"),
                    {
                        "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
                        "bit_config": ParameterValue(
                            LaunchConfiguration("bit_config"), value_type=str
                        ),
                        "robot": ParameterValue(LaunchConfiguration("robot"), value_type=str),
                        "runtime": ParameterValue(LaunchConfiguration("runtime"), value_type=str),
                        "command_interface": ParameterValue(
                            LaunchConfiguration("command_interface"), value_type=str
                        ),
                        "dry_run": LaunchConfiguration("dry_run"),
                        "use_sim_time": LaunchConfiguration("use_sim_time"),
                        "control_hz": ParameterValue(
                            LaunchConfiguration("control_hz"), value_type=float
                        ),
                        "blend_time_s": ParameterValue(
                            LaunchConfiguration("blend_time_s"), value_type=float
                        ),
                    },
                ],
            ),
            Node(
                package="daptq_ros",
                executable="drift_monitor",
                name="drift_monitor",
                output="screen",
                parameters=[
                    str(SHARE / "config" / "drift_monitor.yaml"),
                    LaunchConfiguration("params_file"),
                    {
                        "robot": ParameterValue(LaunchConfiguration("robot"), value_type=str),
                        "use_sim_time": LaunchConfiguration("use_sim_time"),
                        "reference_bag": ParameterValue(
                            LaunchConfiguration("reference_bag"), value_type=str
                        ),
                    },
                ],
            ),
        ]
    )
