"""Run the sim bridge and the policy node logic together without ROS, in lockstep, and record.

Messages go between the two cores exactly as the topics of sim.launch.py carry them, one sim
step at a time, and every message can be written to a rosbag2 under its topic name, so the
bag looks like `ros2 bag record` of the launched graph and `daptq drift` reads it unchanged.
Lockstep (the worker's inference, and the drift guard's shadow, are awaited at each tick) makes
runs reproducible; the latency the node sees is then its injected latency (inject_latency_s), in
sim time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from daptq_ros.bags.convert import sec_to_ns
from daptq_ros.bags.episode import episode_custom_data
from daptq_ros.bags.writer import BagWriter
from daptq_ros.errors import ControlError
from daptq_ros.robot import policy_core, sim_bridge_core
from daptq_ros.robot.params import sim_node_params
from daptq_ros.robot.policy_core import PolicyNodeCore
from daptq_ros.robot.shadow import SHADOW
from daptq_ros.robot.sim_bridge_core import SimBridgeCore

INFERENCE_TIMEOUT_S = 60.0
# Where each output of the cores goes, by topic, as sim.launch.py wires the graph.
BRIDGE_TOPICS = {
    sim_bridge_core.IMAGE: "/camera/image_raw",
    sim_bridge_core.JOINT_STATES: "/joint_states",
    sim_bridge_core.EE_POSE: "/ee_pose",
    sim_bridge_core.CLOCK: "/clock",
    sim_bridge_core.INSTRUCTION: "/instruction",
    sim_bridge_core.EPISODE: "/sim_bridge/episode",
}
POLICY_TOPICS = {
    policy_core.DEBUG_COMMAND: "/policy_node/debug/command",
    policy_core.GRIPPER: "/policy_node/gripper",
    policy_core.DEBUG_GRIPPER: "/policy_node/debug/gripper",
    policy_core.ACTION_CHUNK: "/policy_node/action_chunk",
    SHADOW: "/policy_node/shadow",
}
STATUS_TOPIC = "/policy_node/status"


@dataclass(frozen=True)
class LockstepResult:
    """How a lockstep episode went."""

    steps: int
    success: bool
    commands: int
    chunks: int


class MessageSink(Protocol):
    """What run_lockstep hands every message to (a Recorder, or e.g. drift monitors)."""

    def write(self, topic: str, msg: Any, now: float) -> None:
        """Take `msg`, carried on `topic`, at time `now` (s)."""


class Recorder:
    """Writes messages to a rosbag2 (MCAP) under their topics, adding each topic on first use."""

    def __init__(self, path: str | Path) -> None:
        self.bag = BagWriter(path, compress=True)
        self.bag.open()
        self._topics: set[str] = set()

    def write(self, topic: str, msg: Any, now: float) -> None:
        """Record `msg` on `topic` at time `now` (s)."""
        if topic not in self._topics:
            self.bag.add_topic(topic, msg.__msgtype__)
            self._topics.add(topic)
        self.bag.write(topic, msg, sec_to_ns(now))

    def close(self, metadata: dict[str, str]) -> None:
        """Store the episode metadata (daptq.* keys) and close the bag."""
        for key, value in metadata.items():
            self.bag.set_custom_data(key, value)
        self.bag.close()


def lockstep_node_params(bridge: SimBridgeCore, threads: int = 1) -> dict[str, Any]:
    """The policy node's parameters for a lockstep run beside `bridge`: as sim.launch.py starts
    it (robot.params.sim_node_params), publishing, with a command every sim step (run_lockstep
    ticks once per step) and `threads` torch threads."""
    return {
        **sim_node_params(),
        "dry_run": False,
        "command_hz": 1.0 / bridge.period,
        "num_threads": threads,
    }


def run_lockstep(
    bridge: SimBridgeCore,
    node: PolicyNodeCore,
    steps: int,
    recorder: MessageSink | None = None,
    enable: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> LockstepResult:
    """Step the sim `steps` times (or until its episode ends) with the node commanding it."""
    if node.interface != bridge.interface:
        raise ControlError(
            f"lockstep: the policy node commands {node.interface} and the sim bridge takes "
            f"{bridge.interface}; give both the same command_interface"
        )
    command_topic = node.command_topic
    status_every = max(1, round(float(node.params["command_hz"]) * node.control_period))
    commands = chunks = 0

    def deliver(messages: list[tuple[str, Any]], now: float) -> None:
        handlers = {
            sim_bridge_core.IMAGE: node.on_image,
            sim_bridge_core.JOINT_STATES: node.on_joint_states,
            sim_bridge_core.EE_POSE: node.on_ee_pose,
            sim_bridge_core.INSTRUCTION: node.on_instruction,
        }
        for key, msg in messages:
            if key in handlers:
                handlers[key](msg, now)
            if recorder is not None:
                recorder.write(BRIDGE_TOPICS[key], msg, now)

    deliver(bridge.initial_messages(), bridge.time)
    if enable:
        ok, reason = node.enable(True, bridge.time)
        if not ok:
            raise ControlError(f"lockstep: the policy node refused to enable: {reason}")
    for step in range(steps):
        now = bridge.time
        if node.control_tick(now):  # the node decides when a chunk is due
            _await_inference(node)
        for key, msg in node.command_tick(now):
            if key == policy_core.COMMAND:
                commands += 1
                bridge.on_command(msg)
            elif key == policy_core.GRIPPER:
                bridge.on_gripper_command(msg)
            elif key == policy_core.ACTION_CHUNK:
                chunks += 1
            if recorder is not None:
                topic = command_topic if key == policy_core.COMMAND else POLICY_TOPICS[key]
                recorder.write(topic, msg, now)
        _await_shadow(node)  # its comparison is ready at the next step, in sim time
        if recorder is not None and step % status_every == 0:
            recorder.write(STATUS_TOPIC, node.status_msg(now), now)
        if on_step is not None:
            on_step(step, now)
        deliver(bridge.step(), bridge.time)
        if bridge.done:
            break
    return LockstepResult(bridge.env.steps, bridge.success, commands, chunks)


def episode_metadata(bridge: SimBridgeCore, node: PolicyNodeCore, success: bool) -> dict[str, str]:
    """The daptq.* bag metadata `daptq drift` pairs and groups episodes by."""
    task = str(bridge.params["task"])
    return episode_custom_data(
        task, bridge.seed, 0, node.model_label, node.bit_config, success, bridge.instruction
    )


def _await_inference(node: PolicyNodeCore) -> None:
    """Block until the worker has finished what was submitted (lockstep)."""
    deadline = time.monotonic() + INFERENCE_TIMEOUT_S
    while node.worker.busy:
        if time.monotonic() > deadline:
            raise ControlError(f"lockstep: inference took over {INFERENCE_TIMEOUT_S} s")
        time.sleep(0.0005)


def _await_shadow(node: PolicyNodeCore) -> None:
    """Block until the drift guard's shadow has compared what it was offered and the ladder's
    next rungs are built (lockstep)."""
    if node.guard is None:
        return
    deadline = time.monotonic() + INFERENCE_TIMEOUT_S
    while node.guard.busy:
        if time.monotonic() > deadline:
            raise ControlError(f"lockstep: the shadow took over {INFERENCE_TIMEOUT_S} s")
        time.sleep(0.0005)
