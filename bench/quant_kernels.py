#!/usr/bin/env python3
"""Kernel benchmark script: the same as `daptq bench --kernels` (see --help)."""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads cost 3x on 2 cores
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # short spin: see docs/performance.md

from daptq_ros.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--kernels", *sys.argv[1:]]))
