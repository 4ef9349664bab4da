"""What a latent reward saves: the same trivial reward (a mean) read from decoded samples, then from x_0 latents.

On the model of the overrides (default: the small pipeline, a tiny SD1.x: `python -m drl.testing.tiny sd15
/tmp/tiny-sd15`), it times DDPO's sampling block (sampling and scoring, drl.rewards.overlap.collect_and_score)
and one AlignProp update (its chain with gradients, the reward, the backward), each with the pixel term and with
the latent term, interleaved over --repeats, and reports the medians and the VAE decodes each made. The terms
cost next to nothing, so the difference is the decode (and, for AlignProp, the decode's backward); the time of
the decode alone (the epoch's latents, no gradient) is printed beside it, the saving to expect.

    python scripts/bench_latent_reward.py model=sd15 model.path=/tmp/tiny-sd15 model.resolution=64
    python scripts/bench_latent_reward.py --repeats 5 model=sd15 model.path=/tmp/tiny-sd15 model.resolution=64 scheduler.num_steps=20
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def mean_reward(space: str):
    from drl.rewards import WeightedReward
    from drl.rewards.base import Reward

    return WeightedReward([Reward("mean", lambda x, prompts, metadata: x.flatten(1).mean(1), differentiable=True, space=space)], [1.0])


class Decodes:
    """Counts calls of the model's VAE decode."""

    def __init__(self, model):
        self.count = 0
        if model.vae is not None:
            decode = model.vae.decode

            def counting(*args, **kwargs):
                self.count += 1
                return decode(*args, **kwargs)

            model.vae.decode = counting


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("overrides", nargs="*", help="drl-train overrides (the model; e.g. model=sd15 model.path=/tmp/tiny-sd15)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    from drl.compose import compose_config
    from drl.rewards.overlap import collect_and_score
    from drl.train import build_context, seed_everything

    defaults = ["logger=none", "train.samples_per_epoch=8", "train.batch_size=8", "scheduler.num_steps=10", "hardware.num_threads=1"]
    results: dict = {"overrides": args.overrides, "repeats": args.repeats}
    for algorithm in ("ddpo", "alignprop"):
        cfg = compose_config([*defaults, f"algorithm={algorithm}", *args.overrides])
        if cfg.hardware.num_threads > 0:
            torch.set_num_threads(cfg.hardware.num_threads)
        seed_everything(cfg.seed)
        ctx, _, algo = build_context(cfg)
        decodes = Decodes(ctx.model)
        generator = torch.Generator().manual_seed(cfg.seed)
        times: dict[str, list[float]] = {"pixel": [], "latent": []}
        counts: dict[str, int] = {"pixel": 0, "latent": 0}
        rewards = {space: mean_reward(space) for space in times}

        def once(space: str) -> None:
            if algorithm == "ddpo":
                collect_and_score(algo, ctx.collector, rewards[space], generator, overlap=False)
            else:
                ctx.reward = rewards[space]
                algo.update(algo.collect(generator), 0)

        once("pixel"), once("latent")  # warm-up
        for _ in range(args.repeats):
            for space in times:  # interleaved, so that drift in the machine's load hits both alike
                before = decodes.count
                t0 = time.perf_counter()
                once(space)
                times[space].append(time.perf_counter() - t0)
                counts[space] = decodes.count - before
        pixel, latent = statistics.median(times["pixel"]), statistics.median(times["latent"])
        results[algorithm] = {"pixel_s": pixel, "latent_s": latent, "saving": 1 - latent / pixel, "runs": times, "decodes_per_call": counts}
        if algorithm == "ddpo":  # the decode alone, on an epoch's latents
            latents = torch.randn(cfg.train.samples_per_epoch, *ctx.collector.latent_shape, generator=generator)
            with torch.no_grad():
                decode = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    ctx.model.decode(latents)
                    decode.append(time.perf_counter() - t0)
            results["decode_s"] = statistics.median(decode)
            print(f"decode alone ({cfg.train.samples_per_epoch} latents {list(ctx.collector.latent_shape)}): {results['decode_s']:.3f} s", flush=True)
        what = "sampling + scoring" if algorithm == "ddpo" else "one update"
        print(f"{algorithm:9s} {what:18s} pixel term {pixel:7.3f} s ({counts['pixel']} decodes)   latent term {latent:7.3f} s "
              f"({counts['latent']} decodes)   saving {100 * (1 - latent / pixel):5.1f}%", flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
