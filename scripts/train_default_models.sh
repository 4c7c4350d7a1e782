#!/usr/bin/env bash
# Retrain the embedded default models from scratch: simulated demonstrations -> behaviour cloning.
# Usage: bash scripts/train_default_models.sh [DATA_DIR] [STAGES]
# STAGES: the step counts trained in turn, each resuming the last (default "14000 40000": the
# cosine schedule of 14000 steps, then extended to 40000, as the embedded pi0 was trained).
# On this workplace's 2-core CPU: collection ~12 min (two collectors side by side), then each
# family trains with one thread (pi0: 40000 steps in ~1 h 50 min at ~6 steps/s, batch 32).
# The models land in daptq_ros/models/<family>_default/ (checkpoints beside them, git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-out/demos}"
STAGES="${2:-14000 40000}"
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 MUJOCO_GL="${MUJOCO_GL:-egl}"
DAPTQ=.venv/bin/daptq

# Object tasks get 3x the demonstrations (localising the small puck is the hard part), and a
# third of all episodes carry DART noise on the executed action (the recorded label stays clean).
if [ ! -f "$DATA/demos_noisy/other/summary.json" ]; then
  (
    $DAPTQ collect --tasks push pick-place --episodes 120 --seed 0 --out "$DATA/demos_clean/objects"
    $DAPTQ collect --tasks reach drawer-open button-press-topdown --episodes 40 --seed 0 \
      --out "$DATA/demos_clean/other"
  ) &
  (
    $DAPTQ collect --tasks push pick-place --episodes 60 --seed 1000 --noise 0.1 \
      --out "$DATA/demos_noisy/objects"
    $DAPTQ collect --tasks reach drawer-open button-press-topdown --episodes 20 --seed 1000 \
      --noise 0.1 --out "$DATA/demos_noisy/other"
  ) &
  wait
fi

for family in ${FAMILIES:-pi0}; do
  out="daptq_ros/models/${family}_default"
  for steps in $STAGES; do
    resume=()
    [ -d "$out.checkpoint" ] && resume=(--resume)  # continue an interrupted or earlier stage
    $DAPTQ train --data "$DATA/demos_clean" "$DATA/demos_noisy" --family "$family" \
      --steps "$steps" --lr 3e-4 --threads 1 --checkpoint-every 500 "${resume[@]}" --out "$out"
  done
done
