"""Build the rosbags typestore: a ROS 2 distro's types, our own .msg files, a bag's own types."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rosbags.interfaces import MessageDefinition, MessageDefinitionFormat
from rosbags.typesys import (
    Stores,
    TypesysError,
    get_types_from_idl,
    get_types_from_msg,
    get_typestore,
)

from daptq_ros.errors import BagError
from daptq_ros.share import share_candidates

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.interfaces.typing import Typesdict
    from rosbags.typesys.store import Typestore

Distro = Literal["humble", "jazzy"]

DISTRO_STORES: dict[str, Stores] = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}

INTERFACES_PACKAGE = "daptq_ros_interfaces"

# rosbag2 joins the IDL files of one type with this separator line (same as rosbags expects).
_IDL_SEPARATOR = "=" * 80 + "\n"


def interfaces_msg_dir() -> Path:
    """The folder of daptq_ros_interfaces' .msg files: the source tree, else an install prefix."""
    # bags/typestore.py -> bags -> daptq_ros (module) -> daptq_ros (ROS package) -> repo root
    candidates = [Path(__file__).resolve().parents[3] / INTERFACES_PACKAGE / "msg"]
    candidates += [folder / "msg" for folder in share_candidates(INTERFACES_PACKAGE)]
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.msg")):
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise BagError(
        f"cannot find the {INTERFACES_PACKAGE} message definitions (searched {searched}); "
        f"run from the source checkout or install {INTERFACES_PACKAGE} (colcon build, then "
        "source install/setup.bash)"
    )


def interface_types(msg_dir: Path | None = None) -> Typesdict:
    """Parse every .msg of daptq_ros_interfaces as `daptq_ros_interfaces/msg/<Name>`."""
    folder = interfaces_msg_dir() if msg_dir is None else msg_dir
    types: Typesdict = {}
    for path in sorted(folder.glob("*.msg")):
        try:
            types.update(
                get_types_from_msg(path.read_text(), f"{INTERFACES_PACKAGE}/msg/{path.stem}")
            )
        except TypesysError as error:
            raise BagError(
                f"{path}: not a valid ROS message definition ({error}); fix the file"
            ) from None
    return types


def embedded_types(connections: Iterable[Connection]) -> tuple[Typesdict, dict[str, str]]:
    """The message definitions a bag carries (MCAP, sqlite3 since Iron), parsed per type.

    Also returns, per message type whose definition does not parse, why: one broken definition
    (Jazzy embeds service events' .srv text) must not keep the bag's other topics from reading.
    """
    types: Typesdict = {}
    unparsable: dict[str, str] = {}
    for connection in connections:
        try:
            types.update(parse_definition(connection.msgdef, connection.msgtype))
        except (TypesysError, IndexError, ValueError) as error:
            why = _one_line(error)
            unparsable[connection.msgtype] = f"its embedded definition cannot be parsed ({why})"
    return types, unparsable


def parse_definition(definition: MessageDefinition, msgtype: str) -> Typesdict:
    """The types one embedded definition (.msg or IDL text) of `msgtype` declares; {} if none."""
    types: Typesdict = {}
    if definition.format == MessageDefinitionFormat.MSG:
        types.update(get_types_from_msg(definition.data, msgtype))
    elif definition.format == MessageDefinitionFormat.IDL:
        for chunk in definition.data.split(_IDL_SEPARATOR):
            # Each chunk of a multi-file definition starts with an "IDL: <name>" line.
            idl = chunk.split("\n", 1)[1] if chunk.startswith("IDL: ") else chunk
            if idl.strip():
                types.update(get_types_from_idl(idl))
    return types


def _one_line(error: Exception, limit: int = 200) -> str:
    """The error's text on one line (rosbags quotes whole definitions), cut at `limit` chars."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Built typestores by (distro, extra definitions): registering every type builds ~300
# dataclasses (~0.18 s), and a drift analysis opens two bags per episode, all with the same
# definitions. A typestore is only read once built, so one instance is shared.
_STORES: dict[tuple[str, str], Typestore] = {}
_STORES_KEPT = 16


def make_typestore(distro: Distro = "humble", extra: Typesdict | None = None) -> Typestore:
    """A typestore of `distro`'s standard types, our interfaces and `extra` (which wins); built
    once per distro and set of definitions, then shared."""
    key = (distro, repr(sorted((extra or {}).items())))
    store = _STORES.get(key)
    if store is None:
        store = _build_typestore(distro, extra)
        if len(_STORES) >= _STORES_KEPT:
            del _STORES[next(iter(_STORES))]  # the oldest
        _STORES[key] = store
    return store


def _build_typestore(distro: Distro, extra: Typesdict | None) -> Typestore:
    if distro not in DISTRO_STORES:
        raise BagError(f"unknown ROS 2 distro {distro!r}; use one of {sorted(DISTRO_STORES)}")
    base = get_typestore(DISTRO_STORES[distro])
    # A bag's own definitions describe how its bytes were written, so they override the distro's
    # when a type changed between distros; rebuilding from an empty store allows that override.
    fielddefs: Typesdict = {**base.fielddefs, **interface_types(), **(extra or {})}
    store = get_typestore(Stores.EMPTY)
    try:
        store.register(fielddefs)
    except TypesysError as error:
        raise BagError(f"message types conflict ({error}); check the bag's definitions") from None
    return store


def can_decode(store: Typestore, msgtype: str) -> bool:
    """Whether `store` knows `msgtype` and every type nested in it."""
    try:
        store.get_msgdef(msgtype)
    except (KeyError, TypesysError):
        return False
    return True
