"""The drift monitor node's logic with rosbags-typed messages: reference in, DriftReports out."""

from __future__ import annotations

import numpy as np
import pytest
from drift_episodes import write_episode
from robot_fakes import TYPES

from daptq_ros.bags import BagWriter, pose_stamped_msg
from daptq_ros.bags.convert import header, joint_state_msg, sec_to_ns
from daptq_ros.bags.robot_msgs import joint_trajectory_msg, policy_status_msg
from daptq_ros.drift.monitor import Level
from daptq_ros.errors import ControlError, DriftError
from daptq_ros.robot.drift_core import DriftMonitorCore

NAMES = ("j1", "j2")
STATUS = {
    "model": "default",
    "family": "pi0",
    "bit_config": "w4a16",
    "instruction": "reach the goal",
    "enabled": True,
    "dry_run": False,
    "estopped": False,
    "safety_status": "active",
    "hold_reasons": [],
    "inference_latency": 0.02,
    "inference_hz": 10.0,
    "command_hz": 50.0,
    "dropped_frames": 0,
    "rejected_actions": 0,
    "clipped_actions": 0,
    "swap_in_progress": False,
    "pending_bit_config": "",
    "fault": "",
    "chunk_method": "crossfade",
    "timeline_rate": 1.0,
}
T0 = 1000.0


def reference_msg(seconds: float = 4.0, rate: float = 50.0):
    """A JointTrajectory reference: both joints ramp at 0.1 rad/s."""
    times = np.arange(0.0, seconds, 1.0 / rate)
    positions = np.stack([0.1 * times, -0.1 * times], axis=1)
    return joint_trajectory_msg(TYPES, 0, NAMES, positions, times)


def feed(
    core: DriftMonitorCore,
    offset: float,
    seconds: float = 3.0,
    rate: float = 50.0,
    start: float = T0,
):
    """Joint states following the reference from `start` plus `offset` rad; the reports."""
    reports = []
    for t in np.arange(0.0, seconds, 1.0 / rate):
        q = np.array([0.1 * t, -0.1 * t]) + offset
        report = core.on_joint_states(joint_state_msg(TYPES, sec_to_ns(start + t), NAMES, q))
        if report is not None:
            reports.append(report)
    return reports


def test_matching_motion_reports_ok_windows():
    core = DriftMonitorCore({}, TYPES)
    core.on_reference(reference_msg())
    reports = feed(core, 0.0)
    assert len(reports) == 2  # 1 s windows over 3 s of input: two closed
    assert all(r.level == Level.OK for r in reports)
    assert max(max(r.joint_rms_error) for r in reports) < 1e-9


def test_an_offset_beyond_the_error_threshold_is_error_and_asks_for_an_estop():
    core = DriftMonitorCore({"estop_on_error": True}, TYPES)
    core.on_reference(reference_msg())
    reports = feed(core, 0.3)
    assert reports[0].level == Level.ERROR
    assert np.allclose(reports[0].joint_rms_error, 0.3)
    assert core.wants_estop()
    assert not core.wants_estop()  # once per ERROR window


def test_no_estop_request_unless_asked_for():
    core = DriftMonitorCore({}, TYPES)
    core.on_reference(reference_msg())
    feed(core, 0.3)
    assert not core.wants_estop()


def test_reports_carry_the_active_bit_config():
    core = DriftMonitorCore({}, TYPES)
    core.on_policy_status(policy_status_msg(TYPES, 0, STATUS))
    core.on_reference(reference_msg())
    report = feed(core, 0.0)[0]
    assert report.bit_config == "w4a16"


def test_diagnostics_go_stale_without_input():
    core = DriftMonitorCore({}, TYPES)
    core.on_reference(reference_msg())
    feed(core, 0.0, seconds=0.5)
    diagnostics = core.diagnostics_msg(T0 + 5.0)
    assert diagnostics.status[0].level == Level.STALE


def status_of(core: DriftMonitorCore, now: float) -> tuple[int, str]:
    """The drift monitor's /diagnostics level and message at `now`."""
    status = core.diagnostics_msg(now).status[0]
    return int(status.level), str(status.message)


def test_diagnostics_are_stale_before_any_input_arrives():
    core = DriftMonitorCore({}, TYPES)
    core.on_reference(reference_msg())
    level, message = status_of(core, T0)
    assert level == Level.STALE
    assert "no joint_states on /joint_states or ee_pose on /ee_pose received yet" in message


def test_diagnostics_with_fresh_input_and_a_reference_are_ok():
    core = DriftMonitorCore({}, TYPES)
    core.on_reference(reference_msg())
    feed(core, 0.0, seconds=1.5)
    assert status_of(core, T0 + 1.5) == (Level.OK, "ok")


