"""Pure loss pieces of the control algorithms; tests check each on hand-made numbers."""

from __future__ import annotations

import numpy as np
import torch

from drl.losses import l_simple
from drl.sampling import NoiseSchedule, add_noise, training_target


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

    states [B, O], actions [B, A] (clean a_0).
    """
    n = actions.shape[0]
    t = torch.randint(schedule.alphas_cumprod.numel(), (n,), generator=generator).to(actions.device)  # [B]
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
