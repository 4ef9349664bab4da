"""DDPM and DDIM reverse steps that also return the exact Gaussian log-probability.

One function, :func:`denoising_step`, serves both the rollout (it draws ``x_{t-1}``)
and the update (it re-scores a stored ``x_{t-1}`` under the current weights), so
the importance ratio of a policy-gradient method is exactly 1 on-policy.

Notation (diffusers name -> paper symbol):

    alphas_cumprod[t]    ᾱ_t          (Ho et al. 2020, eq. 4)
    alpha_prev           ᾱ_{t-1}      (ᾱ at the previous timestep of the sampling schedule)
    model_output         ε_θ(x_t, t, c), v_θ or x̂_0, by ``prediction_type``
    pred_original_sample x̂_0
    std                  σ_t          (DDIM: η·sqrt((1-ᾱ_{t-1})/(1-ᾱ_t)·(1-ᾱ_t/ᾱ_{t-1})), Song et al. 2021, eq. 16)
    mean                 μ_θ(x_t, t)

Every step is the Gaussian p_θ(x_{t-1} | x_t) = N(μ_θ, σ_t² I); its log-density is

    log p = Σ_d [ -(x_{t-1,d} - μ_d)² / (2σ_t²) - log σ_t - ½ log 2π ]

summed over every non-batch dimension (``reduction="sum"``, the exact log-likelihood)
or averaged (``reduction="mean"``, what ddpo-pytorch and trl use; their clip range of
1e-4 is tuned for it). Steps with σ_t = 0 (DDIM with η = 0, DDPM's step from t = 0, and
fixed_small's from t = 1) are deterministic: they carry log-prob 0 and ``stochastic = False``.

All coefficients come from the diffusers scheduler's own ``alphas_cumprod`` and
timestep schedule; the math runs in float32 whatever the model's dtype.

Flow-matching models (SD3) sample with an SDE whose steps are Gaussians too
(drl.sampling_flow); the functions below dispatch on ``schedule.kind == "flow"``, so the
collector and the algorithms call the same functions for every model family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler

from drl.sampling_flow import FlowSchedule, flow_add_noise, flow_mean_std, flow_training_target, make_flow_schedule

Reduction = Literal["sum", "mean"]
# Below this σ a step counts as deterministic (DDPM clamps its last variance to 1e-20).
MIN_STOCHASTIC_STD = 1e-8
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class NoiseSchedule:
    """Everything a reverse step needs from a diffusers scheduler, as tensors.

    Built once per run by :func:`make_schedule`; indexable by integer timesteps.
    """

    kind: Literal["ddim", "ddpm"]
    alphas_cumprod: torch.Tensor  # [num_train_timesteps] float64
    final_alpha_cumprod: float  # ᾱ used after the last step (DDIM); DDPM uses 1.0
    timesteps: torch.Tensor  # [S] long, sampling order (noisy -> clean)
    prev_timesteps: torch.Tensor  # [S] long, -1 means "past the end of the chain"
    prediction_type: str
    clip_sample: bool
    clip_sample_range: float
    variance_type: str  # DDPM only: fixed_small | fixed_large

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.numel())

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ_t for a tensor of timesteps; t < 0 maps to the end-of-chain value."""
        end = self.final_alpha_cumprod if self.kind == "ddim" else 1.0
        a = self.alphas_cumprod.to(t.device)[t.clamp(min=0)]
        return torch.where(t >= 0, a, torch.full_like(a, end))

    def prev_of(self, t: torch.Tensor) -> torch.Tensor:
        """The previous timestep of each entry of ``t`` in this sampling schedule."""
        ts, prev = self.timesteps.to(t.device), self.prev_timesteps.to(t.device)
        index = (t.unsqueeze(-1) == ts).long().argmax(-1)
        return prev[index]


