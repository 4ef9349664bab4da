"""The one training loop. Every algorithm runs in it; they differ only in update().

    for epoch:  batch   = algorithm.collect(generator)          # SAMPLING (the shared collector)
                rewards = reward(batch.samples, prompts, meta)   #   (rollouts only)
                metrics = algorithm.update(batch)                # UPDATE
                log(metrics); checkpoint()
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from drl import distributed, sharding
from drl.algorithms import IMAGES, algorithm_class
from drl.algorithms.base import Algorithm, TrainContext
from drl.checkpoint import load_trainable_state, save_checkpoint, trainable_state
from drl.config import Config, ConfigError
from drl.diagnostics import DriftProbe
from drl.evaluation.hacking import QualityProbe
from drl.logging import RunLogger
from drl.models.finetune import has_lora, setup_trainable
from drl.models.loading import load_t2i
from drl.models.t2i import T2IModel
from drl.preemption import PreemptionWatch
from drl.prompts import build_prompt_source
from drl.resume import FIND, apply_optimizer_settings, find_resume_point, fingerprint, log_changes, optimizer_settings
from drl.rewards import WeightedReward, build_reward
from drl.rewards.eval_terms import record_eval_terms
from drl.rewards.overlap import collect_and_score
from drl.rewards.plugin import dry_call_plugins
from drl.rollout import RolloutCollector
from drl.sampling import make_schedule
from drl.types import Rollout

GRID_SEED_OFFSET = 10_000  # the before/after evaluation uses its own fixed noise
EVAL_FILE = "eval.json"  # the before/after evaluation rewards and their paired gain


class NonFiniteError(RuntimeError):
    """Rewards or losses stayed NaN/inf for too many epochs; the last good checkpoint is kept."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hardware.device=cuda but no CUDA device is visible; use hardware=cpu.")
    return torch.device(name)


def make_autocast(device: torch.device, mixed_precision: str):
    if mixed_precision == "no":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: Config) -> T2IModel:
    if cfg.model.kind == "t2v":  # text-to-video: the same interface, latents with a frame axis
        from drl.models.loading import load_t2v
        from drl.models.t2v import build_toy_t2v

        if cfg.model.from_scratch:
            return build_toy_t2v(cfg.model.resolution, cfg.model.num_frames, seed=cfg.seed)
        return load_t2v(cfg.model.path, cfg.model.num_frames)
    if cfg.model.from_scratch:
        from drl.models.toy import build_toy_t2i

        return build_toy_t2i(cfg.model.resolution, seed=cfg.seed)
    model = load_t2i(cfg.model.path, cfg.model.family)
    model.decode_chunk_size, model.resolution = cfg.model.vae_decode_chunk, cfg.model.resolution
    return model


def make_trainable(model: T2IModel, cfg: Config) -> list[torch.nn.Parameter]:
    """Freeze the model but for what model.finetune trains (all denoiser weights, or LoRA adapters)."""
    return setup_trainable(model.unet, cfg.model.finetune, cfg.model.lora_rank, cfg.model.lora_alpha, cfg.model.lora_targets)


def build_context(cfg: Config, model: T2IModel | None = None) -> tuple[TrainContext, WeightedReward, Algorithm]:
    """Everything a run needs, built (and checked) before any epoch starts.

    ``model``: an already built model to use instead of loading cfg.model (benchmarks build
    random weights at full size in memory rather than writing gigabytes to disk).
    """
    device = pick_device(cfg.hardware.device)
    if cfg.env is not None:  # a diffusion policy on a gymnasium task: its own builder, the same loop
        from drl.control import build_control_context

        return build_control_context(cfg, device)
    model = (build_model(cfg) if model is None else model).to(device)
    model.text_encoder.eval()
    params = make_trainable(model, cfg)
    if cfg.model.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    model.unet.eval()
    schedule = make_schedule(model.make_scheduler(cfg.scheduler.kind), cfg.scheduler.num_steps)
    autocast = make_autocast(device, cfg.hardware.mixed_precision)
    if cfg.hardware.mixed_precision != "no":
        model.cast_frozen(torch.bfloat16 if cfg.hardware.mixed_precision == "bf16" else torch.float16)
    collector = RolloutCollector(
        model,
        schedule,
        eta=cfg.scheduler.eta,
        guidance_scale=cfg.scheduler.guidance_scale,
        batch_size=cfg.train.sample_batch_size or cfg.train.batch_size,
        resolution=cfg.model.resolution,
        device=device,
        autocast=autocast,
    )
    reward = build_reward(cfg.reward, device, video=cfg.model.kind == "t2v", group_size=getattr(cfg.algorithm, "group_size", 1))
    distributed.broadcast_parameters(params)  # every rank starts from rank 0's weights
    prompts = build_prompt_source(cfg.prompts, video=cfg.model.kind == "t2v")
    sample_shape = (3, cfg.model.resolution, cfg.model.resolution)
    sample_shape = (cfg.model.num_frames, *sample_shape) if cfg.model.kind == "t2v" else sample_shape
    dry_call_plugins(reward, sample_shape, prompts.first(2), device, needs_grad=cfg.algorithm.name == "alignprop")
    ctx = TrainContext(cfg, model, schedule, collector, prompts, params, reward, device, autocast)
    algorithm = algorithm_class(cfg.algorithm.name, IMAGES)(cfg.algorithm, ctx)
    if cfg.model.compile:  # after the algorithm's frozen reference copy: a compiled module's deepcopy would still call the original
        model.unet.compile()
    return ctx, reward, algorithm


