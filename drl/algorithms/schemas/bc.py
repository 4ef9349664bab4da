"""algorithm=bc: behaviour cloning of a diffusion policy on a control task's dataset (drl/algorithms/policy_bc.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from drl.algorithms.schemas.base import AlgorithmConfig
from drl.checks import positive


@dataclass
class BCConfig(AlgorithmConfig):
    """Behaviour cloning of a diffusion or flow policy on a control task's dataset (L_simple on state-action pairs:
    the noise for a diffusion policy, the rectified-flow velocity eps - a for a flow policy)."""

    name: str = "bc"
    lr: float = 1e-3
    steps_per_epoch: int = 50
    """Optimizer steps per epoch, each on train.batch_size transitions from the dataset."""
    warmup_steps: int = 200
    ema_decay: float = 0.999
    """The exported policy is an EMA of the weights by default."""

    offline: ClassVar[bool] = True
    policy_kinds: ClassVar[tuple[str, ...]] = ("diffusion", "flow")

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        positive(p, "algorithm.steps_per_epoch", self.steps_per_epoch)
        return p
