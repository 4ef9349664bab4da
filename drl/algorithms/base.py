"""What every algorithm shares: the context it runs in, the optimizer step, state."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from drl import distributed
from drl.config import AlgorithmConfig, Config
from drl.models.t2i import T2IModel
from drl.prompts import PromptSource
from drl.rewards import WeightedReward
from drl.rollout import RolloutCollector
from drl.sampling import NoiseSchedule
from drl.types import Rollout


@dataclass
class TrainContext:
    """The built pieces of a run that algorithms work with."""

    cfg: Config
    model: T2IModel  # or drl.models.policy.DiffusionPolicy on a control task (env=...)
    schedule: NoiseSchedule
    collector: RolloutCollector
    prompts: PromptSource
    params: list[torch.nn.Parameter]  # what the optimizer trains
    reward: WeightedReward
    device: torch.device
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    hooks: object | None = None  # control tasks: what the loop shows and saves (drl/control.py); None: images


class Algorithm:
    """An algorithm is ``collect(generator) -> batch`` (default: the shared collector on the
    prompt source) and ``update(batch) -> metrics``; the loop in drl/train.py does the rest."""

    def __init__(self, cfg: AlgorithmConfig, ctx: TrainContext):
        self.cfg, self.ctx = cfg, ctx
        self.optimizer = torch.optim.AdamW(
            ctx.params, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay
        )
        self.lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        # The update's own randomness (shuffles, timesteps, noise), per rank, checkpointed with the rest.
        self.generator = torch.Generator().manual_seed(distributed.rank_seed(ctx.cfg.seed) + 1)

    # ------------------------------------------------------------------ sampling
    def collect(self, generator: torch.Generator) -> Rollout:
        train = self.ctx.cfg.train
        prompts, metadata = self.ctx.prompts.sample(train.samples_per_epoch, generator)
        return self.ctx.collector.collect(prompts, metadata, generator)

    # ------------------------------------------------------------------- update
    def update(self, batch) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} must implement update(batch)")

    def optimizer_step(self) -> tuple[float, bool]:
        """Clip, step, zero. Returns (grad norm, stepped); a non-finite gradient skips the step."""
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf")
        distributed.all_reduce_gradients(self.ctx.params)  # data parallel: the mean gradient over ranks
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.ctx.params, max_norm))
        finite = bool(torch.isfinite(torch.tensor(grad_norm)))
        if finite:
            self.optimizer.step()
            if self.lr_scheduler is not None:
                self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, finite

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # -------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        if self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])

    def export_model(self) -> T2IModel:
        """The model to save as the run's final result (pretraining swaps in its EMA weights)."""
        return self.ctx.model


def chunks(indices: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Split a 1-D index tensor into consecutive pieces of at most ``size``."""
    return list(indices.split(size))