def make_schedule(scheduler, num_steps: int, sde_type: str = "flow_grpo", mu: float | None = None) -> NoiseSchedule | FlowSchedule:
    """Read a diffusers scheduler's schedule for ``num_steps`` sampling steps.

    A FlowMatchEulerDiscreteScheduler gives a FlowSchedule (drl.sampling_flow) whose stochastic steps take
    the noise form ``sde_type`` (flow_grpo or cps; DDIM/DDPM schedules have only their own) and, where the scheduler
    shifts by resolution (``use_dynamic_shifting``), the shift ``mu`` (T2IModel.shift_mu). Otherwise this uses the scheduler's own ``set_timesteps`` (so "leading"/"trailing" spacing and
    ``steps_offset`` behave exactly as in diffusers) and its own previous-timestep rule.
    """
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return make_flow_schedule(scheduler, num_steps, sde_type, mu)
    if sde_type != "flow_grpo":
        raise ValueError(f"sde_type={sde_type} is a noise form of flow schedules; {type(scheduler).__name__} has its own.")
    if getattr(scheduler.config, "thresholding", False):
        raise ValueError("Dynamic thresholding is not supported: set thresholding=False in the scheduler config.")
    scheduler.set_timesteps(num_steps)
    timesteps = scheduler.timesteps.long().clone()
    if isinstance(scheduler, DDIMScheduler):
        kind = "ddim"
        # diffusers' DDIM uses t - T/S whatever the spacing (scheduling_ddim.py, step()).
        prev = timesteps - scheduler.config.num_train_timesteps // num_steps
        final = float(scheduler.final_alpha_cumprod)
        variance_type = "fixed_small"
    elif isinstance(scheduler, DDPMScheduler):
        kind = "ddpm"
        prev = torch.cat([timesteps[1:], timesteps.new_tensor([-1])])
        final = 1.0
        variance_type = scheduler.config.variance_type
        if variance_type not in ("fixed_small", "fixed_large"):
            raise ValueError(f"DDPM variance_type {variance_type!r} is not supported; use fixed_small or fixed_large.")
    else:
        raise TypeError(f"Unsupported scheduler {type(scheduler).__name__}; use DDIMScheduler or DDPMScheduler.")
    prev = prev.clamp(min=-1)
    return NoiseSchedule(
        kind=kind,
        alphas_cumprod=scheduler.alphas_cumprod.double().clone(),
        final_alpha_cumprod=final,
        timesteps=timesteps,
        prev_timesteps=prev,
        prediction_type=scheduler.config.prediction_type,
        clip_sample=bool(scheduler.config.clip_sample),
        clip_sample_range=float(getattr(scheduler.config, "clip_sample_range", 1.0)),
        variance_type=variance_type,
    )


@dataclass
class StepOutput:
    """Result of one reverse step for a batch.

    prev_sample:          [B, *D]  x_{t-1} (drawn, or the one passed in)
    log_prob:             [B]      log p_θ(x_{t-1} | x_t), float32, reduced over D
    mean:                 [B, *D]  μ_θ(x_t, t)
    std:                  [B]      σ_t ([B, *D] when the caller gave a per-dimension std)
    pred_original_sample: [B, *D]  x̂_0
    stochastic:           [B] bool σ_t > 0: the step has a density and can be trained
    """

    prev_sample: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    pred_original_sample: torch.Tensor
    stochastic: torch.Tensor


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, ..., 1] in ``like``'s dtype, to broadcast against ``like``."""
    return v.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def _math_dtype(x: torch.Tensor) -> torch.Tensor:
    """float32 for half/bfloat16/float32 inputs; float64 stays float64 (gradient checks)."""
    return x if x.dtype == torch.float64 else x.float()


def predict_x0_eps(
    schedule: NoiseSchedule, model_output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂_0, ε̂) from the model output, in float32; x̂_0 clipped if the scheduler clips."""
    out, x = _math_dtype(model_output), _math_dtype(sample)
    a_t = _bcast(schedule.alpha_bar(t), x)
    if schedule.prediction_type == "epsilon":
        eps = out
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    elif schedule.prediction_type == "v_prediction":
        x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * out
        eps = a_t.sqrt() * out + (1 - a_t).sqrt() * x
    elif schedule.prediction_type == "sample":
        x0 = out
        eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    else:
        raise ValueError(f"Unknown prediction_type {schedule.prediction_type!r}.")
    if schedule.clip_sample:
        x0 = x0.clamp(-schedule.clip_sample_range, schedule.clip_sample_range)
    return x0, eps


def _per_dim(std: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A step's std, [B] (one per row) or [B, *D] (one per dimension: ReinFlow's), broadcastable against ``like``."""
    return _bcast(std, like) if std.ndim == 1 else std.to(like.dtype)


def _stochastic_rows(std: torch.Tensor) -> torch.Tensor:
    """[B] bool: the row's std (every dimension's, for a per-dimension std) is above MIN_STOCHASTIC_STD."""
    return std > MIN_STOCHASTIC_STD if std.ndim == 1 else (std.flatten(1) > MIN_STOCHASTIC_STD).all(1)


