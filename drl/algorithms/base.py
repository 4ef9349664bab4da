"""What every algorithm shares: the context it runs in, the optimizer step, state."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable

import torch

from drl import distributed, sharding
from drl.algorithms.regularization import ReferenceDenoiser, WeightEMA
from drl.algorithms.schemas.base import AlgorithmConfig
from drl.config import Config
from drl.domain import Collector, DomainHooks
from drl.errors import ConfigError
from drl.models.base import DenoiserModel
from drl.models.t2i import T2IModel
from drl.prompts import PromptSource
from drl.rewards import WeightedReward
from drl.sampling import NoiseSchedule
from drl.types import Rollout


@dataclass
class TrainContext:
    """The built pieces of a run that algorithms work with."""

    cfg: Config
    model: DenoiserModel  # T2IModel, T2VModel, or a DiffusionPolicy on a control task (env=...)
    schedule: NoiseSchedule
    collector: Collector
    prompts: PromptSource | None  # None on control tasks
    params: list[torch.nn.Parameter]  # the model weights the domain made trainable (Algorithm.params: what its optimizer trains)
    reward: WeightedReward
    device: torch.device
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    hooks: DomainHooks | None = None  # what differs by domain; set by the domain's builder (drl/images.py, drl/control.py)


class Algorithm:
    """An algorithm is ``collect(generator) -> batch`` (default: the shared collector on the
    prompt source) and ``update(batch, epoch) -> metrics``; the loop in drl/train.py does the rest."""

    def __init__(self, cfg: AlgorithmConfig, ctx: TrainContext, params: list[torch.nn.Parameter] | None = None):
        """``params``: what the optimizer trains; None: ctx.params, the model weights the domain made trainable.
        An algorithm that trains more, or networks of its own, passes them (Pretrain's text encoder, DSRL's noise actor)."""
        self.cfg, self.ctx = cfg, ctx
        self.params = list(ctx.params if params is None else params)
        distributed.broadcast_parameters(self.params)  # every rank starts from rank 0's weights, before anything copies them
        # Shared regularisation (drl/algorithms/regularization.py): each is one config key.
        # The reference copy is taken first: an FSDP-sharded module cannot be deep-copied.
        self.reference = ReferenceDenoiser(ctx.model) if cfg.kl_coef > 0 or self.needs_reference else None
        self.sharded = ctx.cfg.hardware.sharding == "fsdp"
        if self.sharded:
            self._shard()
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay
        )
        self.lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        if cfg.warmup_steps > 0:
            warmup = cfg.warmup_steps
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(1.0, (step + 1) / warmup))
        # The update's own randomness (shuffles, timesteps, noise), per rank, checkpointed with the rest.
        self.generator = torch.Generator().manual_seed(distributed.rank_seed(ctx.cfg.seed) + 1)
        self.ema = WeightEMA(self.params, cfg.ema_decay) if cfg.ema_decay > 0 else None
        # Denoiser rows of this epoch's rollout and update, for the algorithms that count them (None: not counted).
        self.sample_calls: int | None = None
        self.update_calls = 0

    def _shard(self) -> None:
        """hardware.sharding=fsdp: shard the trained denoiser (and the frozen reference copy) over
        the ranks; self.params then names the sharded parameters, which replace the module's own."""
        if distributed.world_size() == 1:
            raise ConfigError(
                "hardware.sharding=fsdp shards over several processes: set hardware.num_processes > 1 "
                "(or start the ranks with torchrun, accelerate launch or srun)."
            )
        denoiser = self.ctx.model.denoiser
        before = list(denoiser.parameters())
        sharding.shard_denoiser(denoiser)
        replaced = {id(old): new for old, new in zip(before, denoiser.parameters(), strict=True)}
        self.params = [replaced.get(id(p), p) for p in self.params]
        if self.reference is not None and self.reference.frozen is not None:
            sharding.shard_denoiser(self.reference.frozen)

    needs_reference = False
    """True for algorithms whose loss itself compares against the base model (DPO)."""

    # ------------------------------------------------------------------ sampling
    def collect(self, generator: torch.Generator) -> Rollout:
        train = self.ctx.cfg.train
        prompts, metadata = self.ctx.prompts.sample(train.samples_per_epoch, generator)
        return self.ctx.collector.collect(prompts, metadata, generator)

    # ------------------------------------------------------------------- update
    def update(self, batch, epoch: int) -> dict[str, float]:
        """One epoch's training on ``batch``; ``epoch``: the loop's epoch, counted from 0 (a resumed run goes on
        counting), for what follows the epochs (periodic evaluation, DPPO's critic warm-up)."""
        raise NotImplementedError(f"{type(self).__name__} must implement update(batch, epoch)")

    def optimizer_step(self) -> tuple[float, bool]:
        """Clip, step, zero. Returns (grad norm, stepped); a non-finite gradient skips the step."""
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf")
        if not self.sharded:  # FSDP has already averaged (reduce-scattered) the gradients in the backward
            distributed.all_reduce_gradients(self.params)  # data parallel: the mean gradient over ranks
        # Over sharded gradients the norm is reduced over ranks: the global norm either way.
        grad_norm = float(sharding.full(torch.nn.utils.clip_grad_norm_(self.params, max_norm)))
        finite = bool(torch.isfinite(torch.tensor(grad_norm)))
        if finite:
            self.optimizer.step()
            if self.lr_scheduler is not None:
                self.lr_scheduler.step()
            if self.ema is not None:
                self.ema.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, finite

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def pair_update_metrics(self, totals: dict[str, float], **values) -> dict[str, float]:
        """A pair-training update's metrics under ``train/``: its loss terms' averages (``totals``), ``values``, the
        lr and the epoch's denoiser calls (``sample_calls`` when the algorithm counted its rollout's)."""
        metrics = {f"train/{k}": v for k, v in {**totals, **values}.items()}
        metrics["train/lr"] = self.lr
        metrics["train/denoiser_calls_update"] = self.update_calls
        if self.sample_calls is not None:
            metrics["train/denoiser_calls_sample"] = self.sample_calls
        return metrics

    def sampling_weights(self) -> contextlib.AbstractContextManager:
        """Context in which the model holds the weights that a user samples from: the EMA if there is one."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    # -------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        # Whole tensors (all-gathered under FSDP: every rank calls this), the layout of a 1-process run.
        state = {"optimizer": sharding.full_state(self.optimizer.state_dict()), "generator": self.generator.get_state()}
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(sharding.shard_optimizer_state(self.optimizer, state["optimizer"]))
        self.generator.set_state(state["generator"])
        if self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

    def export_model(self) -> T2IModel:
        """The model to save as the run's final result: the EMA weights if there is an EMA."""
        if self.ema is None:
            return self.ctx.model
        with self.ema.applied():
            return copy.deepcopy(self.ctx.model)


