"""The policy node's logic driven end to end with rosbags-typed messages (no rclpy)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from robot_fakes import (
    EE_START,
    SAWYER_HOME,
    SAWYER_JOINTS,
    TYPES,
    ConstantPolicy,
    ee_pose,
    image,
    instruction,
    joints,
    wait_idle,
)
from robot_rig import HZ, PERIOD, Rig

from daptq_ros.bags.convert import compressed_image_msg, sec_to_ns
from daptq_ros.bags.robot_msgs import float64_array_to_numpy
from daptq_ros.bags.state import StateSpec
from daptq_ros.control.runtime import SwapState
from daptq_ros.errors import ControlError
from daptq_ros.robot import policy_builder, policy_core
from daptq_ros.robot.policy_core import PolicyNodeCore


def assert_within_limits(core: PolicyNodeCore, positions: np.ndarray) -> None:
    limits = core.safety.limits
    assert np.all(positions >= limits.lower - 1e-9) and np.all(positions <= limits.upper + 1e-9)
    steps = np.abs(np.diff(positions, axis=0))
    assert np.all(steps <= limits.velocity * PERIOD + 1e-9)


def test_starts_disabled_and_publishes_nothing(rig):
    r = rig()
    r.run(40)
    assert r.commands().size == 0
    assert r.core.status_fields(r.t)["safety_status"] == "disabled"
    assert any(k == policy_core.ACTION_CHUNK for _, k, _ in r.outputs)  # inference runs


def test_enabled_commands_follow_the_policy_within_the_limits(rig):
    r = rig()
    r.run(8)
    r.enable()
    r.run(160)
    positions = r.commands()
    assert len(positions) >= 150
    assert positions[-1, 0] > EE_START[0] + 0.1  # the policy pushes +x
    assert_within_limits(r.core, positions)
    gripper = [float64_array_to_numpy(m)[0] for _, k, m in r.outputs if k == policy_core.GRIPPER]
    assert gripper and set(gripper) == {-1.0}


def test_dry_run_publishes_only_debug_commands(rig):
    r = rig(dry_run=True)
    r.run(8)
    r.enable()
    r.run(40)
    assert r.commands().size == 0
    assert len(r.commands(policy_core.DEBUG_COMMAND)) == 40


def test_enable_is_refused_before_inputs_arrive(rig):
    r = rig()
    ok, reason = r.core.enable(True, 0.0)
    assert not ok and "image" in reason


def test_stale_image_holds_the_arm(rig):
    r = rig()
    r.run(8)
    r.enable()
    r.run(40)
    r.sensors["image"] = False
    r.run(80)  # 1 s without images; the image timeout is 0.5 s
    tail = r.commands()[-20:]
    assert np.allclose(tail, tail[-1])
    assert any("image" in reason for reason in r.core.hold_reasons(r.t))
    assert r.core.safety.status == "hold"


def test_stale_joint_states_hold_the_arm(rig):
    r = rig()
    r.run(8)
    r.enable()
    r.run(40)
    r.sensors["joints"] = False
    r.run(60)
    tail = r.commands()[-20:]
    assert np.allclose(tail, tail[-1])
    assert any("joint_states" in reason for reason in r.core.hold_reasons(r.t))


def test_no_fresh_chunk_holds_the_arm(rig):
    r = rig()
    r.run(8)
    r.enable()
    r.run(40)
    r.run(80, control=False)  # the policy stops answering
    tail = r.commands()[-20:]
    assert np.allclose(tail, tail[-1])
    assert any("action_chunk" in reason for reason in r.core.hold_reasons(r.t))


def test_failing_policy_is_reported_and_never_moves_the_arm(rig):
    r = rig(policy=ConstantPolicy(fail=True))
    r.run(8)
    r.enable()
    r.run(80)
    positions = r.commands()
    assert np.allclose(positions, EE_START)
    assert r.core.counters["failed_inferences"] > 0
    diagnostics = r.core.diagnostics_msg(r.t)
    assert diagnostics.status[0].level == 2 and "blew up" in diagnostics.status[0].message


def test_nan_chunks_are_rejected_counted_and_never_published(rig):
    r = rig(policy=ConstantPolicy(nan=True))
    r.run(8)
    r.enable()
    r.run(80)
    assert np.isfinite(r.commands()).all()
    assert np.allclose(r.commands(), EE_START)
    assert r.core.status_fields(r.t)["rejected_actions"] > 0


def test_out_of_range_actions_are_clipped_or_rejected(rig):
    clipped = rig(policy=ConstantPolicy(action=(1.2, 0.0, 0.0, 0.0)))
    clipped.run(8)
    assert clipped.core.counters["clipped_actions"] > 0
    rejected = rig(policy=ConstantPolicy(action=(9.0, 0.0, 0.0, 0.0)))
    rejected.run(8)
    assert rejected.core.counters["rejected_actions"] > 0
    assert not any(k == policy_core.ACTION_CHUNK for _, k, _ in rejected.outputs)


def test_estop_latches_until_reset_and_enable(rig):
    r = rig()
    r.run(8)
    r.enable()
    r.run(40)
    ok, _ = r.core.estop()
    assert ok
    r.run(40)
    tail = r.commands()[-10:]
    assert np.allclose(tail, tail[-1])
    ok, reason = r.core.enable(True, r.t)
    assert not ok and "stop" in reason
    r.core.reset_estop()
    r.enable()
    before = r.commands()[-1].copy()
    r.run(40)
    assert r.commands()[-1, 0] > before[0]


def test_compressed_images_drive_the_policy(rig):
    r = rig()
    msg = compressed_image_msg(TYPES, sec_to_ns(0.0), np.zeros((8, 16, 3), np.uint8), "png")
    r.core.on_compressed_image(msg, 0.0)
    r.core.on_joint_states(joints(0.0), 0.0)
    r.core.on_ee_pose(ee_pose(0.0), 0.0)
    assert r.core.control_tick(0.0)


def test_a_bad_image_encoding_names_the_problem(rig):
    r = rig()
    msg = image(0.0)
    msg.encoding = "yuv422"
    with pytest.raises(Exception, match="yuv422"):
        r.core.on_image(msg, 0.0)


def test_parameters_are_validated_not_applied(rig):
    r = rig()
    assert "read-only" in r.core.check_parameter("robot", "panda")
    assert "neither a file nor a preset" in r.core.check_parameter("bit_config", "w3a3_x")
    assert "needs calibration" in r.core.check_parameter("bit_config", "smoothquant_w8a8")
    assert r.core.check_parameter("dry_run", True) is None
    r.run(8)
    r.enable()
    assert "enabled" in r.core.check_parameter("bit_config", "w8a8")
    assert "disabled" in r.core.check_parameter("velocity_scale", 0.2)
    assert r.core.check_parameter("no_such_parameter", 1) is not None


def test_bit_config_from_a_bad_file_is_rejected(rig, tmp_path):
    bad = tmp_path / "bits.yaml"
    bad.write_text("method: rtn\nweight_bits: 1\n")
    r = rig()
    assert "weight_bits" in r.core.check_parameter("bit_config", str(bad))


def test_hot_swap_keeps_serving_the_old_model_until_the_new_one_is_ready(rig):
    def slow_build():
        time.sleep(0.4)
        return ConstantPolicy(action=(0.0, 0.5, 0.0, 1.0))

    r = rig(builds={"w8a8": slow_build}, allow_swap_while_enabled=True)
    r.run(8)
    r.enable()
    r.run(40)
    assert r.core.check_parameter("bit_config", "w8a8") is None
    r.core.accept_parameter("bit_config", "w8a8")
    r.tick()
    assert r.core.worker.swap_state is SwapState.BUILDING
    assert r.core.status_fields(r.t)["swap_in_progress"]
    x_during = []
    while r.core.worker.swap_state is SwapState.BUILDING:
        r.tick()
        x_during.append(r.position[0])
        time.sleep(0.005)
    assert x_during[-1] > x_during[0]  # the old model kept commanding +x during the build
    r.run(120)
    assert r.core.bit_config == "w8a8" and r.built == ["fp32", "w8a8"]
    positions = r.commands()
    assert positions[-1, 1] > EE_START[1] + 0.05  # the new model pushes +y
    assert_within_limits(r.core, positions)
    status = r.core.status_fields(r.t)
    assert status["bit_config"] == "w8a8" and not status["swap_in_progress"]
    values = {v.key: v.value for v in r.core.diagnostics_msg(r.t).status[0].values}
    assert float(values["last_swap_s"]) >= 0.4  # the build's wall time, slept 0.4 s


def test_a_failed_swap_keeps_the_old_model(rig):
    def broken():
        raise RuntimeError("out of memory")

    r = rig(builds={"w4a16": broken})
    r.run(8)
    r.core.accept_parameter("bit_config", "w4a16")
    deadline = time.monotonic() + 60
    while not r.core.swap_error and time.monotonic() < deadline:
        r.tick()
    assert r.core.bit_config == "fp32"
    assert "swap failed" in r.core.swap_error and "out of memory" in r.core.swap_error

    # The old model keeps commanding; its chunks do not wipe the report of the failed swap.
    def chunks() -> int:
        return sum(key == policy_core.ACTION_CHUNK for _, key, _ in r.outputs)

    before = chunks()
    r.run(40)
    assert chunks() > before
    assert "out of memory" in r.core.swap_error
    assert "out of memory" in str(r.core.diagnostics_msg(r.t))


def test_joint_trajectory_commands_for_the_panda_respect_its_joint_limits(rig):
    panda = ("panda_joint1", "panda_joint2", "panda_joint3", "panda_joint4")
    panda += ("panda_joint5", "panda_joint6", "panda_joint7")
    q0 = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    core = PolicyNodeCore(
        {
            "robot": "panda",
            "command_interface": "joint_trajectory",
            "dry_run": False,
            "command_hz": HZ,
            "blend_time_s": 0.1,
        },
        TYPES,
        build_policy=lambda bits: ConstantPolicy(action=(0.0, 0.0, -0.5, 0.0)),
    )
    try:
        t, q, published = 0.0, q0.copy(), []
        core.on_instruction(instruction(), t)
        for k in range(160):
            core.on_image(image(t), t)
            core.on_joint_states(joints(t, q, panda), t)
            if k % 8 == 0 and core.control_tick(t):
                wait_idle(core)
            if k == 8:
                assert core.enable(True, t)[0]
            for key, msg in core.command_tick(t):
                if key == policy_core.COMMAND:
                    points = np.array([p.positions for p in msg.points])
                    assert list(msg.joint_names) == list(panda)
                    limits = core.safety.limits
                    assert np.all(points >= limits.lower) and np.all(points <= limits.upper)
                    q = points[0]
                    published.append(q)
            t += PERIOD
        start, end = core.arm.position(q0), core.arm.position(q)
        assert end[2] < start[2] - 0.05  # the tool went down, as the policy asked
        assert_within_limits(core, np.array(published))
    finally:
        core.close()


def test_status_and_diagnostics_messages_build(rig):
    r = rig()
    r.run(16)
    status = r.core.status_msg(r.t)
    assert status.bit_config == "fp32" and status.safety_status == "disabled"
    diagnostics = r.core.diagnostics_msg(r.t)
    keys = {kv.key for kv in diagnostics.status[0].values}
    assert {"bit_config", "inference_hz", "dropped_frames", "watchdog"} <= keys


def test_unknown_parameters_fail_at_construction():
    with pytest.raises(ControlError, match="no_such"):
        PolicyNodeCore({"no_such": 1}, TYPES, build_policy=lambda bits: ConstantPolicy())


def test_joint_interface_without_urdf_is_reported_and_never_commands():
    core = PolicyNodeCore(
        {"command_interface": "position_array", "dry_run": False},
        TYPES,
        build_policy=lambda bits: ConstantPolicy(),
    )
    try:
        core.on_instruction(instruction(), 0.0)
        core.on_image(image(0.0), 0.0)
        core.on_joint_states(joints(0.0, SAWYER_HOME), 0.0)
        core.on_ee_pose(ee_pose(0.0), 0.0)
        assert core.control_tick(0.0)
        wait_idle(core)
        assert core.enable(True, 0.0)[0]
        out = core.command_tick(0.0)
        assert "kinematics" in core.last_error
        assert not any(key == policy_core.ACTION_CHUNK for key, _ in out)
        commands = [m for key, m in out if key == policy_core.COMMAND]
        assert all(np.allclose(float64_array_to_numpy(m), SAWYER_HOME[:7]) for m in commands)
    finally:
        core.close()


def test_no_instruction_refuses_enable_and_a_stale_one_holds(rig):
    r = rig()
    r.core.close()  # the rig sends an instruction at once; this test starts without one
    r.core = PolicyNodeCore(
        {"dry_run": False, "command_hz": HZ, "instruction_timeout_s": 0.5},
        TYPES,
        build_policy=lambda bits: ConstantPolicy(),
    )
    r.run(8)
    ok, reason = r.core.enable(True, r.t)
    assert not ok and "instruction" in reason
    r.core.on_instruction(instruction(), r.t)
    r.run(8)
    r.enable()
    r.run(80)  # 1 s after the last instruction, the timeout is 0.5 s
    assert any("instruction" in reason for reason in r.core.hold_reasons(r.t))
    assert r.core.safety.status == "hold"


def test_a_given_urdf_sets_the_joint_limits():
    from daptq_ros.control.limits import AxisLimits
    from daptq_ros.drift.kinematics import arm_urdf

    urdf = str(arm_urdf("panda"))
    core = PolicyNodeCore(
        {"robot": "panda", "urdf_path": urdf, "command_interface": "position_array"},
        TYPES,
        build_policy=lambda bits: ConstantPolicy(),
    )
    try:
        names = core.robot.joints.names
        expected = AxisLimits.from_urdf(urdf, names).with_margin(0.05)
        assert np.allclose(core.safety.limits.lower, expected.lower)
        assert np.allclose(core.safety.limits.upper, expected.upper)
    finally:
        core.close()


def test_freeze_heap_hides_the_heap_and_frees_cycles_dropped_since_the_last_freeze():
    import gc
    import weakref

    class Node:
        pass

    old = Node()
    old.self = old  # a reference cycle, as a swapped-out model may hold
    alive = weakref.ref(old)
    try:
        policy_builder.freeze_heap()
        assert gc.get_freeze_count() > 0
        del old
        gc.collect()
        assert alive() is not None  # frozen: ordinary collections do not see it
        policy_builder.freeze_heap()  # the next model's load
        assert alive() is None
    finally:
        gc.unfreeze()


def test_the_control_rate_follows_the_models_horizon_and_the_timing_is_measured():
    slow = Rig(ConstantPolicy(horizon=8, delay=0.01))
    timing = slow.core.timing
    assert timing.horizon == 8 and slow.core.control_period == pytest.approx(timing.span / 2)
    assert timing.latency >= 0.01  # wall time, whatever the node clock says
    slow.core.close()


def test_latency_is_wall_time_even_when_the_node_clock_stands_still():
    frozen = PolicyNodeCore(
        {"dry_run": False, "command_hz": HZ},
        TYPES,
        build_policy=lambda bits: ConstantPolicy(delay=0.02),
        clock=lambda: 5.0,
    )
    frozen.on_instruction(instruction(), 5.0)
    frozen.on_image(image(5.0), 5.0)
    frozen.on_joint_states(joints(5.0), 5.0)
    frozen.on_ee_pose(ee_pose(5.0, EE_START), 5.0)
    assert frozen.control_tick(5.0)
    wait_idle(frozen)
    frozen.command_tick(5.0)
    assert frozen.status_fields(5.0)["inference_latency"] >= 0.02
    frozen.close()


def test_a_chunk_computed_while_the_arm_stood_still_plays_from_its_first_row(rig):
    rig = rig()
    rig.run(16, control=False)  # t = 0.2 s: the frame below is stamped 0.11 s
    rig.enable()
    t = rig.t
    # The frame is 0.09 s old, nearly the chunk's 0.1 s, but no chunk played since: the
    # timeline waited, so the chunk is not late and none of it is skipped.
    rig.core.on_image(image(t - 0.09), t)
    assert rig.core.control_tick(t)
    wait_idle(rig.core)
    rig.core.command_tick(t)
    assert rig.core.scheduler.counters["dropped_stale"] == 0
    tau = rig.core.replanner.chunk_time(t)
    assert rig.core.scheduler.remaining(tau) == pytest.approx(8 * 0.0125, abs=PERIOD)
    assert not rig.core.hold_reasons(t)


def test_a_clock_that_jumps_back_disables_the_arm_until_enabled_again(rig):
    rig = rig()
    rig.run(4)
    rig.enable()
    rig.run(20)
    assert rig.core.safety.enabled
    rig.t = 0.05  # a restarted simulator: its clock starts again
    rig.tick()
    fields = rig.core.status_fields(rig.t)
    assert not fields["enabled"] and "jumped back" in fields["fault"]
    diagnostics = rig.core.diagnostics_msg(rig.t).status[0]
    assert diagnostics.level == 2 and "jumped back" in diagnostics.message
    rig.run(20)
    assert not rig.core.safety.enabled  # nothing re-enables it but ~/enable
    rig.enable()
    assert rig.core.safety.enabled and rig.core.status_fields(rig.t)["fault"] == ""


def test_a_stopped_clock_is_caught_on_the_wall_clock(rig):
    rig = rig()
    rig.run(4)
    rig.enable()
    rig.run(20)
    wall = time.monotonic()
    assert rig.core.clock_watchdog(wall) == ""
    fault = rig.core.clock_watchdog(wall + 1.0)  # no command tick for 1 s of wall time
    assert "has not advanced" in fault and not rig.core.safety.enabled


def test_a_clock_that_stops_right_after_enabling_is_caught(rig):
    rig = rig()
    rig.run(4)
    rig.enable()  # no command tick follows: the clock stopped as the arm was enabled
    fault = rig.core.clock_watchdog(time.monotonic() + 1.0)
    assert "has not advanced" in fault and not rig.core.safety.enabled


def test_pose_commands_carry_the_robot_presets_frame(rig):
    rig = rig()
    rig.run(4)
    rig.enable()
    rig.run(20)
    (_, _, message), *_ = [o for o in rig.outputs if o[1] == policy_core.COMMAND]
    assert message.header.frame_id == "world"  # sawyer_sim's base_frame


def test_the_status_carries_the_instruction(rig):
    rig = rig()
    assert rig.core.status_fields(rig.t)["instruction"] == instruction().data


class JointStatePolicy(ConstantPolicy):
    """A policy whose daptq.json says it reads named joints (an imported joint-space pi0)."""

    def __init__(self, state_names: tuple[str, ...]) -> None:
        super().__init__()
        meta = SimpleNamespace(state_spec=StateSpec("joint_positions", state_names), family="pi0")
        self.loaded = SimpleNamespace(meta=meta)
        self.states: list[np.ndarray] = []

    def predict(self, image, instruction, state):
        self.states.append(np.asarray(state))
        return super().predict(image, instruction, state)


def test_a_joint_state_model_is_fed_its_named_joints_in_its_order(rig):
    # Not the preset's order, and a finger joint as the gripper dimension.
    names = ("right_j6", "right_j0", "right_j3", "l_close")
    policy = JointStatePolicy(names)
    r = rig(policy=policy)
    r.run(16)
    fed = policy.states[-1]
    columns = [SAWYER_JOINTS.index(n) for n in names]
    np.testing.assert_allclose(fed, np.asarray(SAWYER_HOME)[columns])


def test_a_joint_state_model_without_its_gripper_joint_holds_and_says_which():
    names = (*SAWYER_JOINTS[:7], "robotiq_85_left_knuckle_joint")
    core = PolicyNodeCore(
        {"robot": "sawyer_sim", "dry_run": False},
        TYPES,
        build_policy=lambda bits: JointStatePolicy(names),
    )
    try:
        core.on_instruction(instruction(), 0.0)
        core.on_image(image(0.0), 0.0)
        core.on_joint_states(joints(0.0), 0.0)
        core.on_ee_pose(ee_pose(0.0), 0.0)
        ok, why = core.enable(True, 0.0)
        assert not ok and "lack robotiq_85_left_knuckle_joint" in why and "r_close" in why
        assert any("robotiq_85_left_knuckle_joint" in r for r in core.hold_reasons(0.0))
        assert not core.control_tick(0.0)  # no state, no inference
    finally:
        core.close()


class RecordingPolicy(ConstantPolicy):
    """Keeps the images and stamps it was asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[np.ndarray] = []

    def predict(self, image, instruction, state):
        self.images.append(image)
        return super().predict(image, instruction, state)


