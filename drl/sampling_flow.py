"""Flow-matching (rectified-flow) sampling as an SDE, so that every step has a log-probability.

SD3/3.5-class models are trained with the rectified-flow interpolation and sampled by
diffusers' FlowMatchEulerDiscreteScheduler as a deterministic ODE. A deterministic step
has no density, so policy-gradient methods (DDPO, GRPO) cannot score it. Following
Flow-GRPO (Liu et al. 2025, "Flow-GRPO: Training Flow Matching Models via Online RL",
eq. 7-9; yifan123/flow_grpo), we sample instead with an SDE that has the same marginals
as the ODE, and discretise it with Euler-Maruyama: each step is then a Gaussian.

Notation (diffusers name -> symbol):

    sigmas[i]      σ        noise level of step i, 1 (noise) -> 0 (data); timestep t = σ · T_train
    model_output   v_θ      the predicted velocity, ≈ ε - x_0
    eta            a        the SDE's noise level (flow_grpo's ``noise_level``; 0 = the ODE)

1. Forward interpolation:  x_σ = (1 - σ) x_0 + σ ε,  ε ~ N(0, I), so dx/dσ = ε - x_0 = v.
2. From v:  x̂_0 = x - σ v,  ε̂ = x + (1 - σ) v,  and the score  ∇ log p_σ(x) = -ε̂ / σ
   (Tweedie: the perturbation is Gaussian with mean (1 - σ) x_0 and std σ).
3. For any diffusion coefficient g(σ), the reverse-time SDE with the ODE's marginals is
        dx = [v - ½ g² ∇ log p_σ(x)] dσ + g dw̄ = [v + g²/(2σ) (x + (1 - σ) v)] dσ + g dw̄,
   run with dσ < 0. Flow-GRPO takes g = a · sqrt(σ / (1 - σ)).
4. Euler-Maruyama from σ to the next level σ' (Δ = σ' - σ < 0):
        μ_θ = x + [v + g²/(2σ) (x + (1 - σ) v)] Δ,       std = g · sqrt(-Δ),
        x_{σ'} = μ_θ + std · z,  z ~ N(0, I).
   With a = 0 this is exactly the scheduler's Euler ODE step x + v Δ.
5. The step density is N(μ_θ, std² I): the log-prob is the same Gaussian formula as the
   DDPM/DDIM steps (drl.sampling.gaussian_log_prob), in float32, summed or averaged.

At σ = 1 the coefficient sqrt(σ / (1 - σ)) is infinite; as flow_grpo does, its denominator
uses the next level sigmas[1] instead (``sigma_clip``), so the first step stays finite.

CPS, coefficients-preserving sampling (``sde_type="cps"``; Wang & Yu 2025, "Coefficients-Preserving
Sampling for Reinforcement Learning with Flow Matching", arXiv 2509.05952; IamCreateAI/FlowCPS, and
flow_grpo's and Flow-Factory's "cps" sde type). The Euler-Maruyama step above adds more noise than the
level σ' the model is next evaluated at was trained with (its x_{σ'} is not (1 - σ') x_0 + σ' ε). CPS
instead writes the next sample with the forward process's own coefficients:

6. With ε̂ = x + (1 - σ) v (step 2) and the step's noise std s = σ' · sin(a π / 2),
        μ_θ = (1 - σ') x̂_0 + sqrt(σ'² - s²) ε̂,        x_{σ'} = μ_θ + s z,  z ~ N(0, I),
   so x_{σ'} = (1 - σ') x̂_0 + σ' · (unit-variance noise): the coefficients of x_σ' = (1 - σ') x_0 + σ' ε.
   a = 0 is again the scheduler's Euler step; a = 1 re-draws all the noise (x_{σ'} = (1 - σ') x̂_0 + σ' z);
   the last step (σ' = 0) adds no noise and is deterministic.
7. The step is the Gaussian N(μ_θ, s² I), scored with the same exact log-density. (The authors' code keeps
   only -mean_d (x_{σ'} - μ_θ)² "with all constants removed"; the exact mean-reduced log-prob is that
   divided by 2 s², minus log s + ½ log 2π: tests/test_sampling_flow.py checks both on the same inputs.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class FlowSchedule:
    """The sampling levels of a FlowMatchEulerDiscreteScheduler, as tensors (from :func:`make_flow_schedule`)."""

    sigmas: torch.Tensor  # [S + 1] float64, σ of each step and the final level (0)
    timesteps: torch.Tensor  # [S] float32, what the denoiser is called with: σ · num_train_timesteps
    num_train_timesteps: int
    sigma_clip: float  # replaces σ = 1 in the denominator of g (see the module docstring)
    kind: str = "flow"
    prediction_type: str = "flow"
    sde_type: str = "flow_grpo"  # the noise form of a stochastic step: flow_grpo (steps 3-4) or cps (step 6)
    shift: float = 1.0  # the scheduler's static shift: σ = shift·u / (1 + (shift - 1)·u) of the unshifted level u

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.numel())

    def index_of(self, t: torch.Tensor) -> torch.Tensor:
        """Step index of each timestep in ``t`` [B] (nearest match; stored timesteps match exactly)."""
        return (t.float().unsqueeze(-1) - self.timesteps.to(t.device).unsqueeze(0)).abs().argmin(-1)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigmas.to(t.device)[self.index_of(t)]

    def next_sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigmas.to(t.device)[self.index_of(t) + 1]


SDE_TYPES = ("flow_grpo", "cps")


def make_flow_schedule(scheduler, num_steps: int, sde_type: str = "flow_grpo", mu: float | None = None) -> FlowSchedule:
    """Read a diffusers FlowMatchEulerDiscreteScheduler's levels for ``num_steps`` steps (its own shift);
    ``sde_type``: the noise form of its stochastic steps (module docstring).

    ``mu`` given (the model's shift_mu: FLUX, Qwen-Image, Z-Image): the levels are those the 2025-26 pipelines pass,
    the unshifted 1, 1 - 1/S, ..., 1/S, shifted by μ where the scheduler shifts by resolution (use_dynamic_shifting)
    and by its static ``shift`` otherwise (Z-Image-Turbo). Without ``mu``, the scheduler's own spacing (SD3, Wan).
    The equivalent static shift (e^μ, or μ for time_shift_type=linear) is what compress_tail re-shifts with."""
    if sde_type not in SDE_TYPES:
        raise ValueError(f"Unknown flow sde_type {sde_type!r}; use one of {', '.join(SDE_TYPES)}.")
    dynamic = scheduler.config.use_dynamic_shifting
    if dynamic and mu is None:
        raise ValueError("This flow scheduler shifts by resolution (use_dynamic_shifting): pass the model's shift mu.")
    if mu is not None:
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / num_steps, num_steps), mu=mu)
    else:
        scheduler.set_timesteps(num_steps)
    if dynamic:
        shift = mu if scheduler.config.time_shift_type == "linear" else math.exp(mu)
    else:
        shift = float(scheduler.config.shift)
    sigmas = scheduler.sigmas.double().clone()  # [S + 1], the last is 0
    return FlowSchedule(
        sigmas=sigmas,
        timesteps=scheduler.timesteps.float().clone(),
        num_train_timesteps=int(scheduler.config.num_train_timesteps),
        sigma_clip=float(sigmas[1]),
        sde_type=sde_type,
        shift=shift,
    )


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def flow_diffusion_coefficient(schedule: FlowSchedule, t: torch.Tensor, eta: float) -> torch.Tensor:
    """g = a · sqrt(σ / (1 - σ)) at each timestep (step 3; σ = 1 clipped), float64: flow_grpo's std_dev_t. [B]"""
    sigma = schedule.sigma(t)
    denominator = 1 - torch.where(sigma >= 1, torch.full_like(sigma, schedule.sigma_clip), sigma)
    return eta * (sigma / denominator).sqrt()


def flow_mean_std(
    schedule: FlowSchedule, model_output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor, eta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """μ_θ, std [B] and x̂_0 of the stochastic step (module docstring: steps 2-4, or 6 for CPS), in float32."""
    v = model_output if model_output.dtype == torch.float64 else model_output.float()
    x = sample if sample.dtype == torch.float64 else sample.float()
    sigma, sigma_next = schedule.sigma(t), schedule.next_sigma(t)  # [B] float64
    if schedule.sde_type == "cps":
        return _cps_mean_std(sigma, sigma_next, v, x, eta)
    delta = sigma_next - sigma  # < 0
    g = flow_diffusion_coefficient(schedule, t, eta)  # [B]
    s, d, gg = _bcast(sigma, x), _bcast(delta, x), _bcast(g, x)
    drift = v + gg**2 / (2 * s) * (x + (1 - s) * v)
    mean = x + drift * d
    std = (g * (-delta).sqrt()).to(x.dtype)
    x0 = x - s * v
    return mean, std, x0


def _cps_mean_std(sigma, sigma_next, v, x, eta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 6: μ_θ = (1 - σ') x̂_0 + sqrt(σ'² - s²) ε̂ with s = σ' sin(a π / 2); returns (μ_θ, s [B], x̂_0)."""
    std = sigma_next * math.sin(eta * math.pi / 2)  # [B] float64
    s, s_next = _bcast(sigma, x), _bcast(sigma_next, x)
    x0 = x - s * v
    eps = x + (1 - s) * v
    mean = (1 - s_next) * x0 + _bcast((sigma_next**2 - std**2).clamp(min=0).sqrt(), x) * eps
    return mean, std.to(x.dtype), x0


def flow_dpmpp_2m_step(
    schedule: FlowSchedule, model_output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor, prev_x0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic DPM-Solver++(2M) step of the flow ODE -> (x_{σ'} [B, *D], x̂_0 [B, *D]), float32.

    Lu et al. 2022, "DPM-Solver++" (arXiv 2211.01095), Algorithm 2 with the midpoint form of its second-order
    term, in the flow parameterisation (α = 1 - σ, λ = log(α / σ), x̂_0 = x - σ v): with h = λ' - λ,
        x_{σ'} = (σ' / σ) x - α' (e^{-h} - 1) (D0 + ½ D1),   D0 = x̂_0,   D1 = (x̂_0 - x̂_0^prev) / r,
    r = (λ - λ_prev) / h, x̂_0^prev the previous step's prediction at σ_prev (``prev_x0``). Its first-order
    part, -α' (e^{-h} - 1) = α' - α σ' / σ, makes it exactly the Euler step x + (σ' - σ) v; as diffusers'
    DPMSolverMultistepScheduler (final_sigmas_type="zero"), the step is first order without a previous
    prediction, from σ_prev = 1 (λ_prev = -∞, so D1 = 0) and into σ' = 0 (the last step returns x̂_0).
    """
    v = model_output if model_output.dtype == torch.float64 else model_output.float()
    x = sample if sample.dtype == torch.float64 else sample.float()
    index = schedule.index_of(t)  # [B]
    sigmas = schedule.sigmas.to(t.device)
    sigma, sigma_next = sigmas[index], sigmas[index + 1]  # [B] float64
    x0 = x - _bcast(sigma, x) * v
    x0_coef = (1 - sigma_next) - (1 - sigma) * sigma_next / sigma  # -α' (e^{-h} - 1), finite at σ = 1 and σ' = 0
    prev = x * _bcast(sigma_next / sigma, x) + _bcast(x0_coef, x) * x0
    if prev_x0 is None:
        return prev, x0
    sigma_prev = sigmas[(index - 1).clamp(min=0)]
    second = (index > 0) & (sigma_prev < 1) & (sigma_next > 0)  # [B] rows with a finite second-order term
    if not bool(second.any()):
        return prev, x0
    lam = lambda s: torch.log1p(-s) - torch.log(s)  # noqa: E731  λ(σ), finite on 0 < σ < 1
    safe = lambda s, fill: torch.where(second, s, torch.full_like(s, fill))  # noqa: E731
    h = lam(safe(sigma_next, 0.25)) - lam(safe(sigma, 0.5))
    r = (lam(safe(sigma, 0.5)) - lam(safe(sigma_prev, 0.75))) / h
    d1 = (x0 - prev_x0.to(x0.dtype)) / _bcast(r, x)
    correction = _bcast(torch.where(second, 0.5 * x0_coef, torch.zeros_like(x0_coef)), x) * d1
    return prev + correction, x0


def flow_add_noise(schedule: FlowSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_σ = (1 - σ) x_0 + σ ε with σ = t / T_train (step 1)."""
    sigma = _bcast((t.double() / schedule.num_train_timesteps), x0.float())
    return ((1 - sigma) * x0.float() + sigma * noise.float()).to(x0.dtype)


def flow_training_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the model should output at x_σ: v = ε - x_0."""
    return noise - x0
