#!/usr/bin/env bash
# Regenerate docs/results.md: every quantization method on paired simulated episodes, for the
# embedded default model of each family.
# Usage: bash scripts/results_table.sh [EPISODES_PER_TASK] [MODEL_DIR ...]
# Collects 12 calibration demonstrations per task (seeds 0-11, the demonstration protocol of
# scripts/train_default_models.sh) unless out/calib exists, then runs `daptq report`.
# On this workplace's 2-core CPU, 10 episodes per task take ~3 min per method and model
# (15 methods; the models run one after the other, or side by side: see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES="${1:-10}"
shift || true
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 MUJOCO_GL="${MUJOCO_GL:-egl}"
if [ ! -d out/calib ]; then
  .venv/bin/daptq collect --tasks reach push pick-place drawer-open button-press-topdown \
    --episodes 12 --seed 0 --out out/calib
fi
models=()
[ "$#" -gt 0 ] && models=(--models "$@")
.venv/bin/daptq report "${models[@]}" --calib out/calib --episodes "$EPISODES" --threads 1 \
  --work out/daptq_table --out docs
