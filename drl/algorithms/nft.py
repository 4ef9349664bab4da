"""DiffusionNFT: online RL on the forward process (Zheng et al. 2025; NVlabs/DiffusionNFT).

Each epoch: sample with any sampler (no likelihoods needed), map rewards to optimality probabilities
r = 1/2 + clip(A, -c, c) / 2c (A: the reward normalised by its group's mean and the batch's or group's std),
then noise each x_0 afresh and minimise drl.losses.nft_loss, which pulls the implicit positive policy
v+ = (1-β) v_old + β v_θ towards the data where r is high and v- = (1+β) v_old - β v_θ where it is low,
with errors measured in x̂_0 space so one code path serves ε-, v- and flow-parameterised models.
v_old is the sampling policy's prediction on the same noised inputs, taken before the first step.
The derivation and the parameterisations: docs/guide/algorithms.md ("DiffusionNFT: the derivation").
"""

from __future__ import annotations

import torch

from drl.algorithms.base import Algorithm, TrainContext, chunks, collect_groups
from drl.algorithms.ddpo import group_advantages
from drl.algorithms.denoising import forward_process_pairs, kl_to_reference, pair_minibatch_epochs
from drl.algorithms.schemas.nft import NFTConfig
from drl.losses import nft_loss
from drl.sampling import x0_error_scale
from drl.types import Conditioning, Rollout


def optimality_probability(
    rewards: torch.Tensor, group_size: int, clip: float, std_floor: float = 1e-6, std_over: str = "group", std_eps: float = 0.0
) -> torch.Tensor:
    """r = clip(A, -c, c) / 2c + 1/2 with A the rewards normalised per group (or over the batch). [B]

    std_over="batch" divides the group-centred rewards by the std of the whole batch (NVlabs' global_std);
    std_eps=1e-4 is NVlabs' std + 1e-4.
    """
    size = group_size if group_size > 1 else rewards.numel()
    advantages = group_advantages(rewards.float(), size, std_floor, std_over, std_eps)
    return advantages.clamp(-clip, clip) / (2 * clip) + 0.5


class NFT(Algorithm):
    def __init__(self, cfg: NFTConfig, ctx: TrainContext):
        super().__init__(cfg, ctx)
        self.cfg: NFTConfig = cfg

    def collect(self, generator: torch.Generator) -> Rollout:
        before = self.ctx.collector.denoiser_rows
        batch = collect_groups(self.ctx, self.cfg.group_size, generator)
        self.sample_calls = self.ctx.collector.denoiser_rows - before
        return batch

    def update(self, batch: Rollout, epoch: int) -> dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        r = optimality_probability(
            batch.rewards.detach().cpu(), cfg.group_size, cfg.adv_clip_max, cfg.adv_std_floor, cfg.group_std, cfg.adv_std_eps
        )
        r = r.to(ctx.device)  # [B]

        # (sample, timestep) pairs on the forward process, fixed for the epoch.
        b, t, x0, x_t, target = forward_process_pairs(batch, ctx.schedule, cfg.timestep_fraction, self.generator, ctx.device)
        scale = x0_error_scale(ctx.schedule, t)  # [N]
        cond = batch.cond[b]  # batch N
        num_pairs = b.numel()

        ctx.model.denoiser.train()
        self.update_calls = 0
        old = torch.cat(
            [self._predict(x_t[c], t[c], cond[c], grad=False) for c in chunks(torch.arange(num_pairs), ctx.cfg.train.batch_size)]
        )

        first_dev = None

        def chunk_loss(c: torch.Tensor):
            nonlocal first_dev
            prediction = self._predict(x_t[c], t[c], cond[c], grad=True)
            loss = nft_loss(prediction, old[c], target[c], r[b[c]], cfg.beta, scale[c], cfg.adaptive_weighting, cfg.adv_clip_max).mean()
            kl = kl_to_reference(self, prediction, x_t[c], t[c], cond[c])  # 0 without kl_coef
            loss = loss + cfg.kl_coef * kl
            deviation = (prediction.detach().float() - old[c]).abs()
            if first_dev is None:
                first_dev = float(deviation.max())  # before any update: v_θ = v_old
            return loss, {"kl_to_base": kl.detach(), "old_deviation": deviation.pow(2).mean()}

        totals, optimizer_steps = pair_minibatch_epochs(self, num_pairs, chunk_loss)
        ctx.model.denoiser.eval()
        return self.pair_update_metrics(
            totals, old_dev_first=first_dev, optimality_mean=float(r.mean()), optimizer_steps=optimizer_steps, pairs=num_pairs
        )

    def _predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, grad: bool) -> torch.Tensor:
        """The conditional prediction (no guidance); float32 without gradient for v_old."""
        with torch.set_grad_enabled(grad), self.ctx.autocast():
            out = self.ctx.model.denoise(x_t, t, cond)
        self.update_calls += x_t.shape[0]
        return out if grad else out.detach().float()
