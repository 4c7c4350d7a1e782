#!/usr/bin/env python3
"""Deployment benchmark script: the same as `daptq bench --deploy` (see --help).

python bench/deploy.py --out docs/performance.md    # regenerates docs/performance.md
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads cost 3x on 2 cores
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # short spin: see docs/performance.md

from daptq_ros.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--deploy", *sys.argv[1:]]))
