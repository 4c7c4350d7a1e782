"""APE and RPE as evo defines them, with Umeyama se3/sim3 alignment and RPE deltas.

Known answers on synthetic trajectories, an independent 4x4-matrix implementation of evo's
formulas, `daptq drift --align/--delta/--delta-unit`, and evo itself when it is installed.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from drift_episodes import write_episode
from scipy.spatial.transform import Rotation

from daptq_ros.cli import main
from daptq_ros.drift import metrics, pose_errors
from daptq_ros.drift.metrics import Trajectory, compute_metrics
from daptq_ros.drift.pose_errors import PoseErrorSettings
from daptq_ros.errors import DriftError

OFFSET = 0.02  # m


def reference_poses(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 3-D path (m) with a turning orientation (quaternions xyzw), n samples."""
    t = np.linspace(0.0, 4.0, n)
    positions = np.stack([0.3 * np.cos(1.3 * t), 0.2 * np.sin(0.9 * t), 0.05 * t * t], axis=1)
    turns = Rotation.from_rotvec(np.stack([0.1 * t, 0.2 * np.sin(t), 0.3 * t], axis=1))
    return positions, turns.as_quat()


def scores(
    p_run: np.ndarray, q_run: np.ndarray | None, p_ref: np.ndarray, q_ref: np.ndarray | None, **kw
) -> metrics.TrajectoryMetrics:
    """compute_metrics of two pose trajectories on the same stamps, with PoseErrorSettings(kw)."""
    t = np.arange(len(p_ref)) * 0.02
    run = Trajectory(t, ee_positions=p_run, ee_quaternions=q_run)
    ref = Trajectory(t, ee_positions=p_ref, ee_quaternions=q_ref)
    return compute_metrics(run, ref, pose_settings=PoseErrorSettings(**kw))


# --- Umeyama ------------------------------------------------------------------------------


def test_umeyama_recovers_a_known_similarity():
    source = np.random.default_rng(0).normal(size=(50, 3))
    rotation = Rotation.from_rotvec([0.3, -0.5, 1.1]).as_matrix()
    translation = np.array([0.4, -1.0, 2.0])
    target = 1.7 * source @ rotation.T + translation
    found = pose_errors.umeyama(source, target, with_scale=True)
    np.testing.assert_allclose(found.rotation, rotation, atol=1e-12)
    np.testing.assert_allclose(found.translation, translation, atol=1e-12)
    assert found.scale == pytest.approx(1.7)
    rigid = pose_errors.umeyama(source, source @ rotation.T + translation, with_scale=False)
    np.testing.assert_allclose(rigid.rotation, rotation, atol=1e-12)
    assert rigid.scale == 1.0


def test_umeyama_refuses_points_on_a_line():
    line = np.outer(np.arange(10.0), [1.0, 2.0, 3.0])
    with pytest.raises(DriftError, match=r"lie on a line or at a point.*--align none"):
        pose_errors.umeyama(line, line + 1.0, with_scale=False)


# --- APE ----------------------------------------------------------------------------------


def test_constant_offset_is_the_ape_unaligned_and_gone_after_se3():
    p_ref, q_ref = reference_poses()
    offset = np.array([0.03, -0.04, 0.0])  # 0.05 m
    plain = scores(p_ref + offset, q_ref, p_ref, q_ref)
    assert plain.pose_alignment == "none" and plain.pose_alignment_scale is None
    assert plain.ape_translation_rmse == pytest.approx(0.05)
    assert plain.ape_translation_rmse == pytest.approx(plain.ee_position_rmse)
    assert plain.ape_rotation_rmse == pytest.approx(0.0, abs=1e-6)
    assert plain.rpe_translation_rmse == pytest.approx(0.0, abs=1e-12)
    aligned = scores(p_ref + offset, q_ref, p_ref, q_ref, alignment="se3")
    assert aligned.ape_translation_rmse == pytest.approx(0.0, abs=1e-9)
    assert aligned.pose_alignment_scale == 1.0
    assert aligned.ee_position_rmse == pytest.approx(0.05)  # the drift metrics stay unaligned


