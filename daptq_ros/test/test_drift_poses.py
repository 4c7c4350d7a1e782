"""Pose-only drift on recordings with what real ones have, against evo 1.38.1's own code.

The recordings (pose_recordings.py) hold two pose streams at different rates in one bag, gaps of
several seconds, a duplicated stamp, motion-capture dropouts of up to 12 s, and a tf tree with
static transforms and a map -> odom stamped 1 s in the future. evo reads the same files with its
own bag reader, associates with its own `associate_trajectories` (its defaults) and computes
APE and RPE with its own `main_ape` / `main_rpe`; `daptq drift` must give the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pose_recordings import T0, mobile_base, mocap_slam
from scipy.spatial.transform import Rotation, Slerp

from daptq_ros.bags.trajectory import PoseSource, read_poses
from daptq_ros.cli import main
from daptq_ros.drift.association import AssociationSettings, PoseStream, associate
from daptq_ros.drift.pose_drift import analyze_poses
from daptq_ros.drift.pose_errors import PoseErrorSettings

evo_sync = pytest.importorskip("evo.core.sync")
from evo import main_ape, main_rpe  # noqa: E402
from evo.core import metrics as evo_metrics  # noqa: E402
from evo.tools import file_interface  # noqa: E402
from rosbags.rosbag2 import Reader  # noqa: E402

STREAMS = {  # recording: (run topic, reference topic)
    "base": ("/odom", "/localization"),
    "mocap": ("/slam", "/mocap"),
}
SETTINGS = [
    (alignment, delta, unit)
    for alignment in ("none", "se3", "sim3")
    for delta, unit in ((1.0, "frames"), (1.0, "m"))
]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recordings")
    mobile_base(folder / "base")
    mocap_slam(folder / "mocap")
    return {name: folder / name for name in STREAMS}


def evo_results(bag: Path, run: str, reference: str, alignment: str, delta: float, unit: str):
    """evo's APE and RPE translation RMSE and its pair count, from its own reader and sync."""

    def associated():
        with Reader(bag) as reader:
            ref = file_interface.read_bag_trajectory(reader, reference)
            est = file_interface.read_bag_trajectory(reader, run)
        return evo_sync.associate_trajectories(ref, est)  # evo's defaults: nearest, 10 ms

    align, scale = alignment != "none", alignment == "sim3"
    ref, est = associated()
    pairs = ref.num_poses
    ape = main_ape.ape(
        ref, est, evo_metrics.PoseRelation.translation_part, align=align, correct_scale=scale
    )
    ref, est = associated()
    rpe = main_rpe.rpe(
        ref,
        est,
        evo_metrics.PoseRelation.translation_part,
        delta=delta,
        delta_unit=evo_metrics.Unit.frames if unit == "frames" else evo_metrics.Unit.meters,
        align=align,
        correct_scale=scale,
    )
    return ape.stats["rmse"], rpe.stats["rmse"], pairs


@pytest.mark.parametrize("name", list(STREAMS))
@pytest.mark.parametrize(("alignment", "delta", "unit"), SETTINGS)
def test_equals_evo_with_its_default_association(recordings, name, alignment, delta, unit):
    bag, (run, reference) = recordings[name], STREAMS[name]
    ape, rpe, pairs = evo_results(bag, run, reference, alignment, delta, unit)
    analysis = analyze_poses(
        [bag],
        None,
        PoseSource(run),
        PoseSource(reference),
        settings=PoseErrorSettings(alignment, delta, unit),
    )
    values = analysis.comparisons[0].values
    assert analysis.comparisons[0].association.pairs == pairs
    assert values["ape_translation_m"] == pytest.approx(ape, rel=1e-6)
    assert values["rpe_translation_m"] == pytest.approx(rpe, rel=1e-6)


def test_gaps_duplicates_and_dropped_poses_are_counted(recordings):
    poses = read_poses(
        recordings["base"], {"run": PoseSource("/odom"), "ref": PoseSource("/localization")}
    )
    run, ref = (PoseStream(p.stamps, p.positions, p.quats) for p in poses.values())
    paired = associate(run, ref).to_dict()
    assert paired["reference_duplicate_stamps"] == 1  # kept, as evo keeps it
    assert paired["reference_gaps"] == 4 and 9.5 < paired["longest_reference_gap_s"] < 11.0
    assert paired["pairs"] + paired["run_dropped"] == len(run)
    # Localisation stamps next to a lost odometry message find no pose within 10 ms.
    assert 0 < paired["reference_dropped"] < len(ref) // 2


def test_interpolation_never_crosses_a_gap(recordings):
    poses = read_poses(
        recordings["mocap"], {"run": PoseSource("/slam"), "ref": PoseSource("/mocap")}
    )
    run, ref = (PoseStream(p.stamps, p.positions, p.quats) for p in poses.values())
    nearest = associate(run, ref)
    wide = AssociationSettings("interpolate", t_max_diff=15.0, max_gap=0.05)
    interpolated = associate(run, ref, wide)
    # Every interpolated pair lies between two motion-capture poses at most 50 ms apart.
    mocap = np.sort(ref.stamps)
    upper = np.searchsorted(mocap, interpolated.run.stamps, side="left")
    exact = mocap[np.minimum(upper, len(mocap) - 1)] == interpolated.run.stamps
    bracket = mocap[np.minimum(upper, len(mocap) - 1)] - mocap[np.maximum(upper - 1, 0)]
    assert np.all(exact | (bracket <= 0.05 + 1e-9))
    assert 0 < interpolated.pairs <= len(run) and nearest.pairs < len(run)


