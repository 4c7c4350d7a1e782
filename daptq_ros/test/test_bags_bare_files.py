"""Bare .mcap/.db3 files without metadata.yaml, unparsable definitions, non-CDR topics."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

from daptq_ros.bags import (
    BagReader,
    BagWriter,
    bag_dir,
    bag_info,
    find_bag_dirs,
    joint_state_msg,
    joint_state_to_numpy,
    make_typestore,
    read_trajectory,
)
from daptq_ros.commands import bags
from daptq_ros.errors import BagError

T0 = 1_700_000_000_000_000_000
NAMES = ["j1", "j2", "j3"]
POSITIONS = np.arange(12, dtype=float).reshape(4, 3) / 10
PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

# Jazzy records a service event with its .srv text as the definition; "---" is no .msg syntax.
SERVICE_EVENT = "example_interfaces/srv/AddTwoInts_Event"
SERVICE_TOPIC = "/add_two_ints/_service_event"
SRV_DEFINITION = "int64 a\nint64 b\n---\nint64 sum\n"
FAKE_HASH = "RIHS01_" + "0" * 64


@pytest.fixture(params=sorted(PLUGINS))
def storage(request: pytest.FixtureRequest) -> str:
    return request.param


def write_joint_bag(path: Path, storage: str) -> Path:
    """A bag of four JointStates, written by our writer; returns its storage file."""
    with BagWriter(path, storage=storage) as writer:
        writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        writer.set_custom_data("task", "reach-v3")
        for i, q in enumerate(POSITIONS):
            stamp = T0 + i * 10_000_000
            writer.write("/joint_states", joint_state_msg(writer.types, stamp, NAMES, q), stamp)
    (storage_file,) = (p for p in path.iterdir() if p.suffix in {".mcap", ".db3"})
    return storage_file


def write_with_rosbags(path: Path, storage: str, **bad: str) -> None:
    """JointStates plus one SERVICE_TOPIC connection made with rosbags' add_connection `bad`."""
    store = make_typestore()
    with Writer(path, version=9, storage_plugin=PLUGINS[storage]) as writer:
        good = writer.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=store)
        other = writer.add_connection(SERVICE_TOPIC, SERVICE_EVENT, rihs01=FAKE_HASH, **bad)
        for i, q in enumerate(POSITIONS):
            stamp = T0 + i * 10_000_000
            msg = joint_state_msg(store.types, stamp, NAMES, q)
            writer.write(good, stamp, store.serialize_cdr(msg, "sensor_msgs/msg/JointState"))
        writer.write(other, T0 + 5, b"\x00\x01\x00\x00" + b"\x00" * 16)


def bags_parser() -> argparse.ArgumentParser:
    """Only `daptq bags`, as test_bags_cli builds it."""
    parser = argparse.ArgumentParser(prog="daptq")
    bags.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def joint_positions(path: Path) -> list[np.ndarray]:
    with BagReader(path) as reader:
        return [joint_state_to_numpy(m.msg).positions for m in reader.messages()]


def test_bare_file_reads_like_its_folder(tmp_path: Path, storage: str) -> None:
    folder = tmp_path / "bag"
    storage_file = write_joint_bag(folder, storage)
    before = bag_info(folder)
    (folder / "metadata.yaml").unlink()

    assert bag_dir(storage_file) == storage_file
    assert find_bag_dirs(storage_file) == [storage_file]
    info = bag_info(storage_file)
    assert info.path == storage_file and info.storage == storage
    assert (info.start_ns, info.end_ns, info.message_count) == (
        before.start_ns,
        before.end_ns,
        before.message_count,
    )
    assert info.topics == before.topics
    assert info.custom_data == {}  # custom_data lives in the metadata.yaml that is gone
    np.testing.assert_array_equal(joint_positions(storage_file), POSITIONS)


def test_mcap_taken_out_of_its_folder(tmp_path: Path) -> None:
    storage_file = write_joint_bag(tmp_path / "bag", "mcap")
    shared = storage_file.rename(tmp_path / "downloaded.mcap")
    trajectory = read_trajectory(shared, ee_topic=None)
    assert trajectory.bag == shared
    np.testing.assert_array_equal(trajectory.joints.positions, POSITIONS)


def test_folder_without_metadata_yaml_is_still_refused(tmp_path: Path) -> None:
    folder = tmp_path / "bag"
    write_joint_bag(folder, "mcap")
    (folder / "metadata.yaml").unlink()
    with pytest.raises(BagError, match=r"no metadata.yaml.*reindex.*\.mcap/\.db3 file"):
        bag_info(folder)


def test_truncated_bare_file_gets_a_folder_hint(tmp_path: Path) -> None:
    storage_file = write_joint_bag(tmp_path / "bag", "mcap")
    (storage_file.parent / "metadata.yaml").unlink()
    storage_file.write_bytes(storage_file.read_bytes()[:-100])
    with pytest.raises(BagError, match=r"damaged or truncated.*folder of its own.*reindex"):
        bag_info(storage_file)


