#!/usr/bin/env bash
# Hopper-v5, end to end: SAC behaviour policy (stopped early: "medium") -> offline dataset -> Diffusion-QL.
#
#   bash scripts/hopper_diffusion_ql.sh [OUT_DIR [drl-train overrides...]]   (default outputs/hopper_dql)
#
# Environment knobs (defaults in brackets): SAC_STEPS [30000], DATA_SIZE [100000], EPOCHS [60]
# (x 500 gradient steps), SEED [0], THREADS [1]. Files: OUT_DIR/hopper-sac.pt, OUT_DIR/hopper-medium.npz,
# OUT_DIR/run (the drl-train run dir: metrics.jsonl with eval/normalized_score, eval_after.json, policy/).
# Steps that already have their output are skipped, so rerunning resumes (drl-train resumes its checkpoint).
set -euo pipefail
OUT=${1:-outputs/hopper_dql}
shift $(($# > 0 ? 1 : 0))  # the rest are drl-train overrides, e.g. env.eval_every=2
SAC_STEPS=${SAC_STEPS:-30000}
DATA_SIZE=${DATA_SIZE:-100000}
EPOCHS=${EPOCHS:-60}
SEED=${SEED:-0}
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
mkdir -p "$OUT"
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }

if [ ! -f "$OUT/hopper-sac.pt" ]; then
  stamp "SAC behaviour policy, $SAC_STEPS steps"
  python scripts/train_behaviour_sac.py --env-id Hopper-v5 --steps "$SAC_STEPS" --start-steps 5000 --hidden 256 \
    --batch-size 128 --lr 1e-3 --seed "$SEED" --out "$OUT/hopper-sac.pt.tmp" | tail -n 25
  mv "$OUT/hopper-sac.pt.tmp" "$OUT/hopper-sac.pt"
fi
if [ ! -f "$OUT/hopper-medium.npz" ]; then
  stamp "dataset, $DATA_SIZE transitions"
  python scripts/make_dataset.py --env-id Hopper-v5 --behaviour "$OUT/hopper-sac.pt" --name sac-medium \
    --size "$DATA_SIZE" --seed "$SEED" --out "$OUT/hopper-medium.npz"
fi
stamp "Diffusion-QL, $EPOCHS epochs"
drl-train experiment=hopper_diffusion_ql env.dataset="$OUT/hopper-medium.npz" train.epochs="$EPOCHS" seed="$SEED" \
  hardware=cpu hardware.num_threads="$THREADS" hydra.run.dir="$OUT/run" "$@"
stamp "done: $OUT/run/eval_after.json"
