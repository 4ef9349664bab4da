"""algorithm=awm: Advantage Weighted Matching, policy gradient as advantage-weighted flow/score matching (drl/algorithms/awm.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from drl.algorithms.schemas.base import GroupAdvantageConfig
from drl.checks import choice, fraction, positive

AWM_WEIGHTINGS = ("uniform", "t", "t2", "huber", "ghuber")


@dataclass
class AWMConfig(GroupAdvantageConfig):
    name: str = "awm"
    lr: float = 3e-4
    """AdamW learning rate (the authors' 3e-4, with LoRA)."""
    group_size: int = 4
    """Samples per prompt in an epoch; > 1 normalises rewards within each prompt's group, 1 over the batch."""
    clip_range: float = 1.0
    """PPO clip range of the ratio exp(L_theta - L_old) of the matching log-likelihoods (the authors' SD3.5 configs: 1; their base: 1e-4)."""
    adv_clip_max: float = 5.0
    """Clip advantages to [-adv_clip_max, adv_clip_max] (the authors' 5)."""
    timestep_fraction: float = 0.5
    """Fraction of the sampling schedule's timesteps each sample is trained at (a random subset, fresh noise; the authors
    train 6 of 14 steps)."""
    weighting: str = "uniform"
    """The matching log-likelihood L = -w(e, σ) of the per-sample error e = mean_d (output - target)^2: uniform (e), t (σ e),
    t2 (σ^2 e), huber (σ (sqrt(e) - 1e-5)) or ghuber (σ ((e + 1e-10)^p - 1e-10^p) / p, p = ghuber_power; the authors' SD3.5
    choice); all but uniform weight by the flow level σ (scheduler=flow)."""
    ghuber_power: float = 0.25
    """p of the ghuber weighting (the authors' 0.25)."""
    num_inner_epochs: int = 1
    """Passes over each epoch's (sample, timestep) pairs."""
    minibatches: int = 2
    """Optimizer steps per inner epoch."""

    takes_kl_coef: ClassVar[bool] = True

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        positive(p, "algorithm.clip_range", self.clip_range)
        positive(p, "algorithm.adv_clip_max", self.adv_clip_max)
        positive(p, "algorithm.ghuber_power", self.ghuber_power)
        fraction(p, "algorithm.timestep_fraction", self.timestep_fraction)
        positive(p, "algorithm.num_inner_epochs", self.num_inner_epochs)
        positive(p, "algorithm.minibatches", self.minibatches)
        choice(p, "algorithm.weighting", self.weighting, AWM_WEIGHTINGS)
        if self.weighting != "uniform" and cfg.scheduler.kind != "flow":
            p.append(
                f"algorithm.weighting={self.weighting} weights by the flow level σ (scheduler=flow); "
                f"scheduler.kind={cfg.scheduler.kind} takes algorithm.weighting=uniform (L_simple's own weighting)."
            )
        return p
