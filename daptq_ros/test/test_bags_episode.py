"""The Episode contract without the simulator: EpisodeWriter -> read_episode, and broken bags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from daptq_ros.bags import BagWriter, bag_info, make_typestore
from daptq_ros.bags.episode import (
    EPISODE_INFO_TOPIC,
    IMAGE_TOPIC,
    META_SEED,
    META_SUCCESS,
    META_TASK,
    TOPICS,
    EpisodeWriter,
    read_episode,
)
from daptq_ros.bags.state import gripper_opening
from daptq_ros.errors import BagError

T0 = 1_700_000_000_000_000_000
DT = 0.0125
DT_NS = 12_500_000
NAMES = ("j0", "j1", "r_close", "l_close")
ACTIONS = ("dx", "dy", "dz", "gripper")


def write(
    path: Path,
    steps: int = 10,
    horizon: int = 8,
    execute: int = 4,
    *,
    finish: bool = True,
    first_chunk_at: int = 0,
) -> None:
    """A policy-like episode: a chunk of `horizon` rows every `execute` steps, row k at step k."""
    writer = EpisodeWriter(
        path,
        task="push",
        seed=7,
        instruction="push the puck",
        action_space="ee_delta",
        action_names=ACTIONS,
        start_ns=T0,
        model="tiny",
        bit_config="w4a8",
    )
    with writer:
        for t in range(steps):
            stamp = T0 + t * DT_NS
            image = np.full((4, 6, 3), t, dtype=np.uint8)
            fingers = [0.01 * t / steps, -0.01 * t / steps]
            writer.write_observation(
                stamp, image, NAMES, [t, -t, *fingers], [t, 0, 1], [0, 0, 0, 1]
            )
            if t % execute == 0 and t >= first_chunk_at:
                # Row r of the chunk from step t is meant for step t + r: value 100 t + r.
                chunk = 100 * t + np.arange(horizon)[:, None] + np.zeros((1, len(ACTIONS)))
                writer.write_action_chunk(stamp, chunk, DT, inference_latency=0.01 * t)
            writer.write_executed(stamp, [t, t, t, -1], DT)
        if finish:
            writer.finish(True, steps * DT)


def test_round_trip(tmp_path: Path) -> None:
    write(tmp_path / "ep")
    episode = read_episode(tmp_path / "ep")
    assert episode.meta.task == "push" and episode.meta.seed == 7 and episode.meta.success
    assert (episode.meta.model, episode.meta.bit_config, episode.meta.steps) == ("tiny", "w4a8", 10)
    assert episode.instruction == "push the puck"
    np.testing.assert_allclose(episode.stamps, (T0 + np.arange(10) * DT_NS) / 1e9)
    assert episode.images.shape == (10, 4, 6, 3) and episode.images[3].min() == 3
    assert episode.joint_names == NAMES
    np.testing.assert_array_equal(episode.joint_positions[:, 0], np.arange(10))
    np.testing.assert_array_equal(episode.ee_positions[:, 0], np.arange(10))
    np.testing.assert_array_equal(episode.states[:, :3], episode.ee_positions)
    fingers = episode.joint_positions[:, 2:]
    np.testing.assert_array_equal(episode.states[:, 3], gripper_opening(*fingers.T))
    np.testing.assert_array_equal(episode.actions[:, 0], np.arange(10))
    assert (episode.action_space, episode.action_names) == ("ee_delta", ACTIONS)
    assert episode.chunks.shape == (3, 8, 4) and episode.chunk_dt == DT
    np.testing.assert_allclose(episode.inference_latencies, [0.0, 0.04, 0.08])


def test_labels_follow_the_chunk_in_force(tmp_path: Path) -> None:
    write(tmp_path / "ep", steps=10, horizon=8, execute=4)
    episode = read_episode(tmp_path / "ep")
    np.testing.assert_array_equal(episode.chunk_index, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(episode.chunk_row, [0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(episode.labels[:, 0], [0, 1, 2, 3, 400, 401, 402, 403, 800, 801])


def test_metadata_and_plain_rosbags_reader(tmp_path: Path) -> None:
    write(tmp_path / "ep")
    custom = bag_info(tmp_path / "ep").custom_data
    assert (custom[META_TASK], custom[META_SEED], custom[META_SUCCESS]) == ("push", "7", "true")
    with AnyReader([tmp_path / "ep"], default_typestore=make_typestore()) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == TOPICS
        (connection,) = [c for c in reader.connections if c.topic == EPISODE_INFO_TOPIC]
        ((_, _, raw),) = list(reader.messages([connection]))
        info = reader.deserialize(raw, connection.msgtype)
    assert (info.task, info.seed, info.steps, info.success) == ("push", 7, 10, True)


def test_unfinished_episode_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "ep", finish=False)
    with pytest.raises(BagError, match=f"{tmp_path / 'ep'}.*not finished"):
        read_episode(tmp_path / "ep")


def test_truncated_file_names_the_bag(tmp_path: Path) -> None:
    write(tmp_path / "ep")
    (mcap,) = (tmp_path / "ep").glob("*.mcap")
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    with pytest.raises(BagError, match=str(tmp_path / "ep")):
        read_episode(tmp_path / "ep")


def test_step_before_the_first_chunk_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "ep", first_chunk_at=1)
    with pytest.raises(BagError, match="before the first /action_chunk"):
        read_episode(tmp_path / "ep")


def test_chunk_running_out_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "ep", horizon=2, execute=4)
    with pytest.raises(BagError, match="past the end of the action chunk"):
        read_episode(tmp_path / "ep")


def test_missing_topic_is_named(tmp_path: Path) -> None:
    with BagWriter(tmp_path / "ep") as writer:
        writer.add_topic(IMAGE_TOPIC, TOPICS[IMAGE_TOPIC])
    with pytest.raises(BagError, match="has no topic /instruction"):
        read_episode(tmp_path / "ep")


def test_bad_chunk_shape_is_refused(tmp_path: Path) -> None:
    writer = EpisodeWriter(
        tmp_path / "ep",
        task="push",
        seed=0,
        instruction="x",
        action_space="ee_delta",
        action_names=ACTIONS,
        start_ns=T0,
    )
    with writer, pytest.raises(BagError, match=r"\[H, 4\]"):
        writer.write_action_chunk(T0, np.zeros((2, 3)), DT)