def test_constant_rotation_is_the_ape_unaligned_and_gone_after_se3():
    """The run is the reference turned 10 degrees about the world origin."""
    p_ref, q_ref = reference_poses()
    turn = Rotation.from_rotvec(np.radians(10.0) * np.array([0.6, 0.0, 0.8]))
    p_run, q_run = turn.apply(p_ref), (turn * Rotation.from_quat(q_ref)).as_quat()
    plain = scores(p_run, q_run, p_ref, q_ref)
    assert plain.ape_rotation_rmse == pytest.approx(10.0)
    assert plain.ape_rotation_rmse == pytest.approx(math.degrees(plain.ee_rotation_rmse))
    distance = np.linalg.norm(p_run - p_ref, axis=1)
    assert plain.ape_translation_rmse == pytest.approx(np.sqrt(np.mean(distance**2)))
    assert plain.rpe_translation_rmse == pytest.approx(0.0, abs=1e-12)  # relative poses agree
    assert plain.rpe_rotation_rmse == pytest.approx(0.0, abs=1e-5)
    aligned = scores(p_run, q_run, p_ref, q_ref, alignment="se3")
    assert aligned.ape_translation_rmse == pytest.approx(0.0, abs=1e-9)
    assert aligned.ape_rotation_rmse == pytest.approx(0.0, abs=1e-5)


def test_sim3_removes_a_scale_that_se3_cannot():
    p_ref, q_ref = reference_poses()
    p_run = 0.5 * p_ref + np.array([0.1, 0.2, 0.3])
    rigid = scores(p_run, q_ref, p_ref, q_ref, alignment="se3")
    assert rigid.ape_translation_rmse > 0.01
    similar = scores(p_run, q_ref, p_ref, q_ref, alignment="sim3")
    assert similar.ape_translation_rmse == pytest.approx(0.0, abs=1e-9)
    assert similar.pose_alignment_scale == pytest.approx(2.0)
    assert similar.ape_rotation_rmse == pytest.approx(0.0, abs=1e-5)


def test_positions_only_give_ape_translation_and_no_rotation_or_rpe():
    p_ref, _ = reference_poses()
    result = scores(p_ref + np.array([0.0, 0.0, OFFSET]), None, p_ref, None)
    assert result.ape_translation_rmse == pytest.approx(OFFSET)
    assert result.ape_rotation_rmse is None and result.rpe_translation_rmse is None


# --- RPE ----------------------------------------------------------------------------------


def straight(step: float, n: int = 101) -> np.ndarray:
    """n positions along x, `step` m apart."""
    return np.outer(np.arange(n) * step, [1.0, 0.0, 0.0])


def test_rpe_pairs_in_frames_and_metres_as_evo_picks_them():
    run = straight(0.011)
    frames = pose_errors.rpe_index_pairs(run, 5, "frames")
    assert frames.tolist() == [[i, i + 5] for i in range(0, 100, 5)]
    # Sample 0, then where the path since the last mark reaches 0.1 m: every 10 steps of
    # 0.011 m (evo 1.38's filter_pairs_by_path).
    metres = pose_errors.rpe_index_pairs(run, 0.1, "m")
    assert metres.tolist() == [[i, i + 10] for i in range(0, 100, 10)]
    assert pose_errors.rpe_index_pairs(run, 2.0, "m").shape == (0, 2)


def test_rpe_of_a_run_that_stretches_its_steps():
    """The run moves 0.011 m per sample, the reference 0.010 m: 1 mm error per frame."""
    identity = np.tile([0.0, 0.0, 0.0, 1.0], (101, 1))
    run, ref = straight(0.011), straight(0.010)
    per_frame = scores(run, identity, ref, identity)
    assert per_frame.rpe_pairs == 100
    assert per_frame.rpe_translation_rmse == pytest.approx(0.001)
    assert per_frame.rpe_rotation_rmse == pytest.approx(0.0, abs=1e-9)
    five = scores(run, identity, ref, identity, delta=5)
    assert (five.rpe_pairs, five.rpe_translation_rmse) == (20, pytest.approx(0.005))
    metres = scores(run, identity, ref, identity, delta=0.1, delta_unit="m")
    assert (metres.rpe_pairs, metres.rpe_translation_rmse) == (10, pytest.approx(0.010))
    assert per_frame.ape_translation_rmse == pytest.approx(
        0.001 * np.sqrt(np.mean(np.arange(101) ** 2))
    )


