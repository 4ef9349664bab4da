"""algorithm=alignprop: backpropagation of a differentiable reward through the sampling chain (AlignProp, DRaFT,
ReFL, VADER; drl/algorithms/alignprop.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from drl.algorithms.schemas.base import AlgorithmConfig
from drl.checks import choice, positive


@dataclass
class AlignPropConfig(AlgorithmConfig):
    name: str = "alignprop"
    lr: float = 1e-4
    truncation: str = "random"
    """Steps that carry gradient: all, last (the last truncation_steps: DRaFT-K) or random (last K ~ U{1..truncation_steps})."""
    truncation_steps: int = 2
    """K of truncation=last / the largest K of truncation=random."""
    checkpoint_denoiser: bool = True
    """Recompute each denoiser call's activations in the backward pass (memory for compute)."""
    gradient_accumulation: int = 1
    """Batches of train.batch_size samples per optimizer step."""
    batches_per_call: int = 1
    """Batches of train.batch_size samples whose chains run together as one batch of denoiser calls, each with its own truncation draw (the same gradient; speed for memory); divides gradient_accumulation."""
    refl: bool = False
    """ReFL instead of the full chain: stop at a random one of the last truncation_steps steps and score its x̂_0."""

    needs_differentiable_reward: ClassVar[bool] = True
    takes_kl_coef: ClassVar[bool] = True

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        choice(p, "algorithm.truncation", self.truncation, ("all", "last", "random"))
        positive(p, "algorithm.truncation_steps", self.truncation_steps)
        positive(p, "algorithm.gradient_accumulation", self.gradient_accumulation)
        positive(p, "algorithm.batches_per_call", self.batches_per_call)
        if self.batches_per_call > 0 and self.gradient_accumulation > 0 and self.gradient_accumulation % self.batches_per_call:
            p.append(f"algorithm.batches_per_call ({self.batches_per_call}) must divide algorithm.gradient_accumulation "
                     f"({self.gradient_accumulation}): the batches sharing a call belong to one optimizer step.")
        if self.refl and self.batches_per_call > 1:
            p.append("algorithm.refl=true stops each batch at its own step, so it takes algorithm.batches_per_call=1.")
        return p
