"""Reward-weighted regression on the model's own samples (Lee et al. 2023; the seed's Method 1).

Each epoch: sample x_0 ~ p_θ(· | c), score r(x_0, c), then minimise Σ_i w_i L_simple(x_0^i, c_i) with
w_i ∝ exp(β r_i) (drl.losses.rwr_weights; centred to w_i - 1 by default). The noisy inputs come from the
chain's own states (``regression_states=trajectory``, the default) or fresh q(x_t | x_0) (``forward``).
Why those defaults (centred weights, trajectory states): docs/guide/algorithms.md ("RWR and its centred weights").
"""

from __future__ import annotations

import torch

from drl import distributed
from drl.algorithms.base import Algorithm, TrainContext, chunks
from drl.algorithms.denoising import denoising_loss, trajectory_denoising_loss
from drl.algorithms.regularization import denoising_kl
from drl.algorithms.schemas.rwr import RWRConfig
from drl.losses import rwr_weights
from drl.sampling import step_mean_std
from drl.types import Rollout


class RWR(Algorithm):
    def __init__(self, cfg: RWRConfig, ctx: TrainContext):
        super().__init__(cfg, ctx)
        self.cfg: RWRConfig = cfg

    def update(self, batch: Rollout, epoch: int) -> dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        all_rewards, _, mine = distributed.gather_rewards(batch.rewards, batch.prompts)  # [W*B]: normalise over every rank
        weights = rwr_weights(all_rewards, cfg.beta, cfg.reward_normalization, cfg.max_weight)  # [W*B]
        # Centred: the equally weighted part (self-distillation, which carries the sampler's bias) drops out.
        train_weights = (weights - weights.mean() if cfg.center_weights else weights)[mine]  # [B]
        weights = weights[mine]  # [B]
        x0 = self.clean_ends(batch)  # [B, C, h, w]
        # What one regression item is: a (sample, chain step) pair, or a sample at a random t.
        b_all = torch.arange(batch.batch_size)  # [B]
        step_index = None
        if cfg.regression_states == "trajectory":
            steps = batch.timesteps.shape[1]
            step_index = torch.arange(steps).repeat(batch.batch_size)  # [B*S]
            b_all = b_all.repeat_interleave(steps)  # [B*S]
        n = b_all.numel()
        loss_total, grad_norm_total, steps_taken, skipped = 0.0, 0.0, 0, 0
        ctx.model.denoiser.train()
        for _ in range(cfg.updates_per_epoch):
            order = torch.randperm(n, generator=self.generator)
            for minibatch in order.chunk(cfg.minibatches):
                for chunk in chunks(minibatch, ctx.cfg.train.batch_size):
                    b = b_all[chunk]
                    per_item = self._item_loss(batch, x0, b, None if step_index is None else step_index[chunk])
                    loss = (train_weights[b] * per_item).sum() / len(minibatch)
                    if cfg.kl_coef > 0:  # shared KL-to-reference (drl/algorithms/regularization.py)
                        kl = denoising_kl(ctx, self.reference, x0[b], batch.cond[b], self.generator)
                        loss = loss + cfg.kl_coef * kl.sum() / len(minibatch)
                    loss.backward()
                    loss_total += float(loss.detach()) * len(minibatch) / n / cfg.updates_per_epoch
                grad_norm, stepped = self.optimizer_step()
                grad_norm_total += grad_norm
                steps_taken += stepped
                skipped += not stepped
        ctx.model.denoiser.eval()
        return {
            "train/loss": loss_total,
            "train/grad_norm": grad_norm_total / max(1, steps_taken + skipped),
            "train/weight_max": float(weights.max()),
            "train/weight_ess": float(weights.sum() ** 2 / (weights**2).sum()),  # effective sample size
            "train/optimizer_steps": steps_taken,
            "train/skipped_steps": skipped,
            "train/lr": self.lr,
        }

    @torch.no_grad()
    def clean_ends(self, batch: Rollout) -> torch.Tensor:
        """x̂_0 that the chain's last step predicted, under the weights that sampled it. [B, C, h, w]

        The regression target. The chain's final x itself still holds that step's noise
        (DDIM stops at ᾱ_0 < 1, η > 0 adds σz); regressing onto it teaches the model that
        clean images are grainy, and the grain compounds epoch after epoch.
        """
        ctx, out = self.ctx, []
        x_last, t_last = (
            batch.latents[:, -2],
            batch.timesteps[:, -1],
        )  # [B, C, h, w], [B]
        uncond = batch.uncond
        for idx in chunks(torch.arange(batch.batch_size), ctx.cfg.train.batch_size):
            with ctx.autocast():
                prediction = ctx.model.denoise(
                    x_last[idx],
                    t_last[idx],
                    batch.cond[idx],
                    None if uncond is None else uncond[idx],
                    ctx.collector.guidance_scale,
                )
            x0 = step_mean_std(ctx.schedule, prediction, t_last[idx], x_last[idx], ctx.collector.eta)[2]  # any schedule kind
            out.append(x0.to(x_last.dtype))
        return torch.cat(out)

    def _item_loss(self, batch: Rollout, x0: torch.Tensor, b: torch.Tensor, i: torch.Tensor | None) -> torch.Tensor:
        """Per-item L_simple of samples b [n] (at chain steps i [n], or at random t if i is None). [n]"""
        cond = batch.cond[b]  # batch n
        if i is None:
            return denoising_loss(self.ctx, x0[b], cond, self.generator)
        return trajectory_denoising_loss(self.ctx, batch.latents[b, i], batch.timesteps[b, i], x0[b], cond)
