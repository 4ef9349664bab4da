"""algorithm=diffusion_ql: offline RL with a diffusion policy and twin Q critics (Wang et al. 2023;
drl/algorithms/diffusion_ql.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from drl.algorithms.schemas.base import AlgorithmConfig
from drl.checks import all_positive, choice, fraction, positive


@dataclass
class DiffusionQLConfig(AlgorithmConfig):
    name: str = "diffusion_ql"
    lr: float = 3e-4
    """Actor (diffusion policy) learning rate."""
    critic_lr: float = 3e-4
    """Learning rate of the twin Q networks."""
    q_weight: float = 1.0
    """Weight of the Q term (the paper's eta): actor loss = BC loss + q_weight * (-Q / mean|Q|) (Wang et al. 2023, eq. 3)."""
    steps_per_epoch: int = 100
    """Gradient steps per epoch, each on train.batch_size transitions from the dataset."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    ema_decay: float = 0.995
    """Decay of the EMA actor that computes the critic's target actions (the live actor acts at evaluation, as in the
    official code's sample_action)."""
    ema_start: int = 1000
    """Gradient steps before the EMA starts averaging (step_start_ema)."""
    ema_warmup: str = "copy"
    """The EMA actor before ema_start: copy (copies the live actor every ema_every steps) or initial (stays at the
    initial weights, as the official code does)."""
    ema_every: int = 5
    """Update the EMA actor every this many gradient steps."""
    candidates: int = 50
    """Actions sampled per state at evaluation; one is drawn with probability softmax(Q) (the paper's selection)."""
    critic_hidden_dim: int = 256
    """Width of the critics' 3 hidden layers."""

    offline: ClassVar[bool] = True

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        all_positive(p, self, "algorithm", ("critic_lr", "steps_per_epoch", "ema_every", "candidates", "critic_hidden_dim"))
        positive(p, "algorithm.q_weight", self.q_weight, allow_zero=True)
        choice(p, "algorithm.ema_warmup", self.ema_warmup, ("copy", "initial"))
        fraction(p, "algorithm.tau", self.tau)
        fraction(p, "algorithm.ema_decay", self.ema_decay)
        return p