def test_without_a_reference_diagnostics_are_stale_and_name_the_ros_ways_to_set_one():
    core = DriftMonitorCore({"reference_topic": "/my/reference"}, TYPES)
    feed(core, 0.0, seconds=0.5)
    level, message = status_of(core, T0 + 0.5)
    assert level == Level.STALE
    assert "reference_bag" in message and "rosbag2" in message
    assert "trajectory_msgs/JointTrajectory on /my/reference" in message
    assert "set_reference" not in message and "received yet" not in message


def test_without_input_or_reference_diagnostics_name_both():
    level, message = status_of(DriftMonitorCore({}, TYPES), T0)
    assert level == Level.STALE and "reference_bag" in message and "received yet" in message


def policy_status(enabled: bool):
    return policy_status_msg(TYPES, 0, {**STATUS, "enabled": enabled})


def episode_info():
    """The EpisodeInfo the simulator publishes when an episode ends."""
    return TYPES["daptq_ros_interfaces/msg/EpisodeInfo"](
        header=header(TYPES, sec_to_ns(T0 + 1.5)),
        task="push",
        instruction="push the puck",
        seed=1,
        episode_index=0,
        model="expert",
        bit_config="",
        success=True,
        steps=120,
        duration=1.5,
    )


BOUNDARIES = {
    "restart service": lambda core: core.restart(),
    "policy enabled": lambda core: core.on_policy_status(policy_status(True)),
    "episode info": lambda core: core.on_episode(episode_info()),
}


@pytest.mark.parametrize("boundary", BOUNDARIES.values(), ids=BOUNDARIES.keys())
def test_an_episode_boundary_restarts_the_episode_at_the_next_sample(boundary):
    core = DriftMonitorCore({}, TYPES)
    core.on_policy_status(policy_status(False))
    core.on_reference(reference_msg())
    feed(core, 0.0, seconds=1.5)
    boundary(core)
    # The second run replays the reference from its start 10 s later: t = 0 again.
    reports = feed(core, 0.0, start=T0 + 10.0)
    assert reports and all(r.level == Level.OK for r in reports)
    assert max(max(r.joint_rms_error) for r in reports) < 1e-9


def test_an_episode_shorter_than_a_window_is_reported_when_it_ends():
    core = DriftMonitorCore({}, TYPES)
    core.on_reference(reference_msg())
    assert feed(core, 0.01, seconds=0.5) == []  # half a window: none closed
    report = core.on_episode(episode_info())
    assert report is not None and report.samples == 25
    assert max(report.joint_rms_error) == pytest.approx(0.01)
    assert core.on_episode(episode_info()) is None  # nothing since: nothing to report


def test_a_shadow_fed_episode_shorter_than_a_window_is_reported_when_it_ends():
    core = DriftMonitorCore({}, TYPES)
    for k in range(4):  # 0.3 s of shadow reports
        assert core.on_shadow(shadow_msg(100.0 + 0.1 * k, 0.02)) is None
    report = core.on_episode(episode_info())
    assert report is not None and report.samples == 4
    assert report.ee_position_rmse == pytest.approx(0.02)
    # The next episode's window starts at its first report, not at the last episode's.
    reports = [core.on_shadow(shadow_msg(200.0 + 0.1 * k, 0.05)) for k in range(11)]
    closed = [r for r in reports if r is not None]
    assert len(closed) == 1 and closed[0].ee_position_rmse == pytest.approx(0.05)


def test_a_policy_that_stays_enabled_does_not_restart_the_episode():
    core = DriftMonitorCore({}, TYPES)
    core.on_policy_status(policy_status(True))
    core.on_reference(reference_msg())
    feed(core, 0.0, seconds=1.5)
    core.on_policy_status(policy_status(True))
    reports = [
        r
        for t in np.arange(1.5, 3.0, 0.02)
        if (
            r := core.on_joint_states(
                joint_state_msg(TYPES, sec_to_ns(T0 + t), NAMES, np.array([0.1 * t, -0.1 * t]))
            )
        )
        is not None
    ]
    assert reports and max(max(r.joint_rms_error) for r in reports) < 1e-9


def test_a_one_point_reference_is_refused():
    core = DriftMonitorCore({}, TYPES)
    with pytest.raises(DriftError, match="at least 2"):
        core.on_reference(joint_trajectory_msg(TYPES, 0, NAMES, np.zeros((1, 2)), [0.0]))


def test_a_missing_reference_bag_names_the_path(tmp_path):
    with pytest.raises(ControlError, match="does not exist"):
        DriftMonitorCore({"reference_bag": str(tmp_path / "nope")}, TYPES)


def _damaged_bag(path):
    path.mkdir()
    (path / "metadata.yaml").write_text("rosbag2_bagfile_information: [\n")


