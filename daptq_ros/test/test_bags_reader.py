"""Reading real rosbag2 files recorded by ROS 2, and clear errors for damaged ones."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from conftest import require_ros2_bags

from daptq_ros.bags import BagReader, bag_dir, bag_info
from daptq_ros.errors import BagError

BAGS = {"mcap": "mcap_cdr_test", "sqlite3": "sqlite3_cdr_test"}
FILES = {"mcap": "cdr_test_0.mcap", "sqlite3": "cdr_test_0.db3"}


@pytest.fixture(params=sorted(BAGS))
def storage(request: pytest.FixtureRequest) -> str:
    return request.param


def copy_fixture(storage: str, tmp_path: Path) -> Path:
    """A writable copy of the real bag (the originals are read-only and shared)."""
    source = require_ros2_bags() / BAGS[storage]
    assert source.is_dir(), f"missing rosbag2 fixture {source}"
    copy = tmp_path / BAGS[storage]
    shutil.copytree(source, copy)
    for path in [copy, *copy.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return copy


@pytest.fixture
def bag(storage: str, tmp_path: Path) -> Path:
    return copy_fixture(storage, tmp_path)


@pytest.fixture
def sqlite3_bag(tmp_path: Path) -> Path:
    return copy_fixture("sqlite3", tmp_path)


def test_info_matches_metadata_yaml(bag: Path, storage: str) -> None:
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    info = bag_info(bag)
    assert info.storage == storage == meta["storage_identifier"]
    assert info.message_count == meta["message_count"] == 7
    expected = {
        t["topic_metadata"]["name"]: (t["topic_metadata"]["type"], t["message_count"])
        for t in meta["topics_with_message_count"]
    }
    assert {t.name: (t.msgtype, t.count) for t in info.topics} == expected
    assert expected == {
        "/test_topic": ("test_msgs/msg/BasicTypes", 3),
        "/array_topic": ("test_msgs/msg/Arrays", 4),
    }
    assert info.start_ns == meta["starting_time"]["nanoseconds_since_epoch"]
    assert info.end_ns - info.start_ns == meta["duration"]["nanoseconds"]
    assert all(t.decodable for t in info.topics)


def test_single_storage_file_opens_its_folder(bag: Path, storage: str) -> None:
    assert bag_dir(bag / FILES[storage]) == bag
    assert bag_info(bag / FILES[storage]).message_count == 7


def test_decodes_types_only_the_bag_defines(bag: Path) -> None:
    with BagReader(bag) as reader:
        messages = list(reader.messages(["/test_topic", "/array_topic"]))
    assert [m.topic for m in messages].count("/test_topic") == 3
    assert [m.topic for m in messages].count("/array_topic") == 4
    stamps = [m.stamp_ns for m in messages]
    assert stamps == sorted(stamps)
    basic = next(m.msg for m in messages if m.topic == "/test_topic")
    assert basic.__msgtype__ == "test_msgs/msg/BasicTypes"
    arrays = next(m.msg for m in messages if m.topic == "/array_topic")
    assert len(arrays.float64_values) == 3


def test_time_window_selects_messages(bag: Path) -> None:
    info = bag_info(bag)
    with BagReader(bag) as reader:
        first = list(reader.messages(["/test_topic"], stop_ns=info.start_ns + 1))
    assert len(first) == 1 and first[0].stamp_ns == info.start_ns


def test_no_topics_reads_nothing(bag: Path) -> None:
    with BagReader(bag) as reader:
        assert list(reader.messages([])) == []


def test_unknown_topic_lists_the_topics(bag: Path) -> None:
    with BagReader(bag) as reader, pytest.raises(BagError, match="/array_topic, /test_topic"):
        list(reader.messages(["/joint_states"]))


def test_missing_path() -> None:
    with pytest.raises(BagError, match="no such file or folder"):
        bag_info("/nonexistent/bag")


def test_missing_metadata_yaml(bag: Path) -> None:
    (bag / "metadata.yaml").unlink()
    with pytest.raises(BagError, match=r"no metadata.yaml.*ros2 bag reindex"):
        bag_info(bag)


def test_truncated_storage_file(bag: Path, storage: str) -> None:
    path = bag / FILES[storage]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match=f"{bag}.*damaged or truncated"), BagReader(bag) as reader:
        list(reader.messages())


def test_sqlite3_cut_at_the_end_fails_while_reading(sqlite3_bag: Path) -> None:
    path = sqlite3_bag / FILES["sqlite3"]
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.95)])
    with BagReader(sqlite3_bag) as reader, pytest.raises(BagError, match="damaged or truncated"):
        list(reader.messages())


def test_garbled_header(bag: Path, storage: str) -> None:
    path = bag / FILES[storage]
    data = bytearray(path.read_bytes())
    data[:16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(BagError, match=str(bag)):
        bag_info(bag)


def test_empty_storage_file(bag: Path, storage: str) -> None:
    (bag / FILES[storage]).write_bytes(b"")
    with pytest.raises(BagError, match="damaged or truncated"):
        bag_info(bag)


def test_fewer_messages_than_metadata_promises(bag: Path) -> None:
    meta_path = bag / "metadata.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    for topic in meta["rosbag2_bagfile_information"]["topics_with_message_count"]:
        if topic["topic_metadata"]["name"] == "/test_topic":
            topic["message_count"] = 5
    meta_path.write_text(yaml.safe_dump(meta))
    with BagReader(bag) as reader, pytest.raises(BagError, match="3 of the 5 messages"):
        list(reader.messages(["/test_topic"]))


def test_type_without_definition_is_named(sqlite3_bag: Path) -> None:
    # This bag does embed test_msgs; older sqlite3 bags (Humble) carry no definitions at all.
    with closing(sqlite3.connect(sqlite3_bag / FILES["sqlite3"])) as db, db:
        db.execute("DELETE FROM message_definitions")
    with BagReader(sqlite3_bag) as reader:
        assert not any(t.decodable for t in reader.info.topics)
        with pytest.raises(BagError, match=r"/test_topic has type test_msgs/msg/BasicTypes"):
            list(reader.messages(["/test_topic"]))
