"""algorithm=rwr: reward-weighted regression on the model's own samples (drl/algorithms/rwr.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from drl.algorithms.schemas.base import AlgorithmConfig
from drl.checks import choice, positive


@dataclass
class RWRConfig(AlgorithmConfig):
    name: str = "rwr"
    lr: float = 3e-5
    beta: float = 1.0
    """Inverse temperature: w_i = exp(beta * r_i), self-normalised to mean 1 over the epoch's samples."""
    reward_normalization: str = "batch"
    """Standardise rewards before weighting: batch (r - mean) / std, or none (raw rewards)."""
    max_weight: float = 0.0
    """Clip normalised weights to this value (0: no clip); guards against one sample taking all the weight."""
    center_weights: bool = True
    """Train with w_i - 1 (their mean) instead of w_i: equally weighted regression on own samples cancels out."""
    regression_states: str = "trajectory"
    """Noisy inputs of the weighted L_simple: trajectory (the chain's own x_t, every step) or forward (q(x_t | x_0), random t)."""
    updates_per_epoch: int = 1
    """Passes over the epoch's regression items (forward: each sample gets a fresh random t and noise every pass)."""
    minibatches: int = 4
    """Optimizer steps per pass."""

    takes_kl_coef: ClassVar[bool] = True

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        choice(p, "algorithm.reward_normalization", self.reward_normalization, ("batch", "none"))
        choice(p, "algorithm.regression_states", self.regression_states, ("trajectory", "forward"))
        positive(p, "algorithm.max_weight", self.max_weight, allow_zero=True)
        positive(p, "algorithm.updates_per_epoch", self.updates_per_epoch)
        positive(p, "algorithm.minibatches", self.minibatches)
        if min(cfg.train.samples_per_epoch, cfg.train.batch_size) > 0 and cfg.train.samples_per_epoch < self.minibatches:
            p.append(f"train.samples_per_epoch={cfg.train.samples_per_epoch} is smaller than algorithm.minibatches={self.minibatches}.")
        return p
