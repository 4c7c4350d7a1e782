"""Benchmark: the paper-style results table (our Tables 2-4), every method on paired episodes.

The same as `daptq report` (see `daptq report --help` for every option): for each model, FP32,
BF16, RTN W8A8 / W4A8, SmoothQuant W8A8, AWQ W4, GPTQ W4, the QVLA-style baseline, DA-PTQ
(top-k and budgeted) and the ablations, quantized on the calibration bags and evaluated on the
same seeds; writes OUT/results.md (+ results.json, plots, drift reports).

    python bench/daptq_table.py --calib DEMOS --episodes 10 --out docs
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # short spin: see docs/performance.md
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys

from daptq_ros.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
