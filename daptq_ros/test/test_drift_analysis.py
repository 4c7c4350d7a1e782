"""Offline drift analysis: loading bags, pairing episodes, grouping configurations, CIs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from drift_episodes import PANDA_JOINTS, write_episode

from daptq_ros.drift import analysis
from daptq_ros.drift.analysis import (
    META_BIT_CONFIG,
    META_EPISODE,
    META_SEED,
    META_TASK,
    Sources,
    analyze,
    find_bags,
    load_episode,
)
from daptq_ros.drift.stats import success_rate, summarize
from daptq_ros.errors import BagError, DriftError

LATER_NS = 1_800_000_000_000_000_000  # runs are recorded long after the reference
T_975_2 = 4.302653  # Student t quantile, 97.5 %, 2 degrees of freedom (from tables)


def meta(episode: int, **extra: str) -> dict[str, str]:
    """Episode metadata for task 'reach', seed 7."""
    return {META_TASK: "reach", META_SEED: "7", META_EPISODE: str(episode), **extra}


def test_episode_is_on_its_own_time_base_with_poses(tmp_path: Path) -> None:
    write_episode(tmp_path / "bag", rate_hz=50.0, start_ns=LATER_NS)
    (entry,) = find_bags(tmp_path / "bag")
    episode = load_episode(entry, Sources())
    trajectory = episode.trajectory
    assert episode.ee_source == "topic /ee_pose"
    assert trajectory.stamps[0] == 0.0 and trajectory.stamps[-1] == pytest.approx(4.0)
    assert trajectory.joint_names == PANDA_JOINTS
    assert trajectory.ee_positions is not None and trajectory.ee_quaternions is not None
    assert len(trajectory) == 201 and trajectory.ee_positions.shape == (201, 3)


def test_find_bags_in_a_folder_sorted_and_errors(tmp_path: Path) -> None:
    for name in ("b", "a"):
        write_episode(tmp_path / "run" / name)
    (tmp_path / "run" / "notes").mkdir()
    assert [e.path.name for e in find_bags(tmp_path / "run")] == ["a", "b"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="empty: neither a rosbag2 folder"):
        find_bags(tmp_path / "empty")
    with pytest.raises(BagError, match="missing: no such file"):
        find_bags(tmp_path / "missing")


def test_summarize_is_the_student_t_interval() -> None:
    summary = summarize([0.01, 0.02, 0.03])
    half = T_975_2 * 0.01 / math.sqrt(3)  # sample std of (0.01, 0.02, 0.03) is 0.01
    assert summary.n == 3 and summary.mean == pytest.approx(0.02)
    assert summary.ci_low == pytest.approx(0.02 - half, rel=1e-5)
    assert summary.ci_high == pytest.approx(0.02 + half, rel=1e-5)
    single = summarize([0.5])
    assert (single.mean, single.ci_low, single.ci_high, single.n) == (0.5, None, None, 1)


def test_groups_two_configurations_with_confidence_intervals(tmp_path: Path) -> None:
    """Config 'w4' is named by its folder, 'gptq_w3' by metadata; offsets differ per episode."""
    for k in range(3):
        write_episode(tmp_path / "ref" / f"ep{k}", episode=k)
        write_episode(tmp_path / "w4" / f"ep{k}", episode=k, offset=(0, 0, 0.01 * (k + 1)))
        write_episode(
            tmp_path / "other" / f"ep{k}",
            episode=k,
            offset=(0, 0, 0.04 + 0.01 * k),
            metadata={META_BIT_CONFIG: "gptq_w3"},
        )
    result = analyze([tmp_path / "w4", tmp_path / "other"], tmp_path / "ref")
    assert result.configs == ["w4", "gptq_w3"]
    half = T_975_2 * 0.01 / math.sqrt(3)
    for config, mean in (("w4", 0.02), ("gptq_w3", 0.05)):
        rmse = result.summaries[config]["ee_position_rmse"]
        assert rmse.n == 3 and rmse.mean == pytest.approx(mean)
        assert (rmse.ci_low, rmse.ci_high) == pytest.approx((mean - half, mean + half), rel=1e-5)
        joint = result.summaries[config]["joint_rms_error/panda_joint1"]
        assert joint.mean == 0.0 and joint.ci_low == joint.ci_high == 0.0
    record = result.to_dict()
    assert record["configurations"]["w4"]["ee_position_rmse"]["n"] == 3
    assert [e["config"] for e in record["episodes"]] == ["w4"] * 3 + ["gptq_w3"] * 3


def test_pairs_by_metadata_not_by_name(tmp_path: Path) -> None:
    """Run bag names sort in another order than their episodes: metadata decides the pairs."""
    for name, k in (("a", 0), ("b", 1), ("c", 2)):
        write_episode(tmp_path / "ref" / name, episode=k, metadata=meta(k))
    for name, k in (("x", 2), ("y", 0), ("z", 1)):
        write_episode(tmp_path / "run" / name, episode=k, metadata=meta(k), start_ns=LATER_NS)
    result = analyze([tmp_path / "run"], tmp_path / "ref")
    pairs = [(r.run.bag.name, r.reference.bag.name, r.paired_by) for r in result.episodes]
    assert pairs == [("x", "c", "metadata"), ("y", "a", "metadata"), ("z", "b", "metadata")]
    assert all(r.metrics.ee_position_rmse == pytest.approx(0.0, abs=1e-12) for r in result.episodes)


def test_pairs_in_sorted_order_without_metadata(tmp_path: Path) -> None:
    for k in range(2):
        write_episode(tmp_path / "ref" / f"ref{k}", episode=k)
        write_episode(tmp_path / "run" / f"run{k}", episode=k, metadata=meta(k))
    result = analyze([tmp_path / "run"], tmp_path / "ref")
    assert [(r.run.bag.name, r.reference.bag.name) for r in result.episodes] == [
        ("run0", "ref0"),
        ("run1", "ref1"),
    ]
    assert {r.paired_by for r in result.episodes} == {"order"}


def test_order_pairing_needs_equal_counts(tmp_path: Path) -> None:
    write_episode(tmp_path / "ref" / "ep0")
    for k in range(2):
        write_episode(tmp_path / "run" / f"ep{k}")
    with pytest.raises(DriftError, match="run: 2 run episodes but 1 reference episodes in"):
        analyze([tmp_path / "run"], tmp_path / "ref")


def test_metadata_without_a_matching_reference(tmp_path: Path) -> None:
    write_episode(tmp_path / "ref" / "ep0", metadata=meta(0))
    write_episode(tmp_path / "run" / "ep1", metadata=meta(1))
    with pytest.raises(DriftError, match=r"ep1: no reference episode has its .* = reach/7/1"):
        analyze([tmp_path / "run"], tmp_path / "ref")


def test_mismatched_joint_names_name_the_bag_and_topic(tmp_path: Path) -> None:
    write_episode(tmp_path / "ref")
    write_episode(tmp_path / "fr3", names=[n.replace("panda", "fr3") for n in PANDA_JOINTS])
    with pytest.raises(DriftError, match=r"fr3: /joint_states against the reference .*ref: joint"):
        analyze([tmp_path / "fr3"], tmp_path / "ref")


def test_joint_metrics_only_without_poses_or_urdf(tmp_path: Path) -> None:
    write_episode(tmp_path / "ref", poses=False)
    write_episode(tmp_path / "run", rate_hz=50.0, lag=0.2, poses=False)
    (result,) = analyze([tmp_path / "run"], tmp_path / "ref", dtw_window_s=0.5).episodes
    assert result.run.ee_source == "none" and result.metrics.ee_position_rmse is None
    assert result.metrics.dtw_space == "joint"
    assert result.metrics.dtw_lag == pytest.approx(0.2, rel=0.05)
    assert "ee_position_rmse" not in analysis.episode_values(result.metrics)


def test_forward_kinematics_when_the_bag_has_no_poses(tmp_path: Path) -> None:
    pytest.importorskip("pinocchio")
    from daptq_ros.drift.kinematics import available_arms

    if "panda" not in available_arms():
        pytest.skip("example-robot-data is not installed")
    kinematics = analysis.load_kinematics("panda", None)
    write_episode(tmp_path / "ref", poses=False)
    write_episode(tmp_path / "run", rate_hz=50.0, lag=0.2, poses=False)
    sources = Sources(kinematics=kinematics)
    (result,) = analyze([tmp_path / "run"], tmp_path / "ref", sources, dtw_window_s=0.5).episodes
    assert result.run.ee_source.startswith("fk panda_hand_tcp (")
    assert result.metrics.dtw_space == "ee_position"
    assert result.metrics.dtw_lag == pytest.approx(0.2, rel=0.05)
    expected, _ = kinematics.fk_batch(result.run.trajectory.joint_positions)
    np.testing.assert_allclose(result.run.trajectory.ee_positions, expected)


def test_a_urdf_file_needs_the_ee_frame(tmp_path: Path) -> None:
    pytest.importorskip("pinocchio")
    with pytest.raises(DriftError, match=r"robot\.urdf: a URDF file needs the end-effector frame"):
        analysis.load_kinematics(str(tmp_path / "robot.urdf"), None)


def test_success_rate_is_the_wilson_interval() -> None:
    # k = 7 of n = 10, z = 1.96: centre = (0.7 + 0.19208) / 1.38415 = 0.64450,
    # half = 1.96 / 1.38415 * sqrt(0.021 + 0.0096040) = 0.24772 -> [0.3968, 0.8922]
    rate = success_rate(7, 10)
    assert rate.mean == 0.7 and rate.n == 10
    assert rate.ci_low == pytest.approx(0.3968, abs=1e-3)
    assert rate.ci_high == pytest.approx(0.8922, abs=1e-3)
    perfect = success_rate(10, 10)
    assert perfect.ci_high == pytest.approx(1.0) and perfect.ci_low == pytest.approx(
        0.7225, abs=1e-3
    )
