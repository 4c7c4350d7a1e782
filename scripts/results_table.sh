#!/usr/bin/env bash
# Regenerate docs/results.md: every quantization method, the low-bit frontier included, on paired
# simulated episodes, for the embedded default model of each family.
# Usage: bash scripts/results_table.sh [EPISODES_PER_TASK] [MODEL_DIR ...]
# Collects 12 calibration demonstrations per task (seeds 0-11, the demonstration protocol of
# scripts/train_default_models.sh) unless out/calib exists, then runs `daptq report`: the
# quantizations as Ray tasks, each method's episodes on one Ray worker per core (add
# `--address HOST:PORT` to the report line for a cluster: README, "Where the results are").
# Seeds: 100000-100049 served every decision so far (model selection, method settings); the
# table is evaluated on seeds from 300000, never used before.
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES="${1:-20}"
shift || true
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 MUJOCO_GL="${MUJOCO_GL:-egl}"
if [ ! -d out/calib ]; then
  .venv/bin/daptq collect --tasks reach push pick-place drawer-open button-press-topdown \
    --episodes 12 --seed 0 --out out/calib
fi
models=()
[ "$#" -gt 0 ] && models=(--models "$@")
.venv/bin/daptq report "${models[@]}" --calib out/calib --episodes "$EPISODES" --seed 300000 \
  --threads 1 --work out/daptq_table --out docs \
  --note "Seeds: 100000-100049 served every decision (model selection, method settings); this table uses seeds from 300000, never used before."
