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
"""

from __future__ import annotations

from dataclasses import dataclass

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


def make_flow_schedule(scheduler, num_steps: int) -> FlowSchedule:
    """Read a diffusers FlowMatchEulerDiscreteScheduler's levels for ``num_steps`` steps (its own shift)."""
    if scheduler.config.use_dynamic_shifting:
        raise ValueError("Flow schedulers with use_dynamic_shifting (Flux-style) are not supported; SD3/3.5 use a fixed shift.")
    scheduler.set_timesteps(num_steps)
    sigmas = scheduler.sigmas.double().clone()  # [S + 1], the last is 0
    return FlowSchedule(
        sigmas=sigmas,
        timesteps=scheduler.timesteps.float().clone(),
        num_train_timesteps=int(scheduler.config.num_train_timesteps),
        sigma_clip=float(sigmas[1]),
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
    """μ_θ, std [B] and x̂_0 of the Euler-Maruyama step (module docstring, steps 2-4), in float32."""
    v = model_output if model_output.dtype == torch.float64 else model_output.float()
    x = sample if sample.dtype == torch.float64 else sample.float()
    sigma, sigma_next = schedule.sigma(t), schedule.next_sigma(t)  # [B] float64
    delta = sigma_next - sigma  # < 0
    g = flow_diffusion_coefficient(schedule, t, eta)  # [B]
    s, d, gg = _bcast(sigma, x), _bcast(delta, x), _bcast(g, x)
    drift = v + gg**2 / (2 * s) * (x + (1 - s) * v)
    mean = x + drift * d
    std = (g * (-delta).sqrt()).to(x.dtype)
    x0 = x - s * v
    return mean, std, x0


def flow_add_noise(schedule: FlowSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_σ = (1 - σ) x_0 + σ ε with σ = t / T_train (step 1)."""
    sigma = _bcast((t.double() / schedule.num_train_timesteps), x0.float())
    return ((1 - sigma) * x0.float() + sigma * noise.float()).to(x0.dtype)


def flow_training_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the model should output at x_σ: v = ε - x_0."""
    return noise - x0
