"""Benchmark: `daptq drift` against evo 1.38.1 on the same pose recordings, wall time and numbers.

For each recording (run topic against reference topic in one bag), in one process, best of
--repeats:

- library: daptq's analyze_poses (read both streams, associate, APE and RPE) against evo's
  read_bag_trajectory x 2, associate_trajectories, main_ape.ape and main_rpe.rpe;
- command line: `daptq drift` (APE, RPE and the report with its plots) against `evo_ape bag2`
  plus `evo_rpe bag2` (no plots), each a fresh process.

Prints both wall times, their ratio (daptq / evo: below 1 is faster) and both APE / RPE, so a
speed-up that changed the answer shows. Without --bag it writes the two test recordings
(daptq_ros/test/pose_recordings.py: a mobile base's odometry against its localisation, visual
SLAM against motion capture) into a temporary folder.

    python bench/drift_vs_evo.py
    python bench/drift_vs_evo.py --bag my_bag --run-topic /odom --reference-topic /amcl_pose
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDINGS = {  # name: (writer in pose_recordings.py, run topic, reference topic)
    "mobile_base": ("mobile_base", "/odom", "/localization"),
    "mocap_slam": ("mocap_slam", "/slam", "/mocap"),
}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bag", help="a rosbag2 to time on (default: the two test recordings)")
    parser.add_argument("--run-topic", help="with --bag: the run's pose topic")
    parser.add_argument("--reference-topic", help="with --bag: the reference's pose topic")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool; the best counts")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args()


def best_of(repeats: int, work) -> tuple[float, object]:
    """The shortest wall time of `repeats` calls of `work`, and its last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def daptq_library(bag: Path, run: str, reference: str) -> tuple[float, float]:
    from daptq_ros.bags.trajectory import PoseSource
    from daptq_ros.drift.pose_drift import analyze_poses

    values = (
        analyze_poses([bag], None, PoseSource(run), PoseSource(reference)).comparisons[0].values
    )
    return values["ape_translation_m"], values["rpe_translation_m"]


def evo_library(bag: Path, run: str, reference: str) -> tuple[float, float]:
    from evo import main_ape, main_rpe
    from evo.core import metrics, sync
    from evo.tools import file_interface
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        ref = file_interface.read_bag_trajectory(reader, reference)
        est = file_interface.read_bag_trajectory(reader, run)
    ref, est = sync.associate_trajectories(ref, est)
    ape = main_ape.ape(ref, est, metrics.PoseRelation.translation_part)
    rpe = main_rpe.rpe(
        ref, est, metrics.PoseRelation.translation_part, delta=1, delta_unit=metrics.Unit.frames
    )
    return ape.stats["rmse"], rpe.stats["rmse"]


def command(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")


def measure(name: str, bag: Path, run: str, reference: str, repeats: int, work: Path) -> dict:
    """Library and command-line wall times of both tools on one recording."""
    bin_dir = Path(sys.executable).parent
    daptq_s, daptq_values = best_of(repeats, lambda: daptq_library(bag, run, reference))
    evo_s, evo_values = best_of(repeats, lambda: evo_library(bag, run, reference))
    daptq_cli = [str(bin_dir / "daptq"), "drift", "--run", str(bag), "--run-topic", run]
    daptq_cli += ["--reference-topic", reference, "--out", str(work / f"{name}_report")]
    evo_ape = [str(bin_dir / "evo_ape"), "bag2", str(bag), reference, run]
    evo_rpe = [str(bin_dir / "evo_rpe"), "bag2", str(bag), reference, run]
    daptq_cli_s, _ = best_of(repeats, lambda: command(daptq_cli))
    evo_cli_s, _ = best_of(repeats, lambda: (command(evo_ape), command(evo_rpe)))
    return {
        "recording": name,
        "daptq_s": daptq_s,
        "evo_s": evo_s,
        "library_ratio": daptq_s / evo_s,
        "daptq_cli_s": daptq_cli_s,
        "evo_cli_s": evo_cli_s,
        "cli_ratio": daptq_cli_s / evo_cli_s,
        "daptq_ape_rpe_m": list(daptq_values),
        "evo_ape_rpe_m": list(evo_values),
    }


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if args.bag:
            if not (args.run_topic and args.reference_topic):
                sys.exit("--bag needs --run-topic and --reference-topic")
            jobs = [(Path(args.bag).name, Path(args.bag), args.run_topic, args.reference_topic)]
        else:
            sys.path.insert(0, str(HERE.parent / "daptq_ros" / "test"))
            import pose_recordings

            jobs = []
            for name, (writer, run, reference) in RECORDINGS.items():
                getattr(pose_recordings, writer)(work / name)
                jobs.append((name, work / name, run, reference))
        rows = [measure(*job, args.repeats, work) for job in jobs]
    from daptq_ros.quant.kernel_choice import cpu_model  # imports torch: after the timings

    if args.json:
        print(json.dumps({"cpu": cpu_model(), "rows": rows}))
        return
    print(f"{'recording':<12} {'daptq s':>8} {'evo s':>7} {'ratio':>6} {'daptq CLI s':>12} "
          f"{'evo CLI s':>10} {'ratio':>6}  APE / RPE m daptq | evo")  # fmt: skip
    for r in rows:
        numbers = "{:.4g} / {:.4g} | {:.4g} / {:.4g}".format(
            *r["daptq_ape_rpe_m"], *r["evo_ape_rpe_m"]
        )
        print(
            f"{r['recording']:<12} {r['daptq_s']:>8.2f} {r['evo_s']:>7.2f} "
            f"{r['library_ratio']:>6.2f} {r['daptq_cli_s']:>12.2f} {r['evo_cli_s']:>10.2f} "
            f"{r['cli_ratio']:>6.2f}  {numbers}"
        )
    print(
        f"CPU: {cpu_model()}; ratio = daptq / evo (below 1: daptq faster); best of {args.repeats}"
    )


if __name__ == "__main__":
    main()
