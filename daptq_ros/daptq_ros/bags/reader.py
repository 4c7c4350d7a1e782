"""Open a rosbag2 (folder, or a bare MCAP/sqlite3 file), describe it, iterate its messages."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml
from rosbags.interfaces import ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat
from rosbags.rosbag2 import Reader, storage_mcap
from rosbags.rosbag2.reader import DirectoryReader

from daptq_ros.bags.typestore import Distro, can_decode, embedded_types, make_typestore
from daptq_ros.errors import BagError

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.rosbag2.reader import ReaderProtocol

STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}

# The MCAP schema encodings rosbags reads; others (Jazzy's 'unknown') count as no definition.
_MCAP_SCHEMA_ENCODINGS = ("ros2msg", "ros2idl", "omgidl", "")
SERIALIZATION_FORMAT = "cdr"  # rosbag2's default; the only one rosbags (and so we) can decode

log = logging.getLogger(__name__)

_REINDEX_HINT = "if the recorder was killed, `ros2 bag reindex {path}` may recover it"


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: its name, message type, message count and whether we can decode it.

    `skipped` says why a topic is left out of reading (its embedded definition does not parse);
    it is empty for every other topic.
    """

    name: str
    msgtype: str
    count: int
    decodable: bool
    skipped: str = ""


@dataclass(frozen=True)
class BagInfo:
    """What a bag holds: storage, time span, message counts per topic, custom metadata."""

    path: Path
    storage: str
    start_ns: int
    end_ns: int
    message_count: int
    topics: tuple[TopicInfo, ...]
    custom_data: dict[str, str] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last message."""
        return (self.end_ns - self.start_ns) / 1e9

    def topic(self, name: str) -> TopicInfo:
        """The topic called `name`; a BagError lists the topics the bag has otherwise."""
        for topic in self.topics:
            if topic.name == name:
                return topic
        have = ", ".join(t.name for t in self.topics) or "none"
        raise BagError(
            f"{self.path}: has no topic {name}; its topics are: {have}. "
            "Pass one of them, or record the missing topic"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (paths as strings, times in ns and seconds)."""
        return {
            "path": str(self.path),
            "storage": self.storage,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "duration_s": self.duration_s,
            "message_count": self.message_count,
            "topics": [
                {
                    "name": t.name,
                    "type": t.msgtype,
                    "count": t.count,
                    "decodable": t.decodable,
                    "skipped": t.skipped or None,
                }
                for t in self.topics
            ],
            "custom_data": dict(self.custom_data),
        }


class BagMessage(NamedTuple):
    """One decoded message with its topic, type and record time (ns since the epoch)."""

    topic: str
    msgtype: str
    stamp_ns: int
    msg: Any


def bag_dir(path: str | Path) -> Path:
    """The bag at `path`: a rosbag2 folder, or a .mcap/.db3 file (its folder, if it has one).

    A storage file with no metadata.yaml beside it is a bag of its own, as shared online.
    """
    bag = Path(path)
    if not bag.exists():
        raise BagError(
            f"{bag}: no such file or folder; pass the folder that `ros2 bag record` wrote "
            "(it holds metadata.yaml)"
        )
    if bag.is_file():
        if _is_ros1_bag(bag):
            raise BagError(
                f"{bag}: a ROS 1 bag; convert it to rosbag2 first: rosbags-convert --src {bag} "
                f"--dst {bag.with_suffix('')}_ros2 (pip install rosbags), then pass that folder"
            )
        if bag.suffix not in STORAGE_SUFFIXES:
            raise BagError(
                f"{bag}: not a rosbag2 storage file (expected {' or '.join(STORAGE_SUFFIXES)}); "
                "pass the bag folder"
            )
        return bag.parent if (bag.parent / "metadata.yaml").is_file() else bag
    if not (bag / "metadata.yaml").is_file():
        raise BagError(
            f"{bag}: has no metadata.yaml, so it is not a complete rosbag2 folder; "
            + _REINDEX_HINT.format(path=bag)
            + ", or pass one of its .mcap/.db3 files to read that file alone"
        )
    return bag


def _is_ros1_bag(path: Path) -> bool:
    """A ROS 1 bag starts with the line '#ROSBAG V2.0'."""
    with path.open("rb") as file:
        return file.read(13) == b"#ROSBAG V2.0\n"


def find_bag_dirs(path: str | Path) -> list[Path]:
    """The bag at `path` (folder or storage file), or every bag folder below the folder `path`.

    Bare .mcap/.db3 files below `path` are not searched for: pass them one by one.
    """
    root = Path(path)
    if root.is_file() or (root / "metadata.yaml").is_file() or not root.is_dir():
        return [bag_dir(root)]  # bag_dir names the problem when `path` is not a bag
    folders = sorted(p.parent for p in root.rglob("metadata.yaml"))
    if not folders and (ros1 := [p for p in sorted(root.glob("*.bag")) if _is_ros1_bag(p)]):
        bag_dir(ros1[0])  # names the converter
    if not folders:
        raise BagError(
            f"{root}: neither a rosbag2 folder (no metadata.yaml) nor a folder holding any; "
            "pass a bag folder or a folder with bag folders below it"
        )
    return folders


