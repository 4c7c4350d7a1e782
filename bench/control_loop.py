"""Benchmark: the policy node's pipeline in real time, without ROS, on synthetic camera frames.

Runs PolicyNodeCore as the rclpy node would: a camera thread publishing frames, a joint-state
thread, a control timer (inference worker) and a command timer, each a thread that sleeps to
its next deadline. Prints, per model: achieved inference rate, command-timer period jitter
(p50 / p99 of |actual - nominal| period), image-to-command latency (camera stamp to the first
command computed from the chunk that frame produced), dropped frames, and CPU use.

    python bench/control_loop.py --models default out/q_daptq --seconds 20
    python bench/control_loop.py --models scale:pi0/smolvla:fp32 \
        scale:pi0/smolvla:daptq_budget --whole-model-bf16 --threads 2

A `scale:FAMILY/SIZE:VARIANT` model is built with random weights at that size preset and
quantized as VARIANT of `daptq bench --deploy` (speed only: the commands are meaningless).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # short spin: see docs/performance.md
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from daptq_ros.bags.convert import image_msg, joint_state_msg, pose_stamped_msg, sec_to_ns
from daptq_ros.bags.typestore import make_typestore
from daptq_ros.robot import policy_core
from daptq_ros.robot.policy_core import PolicyNodeCore

TYPES = make_typestore().types
JOINTS = (*(f"right_j{i}" for i in range(7)), "r_close", "l_close")
HOME = np.array([1.889, -0.576, -0.977, 1.642, 0.943, 1.044, 2.293, 0.0, 0.0])
EE = np.array([0.0, 0.6, 0.2])


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["default"],
        help="model directories ('default' = the embedded pi0), or scale:FAMILY/SIZE:VARIANT "
        "(random weights at a deployment-scale preset, e.g. scale:pi0/smolvla:daptq_budget)",
    )
    parser.add_argument(
        "--whole-model-bf16",
        action="store_true",
        help="deploy quantized models with every layer in bfloat16 (the node's parameter)",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="run time per model")
    parser.add_argument("--control-hz", type=float, default=10.0, help="inference rate asked")
    parser.add_argument("--command-hz", type=float, default=50.0, help="command rate")
    parser.add_argument("--camera-hz", type=float, default=30.0, help="synthetic camera rate")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for inference")
    parser.add_argument(
        "--shadow",
        default="",
        metavar="BITS",
        help="run the drift guard's shadow at this bit config (e.g. fp32, w8a8) beside each model",
    )
    parser.add_argument("--shadow-every", type=int, default=4, help="shadow on every N-th chunk")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args()


def every(period: float, stop: threading.Event, tick) -> threading.Thread:
    """A thread calling tick(now) at a fixed rate, sleeping to each deadline (like a timer)."""

    def loop() -> None:
        deadline = time.monotonic()
        while not stop.is_set():
            tick(time.monotonic())
            deadline += period
            time.sleep(max(0.0, deadline - time.monotonic()))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def model_directory(model: str, scratch: Path) -> str:
    """The model directory of a --models entry (scale: entries are written into scratch)."""
    if not model.startswith("scale:"):
        return model
    from daptq_ros.evidence.deploy_bench import write_scaled_model_dir

    family_size, _, variant = model.removeprefix("scale:").partition(":")
    family, _, size = family_size.partition("/")
    directory = scratch / f"{family}_{size}_{variant or 'fp32'}"
    return str(write_scaled_model_dir(family, size, directory, variant or "fp32"))


def run(model: str, args: argparse.Namespace, scratch: Path) -> dict:
    """One model: the pipeline for args.seconds; its measured numbers."""
    params = {
        "model": model_directory(model, scratch),
        "whole_model_bf16": args.whole_model_bf16,
        "dry_run": False,
        "control_hz": args.control_hz,
        "command_hz": args.command_hz,
        "num_threads": args.threads,
        "instruction": "push the puck to the goal",
        "shadow_bit_config": args.shadow,
        "shadow_every": args.shadow_every,
    }
    core = PolicyNodeCore(params, TYPES)
    rss_mb = resident_mb()
    rgb = np.random.default_rng(0).integers(0, 255, (96, 192, 3), dtype=np.uint8)
    lock = threading.Lock()  # the executor of the rclpy node serialises callbacks the same way
    ticks: list[float] = []
    chunk_stamps: list[float] = []
    latencies: list[float] = []
    stop = threading.Event()

    def camera(now: float) -> None:
        with lock:
            core.on_image(image_msg(TYPES, sec_to_ns(now), rgb), now)

    def joints(now: float) -> None:
        with lock:
            core.on_joint_states(joint_state_msg(TYPES, sec_to_ns(now), JOINTS, HOME), now)
            core.on_ee_pose(pose_stamped_msg(TYPES, sec_to_ns(now), EE, (0, 0, 0, 1)), now)

    def control(now: float) -> None:
        with lock:
            core.control_tick(now)

    def command(now: float) -> None:
        with lock:
            outputs = core.command_tick(now)
        ticks.append(now)
        for key, msg in outputs:
            if key == policy_core.ACTION_CHUNK:
                chunk_stamps.append(msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec)
        if chunk_stamps and any(key == policy_core.COMMAND for key, _ in outputs):
            latencies.append(now - chunk_stamps.pop())
            chunk_stamps.clear()

    threads = [
        every(1.0 / args.camera_hz, stop, camera),
        every(0.01, stop, joints),
    ]
    time.sleep(0.5)
    core.enable(True, time.monotonic())
    threads += [every(1.0 / args.control_hz, stop, control)]
    cpu0, wall0 = time.process_time(), time.monotonic()
    threads += [every(1.0 / args.command_hz, stop, command)]
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    status = core.status_fields(time.monotonic())
    shadow = dict(core.guard.shadow.counters) if core.guard is not None else {}
    core.close()
    jitter = np.abs(np.diff(ticks) - 1.0 / args.command_hz) * 1000
    return {
        "model": model,
        "inference_hz": status["inference_hz"],
        "inference_ms": 1000 * status["inference_latency"],
        "command_hz": len(ticks) / wall,
        "jitter_p50_ms": float(np.percentile(jitter, 50)),
        "jitter_p99_ms": float(np.percentile(jitter, 99)),
        "image_to_command_ms_p50": float(np.median(latencies)) * 1000 if latencies else None,
        "dropped_frames": status["dropped_frames"],
        "cpu_cores_used": cpu / wall,
        "rss_mb": rss_mb,
        "shadow": shadow,
    }


def resident_mb() -> float:
    """This process's resident memory (MB, Linux; NaN elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main() -> None:
    """Measure every model and print a table (or JSON)."""
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="daptq_control_loop_") as scratch:
        results = [run(model, args, Path(scratch)) for model in args.models]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"control {args.control_hz:g} Hz asked, command {args.command_hz:g} Hz, "
        f"camera {args.camera_hz:g} Hz, {args.threads} inference thread(s)"
    )
    for r in results:
        print(
            f"{r['model']}: inference {r['inference_hz']:.1f} Hz ({r['inference_ms']:.1f} ms), "
            f"commands {r['command_hz']:.1f} Hz, jitter p50 {r['jitter_p50_ms']:.2f} ms "
            f"p99 {r['jitter_p99_ms']:.2f} ms, image->command "
            f"{r['image_to_command_ms_p50'] or float('nan'):.1f} ms, dropped "
            f"{r['dropped_frames']}, CPU {r['cpu_cores_used']:.2f} cores"
        )


if __name__ == "__main__":
    main()
