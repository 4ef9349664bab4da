"""Epoch sampling time with a slow reward: scored after sampling (sequential) vs overlapped with it.

The reward sleeps ``delay`` seconds per sample (a stand-in for a remote judge: it holds no CPU, like
a request in flight), with the delay set so that scoring costs about as much as sampling. Overlapped
scoring should bring the epoch's sampling+scoring time from about sampling + scoring down to about
max(sampling, scoring) + one chunk's scoring. Sequential and overlapped runs alternate (interleaved
repeats), and each figure is a median. Only the sampling block is timed: the update is the same either way.

    python scripts/bench_reward_overlap.py                                       # toy model, 4 chunks of 8
    python scripts/bench_reward_overlap.py --repeats 7 train.samples_per_epoch=64 train.batch_size=16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ratio", type=float, default=1.0, help="scoring time / sampling time of the slow reward")
    parser.add_argument("overrides", nargs="*", help="drl-train overrides")
    args = parser.parse_args()

    from drl.compose import compose_config
    from drl.rewards import WeightedReward
    from drl.rewards.base import Reward
    from drl.rewards.overlap import collect_and_score
    from drl.runtime import seed_everything
    from drl.train import build_context

    defaults = ["logger=none", "train.samples_per_epoch=32", "train.batch_size=8", "scheduler.num_steps=10", "hardware.num_threads=1"]
    cfg = compose_config([*defaults, *args.overrides])
    if cfg.hardware.num_threads > 0:
        torch.set_num_threads(cfg.hardware.num_threads)
    seed_everything(cfg.seed)
    ctx, _, algorithm = build_context(cfg)
    generator = torch.Generator().manual_seed(cfg.seed)

    algorithm.collect(generator)  # warm-up
    sampling = statistics.median(_timed(lambda: algorithm.collect(generator)) for _ in range(3))
    delay = args.ratio * sampling / cfg.train.samples_per_epoch  # seconds per sample

    def slow(images, prompts, metadata):
        time.sleep(delay * len(images))
        return images.mean(dim=(1, 2, 3))

    reward = WeightedReward([Reward("slow", slow, differentiable=False)], [1.0])
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for overlap in (False, True):  # interleaved, so that drift in the machine's load hits both alike
            times[overlap].append(_timed(lambda: collect_and_score(algorithm, ctx.collector, reward, generator, overlap)))
    scoring = delay * cfg.train.samples_per_epoch
    seq, ovl = statistics.median(times[False]), statistics.median(times[True])
    print(f"{cfg.train.samples_per_epoch} samples in chunks of {cfg.train.batch_size}, {cfg.scheduler.num_steps} steps, "
          f"{args.repeats} interleaved repeats, medians:")  # fmt: skip
    print(f"  sampling alone              {sampling:7.2f} s")
    print(f"  scoring alone (sleep)       {scoring:7.2f} s")
    print(f"  sequential  sample + score  {seq:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times[False])})")
    print(f"  overlapped  sample + score  {ovl:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times[True])})")
    print(f"  overlapped / sequential     {ovl / seq:7.2f}    ideal max(sampling, scoring) / sum = {max(sampling, scoring) / (sampling + scoring):.2f}")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