def _trainable_modules(ctx: TrainContext) -> dict[str, torch.nn.Module]:
    if ctx.hooks is not None:
        return ctx.hooks.modules()
    return {"unet": ctx.model.unet, "text_encoder": ctx.model.text_encoder}


def evaluation_batch(ctx: TrainContext, reward: WeightedReward, seed: int) -> tuple[Rollout, list[str]]:
    """Fixed prompts and noise, identical before and after training: max(grid_size, eval_size) samples
    whose first grid_size tiles form the image grid."""
    cfg = ctx.cfg
    n = max(cfg.train.grid_size, cfg.train.eval_size)
    pool = list(cfg.prompts.grid_prompts) or ctx.prompts.first(n)
    prompts = [pool[k % len(pool)] for k in range(n)]
    generator = torch.Generator().manual_seed(seed + GRID_SEED_OFFSET)
    batch = ctx.collector.collect(prompts, [{} for _ in prompts], generator)
    with torch.no_grad():  # group_size=0: a groupwise reward's groups are the samples that share a prompt
        batch.rewards, batch.reward_terms = reward(batch.samples, batch.prompts, batch.metadata, group_size=0)
        batch.reward_terms.update(reward.evaluate(batch.samples, batch.prompts, batch.metadata))  # reward.eval_terms
    return batch, prompts


