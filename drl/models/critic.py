"""Small networks of actor-critic control: twin Q functions, SAC's tanh-Gaussian actor, ReinFlow's noise network
and FQL's one-step policy.

Shape legend: B batch, O observation size, A action size (or noise size, for DSRL), E time-feature size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from drl.models.policy import mish_mlp


class TwinQ(nn.Module):
    """Q1(s, a), Q2(s, a): two independent MLPs (Fujimoto et al. 2018) on [s, a]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 256, num_layers: int = 3):
        super().__init__()
        self.q1 = mish_mlp(obs_dim + act_dim, hidden_dim, num_layers, 1)
        self.q2 = mish_mlp(obs_dim + act_dim, hidden_dim, num_layers, 1)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """states [B, O], actions [B, A] -> (Q1 [B], Q2 [B]); a history [B, To, O] and a chunk [B, Ta, A] are read flattened."""
        x = torch.cat([states.flatten(1), actions.flatten(1)], dim=1)
        return self.q1(x).squeeze(1), self.q2(x).squeeze(1)

    def q_min(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.minimum(*self(states, actions))


class ValueFunction(nn.Module):
    """V(s): a Mish MLP on the state (an observation history [B, To, O] read flattened), DPPO's critic."""

    def __init__(self, obs_dim: int, hidden_dim: int = 256, num_layers: int = 3):
        super().__init__()
        self.net = mish_mlp(obs_dim, hidden_dim, num_layers, 1)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """states [B, O] or [B, To, O] -> V [B]."""
        return self.net(states.flatten(1)).squeeze(1)


class TanhGaussianActor(nn.Module):
    """SAC's actor (Haarnoja et al. 2018, appendix C): a = bound * tanh(u), u ~ N(mu(s), sigma(s)^2)."""

    LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0

    def __init__(self, obs_dim: int, act_dim: int, bound: float = 1.0, hidden_dim: int = 256, num_layers: int = 2):
        super().__init__()
        self.bound = bound
        self.net = mish_mlp(obs_dim, hidden_dim, num_layers, 2 * act_dim)

    def forward(self, states: torch.Tensor, generator: torch.Generator | None = None, deterministic: bool = False):
        """states [B, O] -> (actions [B, A] in [-bound, bound], log_prob [B]); reparameterised."""
        mean, log_std = self.net(states).chunk(2, dim=1)
        log_std = log_std.clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        std = log_std.exp()
        eps = torch.zeros_like(mean) if deterministic else torch.randn(mean.shape, generator=generator).to(mean)
        u = mean + std * eps
        # log N(u; mean, std) - sum log |d a / d u|, with log(1 - tanh^2 u) = 2 (log 2 - u - softplus(-2u)).
        log_prob = (-0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(1)
        log_prob = log_prob - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(1) - mean.shape[1] * math.log(self.bound)
        return self.bound * torch.tanh(u), log_prob


class BoundedStdNetwork(nn.Module):
    """ReinFlow's noise network sigma_theta'(s[, t]) (Zhang et al. 2025, sec. 4; ReinFlow/ReinFlow, model/flow/mlp_flow.py
    ExploreNoiseNet): a Tanh MLP whose output squashes into log-variances between log(min_std^2) and log(max_std^2),

        log sigma^2 = log min^2 + (log max^2 - log min^2) (tanh(h) + 1) / 2,     sigma in [min_std, max_std],

    one std per action dimension. ``time_dim`` > 0: it also reads time features of the flow step (the policy's own
    time embedding, detached, as the authors do); 0: state only.
    """

    def __init__(self, obs_dim: int, act_dim: int, min_std: float, max_std: float, hidden_dim: int = 64, num_layers: int = 2, time_dim: int = 0):
        super().__init__()
        self.min_std, self.max_std = min_std, max_std
        parts: list[nn.Module] = []
        for k in range(num_layers):
            parts += [nn.Linear(obs_dim + time_dim if k == 0 else hidden_dim, hidden_dim), nn.Tanh()]
        self.net = nn.Sequential(*parts, nn.Linear(hidden_dim, act_dim))

    def forward(self, states: torch.Tensor, time_features: torch.Tensor | None = None) -> torch.Tensor:
        """states [B, O] (a history read flattened), time_features [B, E] or None -> std [B, A] in [min_std, max_std]."""
        x = states.flatten(1) if time_features is None else torch.cat([states.flatten(1), time_features], dim=1)
        low, high = 2 * math.log(self.min_std), 2 * math.log(self.max_std)
        log_var = low + (high - low) * (torch.tanh(self.net(x)) + 1) / 2
        return (0.5 * log_var).exp()


class OneStepPolicy(nn.Module):
    """FQL's one-step policy mu_omega(s, z) (Park et al. 2025, sec. 4): noise z and state s -> action in one call."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 256, num_layers: int = 3):
        super().__init__()
        self.net = mish_mlp(obs_dim + act_dim, hidden_dim, num_layers, act_dim)

    def forward(self, states: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """states [B, O] or [B, To, O], noise [B, A] or [B, Ta, A] -> actions, noise's shape (unclipped)."""
        return self.net(torch.cat([states.flatten(1), noise.flatten(1)], dim=1)).view(noise.shape)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) target + tau source."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.lerp_(s, tau)