class BagReader:
    """A rosbag2 (folder or bare .mcap/.db3 file) opened for reading; use as a context manager.

    Decodes with the ROS 2 distro's types, daptq_ros_interfaces and the definitions the bag
    itself carries, so bags of types we have never seen (test_msgs, vendor messages) decode too.
    A topic whose embedded definition does not parse is skipped with a warning (see TopicInfo).
    """

    def __init__(self, path: str | Path, *, distro: Distro = "humble") -> None:
        """Locate the bag (nothing is read until `open`)."""
        self.path = bag_dir(path)
        self.distro: Distro = distro
        self._reader: Reader | None = None
        self._skipped: dict[str, str] = {}

    def open(self) -> None:
        """Open the storage and build the typestore; a damaged bag raises BagError."""
        if self.path.is_dir():
            # rosbags refuses such a folder with an error that reads like damage; name the format.
            _check_serialization(self.path, _metadata_formats(self.path))
        reader = Reader(self.path)
        # rosbags lets low-level errors (struct, unicode, sqlite, overflow) escape on damaged
        # files; whatever these calls raise is about the file, so it becomes one BagError.
        try:
            with _unknown_schemas_as_undefined():
                reader.open()
        except Exception as error:
            raise self._damaged(error) from error
        self._reader = reader
        try:
            # A bare storage file is not checked by rosbags: its topics may hold any format.
            _check_serialization(self.path, _connection_formats(reader.connections))
            types, unparsable = embedded_types(reader.connections)
            self._store = make_typestore(self.distro, types)
        except BagError:
            self.close()
            raise
        self._skipped = {
            c.topic: unparsable[c.msgtype] for c in reader.connections if c.msgtype in unparsable
        }
        if self._skipped:  # one line; the parser's own text is in `daptq bags info --json`
            log.warning(
                "%s: skipping %d topic(s) whose embedded definition does not parse (%s); the "
                "other topics read normally",
                self.path,
                len(self._skipped),
                ", ".join(f"{t} ({reader.topics[t].msgtype})" for t in sorted(self._skipped)),
            )

    def close(self) -> None:
        """Close the storage files."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def __enter__(self) -> BagReader:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def info(self) -> BagInfo:
        """Storage, time span, message counts per topic and custom metadata of the bag."""
        reader = self._open_reader()
        count = reader.message_count
        storage = reader.storage
        return BagInfo(
            path=self.path,
            storage=_storage_name(storage),
            start_ns=reader.start_time if count else 0,
            # rosbags' end_time is one past the last message.
            end_ns=reader.end_time - 1 if count else 0,
            message_count=count,
            topics=tuple(
                TopicInfo(
                    name,
                    topic.msgtype or "(several types)",
                    topic.msgcount,
                    name not in self._skipped
                    and bool(topic.msgtype)
                    and can_decode(self._store, topic.msgtype),
                    self._skipped.get(name, ""),
                )
                for name, topic in sorted(reader.topics.items())
            ),
            custom_data=dict(storage.metadata.custom or {}),
        )

    def messages(
        self,
        topics: Iterable[str] | None = None,
        *,
        start_ns: int | None = None,
        stop_ns: int | None = None,
    ) -> Iterator[BagMessage]:
        """Decoded messages of `topics` in record-time order, in [start, stop).

        `topics` None reads every topic but the skipped ones (TopicInfo.skipped).
        """
        reader = self._open_reader()
        info = self.info
        wanted = [t.name for t in info.topics if not t.skipped] if topics is None else list(topics)
        if not wanted:
            return  # rosbags reads every topic when given no connections
        for name in wanted:
            topic = info.topic(name)
            if topic.skipped:
                raise BagError(
                    f"{self.path}: topic {name} ({topic.msgtype}) was skipped: {topic.skipped}; "
                    "pass only the other topics: this one cannot be decoded without a definition"
                )
            if not topic.decodable:
                raise BagError(
                    f"{self.path}: topic {name} has type {topic.msgtype}, whose definition is "
                    f"neither in the bag nor in ROS 2 {self.distro} or daptq_ros_interfaces; "
                    "re-record with MCAP storage (it embeds definitions) or with ROS 2 Iron or "
                    "newer, or add the .msg to daptq_ros_interfaces"
                )
        connections = [c for c in reader.connections if c.topic in wanted]
        counts: Counter[int] = Counter()
        raw = reader.messages(connections, start=start_ns, stop=stop_ns)
        for connection, stamp_ns, data in self._guarded(raw):
            try:
                msg = self._store.deserialize_cdr(data, connection.msgtype)
            except Exception as error:  # rosbags' decoders raise several kinds on bad bytes
                raise BagError(
                    f"{self.path}: the message at {stamp_ns} ns on {connection.topic} "
                    f"({connection.msgtype}) cannot be decoded ({error}); the bag is damaged "
                    "or its type definition does not match the recorded data"
                ) from error
            counts[connection.id] += 1
            yield BagMessage(connection.topic, connection.msgtype, stamp_ns, msg)
        if start_ns is None and stop_ns is None:
            self._check_complete(connections, counts)

    def _guarded(self, raw: Iterator[Any]) -> Iterator[Any]:
        """Pass rosbags' raw messages through, turning a failure mid-file into a BagError."""
        try:
            yield from raw
        except Exception as error:
            raise self._damaged(error) from error

    def _check_complete(self, connections: Iterable[Any], counts: Counter[int]) -> None:
        """Refuse a silent partial read: every topic must yield the count its index promises."""
        for connection in connections:
            if counts[connection.id] < connection.msgcount:
                raise BagError(
                    f"{self.path}: topic {connection.topic} gave {counts[connection.id]} of the "
                    f"{connection.msgcount} messages its metadata lists; the bag is truncated; "
                    + _reindex_hint(self.path)
                )

    def _open_reader(self) -> Reader:
        if self._reader is None:
            raise BagError(f"{self.path}: the reader is not open; use `with BagReader(path)`")
        return self._reader

    def _damaged(self, error: Exception) -> BagError:
        detail = str(error) or type(error).__name__
        if isinstance(error, PermissionError):
            return BagError(f"{self.path}: no permission to read it ({detail}); fix its mode")
        return BagError(
            f"{self.path}: the bag is damaged or truncated and cannot be read ({detail}); "
            "re-record it, or " + _reindex_hint(self.path)
        )


