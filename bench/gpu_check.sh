#!/usr/bin/env bash
# The deployment bench on a lent GPU (the `device` tool), batch 1, chunk latency p50/p95,
# weight bytes and peak GPU memory, at 420 M (pi0/smolvla) and 3 B (pi0/pi0).
#
# Two steps, because the GPU machine has Python 3.12 and torch with CUDA but no torchao,
# transformers or network:
#
#   bash bench/gpu_check.sh prepare     # here: download the Python 3.12 wheels to .gpu_wheels/
#   # then, with the device tool: run(command="bash bench/gpu_check.sh run",
#   #                                  carry=[".gpu_wheels"], timeout_s=540)
#
# `run` installs what is missing from the wheels (never torch), puts this checkout on
# PYTHONPATH and writes
# $OUT/gpu_420m.json and $OUT/gpu_3b.json (the `daptq bench --deploy --json` report); render
# them here into docs/performance_gpu.md with `bash bench/gpu_check.sh render DIR`.
# Budget: about 3 min at 420 M and 4 min at 3 B on an H100 (fewer variants and runs at 3 B).
# The OpenVINO runtime (`daptq bench --deploy --runtimes openvino`) is not measured here: its GPU
# plugin drives Intel GPUs only, and the lent machines are NVIDIA (docs/performance_findings.md).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu_wheels
# What the deploy bench imports besides torch and numpy (the GPU image has both), pinned as
# requirements.txt pins them; their dependencies come along (about 32 MB).
PACKAGES=(torchao==0.18.0 transformers==5.24.0 safetensors==0.8.0 psutil==7.2.2 tqdm==4.70.1)

case "${1:-}" in
prepare)
  mkdir -p "$WHEELS"
  grep -qx "/$WHEELS/" .git/info/exclude 2>/dev/null || echo "/$WHEELS/" >>.git/info/exclude
  .venv/bin/pip download --dest "$WHEELS" --only-binary :all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 "${PACKAGES[@]}"
  rm -f "$WHEELS"/numpy-*.whl # 16 MB the GPU image already has: the carry limit is 64 MiB
  du -sh "$WHEELS"
  ;;
run)
  OUT=${OUT:-out/gpu_check}
  mkdir -p "$OUT"
  # resolves against what the image has; only what is missing comes from the wheels
  python3 -m pip install --no-index --find-links "$WHEELS" --quiet "${PACKAGES[@]}"
  export PYTHONPATH="$PWD/daptq_ros" OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
  bench=(python3 -m daptq_ros.cli bench --deploy --device cuda --no-compile --json)
  "${bench[@]}" --families pi0 --size pi0=smolvla --runs 20 >"$OUT/gpu_420m.json"
  "${bench[@]}" --families pi0 --size pi0=pi0 --runs 10 \
    --variants bf16 w8a8 w4a16 daptq_budget >"$OUT/gpu_3b.json"
  ;;
render)
  .venv/bin/python - "${2:?the folder holding gpu_420m.json and gpu_3b.json}" <<'EOF'
import json, sys
from pathlib import Path

from daptq_ros.evidence.deploy_report import write_performance_doc

folder = Path(sys.argv[1])
for name, doc in (("gpu_420m", "performance_gpu.md"), ("gpu_3b", "performance_gpu_3b.md")):
    report = json.loads((folder / f"{name}.json").read_text())
    write_performance_doc(report, Path("docs") / doc, "bash bench/gpu_check.sh run")
EOF
  ;;
*)
  echo "usage: bash bench/gpu_check.sh prepare | run | render DIR" >&2
  exit 2
  ;;
esac
