#!/usr/bin/env bash
# Retrain the embedded default models from scratch: simulated demonstrations -> behaviour cloning.
# Usage: [FAMILIES="pi0 cogact"] [STAGES_pi0=...] bash scripts/train_default_models.sh [DATA_DIR]
# Each family trains in stages, each resuming the last and extending its cosine schedule, as the
# embedded defaults were trained: pi0 14000, 40000, 70000, then 90000 steps (STAGES_pi0), cogact
# 30000 then 48000 steps (STAGES_cogact). Then each model is evaluated on held-out seeds (50
# episodes per task) and the result is written into its manifest (daptq eval --record).
# On this workplace's 2-core CPU: collection ~12 min (two collectors side by side), then each
# family trains with one thread (pi0: 90000 steps in ~4 h 30 min at ~5.5-6 steps/s, batch 32;
# cogact: 48000 steps in ~3 h at ~4.3-5 steps/s); the evaluation takes ~15 min per family.
# The models land in daptq_ros/models/<family>_default/ (checkpoints beside them, git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-out/demos}"
STAGES_pi0="${STAGES_pi0:-14000 40000 70000 90000}"
STAGES_cogact="${STAGES_cogact:-30000 48000}"
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

for family in ${FAMILIES:-pi0 cogact}; do
  out="daptq_ros/models/${family}_default"
  stages="STAGES_$family"
  for steps in ${!stages}; do
    resume=()
    [ -d "$out.checkpoint" ] && resume=(--resume)  # continue an interrupted or earlier stage
    $DAPTQ train --data "$DATA/demos_clean" "$DATA/demos_noisy" --family "$family" \
      --steps "$steps" --lr 3e-4 --threads 1 --checkpoint-every 500 "${resume[@]}" --out "$out"
  done
  $DAPTQ eval --model "$out" --episodes 50 --threads 1 --record --out "out/eval_${family}_default"
done