def gaussian_log_prob(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, reduction: Reduction = "sum"
) -> torch.Tensor:
    """log N(x; mean, diag(std²)) reduced over non-batch dims; 0 where std is (near) zero. [B]

    std: [B] (the same for every dimension of a row) or [B, *D] (per dimension).
    """
    stochastic = _stochastic_rows(std)
    s = _per_dim(std, _math_dtype(x))
    s = torch.where(s > MIN_STOCHASTIC_STD, s, torch.ones_like(s))
    per_dim = -((_math_dtype(x) - _math_dtype(mean)) ** 2) / (2 * s**2) - s.log() - _HALF_LOG_2PI
    dims = tuple(range(1, x.ndim))
    reduced = per_dim.sum(dims) if reduction == "sum" else per_dim.mean(dims)
    return torch.where(stochastic, reduced, torch.zeros_like(reduced))


def step_mean_std(
    schedule: NoiseSchedule, model_output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor, eta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """μ_θ(x_t, t), σ_t and x̂_0 of the reverse Gaussian, float32.

    t: [B] long timesteps (each sample may sit at a different step); float σ·T for flow schedules.
    """
    if schedule.kind == "flow":
        return flow_mean_std(schedule, model_output, t, sample, eta)
    x0, eps = predict_x0_eps(schedule, model_output, t, sample)
    prev_t = schedule.prev_of(t)
    a_t = schedule.alpha_bar(t)
    a_prev = schedule.alpha_bar(prev_t)
    if schedule.kind == "ddim":
        # Song et al. 2021, eq. 12 and 16.
        variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        std = eta * variance.sqrt()
        dir_coef = (1 - a_prev - std**2).clamp(min=0).sqrt()
        mean = _bcast(a_prev.sqrt(), x0) * x0 + _bcast(dir_coef, eps) * eps
    else:
        # Ho et al. 2020, eq. 7 (posterior q(x_{t-1} | x_t, x_0) with x_0 := x̂_0).
        alpha_t = a_t / a_prev
        beta_t = 1 - alpha_t
        x0_coef = a_prev.sqrt() * beta_t / (1 - a_t)
        xt_coef = alpha_t.sqrt() * (1 - a_prev) / (1 - a_t)
        mean = _bcast(x0_coef, x0) * x0 + _bcast(xt_coef, x0) * _math_dtype(sample)
        if schedule.variance_type == "fixed_small":
            variance = ((1 - a_prev) / (1 - a_t) * beta_t).clamp(min=1e-20)
        else:
            variance = beta_t
        # Ho et al.'s Algorithm 2 and diffusers add no noise at t = 0 (z = 0 "if t > 1" in 1-based t), whatever
        # the variance type; fixed_large's β_0 > 0 would otherwise make that step stochastic.
        std = torch.where(t > 0, variance.sqrt(), torch.zeros_like(variance))
    return mean, std.to(x0.dtype), x0


def denoising_step(
    schedule: NoiseSchedule,
    model_output: torch.Tensor,
    t: torch.Tensor,
    sample: torch.Tensor,
    *,
    eta: float = 1.0,
    prev_sample: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: Reduction = "sum",
    min_std: float = 0.0,
    std: torch.Tensor | None = None,
) -> StepOutput:
    """One reverse step x_t -> x_{t-1} with its log-probability.

    Args:
        schedule: from :func:`make_schedule`.
        model_output: [B, *D] the denoiser's output (any dtype; the math runs in float32).
        t: [B] long current timesteps.
        sample: [B, *D] x_t.
        eta: DDIM's η (0: deterministic ODE, 1: DDPM-like); the SDE noise level a for flow. Ignored by DDPM.
        prev_sample: a stored x_{t-1} to re-score instead of drawing one (the update phase).
        noise: [B, *D] the variance noise z to use when drawing; else drawn from ``generator``.
        reduction: "sum" (exact log-likelihood) or "mean" over the non-batch dims.
        min_std: floor of σ_t (DPPO's min_sampling_denoising_std / min_logprob_denoising_std): the step is then
            N(μ_θ, max(σ_t, min_std)² I), deterministic steps included; 0 leaves the scheduler's σ_t.
        std: [B] or [B, *D], the step's std in place of the scheduler's σ_t (ReinFlow's learned noise, per state and
            dimension); the mean stays the scheduler's μ_θ (with eta = 0 on a flow schedule: the ODE's Euler step).
    """
    if t.ndim == 0:
        t = t.expand(sample.shape[0])
    mean, schedule_std, x0 = step_mean_std(schedule, model_output, t, sample, eta)
    if std is None:
        std = schedule_std.clamp(min=min_std) if min_std > 0 else schedule_std
    stochastic = _stochastic_rows(std)
    if prev_sample is None:
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
        # A deterministic step adds nothing, exactly as diffusers (DDPM adds σ·z with σ≈1e-10).
        row_std = _per_dim(std, mean)
        prev_sample = mean + torch.where(_bcast(stochastic, mean).bool(), row_std, torch.zeros_like(row_std)) * noise.to(mean.dtype)
    log_prob = gaussian_log_prob(prev_sample, mean, std, reduction)
    return StepOutput(
        prev_sample=prev_sample.to(sample.dtype),
        log_prob=log_prob,
        mean=mean,
        std=std,
        pred_original_sample=x0,
        stochastic=stochastic,
    )


def add_noise(schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Forward process q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1-ᾱ_t) I) (Ho et al. 2020, eq. 4); flow: (1-σ) x_0 + σ ε."""
    if schedule.kind == "flow":
        return flow_add_noise(schedule, x0, noise, t)
    x0_, noise_ = _math_dtype(x0), _math_dtype(noise)
    a_t = _bcast(schedule.alphas_cumprod.to(t.device)[t], x0_)
    return (a_t.sqrt() * x0_ + (1 - a_t).sqrt() * noise_).to(x0.dtype)


def training_target(schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the denoiser should output at (x_t, t) under its prediction_type (L_simple's target)."""
    if schedule.kind == "flow":
        return flow_training_target(x0, noise)
    if schedule.prediction_type == "epsilon":
        return noise
    if schedule.prediction_type == "v_prediction":
        x0_, noise_ = _math_dtype(x0), _math_dtype(noise)
        a_t = _bcast(schedule.alphas_cumprod.to(t.device)[t], x0_)
        return (a_t.sqrt() * noise_ - (1 - a_t).sqrt() * x0_).to(noise.dtype)
    if schedule.prediction_type == "sample":
        return x0
    raise ValueError(f"Unknown prediction_type {schedule.prediction_type!r}.")


