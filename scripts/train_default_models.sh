#!/usr/bin/env bash
# Retrain the embedded default models from scratch: simulated demonstrations -> behaviour cloning.
# Usage: [FAMILIES="pi0 cogact"] [STEPS_pi0=20000] [STEPS_cogact=22000] [FINETUNE_cogact=8000] \
#        [CONTROL=ee_delta] [WORKERS=2] bash scripts/train_default_models.sh [DATA_DIR]
# CONTROL=joint_delta trains the joint-space models instead (daptq_ros/models/<family>_joint, data
# in out/demos_joint_delta): the same demonstrations recorded as changes of the seven arm joints,
# the state the arm's joint positions, actions normalised by mean/std (daptq collect --control,
# daptq train --state --action-norm).
# 1. Collect 2240 scripted demonstrations of the five tasks (~20 min with two workers): clean
#    and DART-noisy (0.1 on the executed action; the recorded label stays clean) sets, with more
#    episodes of the object tasks and reach, where localising the puck and the goal is the hard
#    part, and 400 button-press episodes for cogact's second stage.
# 2. Train each family from scratch on the first 1840, lr 3e-4 on a cosine schedule: pi0 20000
#    steps into daptq_ros/models/pi0_default; cogact (8 cognition tokens) 22000 steps into
#    out/models/cogact_base (skipped when that exists), then fine-tuned from there on all 2240
#    for FINETUNE_cogact steps at lr 1e-4, learning classifier-free guidance (condition dropout
#    0.1, sampled at scale 1.5), into daptq_ros/models/cogact_default. The second stage took
#    cogact from 42.8 % to 54.8 % on held-out seeds (docs/models.md).
# Then each model is evaluated on held-out seeds (50 episodes per task) and the result is written
# into its manifest (daptq eval --record).
# On this workplace's 2-core CPU (two families side by side, one thread each): reading the
# bags ~5-12 min, then pi0 ~70 min at ~5 steps/s, cogact's base ~110 min at ~3.4 steps/s (alone;
# ~2.8 steps/s beside pi0, ~130 min) and its fine-tune ~26 min at ~5.2 steps/s; the evaluation
# takes ~17 min per family.
# Checkpoints sit beside each model (git-ignored); an interrupted run continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
CONTROL="${CONTROL:-ee_delta}"
WORKERS="${WORKERS:-2}"
if [ "$CONTROL" = ee_delta ]; then
  DATA="${1:-out/demos}" SUFFIX=default STATE=(--state ee_position_gripper)
else
  # mean/std actions: joint deltas' min/max are set by rare extremes (docs/models.md)
  DATA="${1:-out/demos_$CONTROL}" SUFFIX=joint STATE=(--state joint_positions --action-norm mean_std)
fi
STEPS_pi0="${STEPS_pi0:-20000}"
STEPS_cogact="${STEPS_cogact:-22000}"
FINETUNE_pi0="${FINETUNE_pi0:-0}"
FINETUNE_cogact="${FINETUNE_cogact:-8000}"
FINETUNE_SETTINGS_pi0=-
# Classifier-free guidance as CogACT samples (scale 1.5): 54.8 % against 51.6 % without.
FINETUNE_SETTINGS_cogact="condition_dropout=0.1 guidance_scale=1.5"
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 MUJOCO_GL="${MUJOCO_GL:-egl}"
DAPTQ=.venv/bin/daptq

collect() {  # OUT SEED NOISE EPISODES TASK...
  local out=$1 seed=$2 noise=$3 episodes=$4
  shift 4
  [ -f "$DATA/$out/summary.json" ] && return
  $DAPTQ collect --tasks "$@" --episodes "$episodes" --seed "$seed" --noise "$noise" \
    --control "$CONTROL" --workers "$WORKERS" --out "$DATA/$out"
}
# Object tasks get 3x the demonstrations of the others, and a third of all episodes carry noise.
collect demos_clean/objects 0 0 120 push pick-place
collect demos_clean/other 0 0 40 reach drawer-open button-press-topdown
collect demos_noisy/objects 1000 0.1 60 push pick-place
collect demos_noisy/other 1000 0.1 20 reach drawer-open button-press-topdown
collect demos_extra/clean_main 2000 0 80 reach push pick-place
collect demos_extra/clean_drawer 2000 0 40 drawer-open
collect demos_extra/clean_button 2000 0 20 button-press-topdown
collect demos_extra/noisy_main 3000 0.1 40 reach push pick-place
collect demos_extra/noisy_other 3000 0.1 15 drawer-open button-press-topdown
collect demos_more/clean_reach 4000 0 240 reach
collect demos_more/clean_objects 4000 0 160 push pick-place
collect demos_more/clean_drawer 4000 0 60 drawer-open
collect demos_more/noisy_main 5000 0.1 70 reach push pick-place
collect demos_more/noisy_drawer 5000 0.1 20 drawer-open
FAMILIES=(${FAMILIES:-pi0 cogact})
# Fine-tuning set of cogact (stage 2): button-press-topdown, 95 of the 1840 episodes above.
if [[ " ${FAMILIES[*]} " == *" cogact "* ]]; then
  collect demos_button/clean 6000 0 300 button-press-topdown
  collect demos_button/noisy 7000 0.1 100 button-press-topdown
fi

# FAMILY OUT STEPS LR INIT SETTINGS DATA...  (INIT "-": random initialisation; SETTINGS "-": none,
# else space-separated KEY=VALUE model settings for --set)
train() {
  local family=$1 out=$2 steps=$3 lr=$4 init=$5 settings=$6 resume=() extra=() words=()
  shift 6
  [ -d "$out.checkpoint" ] && resume=(--resume)  # continue an interrupted run
  [ "$init" != - ] && extra+=(--init "$init")
  [ "$settings" != - ] && read -ra words <<<"$settings" && extra+=(--set "${words[@]}")
  $DAPTQ train --data "$@" --family "$family" "${STATE[@]}" --steps "$steps" --lr "$lr" --threads 1 \
    --checkpoint-every 500 "${extra[@]}" "${resume[@]}" --out "$out"
}

train_family() {
  local family=$1 out="daptq_ros/models/${1}_$SUFFIX" steps="STEPS_$1" finetune="FINETUNE_$1"
  local settings="FINETUNE_SETTINGS_$1"
  local base_data=("$DATA/demos_clean" "$DATA/demos_noisy" "$DATA/demos_extra" "$DATA/demos_more")
  if [ "${!finetune}" -gt 0 ]; then
    local base="out/models/${family}_base"
    [ "$SUFFIX" = default ] || base="out/models/${family}_${SUFFIX}_base"
    [ -f "$base/model.safetensors" ] || train "$family" "$base" "${!steps}" 3e-4 - - "${base_data[@]}"
    train "$family" "$out" "${!finetune}" 1e-4 "$base" "${!settings}" "${base_data[@]}" \
      "$DATA/demos_button"
  else
    train "$family" "$out" "${!steps}" 3e-4 - - "${base_data[@]}"
  fi
  $DAPTQ eval --model "$out" --episodes 50 --threads "$EVAL_THREADS" --record --out "out/eval_${family}_$SUFFIX"
}

EVAL_THREADS=$((${#FAMILIES[@]} > 1 ? 1 : 2))  # one core per family when both train at once
for family in "${FAMILIES[@]}"; do
  train_family "$family" &
done
wait
