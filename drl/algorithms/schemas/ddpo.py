"""algorithm=ddpo: PPO over the denoising MDP, with GRPO's group-relative options (drl/algorithms/ddpo.py,
and drl/algorithms/policy_ddpo.py on control tasks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from drl.algorithms.schemas.base import GroupAdvantageConfig
from drl.checks import choice, fraction, positive


@dataclass
class DDPOConfig(GroupAdvantageConfig):
    name: str = "ddpo"
    lr: float = 3e-4
    clip_range: float = 1e-3
    """PPO clip range epsilon of the importance ratio (tuned for logprob_reduction: ddpo-pytorch uses 1e-4 with mean)."""
    adv_clip_max: float = 5.0
    """Clip advantages to [-adv_clip_max, adv_clip_max]."""
    num_inner_epochs: int = 1
    """Passes over each epoch's samples."""
    minibatches: int = 2
    """Optimizer steps per inner epoch (the samples' (sample, step) pairs are split evenly)."""
    timestep_fraction: float = 1.0
    """Fraction of each trajectory's stochastic steps trained on (a random subset per sample)."""
    skip_last_steps: int = 0
    """Leave the last k stochastic steps out of training: their std is tiny, so their log-prob gradient (~1/std)
    dominates the update, while the reward hardly depends on them (on the toy world the last two carry ~10x
    the gradient norm of any other step)."""
    logprob_reduction: str = "mean"
    """How the per-step Gaussian log-prob is reduced over latent dims for the ratio: sum (exact) or mean (ddpo-pytorch)."""
    group_size: int = 1
    """Samples per prompt in an epoch; > 1 normalises advantages within each prompt's group (group-relative)."""
    share_group_noise: bool = False
    """With group_size > 1: the group's samples start from the same x_T (they differ only by the step noise)."""
    kl_form: str = "exact"
    """The per-step KL of kl_coef: exact (||mu - mu_ref||^2 / 2 std^2 with the step's std, reduced as the log-prob) or
    flow_grpo (flow models: Flow-GRPO's mean_d ||mu - mu_ref||^2 / 2 g^2, g the SDE coefficient without sqrt(-dt); exact
    with logprob_reduction=mean is 1/(-dt) times it, so a kl_coef copied from Flow-GRPO needs this form)."""
    per_prompt_stat_tracking: bool = True
    """With group_size=1: normalise rewards per prompt (running mean/std) instead of over the batch."""
    stat_buffer_size: int = 32
    """Rewards remembered per prompt by the stat tracker."""
    stat_min_count: int = 8
    """Below this many rewards for a prompt, fall back to batch statistics."""

    takes_kl_coef: ClassVar[bool] = True

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        s = cfg.scheduler
        positive(p, "algorithm.clip_range", self.clip_range)
        positive(p, "algorithm.adv_clip_max", self.adv_clip_max)
        positive(p, "algorithm.num_inner_epochs", self.num_inner_epochs)
        positive(p, "algorithm.minibatches", self.minibatches)
        fraction(p, "algorithm.timestep_fraction", self.timestep_fraction)
        choice(p, "algorithm.logprob_reduction", self.logprob_reduction, ("sum", "mean"))
        choice(p, "algorithm.kl_form", self.kl_form, ("exact", "flow_grpo"))
        if self.kl_form == "flow_grpo" and s.kind != "flow":
            p.append(f"algorithm.kl_form=flow_grpo is Flow-GRPO's KL for flow models (scheduler=flow); got scheduler.kind={s.kind}.")
        positive(p, "algorithm.skip_last_steps", self.skip_last_steps, allow_zero=True)
        positive(p, "algorithm.stat_buffer_size", self.stat_buffer_size)
        if s.kind in ("ddim", "flow") and s.eta == 0:
            p.append("algorithm=ddpo needs a stochastic sampler: set scheduler.eta > 0 or use scheduler=ddpm.")
        if cfg.env is not None and self.per_prompt_stat_tracking and self.group_size == 1:
            p.append("algorithm=ddpo on a control task has no prompts to track: set algorithm.per_prompt_stat_tracking=false.")
        if min(cfg.train.samples_per_epoch, cfg.train.batch_size) > 0 and cfg.train.samples_per_epoch < self.minibatches:
            p.append(f"train.samples_per_epoch={cfg.train.samples_per_epoch} is smaller than algorithm.minibatches={self.minibatches}.")
        return p
