"""The time base of `daptq drift`: recorded stamps when two recordings share their time.

Two streams of one robot run (here an Odometry and a PoseWithCovarianceStamped stream of the
same motion) that start 5 s apart at different rates must be compared at the same instants;
separate rollouts (episode metadata, or recordings made at different times) keep their starts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from drift_episodes import write_episode
from scipy.spatial.transform import Rotation

from daptq_ros.bags import BagWriter, joint_state_msg
from daptq_ros.bags.convert import header
from daptq_ros.cli import main
from daptq_ros.drift.analysis import (
    META_EPISODE,
    META_SEED,
    META_TASK,
    Episode,
    Sources,
    analyze,
    choose_time_base,
)
from daptq_ros.drift.metrics import Trajectory
from daptq_ros.errors import DriftError

T0 = 1_700_000_000_000_000_000
HOUR_NS = 3_600_000_000_000
JOINTS = ("j1", "j2")
ODOMETRY = "nav_msgs/msg/Odometry"
POSE_COVARIANCE = "geometry_msgs/msg/PoseWithCovarianceStamped"


def motion(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joints [N, 2], positions [N, 3] and quaternions xyzw [N, 4] at t s after T0."""
    joints = np.stack([np.sin(0.5 * t), np.cos(0.3 * t)], axis=1)
    positions = np.stack(
        [0.4 + 0.2 * np.cos(0.4 * t), 0.2 * np.sin(0.4 * t), 0.3 + 0.05 * np.sin(0.7 * t)],
        axis=1,
    )
    turn = Rotation.from_rotvec(np.outer(t, [0.0, 0.0, 0.3])) * Rotation.from_rotvec([0.2, 0, 0])
    return joints, positions, turn.as_quat()


def pose_with_covariance(types: dict[str, Any], xyz: Sequence[float], xyzw: Sequence[float]):
    x, y, z = map(float, xyz)
    qx, qy, qz, qw = map(float, xyzw)
    pose = types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](x=x, y=y, z=z),
        orientation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
    )
    return types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36))


