"""Write a rosbag2 (MCAP by default, sqlite3 on request) from Python message objects."""

from __future__ import annotations

import struct
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from rosbags.rosbag2 import (
    CompressionFormat,
    CompressionMode,
    StoragePlugin,
    Writer,
    WriterError,
)

from daptq_ros.bags.typestore import Distro, can_decode, make_typestore
from daptq_ros.errors import BagError

if TYPE_CHECKING:
    from rosbags.interfaces import Connection

Storage = Literal["mcap", "sqlite3"]

STORAGE_PLUGINS: dict[str, StoragePlugin] = {
    "mcap": StoragePlugin.MCAP,
    "sqlite3": StoragePlugin.SQLITE3,
}

# Metadata version 9 is what rosbag2 on Jazzy writes; rosbags can also write 8.
BAG_VERSION: Literal[8, 9] = 9


class BagWriter:
    """A new rosbag2 folder being written; use as a context manager.

    Both storages embed every message definition, so any rosbag2 reader (and ours without
    daptq_ros_interfaces installed) can decode what we write.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        storage: Storage = "mcap",
        distro: Distro = "humble",
        version: Literal[8, 9] = BAG_VERSION,
        compress: bool = False,
    ) -> None:
        """Prepare to write a new bag folder at `path` (it must not exist yet).

        `compress` zstd-compresses the chunks inside the MCAP file, as rosbag2's `zstd_fast`
        storage preset does; rosbag2, rosbags and the mcap tools read them (sqlite3 cannot).
        """
        self.path = Path(path)
        if storage not in STORAGE_PLUGINS:
            raise BagError(
                f"{self.path}: unknown storage {storage!r}; use one of {sorted(STORAGE_PLUGINS)}"
            )
        if self.path.exists():
            raise BagError(
                f"{self.path}: already exists and rosbag2 folders are never overwritten; "
                "choose a new path or delete the old bag"
            )
        self.typestore = make_typestore(distro)
        self._writer = Writer(self.path, version=version, storage_plugin=STORAGE_PLUGINS[storage])
        if compress:
            if storage != "mcap":
                raise BagError(f"{self.path}: only mcap storage can be compressed; use mcap")
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._connections: dict[str, Connection] = {}

    @property
    def types(self) -> dict[str, Any]:
        """Message classes by type name, for the builders of `daptq_ros.bags.convert`."""
        return self.typestore.types

    def open(self) -> None:
        """Create the folder and the storage file."""
        try:
            self._writer.open()
        except (WriterError, OSError) as error:
            raise BagError(f"{self.path}: cannot create the bag ({error})") from error

    def close(self) -> None:
        """Finish the storage file and write metadata.yaml."""
        self._writer.close()

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Delegating keeps rosbags' rule: close on success, abort (no metadata) on error.
        self._writer.__exit__(exc_type, exc, tb)

    def set_custom_data(self, key: str, value: str) -> None:
        """Store a key/value string in metadata.yaml's custom_data (episode metadata)."""
        try:
            self._writer.set_custom_data(key, value)
        except WriterError as error:
            raise BagError(f"{self.path}: custom_data {key!r}: {error}; pass a str") from None

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare `topic` with message type `msgtype` (e.g. sensor_msgs/msg/JointState)."""
        if have := self._connections.get(topic):
            if have.msgtype != msgtype:
                raise BagError(
                    f"{self.path}: topic {topic} was added as {have.msgtype}, not {msgtype}; "
                    "use one type per topic"
                )
            return
        if not can_decode(self.typestore, msgtype):
            raise BagError(
                f"{self.path}: unknown message type {msgtype} for topic {topic}; use a ROS 2 "
                "standard type or add its .msg to daptq_ros_interfaces"
            )
        try:
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore
            )
        except WriterError as error:
            raise BagError(f"{self.path}: cannot add topic {topic} ({error})") from error

    def write(self, topic: str, msg: object, stamp_ns: int) -> None:
        """Write `msg` on `topic` with record time `stamp_ns` (ns since the epoch)."""
        connection = self._connections.get(topic)
        if connection is None:
            raise BagError(f"{self.path}: topic {topic} was not added; call add_topic first")
        try:
            data = self.typestore.serialize_cdr(msg, connection.msgtype)
        # The generated serializers fail in these ways on a message of the wrong shape.
        except (AttributeError, TypeError, ValueError, OverflowError, struct.error) as error:
            raise BagError(
                f"{self.path}: the message for {topic} does not fit {connection.msgtype} "
                f"({type(error).__name__}: {error}); build it with the bag's types "
                "(BagWriter.types) and numpy arrays for numeric sequences"
            ) from error
        try:
            self._writer.write(connection, int(stamp_ns), data)
        except WriterError as error:
            raise BagError(f"{self.path}: cannot write to {topic} ({error})") from error
