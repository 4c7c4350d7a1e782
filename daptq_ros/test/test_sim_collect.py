"""`daptq collect`: episode bags that plain rosbags reads, read_episode, and damaged copies."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

pytest.importorskip("mujoco")
pytest.importorskip("metaworld")

from test_sim_experts import Recording

from daptq_ros.bags import make_typestore
from daptq_ros.bags.episode import (
    STEP_TOPICS,
    TOPICS,
    EpisodeWriter,
    read_episode,
)
from daptq_ros.cli import main
from daptq_ros.errors import BagError, SimError
from daptq_ros.sim.collect import CollectConfig, collect, episode_path
from daptq_ros.sim.env import ACTION_NAMES, ACTION_SPACE, SimEnv
from daptq_ros.sim.experts import ScriptedExpert
from daptq_ros.sim.rollout import run_episode

pytestmark = [pytest.mark.sim, pytest.mark.usefixtures("sim_renders")]


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory, sim_renders: None) -> Path:
    """One episode each of reach and push (seed 2, 64 px), collected through the CLI."""
    out = tmp_path_factory.mktemp("demos")
    argv = ["collect", "--tasks", "reach", "push", "--episodes", "1", "--seed", "2"]
    argv += ["--out", str(out), "--image-size", "64", "--json"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    summary = json.loads(stdout.getvalue())
    assert summary == json.loads((out / "summary.json").read_text())
    return out


def test_collect_writes_one_bag_per_task_and_seed(collected: Path) -> None:
    summary = json.loads((collected / "summary.json").read_text())
    assert summary["per_task"]["reach"]["successes"] == 1
    assert summary["per_task"]["push"]["successes"] == 1
    for task in ("reach", "push"):
        assert (episode_path(collected, task, 2) / "metadata.yaml").is_file()


@pytest.mark.parametrize("task", ["reach", "push"])
def test_plain_rosbags_reads_every_topic(collected: Path, task: str) -> None:
    path = episode_path(collected, task, 2)
    counts = dict.fromkeys(TOPICS, 0)
    with AnyReader([path], default_typestore=make_typestore()) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == TOPICS
        for connection, _, raw in reader.messages():
            reader.deserialize(raw, connection.msgtype)
            counts[connection.topic] += 1
    assert len({counts[topic] for topic in STEP_TOPICS}) == 1 and counts["/episode_info"] == 1


def test_read_episode_gives_back_what_the_policy_saw(tmp_path: Path) -> None:
    with SimEnv("reach", image_size=64) as env:
        actor = Recording(ScriptedExpert(env.spec, noise=0.1))
        writer = EpisodeWriter(
            tmp_path / "ep",
            task="reach",
            seed=4,
            instruction=env.spec.instruction(4),
            action_space=ACTION_SPACE,
            action_names=ACTION_NAMES,
            start_ns=1_700_000_000_000_000_000,
        )
        with writer:
            result = run_episode(env, actor, 4, writer)
    episode = read_episode(tmp_path / "ep")
    observations = [obs for obs, _ in actor.steps]
    decisions = [decision for _, decision in actor.steps]
    assert episode.meta.steps == result.steps == len(observations)
    assert episode.meta.success and episode.instruction == observations[0].instruction
    np.testing.assert_array_equal(episode.images, [o.image for o in observations])
    np.testing.assert_allclose(episode.states, [o.state for o in observations], atol=1e-9)
    np.testing.assert_array_equal(
        episode.joint_positions, [o.joint_positions for o in observations]
    )
    np.testing.assert_array_equal(episode.ee_quats, [o.ee_quat_xyzw for o in observations])
    # Float seconds since the epoch resolve about 0.2 us.
    elapsed = episode.stamps - episode.stamps[0]
    np.testing.assert_allclose(elapsed, [o.time for o in observations], atol=1e-6)
    np.testing.assert_array_equal(episode.actions, [d.executed for d in decisions])
    np.testing.assert_array_equal(episode.labels, [d.chunk[0] for d in decisions])


def test_truncated_copy_fails_naming_the_file(collected: Path, tmp_path: Path) -> None:
    copy = tmp_path / "truncated"
    shutil.copytree(episode_path(collected, "push", 2), copy)
    (mcap,) = copy.glob("*.mcap")
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size * 2 // 3])
    with pytest.raises(BagError, match=str(copy)):
        read_episode(copy)


def test_existing_episodes_are_not_overwritten(collected: Path) -> None:
    config = CollectConfig(out=collected, tasks=("push",), episodes=1, seed=2)
    with pytest.raises(SimError, match="push_seed2 already exists"):
        collect(config, progress=False)


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SimError, match="unknown task 'fly'"):
        CollectConfig(out=tmp_path, tasks=("fly",))
    with pytest.raises(SimError, match="at least 1"):
        CollectConfig(out=tmp_path, episodes=0)
