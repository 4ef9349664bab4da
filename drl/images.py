"""Build an image or video run (text-to-image, text-to-video) for the one loop in drl/train.py,
and what it shows and saves: the model, then fixed-noise grids and paired rewards before and after.

The evaluation's probes (the grid, the evaluation-only reward terms, the quality probe) never end a
run: one that raises is said in one line and recorded in eval.json under "probe_failures".

The control side's twin is drl/control.py; both implement drl.domain.DomainHooks.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from drl import distributed, sharding
from drl.algorithms import IMAGES, algorithm_class
from drl.algorithms.base import Algorithm, TrainContext
from drl.checkpoint import load_trainable_state, trainable_state
from drl.config import Config, PromptsConfig
from drl.diagnostics import DriftProbe
from drl.evaluation.features import is_toy_model
from drl.evaluation.hacking import QualityProbe
from drl.logging import RunLogger
from drl.models.checkpointing import enable_activation_checkpointing
from drl.models.finetune import has_lora, setup_trainable
from drl.models.loading import configure_t2i, load_t2i
from drl.models.prompt_cache import offload_text_encoders
from drl.models.t2i import T2IModel
from drl.prompts import build_prompt_source
from drl.rewards import WeightedReward, build_reward
from drl.rewards.eval_terms import record_eval_terms
from drl.rewards.plugin import dry_call_plugins
from drl.rollout import RolloutCollector
from drl.sampling import make_schedule
from drl.types import Rollout

GRID_SEED_OFFSET = 10_000  # the before/after evaluation uses its own fixed noise
EVAL_FILE = "eval.json"  # the before/after evaluation rewards and their paired gain


def make_autocast(device: torch.device, mixed_precision: str):
    if mixed_precision == "no":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def build_model(cfg: Config) -> T2IModel:
    if cfg.model.kind == "t2v":  # text-to-video: the same interface, latents with a frame axis
        from drl.models.loading import load_t2v
        from drl.models.t2v import build_toy_t2v

        if cfg.model.from_scratch:
            return build_toy_t2v(cfg.model.resolution, cfg.model.num_frames, seed=cfg.seed)
        return load_t2v(cfg.model.path, cfg.model.num_frames, cfg.model.family, cfg.model.resolution)
    if cfg.model.from_scratch:  # the toy architecture of model.family: toy_flow's transformer (sd3) or toy_t2i's UNet
        from drl.models.toy import build_toy_flow, build_toy_t2i

        if cfg.model.family == "sd3":
            return build_toy_flow(cfg.model.resolution, seed=cfg.seed)
        return build_toy_t2i(cfg.model.resolution, seed=cfg.seed)
    return configure_t2i(load_t2i(cfg.model.path, cfg.model.family), cfg.model)


def toy_prompts_warning(model: T2IModel, prompts: PromptsConfig) -> str | None:
    """One line when a real model (a latent one: anything but the toy world's pixel-space models) is given the
    toy world's prompts, the default prompts=toy; None otherwise."""
    if prompts.source != "toy" or is_toy_model(model):
        return None
    return (
        "drl-train: warning: prompts=toy gives this real model the toy world's prompts (\"a small red circle at "
        "the top left\"); choose prompts=animals, simple, complex or file (prompts.path=your_prompts.txt)."
    )


def make_trainable(model: T2IModel, cfg: Config) -> list[torch.nn.Parameter]:
    """Freeze the model but for what model.finetune trains (all denoiser weights, or LoRA adapters)."""
    return setup_trainable(model.denoiser, cfg.model.finetune, cfg.model.lora_rank, cfg.model.lora_alpha, cfg.model.lora_targets)


def build_image_context(cfg: Config, device: torch.device, model: T2IModel | None = None) -> tuple[TrainContext, WeightedReward, Algorithm]:
    """A text-to-image or text-to-video run's pieces, built (and checked) before any epoch starts.

    ``model``: an already built model to use instead of loading cfg.model (benchmarks build
    random weights at full size in memory rather than writing gigabytes to disk).
    """
    model = build_model(cfg) if model is None else model
    if cfg.model.text_encoder_offload:  # before the move: the encoders never reach the device
        offload_text_encoders(model, device)
    model = model.to(device)
    model.text_encoder.eval()
    params = make_trainable(model, cfg)
    if cfg.model.gradient_checkpointing:
        enable_activation_checkpointing(model.denoiser)
    model.denoiser.eval()
    steps = cfg.scheduler.num_steps
    schedule = make_schedule(model.make_scheduler(cfg.scheduler.kind), steps, cfg.scheduler.sde_type, model.shift_mu(steps))
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
    reward = build_reward(cfg.reward, device, video=cfg.model.kind == "t2v", group_size=cfg.algorithm.samples_per_group)
    prompts = build_prompt_source(cfg.prompts, video=cfg.model.kind == "t2v")
    warning = toy_prompts_warning(model, cfg.prompts)
    if warning and distributed.is_main():
        print(warning, file=sys.stderr, flush=True)
    sample_shape = (3, cfg.model.resolution, cfg.model.resolution)
    sample_shape = (cfg.model.num_frames, *sample_shape) if cfg.model.kind == "t2v" else sample_shape
    dry_call_plugins(
        reward, sample_shape, prompts.first(2), device, cfg.algorithm.needs_differentiable_reward, prompts.first_conditions(2),
        collector.latent_shape,
    )  # fmt: skip
    ctx = TrainContext(cfg, model, schedule, collector, prompts, params, reward, device, autocast)
    algorithm = algorithm_class(cfg.algorithm.name, IMAGES)(cfg.algorithm, ctx)
    if cfg.model.compile:  # after the algorithm's frozen reference copy: a compiled module's deepcopy would still call the original
        model.denoiser.compile()
    ctx.hooks = ImageHooks(ctx, reward, algorithm)
    return ctx, reward, algorithm


class ImageHooks:
    """The images/video side of the loop (drl.domain.DomainHooks): fixed-noise sample grids and rewards
    before and after training, the drift and quality probes, and the exported model."""

    def __init__(self, ctx: TrainContext, reward: WeightedReward, algorithm: Algorithm):
        self.ctx, self.reward, self.algorithm = ctx, reward, algorithm
        self.quality: QualityProbe | None = None
        self.drift_probe: DriftProbe | None = None

    def start(self, main: bool) -> None:
        ctx, cfg = self.ctx, self.ctx.cfg
        self.quality = QualityProbe.for_run(cfg, ctx.model, ctx.device) if main else None
        # Every rank: under FSDP the probe's forward pass is a collective.
        self.drift_probe = DriftProbe(ctx.model, ctx.schedule.timesteps, ctx.prompts.first(8), ctx.collector.latent_shape, cfg.seed,
                                      ctx.autocast, ctx.prompts.first_conditions(8))  # fmt: skip

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.ctx.model.denoiser, "text_encoder": self.ctx.model.text_encoder}

    def drift(self) -> float:
        return self.drift_probe()

    def before(self, logger: RunLogger) -> None:
        cfg, failures = self.ctx.cfg, ProbeFailures("before")
        batch, prompts = evaluation_batch(self.ctx, self.reward, cfg.seed, failures)
        log_evaluation(logger, logger.run_dir, "samples_before", batch, prompts, 0, cfg.train.grid_size, self.quality, failures)

    def export(self, run_dir: Path) -> None:
        export_final(self.algorithm, self.ctx, run_dir)

    def after(self, logger: RunLogger) -> None:
        cfg, failures = self.ctx.cfg, ProbeFailures("after")
        with self.algorithm.sampling_weights():  # the EMA weights when algorithm.ema_decay > 0
            batch, prompts = evaluation_batch(self.ctx, self.reward, cfg.seed, failures)
        log_evaluation(logger, logger.run_dir, "samples_after", batch, prompts, cfg.train.epochs, cfg.train.grid_size, self.quality, failures)


