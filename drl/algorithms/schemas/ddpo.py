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
    the gradient norm of any other step). With an SDE window, it keeps the window off the last k steps instead."""
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
    sde_window: int = 0
    """SDE window (Flow-GRPO-Fast; MixGRPO, Li et al. 2025): only this many consecutive steps of each trajectory are sampled
    with noise, stored and trained; the others run the deterministic ODE (flow: Euler or ode_solver; DDIM models: eta = 0),
    so the update trains sde_window of the S steps (drl/sde_window.py); the fixed-noise evaluation and grids keep the full
    sampler, so runs with and without a window are compared alike. 0: no window, every step is stochastic."""
    sde_window_position: str = "random"
    """Where the window sits each epoch: fixed (at sde_window_start), random (drawn anew every epoch from 0..sde_window_max_start,
    MixGRPO's random strategy) or sliding (MixGRPO's progressive one: from sde_window_start, sde_window_stride steps later
    every sde_window_every epochs, back to sde_window_start once past sde_window_max_start)."""
    sde_window_start: int = 0
    """fixed: the window's first step (0 = the noisiest); sliding: its first position."""
    sde_window_max_start: int = -1
    """The last first-step a random or sliding window takes; -1: the last that fits, S - sde_window - skip_last_steps
    (Flow-GRPO-Fast draws its start from 0..S//2)."""
    sde_window_every: int = 1
    """sliding: epochs between two moves of the window (MixGRPO's iters_per_group, 25 in its scripts)."""
    sde_window_stride: int = 1
    """sliding: steps the window moves each time (MixGRPO's prog_overlap_step)."""
    ode_solver: str = "euler"
    """With sde_window > 0, the solver of the deterministic steps outside the window: euler (the sampler's own step: the
    flow ODE's Euler step, DDIM with eta = 0) or dpmpp_2m (flow models: DPM-Solver++(2M), Lu et al. 2022, second order at
    one denoiser call per step, as MixGRPO's; checked against diffusers' DPMSolverMultistepScheduler)."""
    ode_steps_after_window: int = 0
    """With sde_window > 0 on a flow model: finish the path after the window in this many solver steps instead of the
    schedule's (MixGRPO's compressed post-window schedule, its Flash variant); nothing after the window is trained, so
    fewer steps there only cost sample quality. 0: the schedule's own steps."""
    ratio_norm: bool = False
    """GRPO-Guard's ratio normalisation (Wang et al. 2025, "GRPO-Guard: Mitigating Implicit Over-Optimization in Flow
    Matching via Regulated Clipping"): the log-ratio of a step becomes (log ratio + ||mu - mu_old||^2 / 2 std^2) * std,
    i.e. <z, mu - mu_old> (reduced as the log-prob), which removes the ratio's negative bias and its step-dependent scale, so
    the clip range acts alike at every step. Stores each sampled step's mean mu_old (memory: one latent per stored step)."""
    step_reweight: bool = False
    """GRPO-Guard's per-step gradient reweighting (flow models): each transition's clipped loss is divided by its -dσ, so
    that every step's gradient has the same size (as verl-omni's GRPOGuardLoss); used with ratio_norm in the paper."""

    takes_kl_coef: ClassVar[bool] = True

    def window_max_start(self, num_steps: int) -> int:
        """The last first-step of a random or sliding SDE window in a chain of ``num_steps`` steps."""
        if self.sde_window_max_start >= 0:
            return self.sde_window_max_start
        return num_steps - self.sde_window - self.skip_last_steps

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
        if self.kl_form == "flow_grpo" and s.sde_type == "cps":
            p.append("algorithm.kl_form=flow_grpo uses Flow-GRPO's SDE coefficient, which scheduler.sde_type=cps does not have: use algorithm.kl_form=exact.")
        p += self._window_problems(cfg)
        if self.step_reweight and s.kind != "flow":
            p.append(f"algorithm.step_reweight is GRPO-Guard's 1/(-dσ) weighting of flow SDE steps (scheduler=flow); scheduler.kind={s.kind} has no σ steps.")
        if cfg.env is not None and self.per_prompt_stat_tracking and self.group_size == 1:
            p.append("algorithm=ddpo on a control task has no prompts to track: set algorithm.per_prompt_stat_tracking=false.")
        if min(cfg.train.samples_per_epoch, cfg.train.batch_size) > 0 and cfg.train.samples_per_epoch < self.minibatches:
            p.append(f"train.samples_per_epoch={cfg.train.samples_per_epoch} is smaller than algorithm.minibatches={self.minibatches}.")
        return p

    def _window_problems(self, cfg) -> list[str]:
        """The SDE window's keys (sde_window*, ode_solver, ode_steps_after_window)."""
        p: list[str] = []
        s, size = cfg.scheduler, self.sde_window
        positive(p, "algorithm.sde_window", size, allow_zero=True)
        choice(p, "algorithm.sde_window_position", self.sde_window_position, ("fixed", "random", "sliding"))
        choice(p, "algorithm.ode_solver", self.ode_solver, ("euler", "dpmpp_2m"))
        positive(p, "algorithm.ode_steps_after_window", self.ode_steps_after_window, allow_zero=True)
        positive(p, "algorithm.sde_window_every", self.sde_window_every)
        positive(p, "algorithm.sde_window_stride", self.sde_window_stride)
        positive(p, "algorithm.sde_window_start", self.sde_window_start, allow_zero=True)
        if size <= 0:
            if self.ode_solver != "euler" or self.ode_steps_after_window > 0:
                p.append("algorithm.ode_solver and algorithm.ode_steps_after_window solve the steps outside an SDE window: set algorithm.sde_window > 0.")
            return p
        if cfg.env is not None:
            p.append("algorithm.sde_window applies to image and video rollouts; a control task's policy samples every step.")
            return p
        if s.kind == "ddpm":
            p.append("algorithm.sde_window runs the steps outside the window as an ODE, which ancestral DDPM has not: use scheduler=ddim (eta > 0) or scheduler=flow.")
        if s.kind != "flow" and (self.ode_solver != "euler" or self.ode_steps_after_window > 0):
            p.append(f"algorithm.ode_solver=dpmpp_2m and algorithm.ode_steps_after_window are flow-ODE solvers (scheduler=flow); scheduler.kind={s.kind} takes DDIM's own step outside the window.")
        max_start = self.window_max_start(s.num_steps)
        if size + self.skip_last_steps > s.num_steps:
            p.append(f"algorithm.sde_window={size} (+ skip_last_steps={self.skip_last_steps}) does not fit in scheduler.num_steps={s.num_steps}.")
        elif max_start + size > s.num_steps:
            p.append(f"algorithm.sde_window_max_start={max_start} puts the window past the last step: at most {s.num_steps - size}.")
        elif self.sde_window_position != "random" and self.sde_window_start > max_start:
            p.append(f"algorithm.sde_window_start={self.sde_window_start} is past the window's last start, {max_start} (scheduler.num_steps - sde_window - skip_last_steps, or sde_window_max_start).")
        return p
