"""algorithm=nft: DiffusionNFT, policy improvement on the forward process (drl/algorithms/nft.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from drl.algorithms.schemas.base import GroupAdvantageConfig
from drl.checks import fraction, positive


@dataclass
class NFTConfig(GroupAdvantageConfig):
    name: str = "nft"
    lr: float = 1e-4
    beta: float = 1.0
    """Step size of the implicit policies v± = v_old ± beta (v_theta - v_old) (DiffusionNFT's beta; 0.1-1)."""
    group_size: int = 4
    """Samples per prompt in an epoch; > 1 normalises rewards within each prompt's group, 1 over the batch."""
    adv_clip_max: float = 2.0
    """Normalised rewards A are clipped to [-c, c] and mapped to the optimality probability r = A / (2c) + 1/2."""
    group_std: str = "batch"
    """NVlabs' DiffusionNFT default (sample.global_std=True); measured on the toy world: docs/results/2026-12-03-nft-normalisation.md."""
    timestep_fraction: float = 0.5
    """Fraction of the sampling schedule's timesteps each sample is trained at (a random subset, fresh noise)."""
    adaptive_weighting: bool = True
    """Weight each sample's x̂_0-space error by 1 / its mean absolute error (DiffusionNFT); false: plain squared error."""
    num_inner_epochs: int = 1
    """Passes over each epoch's (sample, timestep) pairs."""
    minibatches: int = 2
    """Optimizer steps per inner epoch."""

    takes_kl_coef: ClassVar[bool] = True

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        positive(p, "algorithm.beta", self.beta)
        positive(p, "algorithm.adv_clip_max", self.adv_clip_max)
        fraction(p, "algorithm.timestep_fraction", self.timestep_fraction)
        positive(p, "algorithm.num_inner_epochs", self.num_inner_epochs)
        positive(p, "algorithm.minibatches", self.minibatches)
        return p