class ProbeFailures(dict):
    """The probes of one evaluation stage (before | after) that raised: {probe: "ErrorType: message"}.

    A probe looks at samples that are already there (a grid, an evaluation-only reward, the quality
    probe); its failure says nothing about the training, so it never ends the run: ``run`` says it
    in one line on stderr, keeps it here for eval.json, and the evaluation goes on without it.
    """

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage

    def run(self, probe: str, fn: Callable[..., Any], *args, default: Any = None) -> Any:
        """fn(*args), or ``default`` if it raised."""
        try:
            return fn(*args)
        except Exception as error:  # whatever a probe raises, the run's result stands
            self[probe] = f"{type(error).__name__}: {' '.join(str(error).split())}"
            tqdm.write(f"drl-train: warning: the {probe} probe of the {self.stage} evaluation failed and was skipped ({self[probe]})", file=sys.stderr)
            return default


@contextlib.contextmanager
def evaluation_eta(collector, eta: float | None):
    """The collector samples with ``eta`` inside the block (None: its own), e.g. the ODE for an SDE-trained run."""
    own = collector.eta
    collector.eta = own if eta is None else eta
    try:
        yield
    finally:
        collector.eta = own


def evaluation_batch(ctx: TrainContext, reward: WeightedReward, seed: int, failures: ProbeFailures | None = None) -> tuple[Rollout, list[str]]:
    """Fixed prompts and noise, identical before and after training: max(grid_size, eval_size) samples
    whose first grid_size tiles form the image grid. ``failures``: where an evaluation-only reward term
    that raises goes (None: it raises)."""
    cfg = ctx.cfg
    n = max(cfg.train.grid_size, cfg.train.eval_size)
    pool = list(cfg.prompts.grid_prompts) or ctx.prompts.first(n)
    prompts = [pool[k % len(pool)] for k in range(n)]
    # an editing task's source images go with its own prompts (grid_prompts carry none)
    metadata = [{} for _ in prompts] if cfg.prompts.grid_prompts else ctx.prompts.first_conditions(n)
    generator = torch.Generator().manual_seed(seed + GRID_SEED_OFFSET)
    with evaluation_eta(ctx.collector, cfg.train.eval_eta):
        batch = ctx.collector.collect(prompts, metadata, generator)
    with torch.no_grad():  # group_size=0: a groupwise reward's groups are the samples that share a prompt
        batch.rewards, batch.reward_terms = reward(batch.samples, batch.prompts, batch.metadata, group_size=0, latents=batch.final_latents)
        evaluate = lambda: reward.evaluate(batch.samples, batch.prompts, batch.metadata, batch.final_latents)  # noqa: E731 (reward.eval_terms)
        batch.reward_terms.update(evaluate() if failures is None else failures.run("eval_terms", evaluate, default={}))
    return batch, prompts


