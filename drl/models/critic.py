"""Small networks of actor-critic control: twin Q functions and SAC's tanh-Gaussian actor.

Shape legend: B batch, O observation size, A action size (or noise size, for DSRL).
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


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) target + tau source."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.lerp_(s, tau)