def chunks(indices: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Split a 1-D index tensor into consecutive pieces of at most ``size``."""
    return list(indices.split(size))


def collect_groups(
    ctx: TrainContext, group_size: int, generator: torch.Generator, share_noise: bool = False, **collect_options
) -> Rollout:
    """train.samples_per_epoch samples: group_size consecutive samples of each drawn prompt.

    share_noise: the samples of a group start from the same x_T (DanceGRPO's shared initial
    noise), so their differences come from the step noise alone. ``collect_options`` go to the
    collector (an SDE window, record_means); with shared noise it learns that groups share x_T.
    """
    n = ctx.cfg.train.samples_per_epoch
    prompts, metadata = ctx.prompts.sample(n // group_size, generator)
    prompts = [p for p in prompts for _ in range(group_size)]
    metadata = [m for m in metadata for _ in range(group_size)]
    initial_noise = None
    if share_noise:
        shape, dtype = ctx.collector.latent_shape, ctx.collector.dtype
        initial_noise = torch.randn((n // group_size, *shape), generator=generator, dtype=dtype)  # [B/k, C, h, w]
        initial_noise = initial_noise.repeat_interleave(group_size, dim=0)  # [B, C, h, w]
    if collect_options:
        collect_options["shared"] = group_size if share_noise else 1
    return ctx.collector.collect(prompts, metadata, generator, initial_noise=initial_noise, **collect_options)
