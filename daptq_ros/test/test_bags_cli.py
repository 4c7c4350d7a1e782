"""`daptq bags info` on the real rosbag2 fixtures."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
from conftest import require_ros2_bags

from daptq_ros.cli import COMMANDS, main
from daptq_ros.commands import bags


def bags_parser() -> argparse.ArgumentParser:
    """Only our subcommand, so these tests do not depend on the other commands."""
    parser = argparse.ArgumentParser(prog="daptq")
    bags.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.fixture(params=["mcap_cdr_test", "sqlite3_cdr_test"])
def bag(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    copy = tmp_path / request.param
    shutil.copytree(require_ros2_bags() / request.param, copy)
    for path in [copy, *copy.iterdir()]:  # the shared originals are read-only
        path.chmod(0o755 if path.is_dir() else 0o644)
    return copy


def test_info_json(bag: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = bags_parser().parse_args(["bags", "info", str(bag), "--json"])
    assert bags.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["storage"] == bag.name.split("_")[0]
    assert report["message_count"] == 7
    assert report["duration_s"] == pytest.approx(0.151137181)
    assert {t["name"]: (t["type"], t["count"]) for t in report["topics"]} == {
        "/test_topic": ("test_msgs/msg/BasicTypes", 3),
        "/array_topic": ("test_msgs/msg/Arrays", 4),
    }


def test_info_table(bag: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bags.run(bags_parser().parse_args(["bags", "info", str(bag)])) == 0
    out = capsys.readouterr().out
    assert "duration:  0.151 s" in out and "messages:  7" in out
    assert any(
        line.split() == ["/array_topic", "test_msgs/msg/Arrays", "4"] for line in out.splitlines()
    )


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bags_parser().parse_args(["bags", "info", "--help"])
    out = capsys.readouterr().out
    assert "PATH" in out and "metadata.yaml" in out and "--json" in out and "JSON" in out


def test_registered_in_cli_with_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert "bags" in COMMANDS
    assert main(["bags", "info", "/nonexistent/bag"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("daptq bags: error: /nonexistent/bag: no such file") and "\n" not in err
