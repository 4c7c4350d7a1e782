"""`daptq drift` end to end: known offset and lag recovered, report files, FK, real-bag errors."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
from conftest import require_ros2_bags
from drift_episodes import write_episode

from daptq_ros.cli import COMMANDS, main
from daptq_ros.commands import drift
from daptq_ros.drift.analysis import META_BIT_CONFIG

LATER_NS = 1_800_000_000_000_000_000
OFFSET = 0.02  # m, along z: perpendicular to the (horizontal) motion
LAG = 0.2  # s
PLOTS = ("ee_paths.png", "deviation.png", "joint_error.png", "cumulative_drift.png")


def run_json(
    capsys: pytest.CaptureFixture[str], runs: list[Path], reference: Path, *options: str
) -> dict:
    """Run `daptq drift --run RUNS --reference REFERENCE OPTIONS --json`, parse what it prints."""
    argv = ["drift", "--run", *map(str, runs), "--reference", str(reference), *options]
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_recovers_a_known_offset_and_lag(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A reference at 100 Hz and a 50 Hz copy 0.2 s late and 2 cm higher: both recovered.

    The arm moves in a horizontal plane along a non-repeating curve, so the 2 cm offset is
    perpendicular to every motion direction: the closest reference sample to a run sample is
    still its own time-shifted twin, DTW keeps the true warping, and it recovers the lag
    (median of t_run - t_ref) and the offset (mean cost per step) from the one combined copy;
    the final error (both at rest at the end) is the offset too. An offset along the motion
    would bias DTW (it could trade offset for lag), so the offset-only RMSE comes from a second,
    offset-only copy.
    """
    write_episode(tmp_path / "ref", rate_hz=100.0)
    later = {"rate_hz": 50.0, "offset": (0.0, 0.0, OFFSET), "start_ns": LATER_NS}
    write_episode(tmp_path / "both", lag=LAG, **later)
    write_episode(tmp_path / "offset", **later)
    report = run_json(
        capsys,
        [tmp_path / "both", tmp_path / "offset"],
        tmp_path / "ref",
        *("--dtw-window", "0.5", "--out", str(tmp_path / "out")),
    )
    both, offset = (episode["metrics"] for episode in report["episodes"])
    assert both["dtw_space"] == "ee_position"
    assert both["dtw_lag"] == pytest.approx(LAG, rel=0.05)
    assert both["dtw_distance"] == pytest.approx(OFFSET, rel=0.05)
    assert both["ee_position_final_error"] == pytest.approx(OFFSET, rel=0.05)
    assert offset["ee_position_rmse"] == pytest.approx(OFFSET, rel=0.05)
    assert offset["ee_position_max_error"] == pytest.approx(OFFSET, rel=0.05)
    assert offset["dtw_lag"] == pytest.approx(0.0, abs=0.05 * LAG)
    assert report["configurations"]["both"]["dtw_lag"]["mean"] == pytest.approx(LAG, rel=0.05)


