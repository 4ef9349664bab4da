"""AWM: Advantage Weighted Matching (Xue et al. 2025, "Advantage Weighted Matching: Aligning RL with Pretraining
in Diffusion Models"; scxue/advantage_weighted_matching).

DDPO scores each reverse transition x_t -> x_{t-1}, an implicit matching loss against the noisy target x_{t-1}.
AWM instead scores the clean sample x_0 with the pretraining loss itself: noise x_0 afresh at a training timestep,
take the matching log-likelihood L = -w(mean_d (out - target)^2) (drl.losses.awm_log_likelihood), and run PPO's
clipped surrogate on the ratio exp(L_θ - L_old) with the sample's advantage. L_old is the sampling weights' value
on the same noised input, taken before the first optimizer step, so the ratio is 1 on-policy. Any sampler works
(the ODE included): nothing of the rollout but x_0 is used.

Why a separate algorithm and not an option of NFT or DDPO: its loss is neither. NFT regresses implicit positive and
negative policies v± = v_old ± β (v_θ - v_old) mixed by an optimality probability, with no ratio and no clipping;
DDPO's ratio is of reverse-step densities that only a stochastic sampler has. AWM shares NFT's data (x_0, fresh
noise, forward-process pairs) and DDPO's objective (advantages, PPO clipping), so it reuses their pieces here:
group advantages and step selection from drl.algorithms.ddpo, the clipped surrogate from drl.losses.
"""

from __future__ import annotations

import torch

from drl import distributed
from drl.algorithms.base import Algorithm, TrainContext, chunks, collect_groups
from drl.algorithms.ddpo import group_advantages
from drl.algorithms.denoising import forward_process_pairs, kl_to_reference, pair_minibatch_epochs
from drl.algorithms.schemas.awm import AWMConfig
from drl.losses import awm_log_likelihood, ppo_clip_loss
from drl.types import Conditioning, Rollout


class AWM(Algorithm):
    def __init__(self, cfg: AWMConfig, ctx: TrainContext):
        super().__init__(cfg, ctx)
        self.cfg: AWMConfig = cfg

    def collect(self, generator: torch.Generator) -> Rollout:
        before = self.ctx.collector.denoiser_rows
        batch = collect_groups(self.ctx, self.cfg.group_size, generator)
        self.sample_calls = self.ctx.collector.denoiser_rows - before
        return batch

    def advantages(self, batch: Rollout) -> torch.Tensor:
        """Rewards normalised within each prompt's group (or over the batch), over every rank's samples, clipped. [B]"""
        cfg = self.cfg
        all_rewards, _, mine = distributed.gather_rewards(batch.rewards.detach().float().cpu(), batch.prompts)
        size = cfg.group_size if cfg.group_size > 1 else all_rewards.numel()
        adv = group_advantages(all_rewards, size, cfg.adv_std_floor, cfg.group_std, cfg.adv_std_eps)[mine]
        return adv.clamp(-cfg.adv_clip_max, cfg.adv_clip_max).to(self.ctx.device)

    def update(self, batch: Rollout, epoch: int) -> dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        advantages = self.advantages(batch)  # [B]

        # (sample, timestep) pairs on the forward process, fixed for the epoch.
        b, t, x0, x_t, target = forward_process_pairs(batch, ctx.schedule, cfg.timestep_fraction, self.generator, ctx.device)
        sigma = t.float() / ctx.schedule.num_train_timesteps if ctx.schedule.kind == "flow" else torch.ones_like(t, dtype=torch.float32)
        cond = batch.cond[b]  # batch N
        num_pairs = b.numel()

        ctx.model.denoiser.train()
        self.update_calls = 0
        with torch.no_grad():  # L_old: the sampling weights on the same noised inputs, before any step
            old = torch.cat([self._log_likelihood(x_t[c], t[c], cond[c], target[c], sigma[c])[0] for c in chunks(torch.arange(num_pairs), ctx.cfg.train.batch_size)])

        first_ratio_dev = None

        def chunk_loss(c: torch.Tensor):
            nonlocal first_ratio_dev
            log_likelihood, prediction = self._log_likelihood(x_t[c], t[c], cond[c], target[c], sigma[c])
            log_ratio = log_likelihood - old[c]
            ratio = torch.exp(log_ratio)
            loss, clipfrac = ppo_clip_loss(advantages[b[c]], ratio, cfg.clip_range)
            kl = kl_to_reference(self, prediction, x_t[c], t[c], cond[c])  # 0 without kl_coef
            loss = loss + cfg.kl_coef * kl
            if first_ratio_dev is None:
                first_ratio_dev = float((ratio.detach() - 1).abs().max())  # before any update: 0 on-policy
            return loss, {"approx_kl": 0.5 * log_ratio.detach().pow(2).mean(), "clipfrac": clipfrac, "kl_to_base": kl.detach()}

        totals, optimizer_steps = pair_minibatch_epochs(self, num_pairs, chunk_loss)
        ctx.model.denoiser.eval()
        return self.pair_update_metrics(
            totals,
            ratio_dev_first=first_ratio_dev,
            advantage_abs_mean=float(advantages.abs().mean()),
            optimizer_steps=optimizer_steps,
            pairs=num_pairs,
        )

    def _log_likelihood(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, target: torch.Tensor, sigma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L [n], the conditional prediction [n, *D]) under the current weights (no guidance, as the matching loss)."""
        with self.ctx.autocast():
            prediction = self.ctx.model.denoise(x_t, t, cond)
        self.update_calls += x_t.shape[0]
        return awm_log_likelihood(prediction, target, sigma, self.cfg.weighting, self.cfg.ghuber_power), prediction
