"""Benchmark: drift-monitor updates per second, and the core share a 1 kHz joint_states costs.

Feeds a synthetic joint_states stream (7 joints by default, positions as the array.array that
rclpy hands over, a fresh but equal name list per message) through DriftMonitor.update_joints,
window closes (metrics + DTW) included, and prints the rate, the per-update cost and what
fraction of one core the stream costs at --rate-hz. Target: >= 20 kHz.
"""

import os

# One thread per math library and sleeping idle threads: the monitor is single-threaded and
# shares the robot computer, so spinning pool threads would only steal time from it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # short spin: see docs/performance.md
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import array  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from daptq_ros.drift.metrics import Trajectory  # noqa: E402
from daptq_ros.drift.monitor import DriftMonitor, MonitorConfig  # noqa: E402

TARGET_HZ = 20_000.0
NAME_POOL = 64  # distinct-but-equal name lists, as deserialised messages would carry


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joints", type=int, default=7, help="joints per message (default 7)")
    parser.add_argument(
        "--updates", type=int, default=60_000, help="joint states per timed run (default 60000)"
    )
    parser.add_argument(
        "--rate-hz",
        type=float,
        default=1000.0,
        help="joint_states rate: sets the stamps and the core-share figure (default 1000)",
    )
    parser.add_argument(
        "--reference-hz", type=float, default=100.0, help="reference sample rate (default 100)"
    )
    parser.add_argument("--window-s", type=float, default=1.0, help="monitor window (default 1)")
    parser.add_argument(
        "--capacity", type=int, default=4096, help="ring capacity per stream (default 4096)"
    )
    parser.add_argument(
        "--dtw-max-samples", type=int, default=256, help="DTW decimation bound (default 256)"
    )
    parser.add_argument(
        "--input",
        choices=("array", "ndarray", "list"),
        default="array",
        help="type of the positions passed in; rclpy gives array.array (default array)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; best kept (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    return parser.parse_args()


def make_stream(args: argparse.Namespace):
    """The reference, the per-message stamps, positions and name lists of the stream."""
    names = [f"joint_{i}" for i in range(args.joints)]
    duration = args.updates / args.rate_hz
    t_ref = np.arange(0.0, duration + 1.0, 1.0 / args.reference_hz)
    freq = np.linspace(0.2, 0.8, args.joints)
    reference = Trajectory(t_ref, np.sin(np.outer(t_ref, freq)), tuple(names))
    stamps = np.arange(args.updates) / args.rate_hz
    noise = np.random.default_rng(args.seed).normal(0.0, 1e-3, (args.updates, args.joints))
    values = np.sin(np.outer(stamps, freq)) + noise
    convert = {
        "array": lambda row: array.array("d", row.tolist()),
        "ndarray": lambda row: row.copy(),
        "list": lambda row: row.tolist(),
    }[args.input]
    positions = [convert(row) for row in values]
    name_lists = [[str(name).encode().decode() for name in names] for _ in range(NAME_POOL)]
    return reference, stamps.tolist(), positions, name_lists


def run_once(args: argparse.Namespace, stream) -> tuple[float, int]:
    """Seconds for one pass of the whole stream, and the windows it closed."""
    reference, stamps, positions, name_lists = stream
    config = MonitorConfig(
        window_s=args.window_s, capacity=args.capacity, dtw_max_samples=args.dtw_max_samples
    )
    monitor = DriftMonitor(config)
    monitor.set_reference(reference)
    monitor.start_episode(0.0)
    update = monitor.update_joints
    windows = 0
    start = time.perf_counter()
    for i, stamp in enumerate(stamps):
        if update(stamp, name_lists[i % NAME_POOL], positions[i]) is not None:
            windows += 1
    return time.perf_counter() - start, windows


def main() -> None:
    """Time the monitor and report."""
    args = parse_args()
    stream = make_stream(args)
    runs = [run_once(args, stream) for _ in range(args.repeats)]
    seconds, windows = min(runs)
    rate = args.updates / seconds
    result = {
        "joints": args.joints,
        "updates": args.updates,
        "windows_closed": windows,
        "updates_per_s": rate,
        "us_per_update": 1e6 / rate,
        "stream_hz": args.rate_hz,
        "core_fraction_at_stream_hz": args.rate_hz / rate,
        "target_updates_per_s": TARGET_HZ,
        "meets_target": rate >= TARGET_HZ,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"drift monitor, {args.joints} joints, {args.updates} updates, {windows} windows closed")
    print(f"  rate              {rate:,.0f} updates/s (target {TARGET_HZ:,.0f})")
    print(f"  per update        {1e6 / rate:.2f} us (window metrics and DTW amortised)")
    print(f"  {args.rate_hz:g} Hz stream costs {100 * args.rate_hz / rate:.1f} % of one core")


if __name__ == "__main__":
    main()
