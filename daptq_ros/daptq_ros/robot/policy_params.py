"""The policy node's parameters: names, defaults, ranges and choices (see robot/params.py)."""

from __future__ import annotations

from daptq_ros.control.commands import COMMAND_INTERFACES
from daptq_ros.robot.param_spec import (
    ACTION_SCALE,
    EE_POSE_TOPIC,
    JOINT_STATES_TOPIC,
    ROBOT,
    URDF_PATH,
    ParamSpec,
)

POLICY_NODE: tuple[ParamSpec, ...] = (
    ParamSpec(
        "model",
        "default",
        "model directory to load, or 'default' for the embedded default model",
    ),
    ParamSpec(
        "bit_config",
        "fp32",
        "quantization bit configuration: a preset name of config/bits/ or a YAML file path; "
        "a change swaps the model between control steps once the new one is built",
        read_only=False,
    ),
    ParamSpec(
        "allow_swap_while_enabled",
        False,
        "accept bit_config changes while the policy drives the arm (else they are rejected)",
        read_only=False,
    ),
    ROBOT,
    URDF_PATH,
    ParamSpec(
        "command_interface",
        "pose",
        "how commands reach the arm controller",
        choices=COMMAND_INTERFACES,
    ),
    ParamSpec(
        "command_topic",
        "",
        "topic of the arm commands ('' = the robot preset's topic for command_interface)",
    ),
    ParamSpec(
        "image_topics",
        ("/camera/image_raw",),
        "sensor_msgs/Image topics of the cameras, in the model's view order; their newest "
        "frames are tiled side by side",
    ),
    ParamSpec(
        "use_compressed",
        False,
        "subscribe to <image topic>/compressed (sensor_msgs/CompressedImage) instead",
    ),
    ParamSpec("instruction_topic", "/instruction", "std_msgs/String topic of the instruction"),
    JOINT_STATES_TOPIC,
    EE_POSE_TOPIC,
    ParamSpec(
        "control_hz",
        0.0,
        "most often the policy is asked for a chunk, Hz, never while one is in flight (0 = "
        "replan at half the model's chunk horizon, as daptq eval does: 20 Hz for the embedded "
        "models' 8 x 12.5 ms chunks)",
        low=0.0,
        high=100.0,
    ),
    ParamSpec("command_hz", 50.0, "rate of commands sent to the arm, Hz", low=1.0, high=1000.0),
    ParamSpec(
        "dry_run",
        True,
        "compute and publish on ~/debug/* only; nothing is sent to the arm",
        read_only=False,
    ),
    ParamSpec(
        "image_timeout_s",
        0.5,
        "hold when the newest image is older than this, s",
        low=0.01,
        high=10.0,
    ),
    ParamSpec(
        "joint_states_timeout_s",
        0.2,
        "hold when the newest joint state is older than this, s",
        low=0.01,
        high=10.0,
    ),
    ParamSpec(
        "instruction_timeout_s",
        0.0,
        "hold when the newest instruction is older than this, s "
        "(0 = it only has to have been received once)",
        low=0.0,
        high=3600.0,
    ),
    ParamSpec(
        "output_timeout_s",
        0.5,
        "hold when no fresh action chunk has arrived for this long (or for twice the usual "
        "inference latency, when that is longer), s",
        low=0.01,
        high=10.0,
    ),
    ParamSpec(
        "clock_timeout_s",
        0.5,
        "disable when the node clock (/clock under use_sim_time) has not advanced for this "
        "long in wall time while enabled, s",
        low=0.05,
        high=10.0,
    ),
    ParamSpec(
        "chunk_crossfade_s",
        0.025,
        "blend the previous chunk's actions into a new chunk's over this long, s (0 = switch "
        "at once)",
        low=0.0,
        high=1.0,
    ),
    ParamSpec(
        "chunk_method",
        "crossfade",
        "how a new chunk joins the one executing: crossfade, or rtc (real-time chunking: the "
        "policy continues the actions that run while it computes, then the crossfade; "
        "flow-matching families), or auto (rtc where the family allows it)",
        choices=("auto", "rtc", "crossfade"),
    ),
    ParamSpec(
        "rtc_jacobian",
        "identity",
        "RTC guidance Jacobian: identity (no backward pass; any runtime) or vjp (the paper's "
        "backward pass through the model; torch only, twice the cost)",
        choices=("identity", "vjp"),
    ),
    ParamSpec(
        "overrun",
        "slow",
        "when inference outlasts the chunk held: slow the timeline so the chunk lasts until the "
        "next arrives (time scaling), or hold at its end",
        choices=("slow", "hold"),
    ),
    ParamSpec(
        "min_timeline_rate",
        0.2,
        "slowest timeline rate of overrun slow (below it the arm holds at the chunk's end)",
        low=0.0,
        high=1.0,
    ),
    ParamSpec(
        "inject_latency_s",
        0.0,
        "test axis: hold each chunk until this long (node time) after its observation was "
        "submitted, s",
        read_only=False,
        low=0.0,
        high=10.0,
    ),
    ParamSpec(
        "inject_latency_jitter_s",
        0.0,
        "test axis: add a uniform random delay of up to this long to inject_latency_s, s",
        read_only=False,
        low=0.0,
        high=10.0,
    ),
    ParamSpec(
        "chunk_merge",
        "latest",
        "how overlapping action chunks combine: the latest wins, or an exponential ensemble",
        choices=("latest", "ensemble"),
    ),
    ParamSpec(
        "ensemble_decay",
        0.1,
        "weight decay of older chunks in the ensemble, exp(-decay * age_index)",
        low=0.0,
        high=10.0,
    ),
    ParamSpec(
        "position_margin",
        0.05,
        "keep joint targets this far inside the position limits, rad (m for prismatic joints)",
        low=0.0,
        high=1.0,
    ),
    ParamSpec(
        "velocity_scale",
        0.5,
        "fraction of the robot's joint and Cartesian velocity limits that commands may use",
        read_only=False,
        low=0.01,
        high=1.0,
    ),
    ParamSpec(
        "acceleration_scale",
        0.5,
        "fraction of the robot's acceleration limits that commands may use",
        read_only=False,
        low=0.01,
        high=1.0,
    ),
    ParamSpec(
        "deviation_threshold",
        0.25,
        "hold when a target is farther than this from the measured joints, rad",
        low=0.001,
        high=10.0,
    ),
    ParamSpec(
        "blend_time_s",
        1.0,
        "time to blend from the measured state into the policy's commands after enabling, s",
        low=0.0,
        high=30.0,
    ),
    ACTION_SCALE,
    ParamSpec("num_threads", 2, "CPU threads for inference", low=1, high=64),
    ParamSpec("device", "cpu", "inference device", choices=("cpu", "cuda")),
    ParamSpec(
        "whole_model_bf16",
        False,
        "run the whole deployed model in bfloat16, not only its Linear layers (faster at "
        "deployment scale on CPUs with bf16 units; see docs/performance.md)",
    ),
    ParamSpec(
        "kernel_choice",
        "auto",
        "how each quantized layer's kernel is picked at load, by timing the candidates on this "
        "CPU (cached): auto = packed low-bit weights unless slower than bf16, packed = always "
        "packed (least memory), fastest = fastest whatever the memory",
        choices=("auto", "packed", "fastest"),
    ),
    ParamSpec(
        "runtime",
        "torch",
        "inference runtime: torch (this package's kernels) or openvino (the OpenVINO model that "
        "`daptq quantize --runtime openvino` exported; bit_config may then name another "
        "exported directory to swap to); without an exported model the node runs torch and "
        "warns on /diagnostics",
        choices=("torch", "openvino"),
    ),
    ParamSpec(
        "flow_steps",
        0,
        "denoising steps of the action head (0 = the model's default)",
        low=0,
        high=100,
    ),
    ParamSpec(
        "shadow_bit_config",
        "",
        "drift guard: a higher-precision copy of the model (a bit config, e.g. fp32, bf16 or "
        "w8a8) run at the lowest CPU priority on the observations of every shadow_every-th "
        "chunk, never delaying a command; its divergence from the deployed chunk is published "
        "on ~/shadow and /diagnostics ('' = no shadow)",
    ),
    ParamSpec(
        "shadow_every",
        4,
        "run the shadow on every this-many-th accepted chunk (skipped while it is busy)",
        low=1,
        high=1000,
    ),
    ParamSpec(
        "precision_ladder",
        ("",),
        "drift guard escalation: bit configs from the lowest precision to the highest, e.g. "
        "[daptq_b3, w8a8, bf16]; bit_config must be one of them and shadow_bit_config must be "
        "set; the node moves one rung up when the shadow's hand divergence stays above "
        "ladder_up_m, down when it stays below ladder_down_m ([''] = off)",
    ),
    ParamSpec(
        "ladder_up_m",
        0.01,
        "hand divergence from the shadow above which a comparison counts toward a rung up, m",
        low=0.0,
        high=1.0,
    ),
    ParamSpec(
        "ladder_down_m",
        0.003,
        "hand divergence below which a comparison counts toward a rung down (below ladder_up_m), m",
        low=0.0,
        high=1.0,
    ),
    ParamSpec(
        "ladder_up_count",
        3,
        "comparisons in a row above ladder_up_m that move one rung up",
        low=1,
        high=1000,
    ),
    ParamSpec(
        "ladder_down_count",
        10,
        "comparisons in a row below ladder_down_m that move one rung down",
        low=1,
        high=1000,
    ),
    ParamSpec("base_frame", "", "frame_id of published poses and twists ('' = the robot preset's)"),
    ParamSpec(
        "instruction",
        "",
        "instruction used until one arrives on instruction_topic ('' = wait for the topic)",
    ),
)
