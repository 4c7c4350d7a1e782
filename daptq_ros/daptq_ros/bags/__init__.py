"""rosbag2 episodes without ROS: typestore, reading, writing, message <-> numpy, trajectories."""

from daptq_ros.bags.convert import (
    JointSample,
    PoseSample,
    image_msg,
    image_to_numpy,
    joint_state_msg,
    joint_state_to_numpy,
    ns_to_time,
    pose_stamped_msg,
    pose_stamped_to_numpy,
    sec_to_ns,
    sec_to_time,
    time_to_ns,
    time_to_sec,
)
from daptq_ros.bags.episode import EpisodeData, EpisodeMeta, EpisodeWriter, read_episode
from daptq_ros.bags.reader import (
    BagInfo,
    BagMessage,
    BagReader,
    TopicInfo,
    bag_dir,
    bag_info,
    find_bag_dirs,
)
from daptq_ros.bags.trajectory import JointTrajectory, PoseTrajectory, Trajectory, read_trajectory
from daptq_ros.bags.typestore import interface_types, make_typestore
from daptq_ros.bags.writer import BagWriter

__all__ = [
    "BagInfo",
    "BagMessage",
    "BagReader",
    "BagWriter",
    "EpisodeData",
    "EpisodeMeta",
    "EpisodeWriter",
    "JointSample",
    "JointTrajectory",
    "PoseSample",
    "PoseTrajectory",
    "TopicInfo",
    "Trajectory",
    "bag_dir",
    "bag_info",
    "find_bag_dirs",
    "image_msg",
    "image_to_numpy",
    "interface_types",
    "joint_state_msg",
    "joint_state_to_numpy",
    "make_typestore",
    "ns_to_time",
    "pose_stamped_msg",
    "pose_stamped_to_numpy",
    "read_episode",
    "read_trajectory",
    "sec_to_ns",
    "sec_to_time",
    "time_to_ns",
    "time_to_sec",
]
