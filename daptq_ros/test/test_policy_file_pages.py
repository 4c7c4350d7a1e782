"""Releasing a read-only file mapping's pages leaves what the mapping reads unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from daptq_ros.policy.file_pages import mapped_ranges, release_file_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps")


def resident_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_released_pages_leave_the_resident_set_and_read_back_the_same(tmp_path):
    path = tmp_path / "weights.bin"
    values = np.random.default_rng(3).integers(0, 255, 24 << 20, np.uint8)  # 24 MiB
    values.tofile(path)
    mapped = np.memmap(path, np.uint8, mode="r")
    checksum = int(mapped.astype(np.uint64).sum())  # reads every page
    before = resident_file_kb()
    assert sum(end - start for start, end in mapped_ranges([path])) >= values.nbytes
    assert release_file_pages([path]) >= values.nbytes
    assert resident_file_kb() < before - 16 * 1024  # at least 16 of the 24 MiB left
    assert int(mapped.astype(np.uint64).sum()) == checksum


def test_a_file_that_is_not_mapped_releases_nothing(tmp_path):
    path = tmp_path / "other.bin"
    path.write_bytes(b"\0" * 4096)
    assert mapped_ranges([path]) == []
    assert release_file_pages([path]) == 0