def _bag_without_joint_states(path):
    with BagWriter(path) as writer:
        writer.add_topic("/ee_pose", "geometry_msgs/msg/PoseStamped")
        pose = pose_stamped_msg(writer.types, 1, np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
        writer.write("/ee_pose", pose, 1)


@pytest.mark.parametrize("make", [_damaged_bag, _bag_without_joint_states])
def test_an_unreadable_reference_bag_is_a_one_line_error_naming_path_and_fix(tmp_path, make):
    path = tmp_path / "reference"
    make(path)
    with pytest.raises(ControlError) as error:
        DriftMonitorCore({"reference_bag": str(path)}, TYPES)
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(f"reference_bag {path} cannot be read")
    assert "set reference_bag to a rosbag2 folder that recorded /joint_states" in text
    assert "publish the reference on /drift/reference" in text


def test_a_readable_reference_bag_is_the_reference(tmp_path):
    write_episode(tmp_path / "reference", poses=False)
    core = DriftMonitorCore({"robot": "panda", "reference_bag": str(tmp_path / "reference")}, TYPES)
    assert core.has_reference
    assert "reference_bag" not in status_of(core, T0)[1]


PANDA = tuple(f"panda_joint{i}" for i in range(1, 8))
PANDA_Q0 = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def test_with_the_arms_urdf_joint_states_give_end_effector_drift():
    core = DriftMonitorCore({"robot": "panda"}, TYPES)
    times = np.arange(0.0, 3.0, 0.02)
    reference = PANDA_Q0 + 0.1 * times[:, None]
    core.on_reference(joint_trajectory_msg(TYPES, 0, PANDA, reference, times))
    reports = []
    for t, q in zip(times, reference, strict=True):
        shifted = q + np.array([0.05, 0, 0, 0, 0, 0, 0])
        msg = joint_state_msg(TYPES, sec_to_ns(T0 + t), PANDA, shifted)
        if (report := core.on_joint_states(msg)) is not None:
            reports.append(report)
    assert reports and np.isfinite(reports[0].ee_position_rmse)
    assert 0.005 < reports[0].ee_position_rmse < 0.1  # 0.05 rad at the base joint, in metres


def test_robot_description_sets_the_kinematics():
    from daptq_ros.drift.kinematics import arm_urdf

    core = DriftMonitorCore({"robot": "panda", "urdf_path": ""}, TYPES)
    core.arm = None
    core.on_robot_description(TYPES["std_msgs/msg/String"](data=arm_urdf("panda").read_text()))
    assert core.arm is not None and core.arm.joint_names == PANDA


def shadow_msg(stamp: float, hand: float | None, bits: str = "w4a16"):
    from daptq_ros.bags.robot_msgs import shadow_divergence_msg

    fields = {
        "bit_config": bits,
        "shadow_bit_config": "fp32",
        "rows": 8,
        "chunk_rmse": 0.1,
        "has_hand_divergence": hand is not None,
        "hand_max_divergence": hand or 0.0,
        "hand_final_divergence": (hand or 0.0) / 2,
        "shadow_latency": 0.05,
    }
    return shadow_divergence_msg(TYPES, sec_to_ns(stamp), fields)


def test_without_a_recording_the_shadow_is_the_reference():
    core = DriftMonitorCore({}, TYPES)
    assert core.status(0.0)[0] is Level.STALE
    reports = []
    for k in range(31):  # 3 s of shadow reports at 10 Hz: small, then large divergences
        t = 100.0 + 0.1 * k
        reports.append(core.on_shadow(shadow_msg(t, 0.004 if t < 101.0 else 0.08)))
    reports = [r for r in reports if r is not None]
    assert len(reports) == 3  # windows of 1 s, each closed by the first report after it
    quiet, loud, _ = reports
    assert quiet.ee_position_rmse == pytest.approx(0.004) and quiet.level == Level.OK
    assert quiet.ee_position_max_error == pytest.approx(0.004)
    assert loud.ee_position_rmse == pytest.approx(0.08) and loud.level == Level.ERROR
    assert loud.ee_position_final_error == pytest.approx(0.04)
    assert list(loud.joint_names) == [] and loud.samples == 10
    level, reason = core.status(103.0)
    assert level is Level.ERROR and "shadow hand divergence RMS" in reason
    values = {v.key: v.value for v in core.diagnostics_msg(103.0).status[0].values}
    assert values["reference"] == "shadow"
    assert core.on_shadow(shadow_msg(104.0, None)) is None  # no hand divergence: dropped
    assert core.shadow.dropped == 1


def test_a_recorded_reference_wins_over_the_shadow():
    core = DriftMonitorCore({}, TYPES)
    core.on_reference(reference_msg())
    assert all(core.on_shadow(shadow_msg(0.1 * k, 0.08)) is None for k in range(30))
    assert not core.shadow._stamps
