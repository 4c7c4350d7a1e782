#!/usr/bin/env bash
# Retrain the embedded default models from scratch: simulated demonstrations -> behaviour cloning.
# Usage: [FAMILIES="pi0 cogact"] [STAGES_pi0=...] [FINETUNE_pi0=...] \
#        bash scripts/train_default_models.sh [DATA_DIR]
# 1. Base: each family trains on the base set (540 episodes) in stages, each resuming the last
#    and extending its cosine schedule: pi0 14000, 40000, 70000, 90000 steps (STAGES_pi0), cogact
#    30000, 48000 (STAGES_cogact), lr 3e-4. The base models land in out/models/<family>_base.
# 2. Fine-tune (daptq train --init): from the base model, on the base set plus 450 more episodes
#    of every task (seeds 2000.. clean, 3000.. noisy), FINETUNE_<family> steps at lr 1e-4
#    (pi0 32000, cogact 26000), into daptq_ros/models/<family>_default.
# Then each model is evaluated on held-out seeds (50 episodes per task) and the result is written
# into its manifest (daptq eval --record).
# On this workplace's 2-core CPU: collection ~13 min (two workers), then the two families train
# side by side with one thread each: base pi0 ~4 h at ~6 steps/s, cogact ~3 h at ~5 steps/s,
# fine-tuning ~1 h 30 min each; the evaluation takes ~15 min per family.
# Checkpoints sit beside each model (git-ignored); an interrupted run continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-out/demos}"
STAGES_pi0="${STAGES_pi0:-14000 40000 70000 90000}"
STAGES_cogact="${STAGES_cogact:-30000 48000}"
FINETUNE_pi0="${FINETUNE_pi0:-32000}"
FINETUNE_cogact="${FINETUNE_cogact:-26000}"
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 MUJOCO_GL="${MUJOCO_GL:-egl}"
DAPTQ=.venv/bin/daptq

collect() {  # OUT SEED NOISE EPISODES TASK...
  local out=$1 seed=$2 noise=$3 episodes=$4
  shift 4
  [ -f "$DATA/$out/summary.json" ] && return
  $DAPTQ collect --tasks "$@" --episodes "$episodes" --seed "$seed" --noise "$noise" \
    --workers 2 --out "$DATA/$out"
}
# Base set: object tasks get 3x the demonstrations (localising the small puck is the hard part),
# and a third of all episodes carry DART noise on the executed action (the recorded label stays
# clean). The extra set keeps that mix: 80 clean + 40 noisy episodes of reach, push, pick-place.
collect demos_clean/objects 0 0 120 push pick-place
collect demos_clean/other 0 0 40 reach drawer-open button-press-topdown
collect demos_noisy/objects 1000 0.1 60 push pick-place
collect demos_noisy/other 1000 0.1 20 reach drawer-open button-press-topdown
collect demos_extra/clean_main 2000 0 80 reach push pick-place
collect demos_extra/clean_drawer 2000 0 40 drawer-open
collect demos_extra/clean_button 2000 0 20 button-press-topdown
collect demos_extra/noisy_main 3000 0.1 40 reach push pick-place
collect demos_extra/noisy_other 3000 0.1 15 drawer-open button-press-topdown

train_family() {
  local family=$1 base="out/models/${1}_base" out="daptq_ros/models/${1}_default"
  local stages="STAGES_$1" finetune="FINETUNE_$1" steps resume
  for steps in ${!stages}; do
    resume=()
    [ -d "$base.checkpoint" ] && resume=(--resume)  # continue an interrupted or earlier stage
    $DAPTQ train --data "$DATA/demos_clean" "$DATA/demos_noisy" --family "$family" \
      --steps "$steps" --lr 3e-4 --threads 1 --checkpoint-every 500 "${resume[@]}" --out "$base"
  done
  resume=()
  [ -d "$out.checkpoint" ] && resume=(--resume)
  $DAPTQ train --init "$base" --data "$DATA/demos_clean" "$DATA/demos_noisy" "$DATA/demos_extra" \
    --family "$family" --steps "${!finetune}" --lr 1e-4 --threads 1 --checkpoint-every 500 \
    "${resume[@]}" --out "$out"
  $DAPTQ eval --model "$out" --episodes 50 --threads 1 --record --out "out/eval_${family}_default"
}

for family in ${FAMILIES:-pi0 cogact}; do
  train_family "$family" &
done
wait
