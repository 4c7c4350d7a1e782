"""Run the policy on the simulated Sawyer: bringup (robot sawyer_sim) plus the sim bridge.

    ros2 launch daptq_ros sim.launch.py task:=push
    ros2 service call /policy_node/enable std_srvs/srv/SetBool "{data: true}"
    ros2 param set /sim_bridge seed 100001
    ros2 service call /sim_bridge/reset std_srvs/srv/Trigger

dry_run defaults to false here, since nothing real moves.
"""

import time
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description import LaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from daptq_ros.robot.params import SIM_BLEND_TIME_S, SIM_COMMAND_INTERFACES, SIM_TASKS

SHARE = Path(get_package_share_directory("daptq_ros"))


def generate_launch_description() -> LaunchDescription:
    """The sim bridge and bringup.launch.py with the sawyer_sim robot on simulation time."""
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "task", default_value="push", choices=list(SIM_TASKS), description="MetaWorld task"
            ),
            DeclareLaunchArgument(
                "seed", default_value="100000", description="seed of the first episode's layout"
            ),
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
                "command_interface",
                default_value="pose",
                choices=list(SIM_COMMAND_INTERFACES),
                description="how commands reach the simulated arm",
            ),
            DeclareLaunchArgument(
                "dry_run", default_value="false", description="publish on ~/debug/* only"
            ),
            DeclareLaunchArgument(
                "record", default_value="false", description="record the run with ros2 bag (MCAP)"
            ),
            DeclareLaunchArgument(
                "bag_dir",
                default_value=time.strftime("daptq_sim_%Y%m%d_%H%M%S"),
                description="folder the recording goes to (must not exist yet)",
            ),
            DeclareLaunchArgument(
                "real_time_factor",
                default_value="1.0",
                description="simulated seconds per wall second; every node follows /clock",
            ),
            DeclareLaunchArgument(
                "control_hz",
                default_value="0.0",
                description="inference rate, Hz (0 = half the model's chunk horizon)",
            ),
            DeclareLaunchArgument(
                "blend_time_s",
                default_value=str(SIM_BLEND_TIME_S),
                description="s to blend into the policy after ~/enable (short: episodes last ~2 s)",
            ),
            DeclareLaunchArgument(
                "reference_bag",
                default_value="",
                description="rosbag2 run the drift monitor compares against (e.g. an FP32 run)",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="true",
                description="policy node and drift monitor follow the sim bridge's /clock",
            ),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(str(SHARE / "launch" / "bringup.launch.py")),
                launch_arguments={
                    "robot": "sawyer_sim",
                    "model": LaunchConfiguration("model"),
                    "bit_config": LaunchConfiguration("bit_config"),
                    "runtime": LaunchConfiguration("runtime"),
                    "command_interface": LaunchConfiguration("command_interface"),
                    "dry_run": LaunchConfiguration("dry_run"),
                    "record": LaunchConfiguration("record"),
                    "bag_dir": LaunchConfiguration("bag_dir"),
                    "use_sim_time": LaunchConfiguration("use_sim_time"),
                    "control_hz": LaunchConfiguration("control_hz"),
                    "blend_time_s": LaunchConfiguration("blend_time_s"),
                    "reference_bag": LaunchConfiguration("reference_bag"),
                }.items(),
            ),
            Node(
                package="daptq_ros",
                executable="sim_bridge",
                name="sim_bridge",
                output="screen",
                parameters=[
                    str(SHARE / "config" / "sim_bridge.yaml"),
                    {
                        "task": ParameterValue(LaunchConfiguration("task"), value_type=str),
                        "seed": ParameterValue(LaunchConfiguration("seed"), value_type=int),
                        "command_interface": ParameterValue(
                            LaunchConfiguration("command_interface"), value_type=str
                        ),
                        "real_time_factor": ParameterValue(
                            LaunchConfiguration("real_time_factor"), value_type=float
                        ),
                    },
                ],
            ),
        ]
    )