def test_cli_info_on_bare_file(
    tmp_path: Path, storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    storage_file = write_joint_bag(tmp_path / "bag", storage)
    (storage_file.parent / "metadata.yaml").unlink()
    args = bags_parser().parse_args(["bags", "info", str(storage_file), "--json"])
    assert bags.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(storage_file) and report["storage"] == storage
    assert report["message_count"] == 4
    assert [(t["name"], t["count"]) for t in report["topics"]] == [("/joint_states", 4)]
    assert bags.run(bags_parser().parse_args(["bags", "info", str(storage_file)])) == 0
    assert f"storage:   {storage}" in capsys.readouterr().out


@pytest.mark.parametrize("bare", [False, True], ids=["folder", "bare"])
def test_unparsable_definition_skips_only_its_topic(
    tmp_path: Path, storage: str, bare: bool, daptq_logs: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "bag"
    write_with_rosbags(folder, storage, msgdef=SRV_DEFINITION)
    path = folder
    if bare:
        (folder / "metadata.yaml").unlink()
        (path,) = (p for p in folder.iterdir() if p.suffix in {".mcap", ".db3"})

    with daptq_logs.at_level(logging.WARNING, logger="daptq_ros.bags.reader"):
        info = bag_info(path)
    assert SERVICE_TOPIC in daptq_logs.text and SERVICE_EVENT in daptq_logs.text
    bad = info.topic(SERVICE_TOPIC)
    assert not bad.decodable and "cannot be parsed" in bad.skipped
    assert info.topic("/joint_states").decodable and not info.topic("/joint_states").skipped
    topics = {t["name"]: t for t in info.to_dict()["topics"]}
    assert "cannot be parsed" in topics[SERVICE_TOPIC]["skipped"]
    assert topics["/joint_states"]["skipped"] is None

    np.testing.assert_array_equal(joint_positions(path), POSITIONS)
    with BagReader(path) as reader, pytest.raises(BagError, match=f"{SERVICE_TOPIC}.*skipped"):
        list(reader.messages([SERVICE_TOPIC]))


def test_cli_names_the_skipped_topic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_with_rosbags(tmp_path / "bag", "mcap", msgdef=SRV_DEFINITION)
    args = bags_parser().parse_args(["bags", "info", str(tmp_path / "bag"), "--json"])
    assert bags.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    (skipped,) = [t for t in report["topics"] if t["skipped"]]
    assert (skipped["name"], skipped["type"]) == (SERVICE_TOPIC, SERVICE_EVENT)
    args = bags_parser().parse_args(["bags", "info", str(tmp_path / "bag")])
    assert bags.run(args) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if SERVICE_TOPIC in x]
    assert "(skipped: embedded definition does not parse)" in line


@pytest.mark.parametrize("bare", [False, True], ids=["folder", "bare"])
def test_non_cdr_serialization_is_named(tmp_path: Path, storage: str, bare: bool) -> None:
    folder = tmp_path / "bag"
    write_with_rosbags(folder, storage, msgdef="int64 a\n", serialization_format="json")
    path = folder
    if bare:
        (folder / "metadata.yaml").unlink()
        (path,) = (p for p in folder.iterdir() if p.suffix in {".mcap", ".db3"})
    with pytest.raises(BagError) as caught:
        bag_info(path)
    message = str(caught.value)
    assert f"{SERVICE_TOPIC} (json)" in message and "cdr" in message
    assert "damaged" not in message and "reindex" not in message


@pytest.mark.parametrize("mode", ["file", "message"])
def test_zstd_compressed_bags_read(tmp_path: Path, storage: str, mode: str) -> None:
    """rosbag2's compression modes (`ros2 bag record --compression-mode file|message`)."""
    store = make_typestore()
    path = tmp_path / "bag"
    writer = Writer(path, version=9, storage_plugin=PLUGINS[storage])
    writer.set_compression(CompressionMode[mode.upper()], CompressionFormat.ZSTD)
    with writer:
        connection = writer.add_connection(
            "/joint_states", "sensor_msgs/msg/JointState", typestore=store
        )
        for i, q in enumerate(POSITIONS):
            stamp = T0 + i * 10_000_000
            message = joint_state_msg(store.types, stamp, NAMES, q)
            writer.write(connection, stamp, store.serialize_cdr(message, connection.msgtype))
    assert f"compression_mode: {mode}" in (path / "metadata.yaml").read_text().lower()
    assert bag_info(path).message_count == len(POSITIONS)
    np.testing.assert_array_equal(joint_positions(path), POSITIONS)


def test_typestores_are_built_once_per_set_of_definitions_and_shared() -> None:
    from rosbags.typesys import get_types_from_msg

    extra = get_types_from_msg("float64 x\n", "test_pkg/msg/Thing")
    store = make_typestore(extra=extra)
    assert make_typestore(extra=dict(extra)) is store and make_typestore() is make_typestore()
    assert "test_pkg/msg/Thing" in store.types
    assert "test_pkg/msg/Thing" not in make_typestore().types
    with pytest.raises(BagError, match="unknown ROS 2 distro"):
        make_typestore("rolling-ish")  # type: ignore[arg-type]
