"""Behaviour cloning of a diffusion policy: L_simple on (state, action) pairs of a dataset.

``algorithm=bc`` on an env runs this (Ho et al. 2020's loss, conditioned on the state;
Diffusion-QL's BC term, Wang et al. 2023, eq. 2). The exported policy is the weight EMA.
"""

from __future__ import annotations

import numpy as np
import torch

from drl.algorithms.base import Algorithm, TrainContext
from drl.algorithms.control_base import with_evaluation
from drl.algorithms.control_losses import policy_bc_loss
from drl.algorithms.schemas.bc import BCConfig
from drl.envs.collector import policy_actor
from drl.models.policy import DiffusionPolicy
from drl.types import TransitionBatch


class PolicyBC(Algorithm):
    def __init__(self, cfg: BCConfig, ctx: TrainContext):
        super().__init__(cfg, ctx)
        self.cfg: BCConfig = cfg
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(1.0, (step + 1) / max(1, cfg.warmup_steps)))

    def collect(self, generator: torch.Generator) -> TransitionBatch:
        """steps_per_epoch x batch_size transitions drawn uniformly from the dataset."""
        return self.ctx.collector.sample(self.cfg.steps_per_epoch * self.ctx.cfg.train.batch_size, generator)

    def update(self, batch: TransitionBatch, epoch: int) -> dict[str, float]:
        ctx, losses, grad_norms = self.ctx, [], []
        for index in torch.arange(len(batch)).split(ctx.cfg.train.batch_size):
            mb = batch.minibatch(index)
            loss = policy_bc_loss(ctx.model.denoiser, ctx.schedule, mb.observations, mb.actions, self.generator)
            loss.backward()
            grad_norm, _ = self.optimizer_step()
            losses.append(float(loss.detach()))
            grad_norms.append(grad_norm)
        metrics = {"train/loss": float(np.mean(losses)), "train/grad_norm": float(np.mean(grad_norms)), "train/lr": self.lr}
        return with_evaluation(ctx, metrics, epoch, self.evaluation_actor, as_reward=True)

    def export_policy(self) -> DiffusionPolicy:
        return self.export_model()  # the weight EMA (algorithm.ema_decay), shared with every algorithm

    def evaluation_actor(self, generator: torch.Generator):
        return policy_actor(self.export_policy(), self.ctx.schedule, self.ctx.cfg.scheduler.eta, generator)