CAMERAS = ("/camera/base", "/camera/wrist")


def test_several_cameras_are_tiled_in_their_order_and_timed_by_the_oldest_frame(rig):
    policy = RecordingPolicy()
    r = rig(policy=policy, image_topics=list(CAMERAS))
    core, t = r.core, 1.0
    base = np.full((8, 16, 3), 10, np.uint8)
    wrist = np.full((16, 16, 3), 200, np.uint8)  # twice the height: scaled to 8 x 8
    core.on_image(image(t), t, decode=lambda msg: base, camera=0)
    core.on_image(image(t - 0.02), t, decode=lambda msg: wrist, camera=1)
    core.on_joint_states(joints(t), t)
    core.on_ee_pose(ee_pose(t, EE_START), t)
    assert core.control_tick(t)
    wait_idle(core)
    tiled = policy.images[-1]
    assert tiled.shape == (8, 24, 3)
    assert (tiled[:, :16] == 10).all() and (tiled[:, 16:] == 200).all()
    (result,) = core.worker.take_results()
    assert result.stamp == pytest.approx(t - 0.02)


def test_a_stale_second_camera_holds_and_is_named(rig):
    r = rig(image_topics=list(CAMERAS))
    core, t = r.core, 1.0
    core.on_image(image(t), t, camera=0)
    core.on_joint_states(joints(t), t)
    core.on_ee_pose(ee_pose(t, EE_START), t)
    reasons = core.hold_reasons(t)
    assert any(reason.startswith("image /camera/wrist: no message yet") for reason in reasons)
    assert not core.control_tick(t)
    with pytest.raises(ControlError, match="camera 2"):
        core.on_image(image(t), t, camera=2)


