#!/usr/bin/env bash
# Regenerate docs/results.md: every quantization method on paired simulated episodes.
# Usage: bash scripts/results_table.sh [EPISODES_PER_TASK] [MODEL_DIR]
# Collects 12 calibration demonstrations per task (seeds 0-11, the demonstration protocol of
# scripts/train_default_models.sh) unless out/calib exists, then runs bench/daptq_table.py.
# On this workplace's 2-core CPU, 10 episodes per task take ~5 min per method (13 methods).
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES="${1:-50}"
MODEL="${2:-daptq_ros/models/pi0_default}"
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 MUJOCO_GL="${MUJOCO_GL:-egl}"
if [ ! -d out/calib ]; then
  .venv/bin/daptq collect --tasks reach push pick-place drawer-open button-press-topdown \
    --episodes 12 --seed 0 --out out/calib
fi
.venv/bin/python bench/daptq_table.py --model "$MODEL" --calib out/calib \
  --episodes "$EPISODES" --threads 1 --work out/daptq_table --out docs