@contextmanager
def _unknown_schemas_as_undefined() -> Iterator[None]:
    """Let rosbags open an MCAP whose schema encoding it does not know, as a missing definition.

    ROS 2 Jazzy records service-event topics (`ros2 bag record --all-services`) with the schema
    encoding 'unknown' (ros2/rosbag2#2365); rosbags 0.11 then refuses the whole file. Such a
    topic reads as one without an embedded definition: decodable when the distro knows its type,
    else skipped and named, while every other topic reads.
    """
    original = storage_mcap.get_msgdef

    def tolerant(schema: Any) -> MessageDefinition:
        if schema is not None and schema.encoding not in _MCAP_SCHEMA_ENCODINGS:
            return MessageDefinition(MessageDefinitionFormat.NONE, "")
        return original(schema)

    storage_mcap.get_msgdef = tolerant
    try:
        yield
    finally:
        storage_mcap.get_msgdef = original


def _reindex_hint(path: Path) -> str:
    """How `ros2 bag reindex`, which works on folders only, may recover the bag at `path`."""
    if path.is_dir():
        return _REINDEX_HINT.format(path=path)
    return (
        f"if the recorder was killed, moving {path.name} into a folder of its own and running "
        "`ros2 bag reindex` on that folder may recover it"
    )


def _storage_name(storage: ReaderProtocol) -> str:
    """The storage plugin id (mcap, sqlite3) of an open rosbag2 folder or bare storage file."""
    plugins = {plugin: name for name, plugin in DirectoryReader.STORAGE_PLUGINS.items()}
    if not isinstance(storage, DirectoryReader):
        return plugins[type(storage)]
    # A folder whose metadata lists no storage file has nothing to name.
    return plugins[type(storage.storages[0])] if storage.storages else "none"


def _metadata_formats(folder: Path) -> dict[str, str]:
    """Serialization format per topic as the folder's metadata.yaml lists it; {} if unreadable."""
    try:
        meta = yaml.safe_load((folder / "metadata.yaml").read_text())
        topics = meta["rosbag2_bagfile_information"]["topics_with_message_count"]
        return {
            t["topic_metadata"]["name"]: t["topic_metadata"]["serialization_format"] for t in topics
        }
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}  # rosbags names what is wrong with the file when it opens it


def _connection_formats(connections: Iterable[Connection]) -> dict[str, str]:
    """Serialization format per topic of an open bag's connections."""
    return {
        c.topic: c.ext.serialization_format
        for c in connections
        if isinstance(c.ext, ConnectionExtRosbag2)
    }


def _check_serialization(path: Path, formats: dict[str, str]) -> None:
    """Refuse a bag with topics not serialized as CDR, naming each such topic and its format."""
    other = {topic: fmt for topic, fmt in formats.items() if fmt != SERIALIZATION_FORMAT}
    if other:
        listed = ", ".join(f"{topic} ({fmt})" for topic, fmt in sorted(other.items()))
        raise BagError(
            f"{path}: topics in a serialization format other than {SERIALIZATION_FORMAT}, "
            f"which is the only one that can be decoded: {listed}; re-record them in "
            f"{SERIALIZATION_FORMAT} (the rosbag2 default: leave out `ros2 bag record "
            "--serialization-format`)"
        )


def bag_info(path: str | Path, *, distro: Distro = "humble") -> BagInfo:
    """Describe the bag at `path` (folder, one of its .mcap/.db3 files, or a bare such file)."""
    with BagReader(path, distro=distro) as reader:
        return reader.info