def test_joint_states_without_the_presets_joints_name_the_missing_ones():
    """A UR5e's joint states on the panda preset: enable is refused, the hold says which."""
    ur5e = ("shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint")
    ur5e += ("wrist_2_joint", "wrist_3_joint", "robotiq_85_left_knuckle_joint")
    core = PolicyNodeCore(
        {"robot": "panda", "command_interface": "joint_trajectory", "dry_run": False},
        TYPES,
        build_policy=lambda bits: ConstantPolicy(),
    )
    try:
        core.on_instruction(instruction(), 0.0)
        core.on_image(image(0.0), 0.0)
        core.on_joint_states(joints(0.0, np.zeros(7), ur5e), 0.0)
        ok, why = core.enable(True, 0.0)
        assert not ok and "panda_joint1" in why and "robotiq_85_left_knuckle_joint" in why
        reasons = core.hold_reasons(0.0)
        assert any(r.startswith("joint_states lack panda_joint1, panda_joint2") for r in reasons)
    finally:
        core.close()


def test_joints_from_two_drivers_are_merged_and_a_silent_one_is_named():
    """The arm's controller and the gripper's driver publish /joint_states separately."""
    arm, knuckle = SAWYER_JOINTS[:7], "robotiq_85_left_knuckle_joint"
    policy = JointStatePolicy((*arm, knuckle))
    core = PolicyNodeCore(
        {"robot": "sawyer_sim", "dry_run": False, "joint_states_timeout_s": 0.5},
        TYPES,
        build_policy=lambda bits: policy,
    )
    try:
        core.on_instruction(instruction(), 0.0)
        for t in (0.0, 0.1, 0.2):
            core.on_image(image(t), t)
            core.on_ee_pose(ee_pose(t), t)
            core.on_joint_states(joints(t, SAWYER_HOME[:7], arm), t)
            if t < 0.15:  # the gripper driver publishes at a lower rate
                core.on_joint_states(joints(t, [0.42], (knuckle,)), t)
        ok, why = core.enable(True, 0.2)
        assert ok, why
        assert core.control_tick(0.2)
        wait_idle(core)
        np.testing.assert_allclose(policy.states[-1], [*SAWYER_HOME[:7], 0.42])
        # The gripper driver stops; the arm's joints keep coming.
        for t in (0.4, 0.6, 0.8):
            core.on_image(image(t), t)
            core.on_joint_states(joints(t, SAWYER_HOME[:7], arm), t)
        reasons = core.hold_reasons(0.8)
        assert any(r.startswith(f"joint_states lack {knuckle}") for r in reasons), reasons
        assert not core.control_tick(0.8)
    finally:
        core.close()
