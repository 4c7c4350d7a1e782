"""Release the resident pages of memory-mapped files that a runtime has finished reading.

OpenVINO maps an exported model's weight files and, on its first inference, repacks every
weight into its own buffers; the mapped file pages stay in the process's resident set
although nothing reads them again. `madvise(MADV_DONTNEED)` on those read-only mappings drops
them from the resident set: they stay in the page cache (reclaimable), and any later read
would fault them back in from the unchanged file, so the computation cannot change.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterable
from pathlib import Path

MADV_DONTNEED = 4  # linux/mman-common.h
MAPS = Path("/proc/self/maps")


def mapped_ranges(paths: Iterable[Path]) -> list[tuple[int, int]]:
    """(start, end) addresses of this process's read-only mappings of `paths`."""
    names = {str(Path(p).resolve()) for p in paths}
    ranges = []
    for line in MAPS.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] in names and "w" not in fields[1]:
            start, end = (int(address, 16) for address in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def release_file_pages(paths: Iterable[Path]) -> int:
    """Drop the resident pages of this process's read-only mappings of `paths`; bytes advised
    (0 where the platform has no /proc/self/maps, i.e. not Linux)."""
    if not sys.platform.startswith("linux") or not MAPS.exists():
        return 0
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    for start, end in mapped_ranges(paths):
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            advised += end - start
    return advised
