"""algorithm=dpo: Diffusion-DPO on preference pairs, online from the model's own groups or from a pairs file
(drl/algorithms/dpo.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from drl.algorithms.schemas.base import GroupConfig
from drl.checks import positive


@dataclass
class DPOConfig(GroupConfig):
    name: str = "dpo"
    lr: float = 3e-4
    """Tuned on the toy world (toy_alignment: 1e-4 gained +0.9 ± 1.0 in 40 epochs, 3e-4 gained +7.0 ± 1.0)."""
    beta: float = 5000.0
    """Diffusion-DPO's beta·T on per-dimension mean denoising errors, logits = -beta/2 (error differences); its official launchers use 5000 (SD1.5 and SDXL)."""
    group_size: int = 4
    """Online: samples per prompt; each group gives one pair, its best vs its worst sample by reward (4: a clearer
    preference than a random pair of 2, for half the pairs)."""
    min_reward_gap: float = 0.0
    """Online: drop pairs whose rewards differ by no more than this (ties carry no preference)."""
    pairs_path: Optional[str] = None
    """Offline: a JSONL or CSV file of (prompt, chosen, rejected) image paths; set, it replaces online sampling."""
    timesteps_per_pair: int = 4
    """Random training timesteps (each with its own noise, shared by the two images) per pair and pass."""
    num_inner_epochs: int = 1
    """Passes over each epoch's pairs."""
    minibatches: int = 4
    """Optimizer steps per inner epoch (the loss is cheap next to sampling, so several steps per epoch pay)."""

    takes_kl_coef: ClassVar[bool] = True

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        positive(p, "algorithm.beta", self.beta)
        positive(p, "algorithm.min_reward_gap", self.min_reward_gap, allow_zero=True)
        positive(p, "algorithm.timesteps_per_pair", self.timesteps_per_pair)
        positive(p, "algorithm.num_inner_epochs", self.num_inner_epochs)
        positive(p, "algorithm.minibatches", self.minibatches)
        if self.pairs_path is None and self.group_size < 2:
            p.append(f"algorithm=dpo online needs algorithm.group_size >= 2 (got {self.group_size}) to form pairs, or a pairs file (algorithm.pairs_path).")
        return p