def log_evaluation(
    logger: RunLogger, run_dir: Path, name: str, batch: Rollout, prompts: list[str], epoch: int, grid_size: int,
    quality: QualityProbe | None = None,
) -> None:  # fmt: skip
    """The grid of the first grid_size samples, and every reward in eval.json. After training, the
    paired gain (same prompts, same noise) and its standard error: far less noisy than comparing
    two epochs' means, whose prompts and noise differ; and ``quality``'s diversity and distance to base."""
    logger.log_grid(name, batch.samples[:grid_size], prompts[:grid_size], batch.rewards[:grid_size], epoch=epoch)
    if not logger.enabled:  # another rank under FSDP: it sampled with the shards, rank 0 writes
        return
    path = run_dir / EVAL_FILE
    record = nan_for_null(json.loads(path.read_text())) if path.is_file() and name == "samples_after" else {}
    record[name.removeprefix("samples_")] = [float(r) for r in batch.rewards]
    # Each term and monitor's mean on the same clips, e.g. whether a guard held while the reward rose.
    record.setdefault("terms", {})[name.removeprefix("samples_")] = {k: float(v.float().mean()) for k, v in batch.reward_terms.items()}
    record_eval_terms(record, name.removeprefix("samples_"), batch.reward_terms, logger, epoch)  # their own paired gains
    if quality is not None:
        record.setdefault("quality", {})[name.removeprefix("samples_")] = quality.observe(run_dir, name.removeprefix("samples_"), batch.samples)
    if "before" in record and "after" in record and len(record["before"]) == len(record["after"]) > 1:
        gain = torch.tensor(record["after"]) - torch.tensor(record["before"])  # [N], paired
        summary = {
            "eval/n": len(gain),
            "eval/reward_before": float(torch.tensor(record["before"]).mean()),
            "eval/reward_after": float(torch.tensor(record["after"]).mean()),
            "eval/gain": float(gain.mean()),
            "eval/gain_se": float(gain.std() / len(gain) ** 0.5),
        }
        summary["eval/gain_in_se"] = summary["eval/gain"] / max(summary["eval/gain_se"], 1e-12)
        tqdm.write(
            f"eval on {len(gain)} fixed prompts and noise: reward {summary['eval/reward_before']:.4g} -> "
            f"{summary['eval/reward_after']:.4g} (gain {summary['eval/gain']:+.3g} ± {summary['eval/gain_se']:.2g} s.e.)"
        )
        if quality is not None:  # diversity and distance to the base model; warns once on a collapse
            summary.update(quality.conclude(record, summary))
        record["summary"] = summary
        logger.log_summary(summary, epoch)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(json_safe(record), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


def json_safe(value):
    """NaN/inf (a reward that failed on some sample) -> null, so eval.json stays valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def nan_for_null(value):
    """json_safe's inverse for eval.json's score lists: a null score reads back as NaN."""
    if isinstance(value, dict):
        return {k: nan_for_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [float("nan") if v is None else nan_for_null(v) for v in value]
    return value


def train(cfg: Config, run_dir: Path, config_dict: dict | None = None, resume_point=FIND) -> float:
    """Run ``cfg`` in ``run_dir``; returns the last epoch's mean reward (the sweep objective).

    ``resume_point``: the checkpoint to continue from (drl.resume; None: start afresh), or FIND it here.
    """
    if cfg.hardware.num_threads > 0:
        torch.set_num_threads(cfg.hardware.num_threads)
    distributed.setup(cfg.hardware)
    main = distributed.is_main()  # rank 0 writes files and W&B; every rank computes
    seed_everything(cfg.seed)  # the same on every rank: identical model initialisation
    ctx, reward, algorithm = build_context(cfg)
    # Rank 0 alone samples the grids and probes the drift, unless FSDP shards the denoiser: then
    # every forward pass is a collective, and every rank takes part (only rank 0 writes).
    probes = main or sharding.is_sharded(ctx.model.unet)
    generator = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed))  # each rank: own prompts, noise
    logger = RunLogger(run_dir, cfg.logger, config_dict or asdict(cfg), cfg.run_name, enabled=main)
    quality = QualityProbe.for_run(cfg, ctx.model, ctx.device) if main and ctx.hooks is None else None
    start_epoch, nonfinite_in_a_row = 0, 0

    # Base-model predictions on fixed inputs, taken before any weights are loaded or trained.
    if ctx.hooks is not None:
        drift = ctx.hooks.drift
    else:
        drift = DriftProbe(ctx.model, ctx.schedule.timesteps, ctx.prompts.first(8), ctx.collector.latent_shape, cfg.seed, ctx.autocast)

    point = find_resume_point(cfg, run_dir) if resume_point is FIND else resume_point
    if point is not None:
        state = point.state
        load_trainable_state(_trainable_modules(ctx), state["weights"])
        settings = optimizer_settings(algorithm)  # this config's lr etc. (the same unless resume_changes=allow)
        algorithm.load_state_dict(state["algorithm"])
        apply_optimizer_settings(algorithm, settings)
        if not point.reseeded:  # a new seed (resume_changes=allow) starts new random streams
            restore_rank_rng(state, generator, algorithm)
        start_epoch = state["epoch"] + 1
        nonfinite_in_a_row = state["nonfinite_in_a_row"]
        if main:
            for note in point.notes:
                tqdm.write(note)
            log_changes(run_dir, point)
            tqdm.write(f"Resuming from {point.path} at epoch {start_epoch}.")
    logger.truncate_after(point.state["epoch"] if point is not None else -1)  # no epoch past the checkpoint (none without one)

    def checkpoint(epoch: int) -> None:
        ranks = distributed.gather_objects(rank_rng_state(generator, algorithm))  # collective: every rank calls it
        state = {
            "epoch": epoch,
            "weights": trainable_state(_trainable_modules(ctx)),
            "algorithm": algorithm.state_dict(),
            "generator": generator.get_state(),
            "ranks": ranks,
            "nonfinite_in_a_row": nonfinite_in_a_row,
            "config": fingerprint(cfg, distributed.world_size()),  # what resuming must match (drl.resume)
        }
        if main:
            save_checkpoint(run_dir / "checkpoints", state)

    watch = PreemptionWatch(cfg.preemption.requeue_signals, cfg.preemption.stop_signals)
    watch.install()
    try:
        if start_epoch == 0 and main and ctx.hooks is not None:
            ctx.hooks.before(logger)
        elif start_epoch == 0 and probes:
            before, prompts = evaluation_batch(ctx, reward, cfg.seed)
            log_evaluation(logger, run_dir, "samples_before", before, prompts, 0, cfg.train.grid_size, quality)

        # A resumed run that is already complete still returns its objective to a sweep.
        last_reward = next((r["reward_mean"] for r in reversed(logger.records()) if "reward_mean" in r), float("nan"))
        progress = tqdm(
            range(start_epoch, cfg.train.epochs), desc=cfg.run_name, unit="epoch", initial=start_epoch, total=cfg.train.epochs, disable=not main
        )
        for epoch in progress:
            # ------------------------------------------------------------ SAMPLING
            t0 = time.perf_counter()
            batch = collect_and_score(algorithm, ctx.collector, reward, generator, cfg.reward.overlap)  # a Rollout comes scored
            record: dict = {"epoch": epoch}
            if isinstance(batch, Rollout):
                # Every rank's rewards: the statistics, and the skip decision, are the same on all ranks.
                all_rewards = distributed.gather_rewards(batch.rewards.float(), batch.prompts)[0]  # [W*B]
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
            metrics = algorithm.update(batch)
            t_update = time.perf_counter() - t1
            n = len(batch)
            record.update(metrics)  # algorithms that sample inside update() report reward_mean themselves
            record.update(sample_time_s=t_sample, update_time_s=t_update, samples_per_s=n / (t_sample + t_update))
            record = distributed.reduce_metrics(record)  # the job's numbers, identical on every rank
            loss = record.get("train/loss", 0.0)
            if not math.isfinite(loss):
                nonfinite_in_a_row += 1
                if nonfinite_in_a_row >= cfg.train.max_nonfinite_batches:
                    raise NonFiniteError(f"The loss was NaN/inf in {nonfinite_in_a_row} epochs in a row; stopping.")
            else:
                nonfinite_in_a_row = 0

            last_reward = record.get("reward_mean", last_reward)
            record = {**record, "drift_from_base": drift()} if probes else record  # weights are equal on every rank
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

        if main and ctx.hooks is not None:
            ctx.hooks.after(logger)
            ctx.hooks.export(run_dir)
        elif probes:
            with algorithm.sampling_weights():  # the EMA weights when algorithm.ema_decay > 0
                after, prompts = evaluation_batch(ctx, reward, cfg.seed)
            log_evaluation(logger, run_dir, "samples_after", after, prompts, cfg.train.epochs, cfg.train.grid_size, quality)
            export_final(algorithm, ctx, run_dir)
        return last_reward
    finally:
        watch.uninstall()
        logger.finish()


def rank_rng_state(generator: torch.Generator, algorithm: Algorithm) -> dict:
    """This rank's random streams: sampling (prompts, noise), the update's, and torch's global one."""
    return {"generator": generator.get_state(), "algorithm": algorithm.generator.get_state(), "torch": torch.get_rng_state()}


def restore_rank_rng(state: dict, generator: torch.Generator, algorithm: Algorithm) -> None:
    """Each rank continues its own streams; a checkpoint of another world size cannot be continued exactly."""
    ranks = state["ranks"] if "ranks" in state else [{"generator": state["generator"]}]  # older: one process
    if len(ranks) != distributed.world_size():
        raise ConfigError(
            f"The checkpoint was written by {len(ranks)} process(es) and this run has {distributed.world_size()}: "
            f"resume with hardware.num_processes={len(ranks)} (per-rank random streams cannot be split or merged)."
        )
    mine = ranks[distributed.rank()]
    generator.set_state(mine["generator"])
    if "algorithm" in mine:
        algorithm.generator.set_state(mine["algorithm"])
        torch.set_rng_state(mine["torch"])


def unsharded_export(algorithm: Algorithm, ctx: TrainContext) -> T2IModel | None:
    """FSDP: the model to export, whole, on rank 0 (None on the others; every rank calls this).

    The base model is rebuilt from its config on the CPU and the trained weights (the EMA's, if
    any) are gathered into it: a sharded module can neither be deep-copied nor saved as it is.
    """
    with algorithm.sampling_weights():
        weights = trainable_state({"unet": ctx.model.unet})  # all-gathers the shards
    if not distributed.is_main():
        return None
    model = build_model(ctx.cfg)
    make_trainable(model, ctx.cfg)
    load_trainable_state({"unet": model.unet}, weights)
    return model


def export_final(algorithm: Algorithm, ctx: TrainContext, run_dir: Path) -> None:
    """The trained result: a LoRA adapter (diffusers format) or a whole save_pretrained model."""
    model = algorithm.export_model() if not sharding.is_sharded(ctx.model.unet) else unsharded_export(algorithm, ctx)
    if model is None:  # FSDP: rank 0 writes
        return
    if has_lora(model.unet):
        model.save_lora(run_dir / "lora")
    else:
        model.save_pretrained(run_dir / "model")
