#!/usr/bin/env bash
# Reproduce the toy world's shipped weights (the video model alone takes ~11 min on one core):
#   1. the prompt-alignment classifier  -> drl/assets/toy_classifier
#   2. the base text-to-image model     -> drl/assets/toy_t2i  (pretrained by drl-train algorithm=pretrain)
#   2b. its flow-matching sibling       -> drl/assets/toy_flow (the same, with the rectified-flow loss; on toy_t2i's text encoder)
#   3. the video (colour, shape, motion) classifier -> drl/assets/toy_video_classifier  (~5 min)
#   4. the base text-to-video model     -> drl/assets/toy_t2v  (~11 min single-threaded, another run on the other core)
# Video only:  bash scripts/build_toy_assets.sh video
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-all}" != video ]; then
python scripts/train_toy_classifier.py --out drl/assets/toy_classifier
run_dir=outputs/build/toy_t2i_pretrain
rm -rf "$run_dir"
drl-train algorithm=pretrain model.from_scratch=true reward=toy_alignment \
  train.epochs=70 algorithm.steps_per_epoch=50 train.batch_size=32 train.save_every=10 \
  logger=none seed=0 hydra.run.dir="$run_dir"
rm -rf drl/assets/toy_t2i
cp -r "$run_dir/model" drl/assets/toy_t2i

run_dir=outputs/build/toy_flow_pretrain
rm -rf "$run_dir"
# A pixel-space SD3Transformer2DModel (drl/models/toy.py) trained with the rectified-flow loss on the same noisy
# captions as toy_t2i, conditioned through toy_t2i's text encoder, kept frozen (as SD3 keeps its CLIPs). 960
# optimizer steps: 13 min of CPU on one thread (55 min of wall time on the 2-core machine shared with ~10 other
# processes). The short run takes a faster EMA than toy_t2i's (0.995: a 200-step window).
drl-train model=toy_flow model.from_scratch=true algorithm=pretrain reward=toy_alignment \
  train.epochs=24 algorithm.steps_per_epoch=40 train.batch_size=32 train.save_every=4 \
  algorithm.train_text_encoder=false algorithm.warmup_steps=100 algorithm.ema_decay=0.995 \
  hardware.num_threads=1 logger=none seed=0 hydra.run.dir="$run_dir"
rm -rf drl/assets/toy_flow
cp -r "$run_dir/model" drl/assets/toy_flow
fi

python scripts/train_toy_classifier.py --video --steps 800 --batch-size 64 --threads 1
run_dir=outputs/build/toy_t2v_pretrain
rm -rf "$run_dir"
# 4-frame clips of 16 px. Caption words are resampled at random with probability 5% (colour), 10% (shape) and
# 60% (motion), so a caption's motion is right only about half the time: the base model renders the object and
# its colour and follows the motion poorly, which alignment then fixes. The text encoder stays frozen at its
# random init, as real text-to-video models keep a frozen CLIP/T5: trained on these captions it learned to map
# every motion word to the same states, and then no update of the denoiser can follow motion.
drl-train model=toy_t2v model.from_scratch=true algorithm=pretrain reward=temporal_consistency \
  train.epochs=120 algorithm.steps_per_epoch=25 train.batch_size=16 train.save_every=10 train.grid_size=8 \
  algorithm.lr=1e-3 algorithm.warmup_steps=50 algorithm.ema_decay=0.995 algorithm.train_text_encoder=false \
  algorithm.caption_noise.colour=0.05 algorithm.caption_noise.shape=0.1 algorithm.caption_noise.motion=0.6 \
  hardware.num_threads=1 logger=none seed=0 hydra.run.dir="$run_dir"
rm -rf drl/assets/toy_t2v
cp -r "$run_dir/model" drl/assets/toy_t2v
du -sh drl/assets/*
