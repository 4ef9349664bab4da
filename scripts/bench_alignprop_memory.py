"""Peak memory of one AlignProp update as the chain grows, with and without checkpointing.

Each configuration runs in a fresh process (peak RSS cannot be reset inside one), which
loads the default toy model, warms up, then runs one full-backprop update
(truncation=all). It reports the growth of the peak resident set size over the peak
before the update (glibc told to return freed blocks at once, see below); on a GPU,
torch.cuda.max_memory_allocated instead.

    python scripts/bench_alignprop_memory.py                      # steps 5 10 20 50, batch 8
    python scripts/bench_alignprop_memory.py --steps 5 50 --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys


def measure(num_steps: int, checkpoint: bool, batch_size: int) -> dict:
    """Runs in the child process: one AlignProp update, returns peak memory figures in MiB."""
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
    parser.add_argument("--child", nargs=2, metavar=("STEPS", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[0]), args.child[1] == "1", args.batch_size)))
        return
    # glibc keeps freed heap blocks in the process, so without this the RSS peak counts memory
    # that autograd already released; with mmap for blocks >= 64 KiB (every activation here) it
    # returns them at once and the RSS peak tracks the live tensors.
    child_env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    rows = {}
    for checkpoint in (True, False):
        for steps in args.steps:
            out = subprocess.run(
                [sys.executable, __file__, "--batch-size", str(args.batch_size), "--child", str(steps), str(int(checkpoint))],
                capture_output=True, text=True, check=True, env=child_env,
            ).stdout.strip().splitlines()[-1]
            rows[(checkpoint, steps)] = json.loads(out)
    key = "cuda_peak_growth_mib" if "cuda_peak_growth_mib" in rows[(True, args.steps[0])] else "peak_rss_growth_mib"
    print(f"peak memory growth of one AlignProp update (truncation=all, batch {args.batch_size}), {key}:")
    print(f"{'steps':>6} {'checkpointing':>14} {'no checkpointing':>17}")
    for steps in args.steps:
        print(f"{steps:>6} {rows[(True, steps)][key]:>14.1f} {rows[(False, steps)][key]:>17.1f}")
    first, last = args.steps[0], args.steps[-1]
    for checkpoint in (True, False):
        ratio = rows[(checkpoint, last)][key] / max(rows[(checkpoint, first)][key], 1e-9)
        print(f"{'with' if checkpoint else 'without'} checkpointing: peak at {last} steps / peak at {first} steps = {ratio:.2f}")


if __name__ == "__main__":
    main()