def test_writes_report_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    for k in range(2):
        write_episode(tmp_path / "ref" / f"ep{k}", episode=k)
        write_episode(tmp_path / "w4" / f"ep{k}", episode=k, lag=0.1, offset=(0, 0, 0.01 * k))
        write_episode(tmp_path / "w8" / f"ep{k}", episode=k, metadata={META_BIT_CONFIG: "gptq_w8"})
    out = tmp_path / "report"
    argv = ["drift", "--run", str(tmp_path / "w4"), str(tmp_path / "w8")]
    assert main([*argv, "--reference", str(tmp_path / "ref"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:3] == ["config", "n", "ee"]
    assert any(line.split()[:2] == ["gptq_w8", "2"] for line in printed.splitlines())
    assert f"report: {out / 'report.md'}" in printed
    for name in ("report.md", "metrics.json", *PLOTS):
        assert (out / name).stat().st_size > 0, name
    assert (out / "ee_paths.png").read_bytes()[:4] == b"\x89PNG"
    text = (out / "report.md").read_text()
    for expected in ("## Configuration `w4` (2 episode(s))", "## Configuration `gptq_w8`"):
        assert expected in text
    assert "| end-effector position RMSE | m |" in text and "## Episodes" in text
    assert all(f"]({name})" in text for name in PLOTS)
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["configurations"]) == {"w4", "gptq_w8"}
    assert len(record["episodes"]) == 4 and record["plots"] == list(PLOTS)


def test_forward_kinematics_from_an_arm_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    pytest.importorskip("pinocchio")
    from daptq_ros.drift.kinematics import available_arms

    if "panda" not in available_arms():
        pytest.skip("example-robot-data is not installed")
    write_episode(tmp_path / "ref", poses=False)
    write_episode(tmp_path / "run", rate_hz=50.0, lag=LAG, poses=False, start_ns=LATER_NS)
    report = run_json(
        capsys,
        [tmp_path / "run"],
        tmp_path / "ref",
        *("--urdf", "panda", "--dtw-window", "0.5", "--out", str(tmp_path / "out")),
    )
    (episode,) = report["episodes"]
    assert episode["run_ee_source"].startswith("fk panda_hand_tcp")
    assert episode["metrics"]["dtw_space"] == "ee_position"
    assert episode["metrics"]["dtw_lag"] == pytest.approx(LAG, rel=0.05)
    assert (tmp_path / "out" / "ee_paths.png").stat().st_size > 0


def test_real_ros2_bag_without_joint_states(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bag = tmp_path / "mcap_cdr_test"
    shutil.copytree(require_ros2_bags() / "mcap_cdr_test", bag)
    for path in [bag, *bag.iterdir()]:  # the shared originals are read-only
        path.chmod(0o755 if path.is_dir() else 0o644)
    write_episode(tmp_path / "ref")
    argv = ["drift", "--run", str(bag), "--reference", str(tmp_path / "ref")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    # Without joint states the poses are compared; the bag has none, and the error says so.
    assert err.startswith(
        f"daptq drift: error: {bag}: has no topic /ee_pose; its pose topics are: none"
    )
    assert "--run-topic" in err


def test_bad_dtw_window_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    argv = ["drift", "--run", "r", "--reference", "f", "--dtw-window", "0"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "daptq drift: error: --dtw-window 0.0: need a number of seconds > 0"
    )


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]):
    parser = argparse.ArgumentParser(prog="daptq")
    drift.add_parser(parser.add_subparsers(dest="command", required=True))
    with pytest.raises(SystemExit):
        parser.parse_args(["drift", "--help"])
    out = capsys.readouterr().out
    for option in ("--run", "--reference", "--urdf", "--ee-frame", "--joint-topic", "--ee-topic"):
        assert option in out
    assert "--dtw-window" in out and "--out" in out and "--json" in out
    assert "--tf-chain BASE TOOL" in out and "--locked-joints NAME [NAME ...]" in out
    assert "--time-base {auto,absolute,start}" in out and "--align {none,se3,sim3}" in out
    assert "--delta N" in out and "--delta-unit {frames,m}" in out
    assert "daptq.bit_config" in out and "daptq.episode" in out
    assert "drift" in COMMANDS


def _zero_header_copy(source: Path, target: Path) -> None:
    """Rewrite a bag with every header stamp zeroed (record times kept), as some drivers do."""
    from daptq_ros.bags import BagReader, BagWriter, joint_state_msg, joint_state_to_numpy

    with BagReader(source) as reader, BagWriter(target) as writer:
        writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        for message in reader.messages(["/joint_states"]):
            sample = joint_state_to_numpy(message.msg)
            msg = joint_state_msg(writer.types, 0, sample.names, sample.positions)
            writer.write("/joint_states", msg, message.stamp_ns)


def test_stamp_source_bag_reads_zero_header_stamps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    write_episode(tmp_path / "ref", poses=False)
    write_episode(tmp_path / "run_src", poses=False, lag=0.1)
    _zero_header_copy(tmp_path / "run_src", tmp_path / "run")
    _zero_header_copy(tmp_path / "ref", tmp_path / "ref0")
    args = ["drift", "--run", str(tmp_path / "run"), "--reference", str(tmp_path / "ref0")]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "--stamp-source bag" in capsys.readouterr().err
    out = str(tmp_path / "b")
    assert main([*args, "--stamp-source", "bag", "--out", out, "--json"]) == 0
    (episode,) = json.loads(capsys.readouterr().out)["episodes"]
    assert episode["metrics"]["dtw_lag"] == pytest.approx(0.1, rel=0.05)