def pose_message(types: dict[str, Any], msgtype: str, stamp: int, xyz, xyzw) -> Any:
    """An Odometry (twist zero) or a PoseWithCovarianceStamped of one pose."""
    pose = pose_with_covariance(types, xyz, xyzw)
    if msgtype == POSE_COVARIANCE:
        return types[msgtype](header=header(types, stamp, "map"), pose=pose)
    zero = types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
    twist = types["geometry_msgs/msg/Twist"](linear=zero, angular=zero)
    return types[msgtype](
        header=header(types, stamp, "odom"),
        child_frame_id="tool",
        pose=pose,
        twist=types["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)),
    )


def write_stream(
    path: Path,
    msgtype: str,
    start_s: float,
    rate_hz: float,
    end_s: float = 20.0,
    offset: Sequence[float] = (0.0, 0.0, 0.0),
):
    """/joint_states and /ee (`msgtype`) of `motion` (+ `offset` m) from start_s to end_s s."""
    t = np.arange(start_s, end_s + 1e-9, 1.0 / rate_hz)
    joints, positions, quats = motion(t)
    positions = positions + np.asarray(offset)
    with BagWriter(path) as writer:
        writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        writer.add_topic("/ee", msgtype)
        for i, seconds in enumerate(t):
            stamp = T0 + round(seconds * 1e9)
            writer.write(
                "/joint_states", joint_state_msg(writer.types, stamp, JOINTS, joints[i]), stamp
            )
            message = pose_message(writer.types, msgtype, stamp, positions[i], quats[i])
            writer.write("/ee", message, stamp + 1_000)


@pytest.fixture(scope="module")
def one_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Odometry at 50 Hz from 0 s (reference) and localisation at 30 Hz from 5 s (run)."""
    folder = tmp_path_factory.mktemp("one_run")
    write_stream(folder / "odom", ODOMETRY, 0.0, 50.0)
    write_stream(folder / "localisation", POSE_COVARIANCE, 5.0, 30.0)
    return folder / "localisation", folder / "odom"


def test_streams_of_one_run_are_compared_at_the_same_instants(one_run):
    run, reference = one_run
    (result,) = analyze([run], reference, Sources(ee_topic="/ee")).episodes
    assert result.time.base == "absolute" and "overlap" in result.time.reason
    assert result.time.start_offset_s == pytest.approx(5.0, abs=1e-6)
    m = result.metrics
    assert m.samples == 451 and m.start == pytest.approx(5.0, abs=1e-6)
    assert m.ee_position_rmse < 1e-4 and m.ee_rotation_rmse < 1e-6
    assert m.ape_translation_rmse < 1e-4 and m.ape_rotation_rmse < 1e-4
    assert max(m.joint_rms_error) < 1e-3
    assert m.dtw_lag == pytest.approx(0.0, abs=0.02)


def test_start_time_base_is_still_available(one_run):
    """Re-zeroed at their first samples, the run is compared 5 s off: a large error."""
    run, reference = one_run
    (result,) = analyze([run], reference, Sources(ee_topic="/ee"), time_base="start").episodes
    assert result.time.base == "start" and result.time.reason.startswith("asked for")
    assert result.time.start_offset_s == pytest.approx(5.0, abs=1e-6)
    assert result.metrics.start == 0.0
    assert result.metrics.ee_position_rmse > 0.1


def test_cli_reports_the_time_base(one_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run, reference = one_run
    argv = ["drift", "--run", str(run), "--reference", str(reference), "--ee-topic", "/ee"]
    assert main([*argv, "--out", str(tmp_path / "auto"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["time_base"] == "auto"
    (episode,) = record["episodes"]
    assert episode["time_base"]["base"] == "absolute"
    assert episode["time_base"]["start_offset_s"] == pytest.approx(5.0, abs=1e-6)
    assert episode["metrics"]["ee_position_rmse"] < 1e-4
    text = (tmp_path / "auto" / "report.md").read_text()
    assert "absolute: the recorded stamps as they are for 1 episode(s)" in text
    assert "run starts +5 s after the reference, compared at the same instants" in text
    assert "| absolute (run +5 s) |" in text
    assert main([*argv, "--time-base", "start", "--out", str(tmp_path / "start"), "--json"]) == 0
    (episode,) = json.loads(capsys.readouterr().out)["episodes"]
    assert episode["time_base"]["base"] == "start"
    assert episode["metrics"]["ee_position_rmse"] > 0.1
    assert "start: each episode re-zeroed" in (tmp_path / "start" / "report.md").read_text()


def test_recordings_at_different_times_keep_their_starts(tmp_path: Path):
    """Two rollouts an hour apart: auto re-zeroes each; absolute is refused with the fix."""
    write_episode(tmp_path / "ref", rate_hz=50.0)
    write_episode(tmp_path / "run", rate_hz=50.0, offset=(0, 0, 0.01), start_ns=T0 + HOUR_NS)
    (result,) = analyze([tmp_path / "run"], tmp_path / "ref").episodes
    assert result.time.base == "start" and "do not overlap" in result.time.reason
    assert result.time.start_offset_s == pytest.approx(3600.0)
    assert result.metrics.ee_position_rmse == pytest.approx(0.01, rel=1e-6)
    with pytest.raises(DriftError, match=r"do not overlap .*pass --time-base start"):
        analyze([tmp_path / "run"], tmp_path / "ref", time_base="absolute")


def test_episodes_paired_by_metadata_are_separate_rollouts(tmp_path: Path):
    """Overlapping stamps, but paired by task/seed/episode: auto keeps each episode's start."""
    meta = {META_TASK: "reach", META_SEED: "7", META_EPISODE: "0"}
    write_episode(tmp_path / "ref" / "ep0", rate_hz=50.0, metadata=meta)
    write_episode(tmp_path / "run" / "ep0", rate_hz=50.0, metadata=meta, start_ns=T0 + 10**9)
    (result,) = analyze([tmp_path / "run"], tmp_path / "ref").episodes
    assert result.paired_by == "metadata" and result.time.base == "start"
    assert "metadata" in result.time.reason
    assert result.metrics.ee_position_rmse == pytest.approx(0.0, abs=1e-12)
    (shifted,) = analyze([tmp_path / "run"], tmp_path / "ref", time_base="absolute").episodes
    assert shifted.time.base == "absolute" and shifted.metrics.ee_position_rmse > 0.01


def episode(origin: float, duration: float) -> Episode:
    """An episode of 2 joint samples recorded from `origin` for `duration` s."""
    trajectory = Trajectory([0.0, duration], joint_positions=[[0.0], [1.0]])
    return Episode(Path("bag"), trajectory, "none", {}, origin)


@pytest.mark.parametrize(
    ("run_origin", "base"),
    [(100.0, "absolute"), (104.0, "absolute"), (106.0, "start"), (200.0, "start")],
)
def test_auto_needs_half_of_the_shorter_recording_shared(run_origin: float, base: str):
    """Reference 100..110 s, run 10 s long: shared 10, 6, 4 and 0 s."""
    time = choose_time_base(episode(run_origin, 10.0), episode(100.0, 10.0))
    assert time.base == base
    assert time.start_offset_s == pytest.approx(run_origin - 100.0)


def test_unknown_time_base_names_the_choices():
    with pytest.raises(DriftError, match=r"time base 'wall': unknown; pass one of auto, absolute"):
        choose_time_base(episode(0.0, 1.0), episode(0.0, 1.0), "wall")  # type: ignore[arg-type]


def test_ape_equals_evo_on_odometry_and_localisation_bags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """The issue's check: `daptq drift` and evo (reading the same bag files, associating
    stamps itself) agree on APE within 1 %, for streams 5 s apart at 50 and 30 Hz."""
    pytest.importorskip("evo")
    from evo.core import metrics, sync
    from evo.tools import file_interface
    from rosbags.rosbag2 import Reader

    write_stream(tmp_path / "odom", ODOMETRY, 0.0, 50.0)
    write_stream(tmp_path / "loc", POSE_COVARIANCE, 5.0, 30.0, offset=(0.02, -0.01, 0.005))
    argv = ["drift", "--run", str(tmp_path / "loc"), "--reference", str(tmp_path / "odom")]
    assert main([*argv, "--ee-topic", "/ee", "--out", str(tmp_path / "report"), "--json"]) == 0
    (episode,) = json.loads(capsys.readouterr().out)["episodes"]

    def evo_trajectory(bag: Path):
        with Reader(bag) as reader:
            return file_interface.read_bag_trajectory(reader, "/ee")

    reference, run = sync.associate_trajectories(
        evo_trajectory(tmp_path / "odom"), evo_trajectory(tmp_path / "loc"), max_diff=0.01
    )
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((reference, run))
    expected = ape.get_statistic(metrics.StatisticsType.rmse)
    assert expected == pytest.approx(np.linalg.norm([0.02, -0.01, 0.005]), rel=0.02)
    assert episode["metrics"]["ape_translation_rmse"] == pytest.approx(expected, rel=0.01)
