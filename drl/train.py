"""The one training loop. Every algorithm runs in it; they differ only in update().

    hooks.before()                                               # the domain's evaluation (ctx.hooks)
    for epoch:  batch   = algorithm.collect(generator)          # SAMPLING (the shared collector)
                rewards = reward(batch.samples, prompts, meta)   #   (rollouts only)
                metrics = algorithm.update(batch, epoch)         # UPDATE
                log(metrics, hooks.drift()); checkpoint(hooks.trainable_modules())
    hooks.export(); hooks.after()                                # the trained result, then evaluation again

What differs by domain (images/video, control tasks) is behind drl.domain.DomainHooks.
"""

from __future__ import annotations

import importlib
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from drl import distributed, sharding
from drl.algorithms import CONTROL, IMAGES, domain_of
from drl.algorithms.base import Algorithm, TrainContext
from drl.config import Config
from drl.errors import NonFiniteError
from drl.logging import RunLogger
from drl.models.base import DenoiserModel
from drl.preemption import PreemptionWatch
from drl.resume import FIND, save_run, start_run
from drl.rewards import WeightedReward
from drl.rewards.overlap import collect_and_score
from drl.runtime import pick_device, seed_everything

DOMAIN_BUILDERS = {IMAGES: "drl.images:build_image_context", CONTROL: "drl.control:build_control_context"}
"""Each domain's builder (module:function), imported on first use: control tasks load gymnasium."""


def build_context(cfg: Config, model: DenoiserModel | None = None) -> tuple[TrainContext, WeightedReward, Algorithm]:
    """Everything a run needs, built (and checked) before any epoch starts, by its domain's builder.

    ``model``: an already built model to use instead of loading cfg.model (benchmarks build
    random weights at full size in memory rather than writing gigabytes to disk).
    """
    module, function = DOMAIN_BUILDERS[domain_of(cfg)].split(":")
    return getattr(importlib.import_module(module), function)(cfg, pick_device(cfg.hardware.device), model)


