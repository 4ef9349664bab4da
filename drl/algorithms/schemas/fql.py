"""algorithm=fql: Flow Q-Learning (Park et al. 2025), offline RL with a flow BC policy, a one-step policy trained on Q
and distilled from it, and twin critics (drl/algorithms/fql.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from drl.algorithms.schemas.base import AlgorithmConfig
from drl.checks import all_positive, choice, fraction, positive


@dataclass
class FQLConfig(AlgorithmConfig):
    """Flow Q-Learning (Park, Li & Levine 2025, "Flow Q-Learning"): offline, on a flow policy (model=flow_policy).
    lr trains the flow BC policy and the one-step policy (one optimizer, as the authors' one Adam)."""

    name: str = "fql"
    lr: float = 3e-4
    critic_lr: float = 3e-4
    """Learning rate of the twin Q networks."""
    alpha: float = 10.0
    """Weight of the distillation term alpha * ||mu_omega(s, z) - flow ODE(s, z)||^2 (the authors' alpha; tuned per task)."""
    q_agg: str = "mean"
    """How the TD target and the actor's Q term combine the two critics: mean (the authors' default) or min (clipped double Q)."""
    normalize_q_loss: bool = False
    """Divide the actor's -Q term by mean |Q| (no gradient), as the authors' normalize_q_loss."""
    steps_per_epoch: int = 100
    """Gradient steps per epoch, each on train.batch_size transitions from the dataset."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    critic_hidden_dim: int = 256
    """Width of the critics' 3 hidden layers."""

    offline: ClassVar[bool] = True
    policy_kinds: ClassVar[tuple[str, ...]] = ("flow",)

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        all_positive(p, self, "algorithm", ("critic_lr", "steps_per_epoch", "critic_hidden_dim"))
        positive(p, "algorithm.alpha", self.alpha, allow_zero=True)
        choice(p, "algorithm.q_agg", self.q_agg, ("mean", "min"))
        fraction(p, "algorithm.tau", self.tau)
        if cfg.scheduler.eta != 0:
            p.append("algorithm=fql distils the flow ODE (noise -> action): set scheduler.eta=0.")
        return p