def test_tf_chain_looks_each_edge_up_in_time_and_never_reorders(recordings):
    """map -> base_link through a map -> odom stamped 1 s ahead, at odom -> base_link's stamps."""
    from daptq_ros.bags import BagReader

    bag = recordings["base"]
    chain = read_poses(bag, {"tf": PoseSource("/tf", ("map", "base_link"))})["tf"]
    assert np.all(np.diff(chain.stamps) > 0)
    edges: dict[str, tuple[list, list, list]] = {"map": ([], [], []), "odom": ([], [], [])}
    with BagReader(bag) as reader:
        for message in reader.messages(["/tf"]):
            for tf in message.msg.transforms:
                stamps, positions, quats = edges[tf.header.frame_id]
                stamps.append(tf.header.stamp.sec + tf.header.stamp.nanosec * 1e-9)
                v, q = tf.transform.translation, tf.transform.rotation
                positions.append([v.x, v.y, v.z])
                quats.append([q.x, q.y, q.z, q.w])
    (t_map, p_map, q_map), (t_odom, p_odom, _) = (
        tuple(np.array(a) for a in edges[frame]) for frame in ("map", "odom")
    )
    assert t_map[0] == pytest.approx(T0 + 1.0, abs=1e-6)  # stamped 1 s ahead
    # tf2's answer, computed here: map -> odom interpolated (slerp, linear) at each odom ->
    # base_link stamp it brackets, composed with that transform.
    inside = (t_odom >= t_map[0]) & (t_odom <= t_map[-1])
    np.testing.assert_allclose(chain.stamps, t_odom[inside])
    t = t_odom[inside]
    correction = Slerp(t_map, Rotation.from_quat(q_map))(t)
    shift = np.stack([np.interp(t, t_map, p_map[:, k]) for k in range(3)], axis=1)
    np.testing.assert_allclose(chain.positions, correction.apply(p_odom[inside]) + shift, atol=1e-9)
    length = np.linalg.norm(np.diff(chain.positions, axis=0), axis=1).sum()
    odom_length = np.linalg.norm(np.diff(p_odom[inside], axis=0), axis=1).sum()
    assert length == pytest.approx(odom_length, rel=0.05)  # no back-and-forth through time


def test_cli_report_without_joint_states(recordings, tmp_path, capsys):
    """The README's two pose-only commands."""
    odom = ["--run-topic", "/odom", "--reference-topic", "/localization", "--align", "se3"]
    argv = ["drift", "--run", str(recordings["base"]), *odom, "--out", str(tmp_path / "odom")]
    assert main(argv) == 0
    assert (tmp_path / "odom" / "errors_over_time.png").is_file()
    out = tmp_path / "report"
    argv = ["drift", "--run", str(recordings["base"]), "--run-tf-chain", "map", "base_link"]
    argv += ["--reference-topic", "/localization", "--out", str(out)]
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "RPE m" in printed and "APE deg" in printed and str(out / "report.md") in printed
    assert {p.name for p in out.iterdir()} == {
        "report.md",
        "metrics.json",
        "paths.png",
        "errors_over_time.png",
    }
    record = json.loads((out / "metrics.json").read_text())
    comparison = record["comparisons"][0]
    assert comparison["run_source"] == "/tf (map -> base_link)"
    assert comparison["association"]["reference_duplicate_stamps"] == 1
    report = (out / "report.md").read_text()
    assert "end-effector" not in report and "bit config" not in report
    assert "(n=1)" not in report


