"""Pure loss functions of the algorithms; tests check each on hand-made numbers."""

from __future__ import annotations

import torch


def l_simple(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample L_simple = mean_d (target - prediction)^2 (Ho et al. 2020, eq. 14). [B]"""
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(1)


def rwr_weights(rewards: torch.Tensor, beta: float, normalization: str = "batch", max_weight: float = 0.0) -> torch.Tensor:
    """Reward-weighted regression weights w_i ∝ exp(beta * r_i) (Peters & Schaal 2007; Lee et al. 2023).

    normalization="batch" standardises rewards first, so beta is in units of standard
    deviations whatever the reward's scale. The weights are self-normalised to mean 1
    over the batch (w = B * softmax(beta * r)), so the loss stays on L_simple's scale;
    max_weight > 0 then clips them from above.
    """
    r = rewards.float()
    if normalization == "batch":
        r = (r - r.mean()) / (r.std(unbiased=False) + 1e-8)
    w = torch.softmax(beta * r, dim=0) * r.numel()
    return w.clamp(max=max_weight) if max_weight > 0 else w


def ppo_clip_loss(advantages: torch.Tensor, ratio: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, to minimise (Schulman et al. 2017, eq. 7; DDPO eq. 5).

    loss = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))); also returns the
    fraction of entries where clipping was active.
    """
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    clipfrac = ((ratio - 1).abs() > clip_range).float().mean()
    return loss, clipfrac


def gaussian_kl_equal_std(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """KL(N(mean, s^2 I) || N(ref_mean, s^2 I)) = ||mean - ref_mean||^2 / (2 s^2), per sample. [B]

    Both reverse steps share sigma_t, so this per-step KL is exact. ``reduction`` matches the
    log-prob reduction (sum over dims, or their mean).
    """
    s2 = std.float().view(-1, *([1] * (mean.ndim - 1))) ** 2
    per_dim = (mean.float() - ref_mean.float()) ** 2 / (2 * s2)
    dims = tuple(range(1, mean.ndim))
    return per_dim.sum(dims) if reduction == "sum" else per_dim.mean(dims)