def test_rpe_rotation_of_a_run_that_turns_half_a_degree_per_frame():
    ref = straight(0.01)
    identity = np.tile([0.0, 0.0, 0.0, 1.0], (101, 1))
    turning = Rotation.from_euler("z", 0.5 * np.arange(101)[:, None], degrees=True).as_quat()
    assert scores(ref, turning, ref, identity).rpe_rotation_rmse == pytest.approx(0.5)
    assert scores(ref, turning, ref, identity, delta=5).rpe_rotation_rmse == pytest.approx(2.5)


def test_no_rpe_pairs_when_the_delta_is_longer_than_the_path():
    p_ref, q_ref = reference_poses()
    result = scores(p_ref, q_ref, p_ref, q_ref, delta=100.0, delta_unit="m")
    assert result.rpe_pairs == 0 and result.rpe_translation_rmse is None
    assert result.ape_translation_rmse == 0.0


# --- against an independent 4x4-matrix version of evo's formulas ---------------------------


def homogeneous(position: np.ndarray, quat: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_quat(quat).as_matrix()
    pose[:3, 3] = position
    return pose


def angle_deg(rotation: np.ndarray) -> float:
    return math.degrees(math.acos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)))


def path_pairs(positions: np.ndarray, delta: float) -> list[tuple[int, int]]:
    """evo's consecutive path pairs, by its sequential accumulate-and-reset loop from sample 0."""
    ids, travelled = [0], 0.0
    for i in range(1, len(positions)):
        travelled += float(np.linalg.norm(positions[i] - positions[i - 1]))
        if travelled >= delta:
            ids.append(i)
            travelled = 0.0
    return list(itertools.pairwise(ids))


def matrix_errors(run, ref, pairs) -> tuple[float, float, float, float]:
    """(APE t, APE r, RPE t, RPE r) by inverting and multiplying 4x4 poses."""
    inv = np.linalg.inv
    ape = [inv(q) @ p for p, q in zip(run, ref, strict=True)]
    rpe = [inv(inv(ref[i]) @ ref[j]) @ (inv(run[i]) @ run[j]) for i, j in pairs]

    def rms(values: list[float]) -> float:
        return float(np.sqrt(np.mean(np.square(values))))

    return (
        rms([np.linalg.norm(e[:3, 3]) for e in ape]),
        rms([angle_deg(e[:3, :3]) for e in ape]),
        rms([np.linalg.norm(e[:3, 3]) for e in rpe]),
        rms([angle_deg(e[:3, :3]) for e in rpe]),
    )


