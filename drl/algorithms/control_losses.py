"""Pure loss pieces of the control algorithms; tests check each on hand-made numbers."""

from __future__ import annotations

import math

import numpy as np
import torch

from drl.losses import l_simple
from drl.sampling import NoiseSchedule, add_noise, gaussian_log_prob, sample_training_timesteps, training_target


def td_target(rewards: torch.Tensor, terminations: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma * (1 - terminated) * Q'(s', a'), no gradient. All [B].

    Truncated transitions (time limits) bootstrap: only terminations stop the sum.
    """
    return (rewards + gamma * (1 - terminations.float()) * next_q).detach()


def diffusion_ql_q_loss(q1: torch.Tensor, q2: torch.Tensor, use_q1: bool) -> torch.Tensor:
    """The Q term of Diffusion-QL's actor loss: -Q_i(s, a_theta) / mean|Q_j| (Wang et al. 2023, eq. 3).

    The paper's code picks i at random each step and divides by the other critic's mean
    magnitude (no gradient), so eta means the same for any reward scale.
    """
    q, other = (q1, q2) if use_q1 else (q2, q1)
    return -q.mean() / other.abs().mean().detach()


def policy_bc_loss(
    denoiser: torch.nn.Module,
    schedule: NoiseSchedule,
    states: torch.Tensor,
    actions: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Diffusion behaviour cloning: L_simple on dataset actions at a uniform random step. Scalar.

    states [B, O], actions [B, A] (clean a_0). On a flow schedule this is the rectified-flow loss
    mean_d (v_theta(a_sigma, sigma, s) - (eps - a))^2 at a_sigma = (1 - sigma) a + sigma eps, sigma ~ U(0, 1)
    (Liu et al. 2023; FQL's BC flow loss with its time t = 1 - sigma and velocity a - eps).
    """
    n = actions.shape[0]
    t = sample_training_timesteps(schedule, n, generator).to(actions.device)  # [B]
    noise = torch.randn(actions.shape, generator=generator).to(actions)  # [B, A]
    prediction = denoiser(add_noise(schedule, actions, noise, t), t, states)
    return l_simple(prediction, training_target(schedule, actions, noise, t)).mean()


def sac_critic_target(
    rewards: torch.Tensor, terminations: torch.Tensor, next_q_min: torch.Tensor, next_log_prob: torch.Tensor, alpha: float, gamma: float
) -> torch.Tensor:
    """SAC's soft TD target y = r + gamma (1 - d) (min Q'(s', a') - alpha log pi(a'|s')). [B]"""
    return td_target(rewards, terminations, next_q_min - alpha * next_log_prob, gamma)


def generalized_advantages(
    rewards: np.ndarray, values: np.ndarray, last_value: float, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """GAE over one episode's decisions (Schulman et al. 2016, eq. 16). rewards, values [T] -> (advantages, returns) [T].

    delta_t = r_t + gamma V_{t+1} - V_t with V_T = ``last_value`` (0 when the episode terminated, V(s_T) when a time
    limit cut it); A_t = delta_t + gamma lam A_{t+1}; the value target is A_t + V_t.
    """
    next_values = np.append(values[1:], last_value)  # [T]
    deltas = rewards + gamma * next_values - values
    advantages, running = np.zeros(len(rewards), dtype=np.float64), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = deltas[t] + gamma * lam * running
        advantages[t] = running
    return advantages.astype(np.float32), (advantages + values).astype(np.float32)


_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)  # entropy of N(0, 1)


def chain_log_prob_rate(step_log_probs: torch.Tensor, initial_noise: torch.Tensor) -> torch.Tensor:
    """ReinFlow's normalised log-likelihood of a whole chain x_T -> ... -> x_0 (Zhang et al. 2025, eq. 9; the authors'
    get_logprobs with account_for_initial_stochasticity, normalize_denoising_horizon and normalize_act_space_dimension):

        (log N(x_T; 0, I) + sum_k log p(x_{k-1} | x_k, s)) / ((S + 1) D).

    step_log_probs [B, S] (each summed over the D action dims), initial_noise x_T [B, *A] -> [B].
    """
    dims = initial_noise[0].numel()
    initial = gaussian_log_prob(initial_noise, torch.zeros_like(initial_noise), torch.ones(len(initial_noise), device=initial_noise.device))
    return (initial + step_log_probs.sum(1)) / ((step_log_probs.shape[1] + 1) * dims)


def chain_entropy_rate(stds: torch.Tensor) -> torch.Tensor:
    """Entropy of the chain's Gaussians per step and action dimension, x_T's N(0, I) counted as a step (the authors'
    entropy_rate_est): (sum_d H(N(0, 1)) + sum_k sum_d (H(N(0, 1)) + log sigma_kd)) / ((S + 1) D). stds [B, S, D] -> [B]."""
    steps, dims = stds.shape[1], stds.shape[2]
    return _HALF_LOG_2PI_E + stds.log().sum((1, 2)) / ((steps + 1) * dims)


def fql_critic_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """FQL's critic loss: the mean over both critics and the batch of (Q_i(s, a) - y)^2 (the authors' critic_loss). Scalar."""
    return 0.5 * ((q1 - target).pow(2).mean() + (q2 - target).pow(2).mean())


def fql_q_loss(q1: torch.Tensor, q2: torch.Tensor, agg: str, normalize: bool) -> torch.Tensor:
    """FQL's Q term of the actor loss: -mean_B agg(Q_1, Q_2)(s, mu_omega(s, z)), divided by mean |agg Q| (no gradient)
    with ``normalize`` (Park et al. 2025, eq. 8; agg: mean or min). q1, q2 [B] -> scalar."""
    q = (q1 + q2) / 2 if agg == "mean" else torch.minimum(q1, q2)
    loss = -q.mean()
    return loss / q.abs().mean().detach() if normalize else loss


def fql_distillation_loss(one_step_actions: torch.Tensor, flow_actions: torch.Tensor) -> torch.Tensor:
    """FQL's distillation term ||mu_omega(s, z) - mu_theta(s, z)||^2, averaged over the batch and the action's dims
    (the authors' jnp.mean); ``flow_actions`` (the BC flow's ODE from the same z) carry no gradient. Scalar."""
    return (one_step_actions - flow_actions.detach()).pow(2).mean()
