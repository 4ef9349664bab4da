"""One rank of the data-parallel tests (tests/test_distributed.py starts it under torchrun).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py OUT MODEL [overrides]

Each rank runs drl.train.train in OUT/run and saves to OUT/rank<r>.pt what it saw: the x_T and
rewards of every training epoch, and its trainable weights at the end. With ``nan_epoch=E``
rank 1's reward is NaN at epoch E only, which every rank must skip together.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from conftest import compose_config  # tests/ is on sys.path: python runs this file as a script

import drl.train as train_module
from drl import distributed
from drl.checkpoint import trainable_state


def main(out: Path, model_path: str, overrides: list[str]) -> None:
    torch.set_num_threads(1)
    nan_epoch = next((int(o.split("=")[1]) for o in overrides if o.startswith("nan_epoch=")), None)
    overrides = [o for o in overrides if not o.startswith("nan_epoch=")]
    # reward.overlap=false: the recording reward below sees each epoch's whole batch in one call
    cfg = compose_config([f"model.path={model_path}", "reward.overlap=false", *overrides])
    seen: dict = {"x_T": [], "rewards": [], "prompts": []}
    built = {}
    build_context = train_module.build_context

    def recording_build_context(cfg):
        ctx, reward, algorithm = build_context(cfg)
        built["ctx"] = ctx
        seen["initial"] = trainable_state({"unet": ctx.model.denoiser})["unet"]
        collect, score = ctx.collector.collect, reward.__call__

        def recording_collect(prompts, metadata, generator, **kwargs):
            rollout = collect(prompts, metadata, generator, **kwargs)
            if len(prompts) == cfg.train.samples_per_epoch:  # a training epoch, not a sample grid
                seen["x_T"].append(rollout.latents[:, 0].clone())
                seen["prompts"].append(list(prompts))
            return rollout

        class RecordingReward:
            rewards, differentiable = reward.rewards, reward.differentiable

            def __getattr__(self, name):  # the rest of WeightedReward (evaluate, group_size, ...)
                return getattr(reward, name)

            def __call__(self, samples, prompts, metadata, group_size=None, latents=None):
                total, terms = score(samples, prompts, metadata, group_size, latents=latents)
                if len(prompts) == cfg.train.samples_per_epoch:
                    if len(seen["rewards"]) == nan_epoch and distributed.rank() == 1:
                        total = torch.full_like(total, float("nan"))
                    seen["rewards"].append(total.clone())
                return total, terms

        ctx.collector.collect = recording_collect
        return ctx, RecordingReward(), algorithm

    train_module.build_context = recording_build_context
    train_module.train(cfg, out / "run")
    modules = {"unet": built["ctx"].model.denoiser}
    torch.save({**seen, "weights": trainable_state(modules)["unet"]}, out / f"rank{distributed.rank()}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