def log_evaluation(
    logger: RunLogger, run_dir: Path, name: str, batch: Rollout, prompts: list[str], epoch: int, grid_size: int,
    quality: QualityProbe | None = None, failures: ProbeFailures | None = None,
) -> None:  # fmt: skip
    """The grid of the first grid_size samples, and every reward in eval.json. After training, the
    paired gain (same prompts, same noise) and its standard error: far less noisy than comparing
    two epochs' means, whose prompts and noise differ; and ``quality``'s diversity and distance to base.
    The probes run through ``failures``: one that raises is skipped and listed in eval.json."""
    stage = name.removeprefix("samples_")
    failures = ProbeFailures(stage) if failures is None else failures
    failures.run("grid", logger.log_grid, name, batch.samples[:grid_size], prompts[:grid_size], batch.rewards[:grid_size], epoch)
    if not logger.enabled:  # another rank under FSDP: it sampled with the shards, rank 0 writes
        return
    path = run_dir / EVAL_FILE
    record = nan_for_null(json.loads(path.read_text())) if path.is_file() and name == "samples_after" else {}
    record[stage] = [float(r) for r in batch.rewards]
    # Each term and monitor's mean on the same clips, e.g. whether a guard held while the reward rose.
    record.setdefault("terms", {})[stage] = {k: float(v.float().mean()) for k, v in batch.reward_terms.items()}
    failures.run("eval_terms", record_eval_terms, record, stage, batch.reward_terms, logger, epoch)  # their own paired gains
    if quality is not None:
        observed = failures.run("quality", quality.observe, run_dir, stage, batch.samples)
        if observed is not None:
            record.setdefault("quality", {})[stage] = observed
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
            summary.update(failures.run("quality", quality.conclude, record, summary, default={}))
        record["summary"] = summary
        logger.log_summary(summary, epoch)
    if failures:
        record.setdefault("probe_failures", {})[stage] = dict(failures)
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


def unsharded_export(algorithm: Algorithm, ctx: TrainContext) -> T2IModel | None:
    """FSDP: the model to export, whole, on rank 0 (None on the others; every rank calls this).

    The base model is rebuilt from its config on the CPU and the trained weights (the EMA's, if
    any) are gathered into it: a sharded module can neither be deep-copied nor saved as it is.
    """
    with algorithm.sampling_weights():
        weights = trainable_state({"unet": ctx.model.denoiser})  # all-gathers the shards
    if not distributed.is_main():
        return None
    model = build_model(ctx.cfg)
    make_trainable(model, ctx.cfg)
    load_trainable_state({"unet": model.denoiser}, weights)
    return model


def export_final(algorithm: Algorithm, ctx: TrainContext, run_dir: Path) -> None:
    """The trained result: a LoRA adapter (diffusers format) or a whole save_pretrained model."""
    model = algorithm.export_model() if not sharding.is_sharded(ctx.model.denoiser) else unsharded_export(algorithm, ctx)
    if model is None:  # FSDP: rank 0 writes
        return
    if has_lora(model.denoiser):
        model.save_lora(run_dir / "lora")
    else:
        model.save_pretrained(run_dir / "model")