def test_cli_bags_without_joint_states_compare_poses_by_default(recordings, tmp_path, capsys):
    """Two bags with /mocap only (run and reference): no --run-topic needed."""
    out = tmp_path / "report"
    argv = ["drift", "--run", str(recordings["mocap"]), "--reference", str(recordings["mocap"])]
    assert main([*argv, "--ee-topic", "/mocap", "--out", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["mode"] == "poses"
    assert record["comparisons"][0]["metrics"]["ape_translation_m"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--t-max-diff", "0"], "t_max_diff 0.0: need a number of seconds > 0 (--t-max-diff)"),
        (["--offset", "1000"], "no run pose is within 0.01 s of a reference pose"),
        (["--reference-topic", "/odom"], "run and reference are both /odom of the same bags"),
    ],
)
def test_cli_bad_pose_options_are_one_line_errors(recordings, tmp_path, capsys, extra, message):
    argv = ["drift", "--run", str(recordings["base"]), "--run-topic", "/odom"]
    argv += ["--reference-topic", "/localization", *extra, "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_ros1_bag_names_the_converter(tmp_path, capsys):
    bag = tmp_path / "run.bag"
    bag.write_bytes(b"#ROSBAG V2.0\n" + bytes(64))
    argv = ["drift", "--run", str(bag), "--reference-topic", "/x", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "a ROS 1 bag" in err and "rosbags-convert --src" in err
    assert main(["drift", "--run", str(tmp_path), "--reference-topic", "/x", "--out", "o"]) == 2
    assert "a ROS 1 bag" in capsys.readouterr().err


def test_arm_report_draws_the_aligned_run_and_one_unit_per_quantity(tmp_path, capsys):
    """An arm episode 5 cm off its reference: with --align se3 the plotted run lies on it."""
    from drift_episodes import write_episode

    from daptq_ros.drift.analysis import analyze
    from daptq_ros.evidence.drift_report import aligned

    write_episode(tmp_path / "run", offset=(0.05, 0.0, 0.0))
    write_episode(tmp_path / "ref")
    analysis = analyze([tmp_path / "run"], tmp_path / "ref")
    (result,) = analysis.episodes
    gap = result.pair.exec_positions - result.pair.ref_positions
    assert np.linalg.norm(gap, axis=1).mean() == pytest.approx(0.05, abs=1e-6)
    moved = aligned(result, "se3").pair
    assert np.abs(moved.exec_positions - moved.ref_positions).max() < 1e-6
    out = tmp_path / "out"
    argv = ["drift", "--run", str(tmp_path / "run"), "--reference", str(tmp_path / "ref")]
    assert main([*argv, "--align", "se3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "RPE m" in printed and "(n=1)" not in printed
    report = (out / "report.md").read_text()
    assert "| rad |" not in report and "(n=1)" not in report


def test_the_report_gives_the_time_per_bit_config_and_the_drift_around_each_switch(tmp_path):
    """A run whose ~/status switches w4a8 -> fp32 at 2 s, 20 mm off before and 5 mm after."""
    from drift_episodes import DURATION, PANDA_JOINTS, T0_NS, ee_at, joints_at, write_episode

    from daptq_ros.bags import BagWriter, joint_state_msg, pose_stamped_msg
    from daptq_ros.bags.robot_msgs import policy_status_msg
    from daptq_ros.drift.analysis import analyze

    write_episode(tmp_path / "ref")
    others = {  # the other fields of a PolicyStatus, as the node fills them
        **dict.fromkeys(("model", "family", "instruction", "safety_status", "chunk_method"), ""),
        **dict.fromkeys(("pending_bit_config", "fault"), ""),
        **dict.fromkeys(("enabled", "dry_run", "estopped", "swap_in_progress"), False),
        **dict.fromkeys(("inference_latency", "inference_hz", "command_hz", "timeline_rate"), 0.0),
        **dict.fromkeys(("dropped_frames", "rejected_actions", "clipped_actions"), 0),
        "hold_reasons": [],
    }
    t = np.arange(0.0, DURATION + 1e-9, 0.01)
    q, (positions, quats) = joints_at(t), ee_at(t)
    offset = np.where(t[:, None] < 2.0, [0.02, 0.0, 0.0], [0.005, 0.0, 0.0])
    with BagWriter(tmp_path / "run") as writer:
        for topic, msgtype in (
            ("/joint_states", "sensor_msgs/msg/JointState"),
            ("/ee_pose", "geometry_msgs/msg/PoseStamped"),
            ("/policy_node/status", "daptq_ros_interfaces/msg/PolicyStatus"),
        ):
            writer.add_topic(topic, msgtype)
        for i, seconds in enumerate(t):
            stamp = T0_NS + round(seconds * 1e9)
            writer.write(
                "/joint_states", joint_state_msg(writer.types, stamp, PANDA_JOINTS, q[i]), stamp
            )
            pose = pose_stamped_msg(writer.types, stamp, positions[i] + offset[i], quats[i])
            writer.write("/ee_pose", pose, stamp)
            if i % 10 == 0:
                bits = "w4a8" if seconds < 2.0 else "fp32"
                status = policy_status_msg(writer.types, stamp, {**others, "bit_config": bits})
                writer.write("/policy_node/status", status, stamp)
    (result,) = analyze([tmp_path / "run"], tmp_path / "ref").episodes
    assert result.rungs is not None
    assert result.rungs.time_s == pytest.approx({"w4a8": 2.0, "fp32": 2.0}, abs=0.02)
    (switch,) = result.rungs.switches
    assert (switch["from"], switch["to"]) == ("w4a8", "fp32")
    assert switch["at_s"] == pytest.approx(2.0, abs=0.01)
    assert switch["deviation_before"] == pytest.approx(0.02, abs=1e-6)
    assert switch["deviation_after"] == pytest.approx(0.005, abs=1e-6)
    out = tmp_path / "report"
    assert (
        main(
            [
                "drift",
                "--run",
                str(tmp_path / "run"),
                "--reference",
                str(tmp_path / "ref"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = (out / "report.md").read_text()
    assert "## Bit configuration over time" in report and "w4a8 -> fp32" in report
