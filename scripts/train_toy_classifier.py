"""Train the toy-world prompt-alignment classifier and save it where the package ships it.

Usage: python scripts/train_toy_classifier.py [--steps 1000] [--batch-size 128] [--seed 0] [--lr 3e-3] [--out DIR]
       python scripts/train_toy_classifier.py --video   # the (colour, shape, motion) classifier of 16 px, 4-frame clips
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing the package

import torch  # noqa: E402

from drl.toyworld.classifier import save_classifier, train_classifier  # noqa: E402
from drl.toyworld.world import sample_images  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "drl" / "assets" / "toy_classifier"
DEFAULT_VIDEO_OUT = REPO_ROOT / "drl" / "assets" / "toy_video_classifier"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps (fresh images each step)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (cosine decay)")
    parser.add_argument("--out", type=Path, help=f"output directory (default: {DEFAULT_OUT}, or {DEFAULT_VIDEO_OUT} with --video)")
    parser.add_argument("--video", action="store_true", help="train the video world's (colour, shape, motion) classifier")
    parser.add_argument("--resolution", type=int, help="image / frame side in pixels (default: 32, or 16 with --video)")
    parser.add_argument("--frames", type=int, default=4, help="frames per clip (--video)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.video:
        from drl.toyworld.video import build_video_classifier, stacked_clip_sampler

        model, metrics = train_classifier(
            args.steps, args.batch_size, args.seed, args.lr, args.resolution or 16,
            sampler=stacked_clip_sampler(args.frames), build=lambda: build_video_classifier(args.frames),
        )
    else:
        # Jittered appearance (tinted backgrounds, shifted colours) so the reward reads diffusion samples fairly.
        jittered = functools.partial(sample_images, appearance_jitter=True)
        model, metrics = train_classifier(args.steps, args.batch_size, args.seed, args.lr, args.resolution or 32, sampler=jittered)
    for name, value in metrics.items():
        if name.startswith("accuracy_"):
            print(f"held-out {name.removeprefix('accuracy_'):>8} accuracy: {value:.4f}")
    print(f"final training loss: {metrics['final_loss']:.4f}")
    print(f"training wall time: {metrics['train_seconds']:.1f} s")
    directory = save_classifier(model, args.out or (DEFAULT_VIDEO_OUT if args.video else DEFAULT_OUT))
    size_kib = sum(path.stat().st_size for path in directory.iterdir()) / 1024
    print(f"saved to {directory} ({size_kib:.0f} KiB)")


if __name__ == "__main__":
    main()
