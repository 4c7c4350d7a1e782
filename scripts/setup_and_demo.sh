#!/usr/bin/env bash
# Fresh Debian 12 / Python 3.11 machine -> .venv with every pinned dependency -> the main job.
# torch is pinned to 2.13.0 (the CPU wheel): never let an unpinned torch pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip==26.3"
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e daptq_ros
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1
.venv/bin/daptq demo --out out/demo
