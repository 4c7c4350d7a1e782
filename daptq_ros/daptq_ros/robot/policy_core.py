"""The policy node without rclpy: messages in, inference off-thread, safe command messages out.

The rclpy node (nodes/policy_node.py) only forwards callbacks, timers, services and parameter
changes here and publishes what comes back. Threads: subscription callbacks store the newest
message; `control_tick` (asked every command period) submits the newest observation to the
inference worker when the replanner says a chunk is due (control/replan.py); `command_tick`
(at command_hz) is the only place that produces commands, always through the safety filter,
on the replanner's timeline. Parameter changes are validated by `check_parameter` (the
set-parameters callback; it never acts) and applied at the next command tick, which works
on Humble, where post-set callbacks do not exist.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daptq_ros.bags.convert import (
    TypeSource,
    compressed_image_to_numpy,
    image_to_numpy,
    pose_stamped_msg,
    sec_to_ns,
)
from daptq_ros.bags.robot_msgs import (
    action_chunk_msg,
    float64_array_msg,
    joint_trajectory_msg,
    policy_status_msg,
    twist_stamped_msg,
)
from daptq_ros.bags.state import EE_STATE
from daptq_ros.control.chunks import ChunkScheduler, ChunkState
from daptq_ros.control.commands import TargetBuilder, checked_chunk
from daptq_ros.control.limits import AxisLimits
from daptq_ros.control.replan import Replanner
from daptq_ros.control.runtime import (
    ChunkPolicy,
    InferenceResult,
    InferenceWorker,
    Observation,
    SwapState,
)
from daptq_ros.control.safety import SafetyConfig, SafetyFilter, Status
from daptq_ros.control.timing import ChunkTiming
from daptq_ros.control.watchdog import Watchdog
from daptq_ros.errors import ControlError, DaptqError
from daptq_ros.policy.contract import ChunkPrefix
from daptq_ros.robot import policy_status
from daptq_ros.robot.arm import ArmModel, arm_model
from daptq_ros.robot.arm_state import ArmState
from daptq_ros.robot.cameras import CameraFrames
from daptq_ros.robot.drift_guard import build_guard
from daptq_ros.robot.params import check_overrides, defaults, spec
from daptq_ros.robot.policy_builder import default_policy_builder
from daptq_ros.robot.presets import load_robot
from daptq_ros.robot.probe import chunk_method, probe

NODE = "policy_node"
# Output keys; the rclpy node maps them to publishers (a leading ~ is the node's namespace).
COMMAND = "command"
DEBUG_COMMAND = "~/debug/command"
GRIPPER = "~/gripper"
DEBUG_GRIPPER = "~/debug/gripper"
ACTION_CHUNK = "~/action_chunk"
TRAJECTORY_PREVIEW_S = 0.5  # s of future points a JointTrajectory command carries
RATE_WINDOW = 32  # events over which achieved rates are measured
MOVING = (Status.ACTIVE, Status.BLENDING)
IDENTITY_QUAT = np.array([0.0, 0.0, 0.0, 1.0])
# A clock step backwards larger than this is a restarted clock source (a new simulator), not
# the rounding of two stamps.
CLOCK_JUMP_TOLERANCE_S = 1e-3


class PolicyNodeCore:
    """Everything the policy node does, fed with message objects and times in seconds."""

    def __init__(
        self,
        params: Mapping[str, Any],
        types: TypeSource,
        build_policy: Callable[[str], ChunkPolicy] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if reasons := check_overrides(NODE, params):
            raise ControlError("; ".join(reasons))
        self.params: dict[str, Any] = {**defaults(NODE), **params}
        p = self.params
        self.types = types
        self.robot = load_robot(p["robot"])
        self.interface = str(p["command_interface"])
        self.command_topic = str(p["command_topic"]) or self.robot.command_topics.get(
            self.interface, ""
        )
        if not self.command_topic:
            raise ControlError(
                f"robot preset {self.robot.name} names no topic for command_interface "
                f"{self.interface}; set the command_topic parameter"
            )
        self.arm: ArmModel | None = arm_model(self.robot, str(p["urdf_path"]))
        self.dry_run = bool(p["dry_run"])
        self.bit_config = str(p["bit_config"])
        self._build = build_policy or default_policy_builder(p)
        self.last_error = ""
        self.last_guidance = ""  # the RTC method that fitted the newest chunk ("" = none)
        self._probes: dict[str, ChunkTiming] = {}
        first = self._build_and_probe(self.bit_config)
        self.timing = self._probes[self.bit_config]
        # A quantized model directory runs as the bit config it was written with.
        self.bit_config = str(getattr(first, "bit_config", "") or self.bit_config)
        # Latency is wall time: the node clock may be a simulator's, which runs at any rate.
        self.worker = InferenceWorker(first, self.bit_config)
        joint_count = len(self.robot.joints.names)
        self.guard = build_guard(
            p, self._build, self.bit_config, self.worker, self.arm, joint_count, time.monotonic
        )
        meta = getattr(getattr(first, "loaded", None), "meta", None)
        self.model_label = str(p["model"])
        self.family = str(getattr(meta, "family", ""))
        self.arm_state = ArmState(
            self.robot,
            self.interface,
            self.arm,
            getattr(meta, "state_spec", EE_STATE),
            float(p["joint_states_timeout_s"]),
        )
        self.chunk_method, self.chunk_method_note = chunk_method(p, first)
        self.scheduler = ChunkScheduler(
            str(p["chunk_merge"]),
            float(p["ensemble_decay"]),
            crossfade=float(p["chunk_crossfade_s"]),
        )
        self.replanner = Replanner(
            self.scheduler,
            self.chunk_method == "rtc",
            str(p["overrun"]),
            float(p["min_timeline_rate"]),
            self.timing.latency,
        )
        self._set_injection()
        self.safety = SafetyFilter(self._limits(), self._safety_config())
        self.cameras = CameraFrames(tuple(p["image_topics"]))
        self.inputs = Watchdog(
            {
                **dict.fromkeys(self.cameras.streams, float(p["image_timeout_s"])),
                "joint_states": float(p["joint_states_timeout_s"]),
                "instruction": float(p["instruction_timeout_s"]),
            }
        )
        self.outputs = Watchdog({"action_chunk": float(p["output_timeout_s"])})
        self.counters = {"rejected_actions": 0, "clipped_actions": 0, "failed_inferences": 0}
        self.counters["stale_results"] = 0
        # Why the node disabled itself (the clock stopped or jumped back); cleared by enable.
        self.fault = ""
        self._last_tick: tuple[float, float] | None = None  # (node time, wall time)
        # A failed bit_config swap stays reported until the next swap request: the chunks the
        # old model keeps producing must not clear it (last_error is cleared by each chunk).
        self.swap_error = ""
        self._builder: TargetBuilder | None = None
        self._chunk_dt = 0.0
        self.instruction = str(p["instruction"])
        self._hold_quat = IDENTITY_QUAT
        self._pending: dict[str, Any] = {}
        self._pending_lock = threading.Lock()  # parameter callbacks run on another thread
        self.command_times: deque[float] = deque(maxlen=RATE_WINDOW)
        self.chunk_times: deque[float] = deque(maxlen=RATE_WINDOW)
        if self.instruction:
            self.inputs.feed("instruction", clock())

    @property
    def control_period(self) -> float:
        """Seconds between inferences (the control timer's period)."""
        return self.timing.control_period

    @property
    def base_frame(self) -> str:
        """frame_id of published poses and twists: the parameter, else the robot preset's."""
        return str(self.params["base_frame"]) or self.robot.base_frame

    # ----- inputs: store the newest message, feed the watchdog -----
    def on_image(
        self,
        msg: Any,
        now: float,
        decode: Callable[[Any], NDArray[np.uint8]] = image_to_numpy,
        camera: int = 0,
    ) -> None:
        """A sensor_msgs/Image becomes camera `camera`'s newest frame (RGB; `decode` may be
        cv_bridge's)."""
        self.inputs.feed(self.cameras.store(decode(msg), msg, now, camera), now)

    def on_compressed_image(self, msg: Any, now: float, camera: int = 0) -> None:
        """A sensor_msgs/CompressedImage becomes camera `camera`'s newest frame."""
        self.inputs.feed(self.cameras.store(compressed_image_to_numpy(msg), msg, now, camera), now)

    def on_instruction(self, msg: Any, now: float) -> None:
        """A std_msgs/String sets the instruction."""
        text = str(msg.data).strip()
        if text:
            self.instruction = text
            self.inputs.feed("instruction", now)

    def on_joint_states(self, msg: Any, now: float) -> None:
        """A sensor_msgs/JointState becomes the newest arm state."""
        self.arm_state.on_joint_states(msg, now)
        self.inputs.feed("joint_states", now)

    def on_ee_pose(self, msg: Any, now: float) -> None:
        """A geometry_msgs/PoseStamped becomes the newest end-effector pose."""
        self.arm_state.on_ee_pose(msg)

    # ----- timers -----
    def control_tick(self, now: float) -> bool:
        """Submit the newest observation for inference when one is due; True if submitted.

        Due: no chunk in flight and a control period since the last submission (control/replan).
        """
        period = 1.0 / float(self.params["command_hz"])
        in_flight = self.worker.busy or self.worker.has_results
        if not self.replanner.due(now, in_flight, self.control_period, period):
            return False
        fresh = None if self.inputs.stale(now) else self.cameras.fresh()
        if fresh is None:
            return False  # stale inputs, a camera without a frame, or nothing new
        self.arm_state.refresh(now)
        state = self.arm_state.policy_state()
        if state is None:
            return False
        # The chunk is timed from the oldest frame it saw: its rows are never early.
        image, stamp = fresh
        plan = self.replanner.submit(now, stamp)
        prefix = None
        if plan is not None:
            prefix = ChunkPrefix(plan.actions, plan.delay, str(self.params["rtc_jacobian"]))
        observation = Observation(image, self.instruction, state, stamp, prefix)
        self.worker.submit(observation)
        if self.guard is not None:
            self.guard.note(observation)
        self.cameras.use()
        return True

    def command_tick(self, now: float) -> list[tuple[str, Any]]:
        """One command period: collect chunks, filter, and return (output key, message) pairs."""
        out: list[tuple[str, Any]] = []
        self._check_clock(now)
        self._apply_pending()
        self._advance_swap()
        for result in self.worker.take_results():
            self.replanner.hold(result, now)
        for result in self.replanner.released(now):
            self._accept(result, now, out)
        if self.guard is not None:  # a ladder switch changes the bit config serving
            reports, self.bit_config = self.guard.tick(self.types, self.bit_config)
            out += reports
        # A chunk is overdue after output_timeout_s, or after twice the usual latency when
        # inference is slower than that: a slow model is not a dead one.
        timeout = max(float(self.params["output_timeout_s"]), 2 * self.replanner.latency())
        self.outputs.set_timeout("action_chunk", timeout)
        reasons = self.hold_reasons(now)
        if reasons:
            self.safety.hold("; ".join(reasons))
        else:
            self.safety.resume()
        period = 1.0 / float(self.params["command_hz"])
        gained = self.replanner.tick(now, period)
        measured = self.arm_state.measured()
        tau = self.replanner.chunk_time(now)
        target, gripper = self._target(tau, gained, self.safety)
        command = self.safety.step(target, measured, now, period)
        self.command_times.append(now)
        if command.position is None:
            return out
        message = self._command_msg(command, now, period)
        out.append((DEBUG_COMMAND if self.dry_run else COMMAND, message))
        if gripper is not None and command.status in MOVING:
            out.append(
                (
                    DEBUG_GRIPPER if self.dry_run else GRIPPER,
                    float64_array_msg(self.types, [gripper]),
                )
            )
        return out

    def clock_watchdog(self, wall: float) -> str:
        """Called on a wall-clock timer: disable when the node clock stopped; the fault or ""."""
        timeout = float(self.params["clock_timeout_s"])
        if self._last_tick is None or not self.safety.enabled:
            return ""
        stalled = wall - self._last_tick[1]
        if stalled > timeout:
            self._disable_on_fault(
                f"the node clock has not advanced for {stalled:.2f} s of wall time (timeout "
                f"{timeout:g} s): /clock stopped (under use_sim_time) or the node is starved"
            )
        return self.fault

    # ----- services -----
    def enable(self, flag: bool, now: float) -> tuple[bool, str]:
        """~/enable: start commanding from the measured state (True) or stop (False)."""
        if not flag:
            self.safety.disable()
            return True, "disabled: no motion commands are published"
        if stale := self.inputs.reasons(now):
            return False, "cannot enable, inputs are stale: " + "; ".join(stale)
        self.arm_state.refresh(now)
        if problem := self.arm_state.problem():
            return False, f"cannot enable: {problem}"
        measured = self.arm_state.measured()
        assert measured is not None  # problem() says why otherwise
        ok, reason = self.safety.enable(measured, now)
        if ok:
            self.fault = ""
            # The clock watchdog counts from here: a clock that stops before the first command
            # tick after enabling must be caught too.
            self._last_tick = (now, time.monotonic())
            if self.arm_state.ee_pose is not None:
                self._hold_quat = self.arm_state.ee_pose.quat_xyzw
        return ok, reason

    def estop(self) -> tuple[bool, str]:
        """~/estop: latch a hold; only reset_estop followed by enable moves the arm again."""
        self.safety.estop("e-stop service")
        self.replanner.forget()
        return True, "e-stop latched: the arm holds; call ~/reset_estop, then ~/enable"

    def reset_estop(self) -> tuple[bool, str]:
        """~/reset_estop: clear the latch; the node stays disabled until enabled again."""
        self.safety.reset_estop()
        return True, "e-stop cleared; the node is disabled until ~/enable"

    # ----- parameters -----
    def check_parameter(self, name: str, value: Any) -> str | None:
        """Why a run-time change of `name` to `value` is refused, or None if it is accepted."""
        try:
            param = spec(NODE, name)
        except ControlError as error:
            return str(error)
        if reason := param.check(value):
            return reason
        if param.read_only:
            return f"{name} is read-only at run time; restart the node with the new value"
        enabled = self.safety.enabled
        if name == "bit_config":
            return self._check_swap(str(value), enabled)
        if name in ("velocity_scale", "acceleration_scale") and enabled:
            return f"{name} can change only while the node is disabled (call ~/enable false)"
        return None

    def accept_parameter(self, name: str, value: Any) -> None:
        """Queue an accepted change; it takes effect at the next command tick."""
        with self._pending_lock:
            self._pending[name] = value

    # ----- what the node reports -----
    def hold_reasons(self, now: float) -> list[str]:
        """Why the arm must hold now (stale inputs or outputs, a swap); empty when none."""
        self.arm_state.refresh(now)
        reasons = self.inputs.reasons(now) + self.outputs.reasons(now)
        if self.last_error and self.outputs.stale(now):
            reasons.append(f"last chunk refused: {self.last_error}")
        if problem := self.arm_state.problem():
            reasons.append(problem)
        return reasons

    def status_fields(self, now: float) -> dict[str, Any]:
        """The fields of daptq_ros_interfaces/PolicyStatus."""
        return policy_status.fields(self, now)

    def status_key(self, now: float) -> tuple[Any, ...]:
        """What a status change is: safety state, fault, bit config, which streams hold."""
        return (
            self.safety.status.value,
            self.safety.enabled,
            self.safety.estopped,
            self.fault,
            self.bit_config,
            self.worker.swap_state.value,
            tuple(reason.split(":")[0] for reason in self.hold_reasons(now)),
        )

    def status_msg(self, now: float) -> Any:
        """~/status: our PolicyStatus message (bags record the active bit config with it)."""
        return policy_status_msg(self.types, sec_to_ns(now), self.status_fields(now))

    def diagnostics_msg(self, now: float) -> Any:
        """/diagnostics: model, bit config, rates, drops, clipping, watchdog state."""
        return policy_status.diagnostics(self, now, NODE)

    def close(self) -> None:
        """Stop the inference workers."""
        self.worker.close()
        if self.guard is not None:
            self.guard.close()

    # ----- internals -----
    def _build_and_probe(self, bits: str) -> ChunkPolicy:
        """Build the policy for `bits` and time it at start (robot/probe.py)."""
        policy = self._build(bits)
        timing, error = probe(policy, self.params)
        if error:
            self.last_error = error
        self._probes[bits] = timing
        return policy

    def _check_clock(self, now: float) -> None:
        """Disable when the node clock went backwards (a restarted simulator or clock source)."""
        wall = time.monotonic()
        if self._last_tick is not None and now < self._last_tick[0] - CLOCK_JUMP_TOLERANCE_S:
            self._disable_on_fault(
                f"the node clock jumped back from {self._last_tick[0]:.3f} s to {now:.3f} s "
                "(the clock source restarted)"
            )
            self.safety.release()  # the old stream's braking must not reach the new arm
            self.replanner.forget()
            # Ages measured on the old clock mean nothing now: every stream must arrive again
            # (the instruction excepted, which only has to have arrived once).
            self.inputs.reset()
            self.outputs.reset()
            if self.instruction:
                self.inputs.feed("instruction", now)
        self._last_tick = (now, wall)

    def _disable_on_fault(self, reason: str) -> None:
        """Stop commanding (a held arm) until ~/enable; the reason shows on status/diagnostics."""
        if self.safety.enabled:
            self.safety.disable()
            self.replanner.forget()
            self.fault = f"{reason}; disabled, call ~/enable once the inputs are back"

    def _limits(self) -> AxisLimits:
        p = self.params
        return self.robot.command_limits(
            self.interface,
            float(p["position_margin"]),
            float(p["velocity_scale"]),
            float(p["acceleration_scale"]),
            str(p["urdf_path"]),
        )

    def _safety_config(self) -> SafetyConfig:
        return SafetyConfig(
            deviation_threshold=float(self.params["deviation_threshold"]),
            blend_time=max(float(self.params["blend_time_s"]), 1e-3),
        )

    def _set_injection(self) -> None:
        """The injected-latency test axis, from the parameters."""
        self.replanner.inject(
            float(self.params["inject_latency_s"]), float(self.params["inject_latency_jitter_s"])
        )

    def _check_swap(self, bits: str, enabled: bool) -> str | None:
        from daptq_ros.policy.quantize import FULL_PRECISION, check_runtime_bit_config

        if self.guard is not None and self.guard.escalation is not None:
            return "the precision ladder sets bit_config; clear precision_ladder to set it by hand"
        exported = self.params["runtime"] == "openvino" and Path(bits).is_dir()
        if bits != FULL_PRECISION and not exported:
            try:
                check_runtime_bit_config(bits)
            except DaptqError as error:
                return str(error)
        if enabled and not self.params["allow_swap_while_enabled"]:
            return (
                "bit_config cannot change while the node is enabled; call ~/enable false first, "
                "or set allow_swap_while_enabled true"
            )
        if self.worker.swap_state is SwapState.BUILDING:
            return f"a swap to {self.worker.swap_label} is still in progress; try again later"
        return None

    def _apply_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for name, value in pending.items():
            self.params[name] = value
            if name == "dry_run":
                self.dry_run = bool(value)
            elif name == "bit_config":
                bits = str(value)
                self.swap_error = ""
                self.worker.request_swap(bits, lambda bits=bits: self._build_and_probe(bits))
            elif name in ("inject_latency_s", "inject_latency_jitter_s"):
                self._set_injection()
            elif name in ("velocity_scale", "acceleration_scale") and not self.safety.enabled:
                self.safety = SafetyFilter(self._limits(), self._safety_config())

    def _advance_swap(self) -> None:
        """Between control steps: serve a built model, or report a failed build."""
        if self.worker.swap_state is SwapState.READY:
            self.bit_config = self.worker.apply_swap() or self.bit_config
            self.timing = self._probes.get(self.bit_config, self.timing)
            self.params["bit_config"] = self.bit_config
            # The old model's chunks are not mixed with the new one's: hold until it answers.
            self.replanner.forget()
            self.outputs.reset()
            self.cameras.forget_use()
        elif self.worker.swap_state is SwapState.FAILED:
            self.swap_error = f"bit_config swap failed: {self.worker.acknowledge_failed_swap()}"
            self.params["bit_config"] = self.bit_config

    def _accept(self, result: InferenceResult, now: float, out: list[tuple[str, Any]]) -> None:
        failed = result.error or result.actions is None
        stale = result.generation != self.worker.generation
        tau = self.replanner.arrived(now, None if failed or stale else result.stamp)
        if stale:
            self.counters["stale_results"] += 1  # computed by the model before a swap
            return
        if failed:
            self.counters["failed_inferences"] += 1
            self.last_error = f"inference failed: {result.error}"
            return
        actions = self._checked_actions(result)
        if actions is None:
            return
        try:
            if self._builder is None:
                self._builder = self._target_builder(result)
            now_tau = self.replanner.chunk_time(now)
            added = self.scheduler.add(actions, tau, result.dt, now_tau)
        except ControlError as error:
            self.counters["rejected_actions"] += 1
            self.last_error = str(error)
            return
        self.last_error = ""
        self.last_guidance = result.guidance
        if self.guard is not None:
            self.guard.offer(result.stamp, actions, result.space, self.arm_state.joint_positions())
        self._chunk_dt = result.dt
        self.chunk_times.append(now)
        if added:
            self.outputs.feed("action_chunk", now)
        out.append(
            (
                ACTION_CHUNK,
                action_chunk_msg(
                    self.types,
                    sec_to_ns(result.stamp),
                    actions,
                    result.dt,
                    result.space,
                    result.names,
                    result.latency,
                    self.bit_config,
                ),
            )
        )

    def _checked_actions(self, result: InferenceResult) -> NDArray[np.float64] | None:
        """The chunk's actions, clipped to the action space's range; None if rejected."""
        actions, problem, clipped = checked_chunk(result.actions, result.space)
        self.counters["clipped_actions"] += clipped
        if actions is None:
            self.counters["rejected_actions"] += 1
            self.last_error = problem
        return actions

    def _target_builder(self, result: InferenceResult) -> TargetBuilder:
        return TargetBuilder(
            result.space,
            result.names,
            self.interface,
            float(self.params["action_scale"]),
            len(self.robot.joints.names),
            self.arm,
        )

    def _target(
        self, tau: float, gained: float, safety: SafetyFilter
    ) -> tuple[NDArray[np.float64] | None, float | None]:
        """The target at timeline time tau, `gained` timeline seconds after the last command
        (None when there is no action). Stopped at the end of the chunks (a late chunk), the
        arm stands at their last row: it waits in place instead of re-blending afterwards."""
        action = self.scheduler.sample(tau)
        if action is None and self.scheduler.state(tau) is ChunkState.PAST_END:
            action, gained = self.scheduler.last_action(), 0.0
        reference = safety.last_command
        if action is None or self._builder is None or reference is None:
            return None, None
        target = self._builder.target(action, reference, gained, self._chunk_dt)
        return target.position, target.gripper

    def _command_msg(self, command: Any, now: float, period: float) -> Any:
        stamp = sec_to_ns(now)
        names = self.robot.joints.names
        if self.interface == "joint_trajectory":
            points, times = self._trajectory(command, now, period)
            return joint_trajectory_msg(self.types, stamp, names, points, times)
        if self.interface == "position_array":
            return float64_array_msg(self.types, command.position)
        frame = self.base_frame
        if self.interface == "twist":
            velocity = np.zeros(3) if command.velocity is None else command.velocity
            return twist_stamped_msg(self.types, stamp, velocity, np.zeros(3), frame)
        return pose_stamped_msg(self.types, stamp, command.position, self._hold_quat, frame)

    def _trajectory(
        self, command: Any, now: float, period: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """This command plus the chunk's next points, each through a copy of the filter."""
        points = [command.position]
        if command.status in MOVING:
            preview = copy.deepcopy(self.safety)
            tau, rate = self.replanner.chunk_time(now), self.replanner.timeline.rate
            horizon = min(self.scheduler.remaining(tau), TRAJECTORY_PREVIEW_S)
            for k in range(1, int(horizon / period)):
                t = now + k * period
                target, _ = self._target(tau + k * period * rate, period * rate, preview)
                step = preview.step(target, None, t, period)
                if step.position is None or step.status not in MOVING:
                    break
                points.append(step.position)
        times = period * np.arange(1, len(points) + 1)
        return np.stack(points), times
