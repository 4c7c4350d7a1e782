"""`daptq bags`: inspect rosbag2 recordings (MCAP or sqlite3) without ROS."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from daptq_ros.bags.reader import BagInfo, TopicInfo, bag_info


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `daptq bags` and its subcommands."""
    parser = subparsers.add_parser(
        "bags",
        help="inspect rosbag2 recordings (MCAP or sqlite3) without ROS",
        description="Inspect rosbag2 recordings without a ROS installation.",
    )
    actions = parser.add_subparsers(dest="bags_command", required=True, metavar="ACTION")
    info = actions.add_parser(
        "info",
        help="storage, duration, message count and per-topic table of a bag",
        description="Print a bag's storage plugin, time span, total message count and, per "
        "topic, its message type and count. Topics whose type has no definition in the bag, "
        "the ROS 2 standard types or daptq_ros_interfaces are marked: they cannot be decoded; "
        "so are topics skipped because the definition the bag embeds does not parse.",
    )
    info.add_argument(
        "path",
        metavar="PATH",
        help="the bag folder written by `ros2 bag record` (holding metadata.yaml), one of its "
        ".mcap/.db3 files, or a bare .mcap/.db3 file without metadata.yaml",
    )
    info.add_argument(
        "--json",
        action="store_true",
        help="print the description as one JSON object (times in ns and s) for scripts",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `daptq bags info` (its only action so far)."""
    info = bag_info(args.path)
    print(json.dumps(info.to_dict(), indent=2) if args.json else format_info(info))
    return 0


def format_info(info: BagInfo) -> str:
    """A human-readable summary of a bag: header lines, then a topic/type/count table."""
    lines = [
        f"bag:       {info.path}",
        f"storage:   {info.storage}",
        f"duration:  {info.duration_s:.3f} s",
        f"start:     {_clock(info.start_ns)}",
        f"end:       {_clock(info.end_ns)}",
        f"messages:  {info.message_count}",
    ]
    lines += [f"metadata:  {key} = {value}" for key, value in sorted(info.custom_data.items())]
    rows = [("topic", "type", "count")]
    rows += [(t.name, t.msgtype + _undecodable_mark(t), str(t.count)) for t in info.topics]
    name_width = max(len(r[0]) for r in rows)
    type_width = max(len(r[1]) for r in rows)
    lines.append("")
    lines += [f"{n:<{name_width}}  {t:<{type_width}}  {c:>5}" for n, t, c in rows]
    return "\n".join(lines)


def _clock(ns: int) -> str:
    """Nanoseconds since the epoch as seconds plus an ISO UTC time."""
    # timezone.utc, not datetime.UTC: ROS 2 Humble runs Python 3.10, which lacks the latter.
    utc = timezone.utc  # noqa: UP017
    stamp = datetime.fromtimestamp(ns / 1e9, tz=utc).isoformat(timespec="milliseconds")
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d} ({stamp})"


def _undecodable_mark(topic: TopicInfo) -> str:
    """'' for a decodable topic, else why it cannot be decoded."""
    if topic.skipped:
        return "  (skipped: embedded definition does not parse)"
    return "" if topic.decodable else "  (no definition)"
