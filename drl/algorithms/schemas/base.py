"""What every algorithm's schema has: the optimizer's keys, the regularisers, the facts and the common checks.

A schema is a dataclass that Hydra's ConfigStore holds under ``schema/algorithm/<name>``; its fields are
what ``algorithm.<key>=...`` sets. Facts are class attributes (``ClassVar``), not config keys: they say
what the algorithm is, and the loop, the domains and the checks read them instead of comparing names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List

from omegaconf import MISSING

from drl.checks import choice, fraction, positive


@dataclass
class AlgorithmConfig:
    name: str = MISSING
    """Which algorithm runs (its registry name: drl/algorithms/__init__.py)."""
    lr: float = 3e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW (beta1, beta2)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this value (0 disables clipping)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up over this many optimizer steps (0: none). Adam's first steps move every
    weight by about lr whatever the gradient's noise, which on a low-signal policy gradient is a random jump."""
    kl_coef: float = 0.0
    """Weight of a KL-to-reference penalty against reward hacking (the frozen base model; see drl/algorithms/regularization.py); only algorithms that have the term take it."""
    ema_decay: float = 0.0
    """Decay of an EMA of the trained weights that the grids and the exported model sample from (0: no EMA)."""

    # ------------------------------------------------------------------ facts (not config keys)
    offline: ClassVar[bool] = False
    """Learns from a fixed dataset (its collector reads it) instead of sampling from the policy."""
    needs_differentiable_reward: ClassVar[bool] = False
    """Backpropagates through the reward: every reward term must be differentiable."""
    takes_kl_coef: ClassVar[bool] = False
    """Has a KL-to-reference term that algorithm.kl_coef weighs."""
    trains_denoiser: ClassVar[bool] = True
    """Updates the denoiser's weights (False: steers a frozen one, e.g. through its input noise)."""
    policy_kinds: ClassVar[tuple[str, ...]] = ("diffusion",)
    """On control tasks: the policies it takes (model.policy_kind): diffusion (model=diffusion_policy), flow (model=flow_policy)."""

    @property
    def samples_per_group(self) -> int:
        """Samples drawn per prompt in an epoch (rewards may be normalised, or scored, within each group)."""
        return 1

    def problems(self, cfg) -> list[str]:
        """Every fault of this algorithm's keys in the composed ``cfg`` (a drl.config.Config), as sentences."""
        p: list[str] = []
        positive(p, "algorithm.lr", self.lr)
        positive(p, "algorithm.max_grad_norm", self.max_grad_norm, allow_zero=True)
        positive(p, "algorithm.warmup_steps", self.warmup_steps, allow_zero=True)
        positive(p, "algorithm.kl_coef", self.kl_coef, allow_zero=True)
        fraction(p, "algorithm.ema_decay", self.ema_decay, closed_low=True)
        return p


@dataclass
class GroupConfig(AlgorithmConfig):
    """An online algorithm that samples several images per prompt and compares them within the group."""

    group_size: int = 1
    """Samples per prompt in an epoch; > 1 compares each prompt's samples with each other (group-relative)."""

    @property
    def samples_per_group(self) -> int:
        return self.group_size

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        positive(p, "algorithm.group_size", self.group_size)
        samples = cfg.train.samples_per_epoch
        if self.group_size > 0 and samples % self.group_size:
            p.append(f"train.samples_per_epoch={samples} is not a multiple of algorithm.group_size={self.group_size}.")
        return p


@dataclass
class GroupAdvantageConfig(GroupConfig):
    """A group-sampling algorithm whose rewards are normalised to advantages: (r - mean) / max(std, floor) + eps."""

    adv_std_floor: float = 1e-6
    """With group_size > 1: divide by max(std, this), so near-tied groups do not blow up their advantages."""
    adv_std_eps: float = 0.0
    """With group_size > 1: added to that std (Flow-GRPO and NVlabs' DiffusionNFT divide by std + 1e-4: set 1e-4 to reproduce them)."""
    group_std: str = "group"
    """With group_size > 1, the std rewards are divided by: group (each group's own, GRPO) or batch (all the
    epoch's rewards: Flow-GRPO's and DiffusionNFT's global_std; a group of near-ties keeps small advantages);
    the mean is the group's either way."""

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        positive(p, "algorithm.adv_std_floor", self.adv_std_floor)
        positive(p, "algorithm.adv_std_eps", self.adv_std_eps, allow_zero=True)
        choice(p, "algorithm.group_std", self.group_std, ("group", "batch"))
        return p