def sample_training_timesteps(schedule: NoiseSchedule | FlowSchedule, n: int, generator: torch.Generator) -> torch.Tensor:
    """Random training timesteps for L_simple: uniform integers in [0, T) or, for flow, σ·T with σ ~ U(0, 1). [n]

    Flow: uniform σ, rectified flow's own choice (Liu et al. 2023), not SD3's logit-normal (Esser et al. 2024, §3.1),
    which concentrates training on mid σ for 28-50 shifted sampling steps and gives σ > 0.9, where a 10-step
    sampler's first step decides the layout, about 1% of its samples. drl samples flow models with a few
    evenly spaced levels (the toy: 10 at shift 1), so uniform σ trains each step's level about equally.
    """
    if schedule.kind == "flow":
        return torch.rand(n, generator=generator) * schedule.num_train_timesteps
    return torch.randint(schedule.alphas_cumprod.numel(), (n,), generator=generator)


def x0_error_scale(schedule: NoiseSchedule | FlowSchedule, t: torch.Tensor) -> torch.Tensor:
    """|∂x̂_0 / ∂(model output)| at timestep t, before clipping: an output error δ moves x̂_0 by this times δ. [B]

    x̂_0 is affine in the output at fixed (x_t, t) (see :func:`predict_x0_eps`):
    epsilon: x̂_0 = (x_t - sqrt(1-ᾱ) ε)/sqrt(ᾱ) -> sqrt((1-ᾱ)/ᾱ); v_prediction: x̂_0 = sqrt(ᾱ) x_t - sqrt(1-ᾱ) v
    -> sqrt(1-ᾱ); sample: 1; a rectified-flow velocity (x̂_0 = x_t - σ v with σ = t / T_train): σ.
    """
    if schedule.kind == "flow":
        return t.float() / schedule.num_train_timesteps
    a_t = schedule.alphas_cumprod.to(t.device)[t].float()
    if schedule.prediction_type == "epsilon":
        return ((1 - a_t) / a_t).sqrt()
    if schedule.prediction_type == "v_prediction":
        return (1 - a_t).sqrt()
    if schedule.prediction_type == "sample":
        return torch.ones_like(a_t)
    raise ValueError(f"Unknown prediction_type {schedule.prediction_type!r}.")
