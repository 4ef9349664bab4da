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


def ppo_clip_loss(
    advantages: torch.Tensor, ratio: torch.Tensor, clip_range: float, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, to minimise (Schulman et al. 2017, eq. 7; DDPO eq. 5).

    loss = mean(w * max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))) with per-entry weights w (default 1);
    also returns the fraction of entries where clipping was active.
    """
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    per_entry = torch.maximum(unclipped, clipped)
    loss = (per_entry if weights is None else per_entry * weights).mean()
    clipfrac = ((ratio - 1).abs() > clip_range).float().mean()
    return loss, clipfrac


def guard_log_ratio(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, mean: torch.Tensor, old_mean: torch.Tensor, std: torch.Tensor, scale: float
) -> torch.Tensor:
    """GRPO-Guard's normalised log-ratio of a Gaussian step (Wang et al. 2025, "RatioNorm"; as Flow-Factory's
    GRPOGuardTrainer and verl-omni's GRPOGuardLoss compute it). [n]

    With x' = μ_old + s z sampled, log p_θ(x') - log p_old(x') = <z, δ> / s - ||δ||² / (2 s²), δ = μ_θ - μ_old: its
    mean over z is negative (the ratio sits below 1 for every advantage) and its spread scales with 1/s, which differs
    by step. RatioNorm adds the bias back and multiplies by s:
        log ρ̃ = (log p_θ - log p_old + ||δ||² / (2 s²)) · s = <z, δ>,
    zero-mean, 0 on-policy, with a gradient (x' - μ_old) ∂μ_θ / s free of the 1/s² of the raw one. ``scale`` reduces
    ||δ||² as the log-probs were (1 for a sum over dims, 1/D for their mean: the references' convention).
    log_prob, old_log_prob, std: [n]; mean, old_mean: [n, *D].
    """
    mse = (mean.float() - old_mean.float()).pow(2).flatten(1).sum(1) * scale
    s = std.float()
    return (log_prob - old_log_prob + mse / (2 * s**2)) * s


def gaussian_kl_equal_std(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """KL(N(mean, s^2 I) || N(ref_mean, s^2 I)) = ||mean - ref_mean||^2 / (2 s^2), per sample. [B]

    Both reverse steps share sigma_t, so this per-step KL is exact. ``reduction`` matches the
    log-prob reduction (sum over dims, or their mean).
    """
    s2 = std.float().view(-1, *([1] * (mean.ndim - 1))) ** 2
    per_dim = (mean.float() - ref_mean.float()) ** 2 / (2 * s2)
    dims = tuple(range(1, mean.ndim))
    return per_dim.sum(dims) if reduction == "sum" else per_dim.mean(dims)


def nft_loss(
    prediction: torch.Tensor,
    old_prediction: torch.Tensor,
    target: torch.Tensor,
    optimality: torch.Tensor,
    beta: float,
    x0_scale: torch.Tensor,
    adaptive: bool = True,
    adv_clip: float = 1.0,
) -> torch.Tensor:
    """DiffusionNFT's per-sample loss (Zheng et al. 2025, as NVlabs/DiffusionNFT trains it). [B]

    The implicit positive and negative policies, in the model's output space,
        v+ = (1 - β) v_old + β v_θ,        v- = (1 + β) v_old - β v_θ,
    are each scored by the squared error of their x̂_0 (x0_scale [B] converts an output error
    into an x̂_0 error, see drl.sampling.x0_error_scale), optionally divided by the detached mean
    absolute x̂_0 error ("adaptive" weighting), and mixed by the optimality probability r [B]:
        loss = c (r ||x̂_0(v+) - x_0||² + (1 - r) ||x̂_0(v-) - x_0||²) / β,
    with c = ``adv_clip``, the clip of the normalised rewards A in r = 1/2 + clip(A, -c, c) / 2c.
    Why c / β: at v_θ = v_old the gradient in v_θ is then 2 clip(A, -c, c) times the gradient of
    the x̂_0 error², an advantage-weighted regression whose size depends on neither β nor c
    (NVlabs' code scales by adv_clip_max / β the same way).
    prediction, old_prediction (no gradient), target: [B, *D].
    """
    pred, old, tgt = prediction.float(), old_prediction.detach().float(), target.float()
    scale = x0_scale.float().view(-1, *([1] * (pred.ndim - 1)))
    positive = (1 - beta) * old + beta * pred
    negative = (1 + beta) * old - beta * pred

    def x0_loss(implicit: torch.Tensor) -> torch.Tensor:
        error = (scale * (implicit - tgt)).flatten(1)  # x̂_0 error: [B, D]
        squared = error.pow(2).mean(1)
        return squared / error.detach().abs().mean(1).clamp(min=1e-5) if adaptive else squared

    r = optimality.float()
    return adv_clip * (r * x0_loss(positive) + (1 - r) * x0_loss(negative)) / beta


def awm_log_likelihood(
    prediction: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor, weighting: str = "uniform", power: float = 0.25
) -> torch.Tensor:
    """AWM's log-likelihood surrogate of a forward-process sample (Xue et al. 2025, "Advantage Weighted Matching";
    scxue/advantage_weighted_matching, compute_log_prob_awm), in float32. [B]

    With the matching error e = mean_d (prediction - target)^2 (the pretraining loss: flow matching for a velocity,
    L_simple for ε), L = -w(e, σ):
        uniform  e           t   σ e           t2  σ^2 e
        huber    σ (sqrt(e + 1e-10) - 1e-5)    ghuber  σ ((e + 1e-10)^p - (1e-10)^p) / p
    σ [B]: the flow level t / T_train of each sample (the weightings other than uniform are defined for flow models).
    """
    e = (prediction.float() - target.float()).pow(2).flatten(1).mean(1)
    s = sigma.float()
    if weighting == "uniform":
        return -e
    if weighting == "t":
        return -e * s
    if weighting == "t2":
        return -e * s**2
    if weighting == "huber":
        return -((e + 1e-10).sqrt() - 1e-5) * s
    if weighting == "ghuber":
        return -((e + 1e-10).pow(power) - 1e-10**power) * s / power
    raise ValueError(f"Unknown AWM weighting {weighting!r}; use uniform, t, t2, huber or ghuber.")


def diffusion_dpo_loss(
    prediction_w: torch.Tensor,
    prediction_l: torch.Tensor,
    reference_w: torch.Tensor,
    reference_l: torch.Tensor,
    target_w: torch.Tensor,
    target_l: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Diffusion-DPO (Wallace et al. 2023: their final objective, with the 1/2 of their released code). -> (loss [P], logits [P])

    With the per-sample denoising errors e(·) = mean_d (prediction - target)² of the chosen (w)
    and rejected (l) image of each pair, noised with the same t and noise:
        logits = -β/2 [ (e_θ(w) - e_ref(w)) - (e_θ(l) - e_ref(l)) ],   loss = -log σ(logits).
    logits > 0 means the model prefers the chosen image more than the reference does.
    """
    model_diff = l_simple(prediction_w, target_w) - l_simple(prediction_l, target_l)
    ref_diff = l_simple(reference_w, target_w) - l_simple(reference_l, target_l)
    logits = -0.5 * beta * (model_diff - ref_diff.detach())
    return -torch.nn.functional.logsigmoid(logits), logits