def train(cfg: Config, run_dir: Path, config_dict: dict | None = None, resume_point=FIND) -> float:
    """Run ``cfg`` in ``run_dir``; returns the last epoch's mean reward (the sweep objective).

    ``resume_point``: the checkpoint to continue from (drl.resume; None: start afresh), or FIND it at the start.
    """
    if cfg.hardware.num_threads > 0:
        torch.set_num_threads(cfg.hardware.num_threads)
    distributed.setup(cfg.hardware)
    main = distributed.is_main()  # rank 0 writes files and W&B; every rank computes
    seed_everything(cfg.seed)  # the same on every rank: identical model initialisation
    ctx, reward, algorithm = build_context(cfg)
    # Rank 0 alone evaluates and probes the drift, unless FSDP shards the denoiser: then
    # every forward pass is a collective, and every rank takes part (only rank 0 writes).
    probes = main or sharding.is_sharded(ctx.model.denoiser)
    generator = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed))  # each rank: own prompts, noise
    logger = RunLogger(run_dir, cfg.logger, config_dict or asdict(cfg), cfg.run_name, enabled=main)
    ctx.hooks.start(main)  # the base model's reference points, taken before any weights are loaded or trained
    # The run's start, in one step (drl.resume): find -> check -> load -> restore RNGs -> truncate metrics.
    start = start_run(cfg, run_dir, ctx.hooks.trainable_modules(), algorithm, generator, logger, resume_point)
    start_epoch, nonfinite_in_a_row = start.epoch, start.nonfinite_in_a_row

    def checkpoint(epoch: int) -> None:  # collective: every rank calls it, rank 0 writes
        save_run(cfg, run_dir, epoch, ctx.hooks.trainable_modules(), algorithm, generator, nonfinite_in_a_row)

    watch = PreemptionWatch(cfg.preemption.requeue_signals, cfg.preemption.stop_signals)
    watch.install()
    try:
        if start_epoch == 0 and probes:
            ctx.hooks.before(logger)

        # A resumed run that is already complete still returns its objective to a sweep.
        last_reward = next((r["reward_mean"] for r in reversed(logger.records()) if "reward_mean" in r), float("nan"))
        progress = tqdm(
            range(start_epoch, cfg.train.epochs), desc=cfg.run_name, unit="epoch", initial=start_epoch, total=cfg.train.epochs, disable=not main
        )
        for epoch in progress:
            # ------------------------------------------------------------ SAMPLING
            t0, cpu0 = time.perf_counter(), time.process_time()  # wall, and this process's CPU (user + sys, all threads)
            # rewards [B]: a rollout's scores; None when update() samples itself (AlignProp) or data is read
            batch, rewards = collect_and_score(algorithm, ctx.collector, reward, generator, cfg.reward.overlap)
            record: dict = {"epoch": epoch}
            if rewards is not None:
                # Every rank's rewards: the statistics, and the skip decision, are the same on all ranks.
                all_rewards = distributed.gather_rewards(rewards.float(), batch.prompts)[0]  # [W*B]
                if not torch.isfinite(all_rewards).all():
                    nonfinite_in_a_row += 1
                    bad = int((~torch.isfinite(all_rewards)).sum())
                    if main:
                        tqdm.write(f"epoch {epoch}: {bad} non-finite rewards; the batch is skipped ({nonfinite_in_a_row} in a row).")
                    if nonfinite_in_a_row >= cfg.train.max_nonfinite_batches:
                        raise NonFiniteError(
                            f"The reward was NaN/inf in {nonfinite_in_a_row} epochs in a row; stopping. "
                            f"The last good checkpoint is in {run_dir / 'checkpoints'}."
                        )
                    logger.log({"epoch": epoch, "skipped_nonfinite": 1})
                    continue
                record.update(
                    reward_mean=float(all_rewards.mean()),
                    reward_std=float(all_rewards.std(unbiased=False)),
                    samples=batch.batch_size,  # summed over ranks by reduce_metrics
                    **{f"reward/{k}": float(v.float().mean()) for k, v in batch.reward_terms.items()},
                )
            t_sample = time.perf_counter() - t0

            # -------------------------------------------------------------- UPDATE
            t1 = time.perf_counter()
            metrics = algorithm.update(batch, epoch)
            t_update = time.perf_counter() - t1
            n = len(batch)
            record.update(metrics)  # algorithms that sample inside update() report reward_mean themselves
            record.update(sample_time_s=t_sample, update_time_s=t_update, samples_per_s=n / (t_sample + t_update), cpu_s=time.process_time() - cpu0)
            record = distributed.reduce_metrics(record)  # the job's numbers, identical on every rank
            loss = record.get("train/loss", 0.0)
            if not math.isfinite(loss):
                nonfinite_in_a_row += 1
                if nonfinite_in_a_row >= cfg.train.max_nonfinite_batches:
                    raise NonFiniteError(f"The loss was NaN/inf in {nonfinite_in_a_row} epochs in a row; stopping.")
            else:
                nonfinite_in_a_row = 0

            last_reward = record.get("reward_mean", last_reward)
            record = {**record, "drift_from_base": ctx.hooks.drift()} if probes else record  # weights are equal on every rank
            logger.log(record)
            progress.set_postfix(
                {k: f"{v:.3g}" for k, v in [("reward", record.get("reward_mean", float("nan"))), ("loss", loss), ("samples/s", record["samples_per_s"])]}
            )
            saved = (epoch + 1) % cfg.train.save_every == 0 or epoch + 1 == cfg.train.epochs
            if saved:
                checkpoint(epoch)
            if watch.stop_requested():  # collective, once per epoch
                if not saved:
                    checkpoint(epoch)
                raise watch.stop(epoch)

        if probes:
            ctx.hooks.export(run_dir)  # the trained result first: nothing that looks at it afterwards can lose it
            ctx.hooks.after(logger)  # shows the trained model; a probe that fails there is reported, not raised
        return last_reward
    finally:
        watch.uninstall()
        logger.finish()