def noisy_run(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The reference poses with a growing position drift and orientation noise."""
    p_ref, q_ref = reference_poses()
    rng = np.random.default_rng(seed)
    drift = np.cumsum(rng.normal(0.0, 0.002, p_ref.shape), axis=0)
    wobble = Rotation.from_rotvec(rng.normal(0.0, 0.02, p_ref.shape))
    return p_ref + drift, (Rotation.from_quat(q_ref) * wobble).as_quat()


@pytest.mark.parametrize(("delta", "unit"), [(1, "frames"), (7, "frames"), (0.05, "m")])
def test_matches_evo_formulas_on_a_drifting_run(delta: float, unit: str):
    p_ref, q_ref = reference_poses()
    p_run, q_run = noisy_run()
    result = scores(p_run, q_run, p_ref, q_ref, delta=delta, delta_unit=unit)
    if unit == "frames":
        pairs = [(i, i + delta) for i in range(0, len(p_run) - delta, delta)]
    else:
        pairs = path_pairs(p_run, delta)
    run = [homogeneous(p, q) for p, q in zip(p_run, q_run, strict=True)]
    ref = [homogeneous(p, q) for p, q in zip(p_ref, q_ref, strict=True)]
    expected = matrix_errors(run, ref, pairs)
    assert result.rpe_pairs == len(pairs) > 10
    got = (
        result.ape_translation_rmse,
        result.ape_rotation_rmse,
        result.rpe_translation_rmse,
        result.rpe_rotation_rmse,
    )
    assert got == pytest.approx(expected, rel=1e-6)


# --- settings and `daptq drift` ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alignment": "sim2"}, r"pose alignment 'sim2': unknown; pass one of none, se3, sim3"),
        ({"delta": 1.5}, r"RPE delta 1.5 frames: need a whole number of frames"),
        ({"delta": 0.0, "delta_unit": "m"}, r"RPE delta 0.0: need a number > 0"),
        ({"delta_unit": "s"}, r"RPE delta unit 's': unknown; pass one of frames, m"),
    ],
)
def test_bad_settings_name_the_problem(kwargs: dict, message: str):
    with pytest.raises(DriftError, match=message):
        PoseErrorSettings(**kwargs)


def test_cli_align_and_delta(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A run 2 cm above the reference: APE = 2 cm unaligned, ~0 after se3; report says which."""
    write_episode(tmp_path / "ref", rate_hz=50.0)
    write_episode(tmp_path / "run", rate_hz=50.0, offset=(0.0, 0.0, OFFSET))
    argv = ["drift", "--run", str(tmp_path / "run"), "--reference", str(tmp_path / "ref")]
    assert main([*argv, "--out", str(tmp_path / "plain"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["pose_errors"] == {"alignment": "none", "delta": 1.0, "delta_unit": "frames"}
    (episode,) = record["episodes"]
    assert episode["metrics"]["ape_translation_rmse"] == pytest.approx(OFFSET, rel=1e-6)
    text = (tmp_path / "plain" / "report.md").read_text()
    assert "## Metrics" in text and "**APE translation / rotation RMSE** (m / deg)" in text
    assert (
        "| APE translation RMSE (evo) | m |" in text and "| RPE rotation RMSE (evo) | deg |" in text
    )
    assert "| APE / RPE pose alignment | none (the run's poses as recorded" in text
    options = ["--align", "se3", "--delta", "0.05", "--delta-unit", "m"]
    assert main([*argv, *options, "--out", str(tmp_path / "se3"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    (episode,) = record["episodes"]
    assert record["pose_errors"] == {"alignment": "se3", "delta": 0.05, "delta_unit": "m"}
    assert episode["metrics"]["ape_translation_rmse"] == pytest.approx(0.0, abs=1e-6)
    assert episode["metrics"]["ee_position_rmse"] == pytest.approx(OFFSET, rel=1e-6)
    assert episode["metrics"]["rpe_pairs"] > 5
    assert "| RPE delta | 0.05 m of the run's path" in (tmp_path / "se3" / "report.md").read_text()


def test_cli_fractional_frames_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    argv = ["drift", "--run", "r", "--reference", "f", "--delta", "2.5"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "daptq drift: error: RPE delta 2.5 frames: need a whole number of frames; pass an "
        "integer --delta, or --delta-unit m for a distance"
    )


# --- evo itself, when installed --------------------------------------------------------------


@pytest.mark.parametrize("alignment", ["none", "se3", "sim3"])
@pytest.mark.parametrize(("delta", "unit"), [(3, "frames"), (0.05, "m")])
def test_same_numbers_as_evo(alignment: str, delta: float, unit: str):
    evo_metrics = pytest.importorskip("evo.core.metrics")
    from evo.core.trajectory import PoseTrajectory3D

    p_ref, q_ref = reference_poses()
    p_run, q_run = noisy_run()
    stamps = np.arange(len(p_ref)) * 0.02
    ref, run = (
        PoseTrajectory3D(
            positions_xyz=p, orientations_quat_wxyz=np.roll(q, 1, axis=1), timestamps=stamps
        )
        for p, q in ((p_ref, q_ref), (p_run, q_run))
    )
    if alignment != "none":
        run.align(ref, correct_scale=alignment == "sim3")
    relation, evo_unit = evo_metrics.PoseRelation, evo_metrics.Unit
    expected = []
    for pose_relation in (relation.translation_part, relation.rotation_angle_deg):
        ape = evo_metrics.APE(pose_relation)
        ape.process_data((ref, run))
        expected.append(ape.get_statistic(evo_metrics.StatisticsType.rmse))
    for pose_relation in (relation.translation_part, relation.rotation_angle_deg):
        step = evo_unit.frames if unit == "frames" else evo_unit.meters
        rpe = evo_metrics.RPE(pose_relation, delta, step, all_pairs=False)
        rpe.process_data((ref, run))
        expected.append(rpe.get_statistic(evo_metrics.StatisticsType.rmse))
    result = scores(p_run, q_run, p_ref, q_ref, alignment=alignment, delta=delta, delta_unit=unit)
    got = [
        result.ape_translation_rmse,
        result.ape_rotation_rmse,
        result.rpe_translation_rmse,
        result.rpe_rotation_rmse,
    ]
    assert got == pytest.approx(expected, rel=1e-6)
