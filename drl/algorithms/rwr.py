"""Reward-weighted regression on the model's own samples (Lee et al. 2023; the seed's Method 1).

Each epoch: sample x_0 ~ p_θ(· | c), score r(x_0, c), then minimise the weighted
denoising loss  Σ_i w_i · L_simple(x_0^i, c_i)  with w_i ∝ exp(β r_i) (drl.losses.rwr_weights).
L_simple is the usual surrogate for -log p_θ(x_0 | c) (it bounds it, Ho et al. 2020).
"""

from __future__ import annotations

import torch

from drl import distributed
from drl.algorithms.base import Algorithm, TrainContext, chunks
from drl.algorithms.denoising import denoising_loss
from drl.algorithms.regularization import denoising_kl
from drl.config import RWRConfig
from drl.losses import rwr_weights
from drl.types import Rollout


class RWR(Algorithm):
    def __init__(self, cfg: RWRConfig, ctx: TrainContext):
        super().__init__(cfg, ctx)
        self.cfg: RWRConfig = cfg

    def update(self, batch: Rollout) -> dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        all_rewards, _, mine = distributed.gather_rewards(batch.rewards, batch.prompts)  # [W*B]: normalise over every rank
        weights = rwr_weights(all_rewards, cfg.beta, cfg.reward_normalization, cfg.max_weight)[mine]  # [B]
        x0 = batch.final_latents  # [B, C, h, w]
        n = batch.batch_size
        loss_total, grad_norm_total, steps, skipped = 0.0, 0.0, 0, 0
        ctx.model.unet.train()
        for _ in range(cfg.updates_per_epoch):
            order = torch.randperm(n, generator=self.generator)
            for minibatch in order.chunk(cfg.minibatches):
                for chunk in chunks(minibatch, ctx.cfg.train.batch_size):
                    per_sample = denoising_loss(ctx, x0[chunk], batch.cond[chunk], self.generator)
                    loss = (weights[chunk] * per_sample).sum() / len(minibatch)
                    if cfg.kl_coef > 0:  # shared KL-to-reference (drl/algorithms/regularization.py)
                        kl = denoising_kl(ctx, self.reference, x0[chunk], batch.cond[chunk], self.generator)
                        loss = loss + cfg.kl_coef * kl.sum() / len(minibatch)
                    loss.backward()
                    loss_total += float(loss.detach()) * len(minibatch) / n / cfg.updates_per_epoch
                grad_norm, stepped = self.optimizer_step()
                grad_norm_total += grad_norm
                steps += stepped
                skipped += not stepped
        ctx.model.unet.eval()
        return {
            "train/loss": loss_total,
            "train/grad_norm": grad_norm_total / max(1, steps + skipped),
            "train/weight_max": float(weights.max()),
            "train/weight_ess": float(weights.sum() ** 2 / (weights**2).sum()),  # effective sample size
            "train/optimizer_steps": steps,
            "train/skipped_steps": skipped,
            "train/lr": self.lr,
        }
