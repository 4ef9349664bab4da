"""Peak memory of one AlignProp update as the chain grows, with and without checkpointing.

Each configuration runs in a fresh process (peak RSS cannot be reset inside one), which
loads the default toy model, warms up, then runs one full-backprop update
(truncation=all). It reports the growth of the peak resident set size over the peak
before the update (glibc told to return freed blocks at once, see below); on a GPU,
torch.cuda.max_memory_allocated instead.

    python scripts/bench_alignprop_memory.py                      # steps 5 10 20 50, batch 8
    python scripts/bench_alignprop_memory.py --steps 5 50 --batch-size 4
    python scripts/bench_alignprop_memory.py --video              # toy_t2v: frame subsetting x checkpointing

--video measures one AlignProp update of the toy text-to-video model (10 steps, truncation=all) on the
per-frame reward frames_toy_object, scoring K=2 random frames (VADER's subsetting) or all of them, with and
without checkpointing every denoiser call; --frames sets the clip length (default 8; the shipped model
makes 4, and its UNet3D takes any number).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys


def measure(num_steps: int, checkpoint: bool, batch_size: int, frame_subset: int | None = None, frames: int = 8):
    """Runs in the child process: one AlignProp update, returns peak memory figures in MiB.

    frame_subset=None: the image model; else the video model with the per-frame reward on that many frames (0: all).
    """
    import torch
    from hydra import compose, initialize_config_dir

    from drl.cli import config_dir
    from drl.config import register_configs, validate
    from drl.train import build_context

    register_configs()
    overrides = [
        "logger=none", "algorithm=alignprop", "reward=toy_alignment", "algorithm.truncation=all",
        f"algorithm.checkpoint_denoiser={str(checkpoint).lower()}", f"scheduler.num_steps={num_steps}",
        f"train.samples_per_epoch={batch_size}", f"train.batch_size={batch_size}",
    ]
    if frame_subset is not None:
        overrides += ["model=toy_t2v", f"model.num_frames={frames}", "reward=frames_object"]
        overrides += [f"reward.frame_subset={frame_subset}"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = validate(compose(config_name="config", overrides=overrides))
    ctx, _, algorithm = build_context(cfg)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # warm-up: allocator pools and lazy inits happen before the baseline
        ctx.collector.collect(ctx.prompts.first(batch_size), [{}] * batch_size, generator)
    cuda = ctx.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated()
    before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    algorithm.update(algorithm.collect(generator))
    after_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"peak_rss_growth_mib": (after_rss - before_rss) / 1024, "peak_rss_mib": after_rss / 1024}
    if cuda:
        result["cuda_peak_growth_mib"] = (torch.cuda.max_memory_allocated() - before) / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--video", action="store_true", help="the toy_t2v table: frame subsetting x checkpointing")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (--video)")
    parser.add_argument("--child", nargs=3, metavar=("STEPS", "CHECKPOINT", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        frames = None if args.child[2] == "none" else int(args.child[2])
        print(json.dumps(measure(int(args.child[0]), args.child[1] == "1", args.batch_size, frames, args.frames)))
        return
    # glibc keeps freed heap blocks in the process, so without this the RSS peak counts memory
    # that autograd already released; with mmap for blocks >= 64 KiB (every activation here) it
    # returns them at once and the RSS peak tracks the live tensors.
    child_env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}

    def run_child(steps: int, checkpoint: bool, frames: str = "none") -> dict:
        out = subprocess.run(
            [sys.executable, __file__, "--batch-size", str(args.batch_size), "--frames", str(args.frames), "--child", str(steps), str(int(checkpoint)), frames],
            capture_output=True, text=True, check=True, env=child_env,
        ).stdout.strip().splitlines()[-1]
        return json.loads(out)

    if args.video:
        video_table(run_child, args.batch_size, args.frames)
        return
    rows = {}
    for checkpoint in (True, False):
        for steps in args.steps:
            rows[(checkpoint, steps)] = run_child(steps, checkpoint)
    key = "cuda_peak_growth_mib" if "cuda_peak_growth_mib" in rows[(True, args.steps[0])] else "peak_rss_growth_mib"
    print(f"peak memory growth of one AlignProp update (truncation=all, batch {args.batch_size}), {key}:")
    print(f"{'steps':>6} {'checkpointing':>14} {'no checkpointing':>17}")
    for steps in args.steps:
        print(f"{steps:>6} {rows[(True, steps)][key]:>14.1f} {rows[(False, steps)][key]:>17.1f}")
    first, last = args.steps[0], args.steps[-1]
    for checkpoint in (True, False):
        ratio = rows[(checkpoint, last)][key] / max(rows[(checkpoint, first)][key], 1e-9)
        print(f"{'with' if checkpoint else 'without'} checkpointing: peak at {last} steps / peak at {first} steps = {ratio:.2f}")


def video_table(run_child, batch_size: int, frames: int, steps: int = 10) -> None:
    """Peak memory of one toy_t2v AlignProp update: reward on K=2 of the frames or all, checkpointing on/off."""
    rows = {(c, k): run_child(steps, c, str(k)) for c in (True, False) for k in (2, 0)}
    key = "cuda_peak_growth_mib" if "cuda_peak_growth_mib" in rows[(True, 2)] else "peak_rss_growth_mib"
    print(f"toy_t2v, {frames}-frame clips, one AlignProp update ({steps} steps, truncation=all, batch {batch_size}), reward frames_toy_object, {key}:")
    print(f"{'frames scored':>14} {'checkpointing':>14} {'no checkpointing':>17}")
    for k, label in ((2, f"2 of {frames}"), (0, f"all {frames}")):
        print(f"{label:>14} {rows[(True, k)][key]:>14.1f} {rows[(False, k)][key]:>17.1f}")


if __name__ == "__main__":
    main()
