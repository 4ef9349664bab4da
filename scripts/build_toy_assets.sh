#!/usr/bin/env bash
# Reproduce the toy world's shipped weights (about 20 min on 2 idle CPU cores):
#   1. the prompt-alignment classifier  -> drl/assets/toy_classifier
#   2. the base text-to-image model     -> drl/assets/toy_t2i  (pretrained by drl-train algorithm=pretrain)
set -euo pipefail
cd "$(dirname "$0")/.."
python scripts/train_toy_classifier.py --out drl/assets/toy_classifier
run_dir=outputs/build/toy_t2i_pretrain
rm -rf "$run_dir"
drl-train algorithm=pretrain model.from_scratch=true reward=toy_alignment \
  train.epochs=70 algorithm.steps_per_epoch=50 train.batch_size=32 train.save_every=10 \
  logger=none seed=0 hydra.run.dir="$run_dir"
rm -rf drl/assets/toy_t2i
cp -r "$run_dir/model" drl/assets/toy_t2i
du -sh drl/assets/*
