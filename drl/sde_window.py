"""The SDE window: only a few consecutive steps of each trajectory are stochastic, stored and trained.

Flow-GRPO-Fast (Liu et al. 2025, yifan123/flow_grpo's train_sd3_fast.py) and MixGRPO (Li et al. 2025,
"MixGRPO: Unlocking Flow-based GRPO Efficiency with Mixed ODE-SDE", Tencent-Hunyuan/MixGRPO) sample most
of the chain with the deterministic ODE and only a window of ``size`` steps with the SDE; the policy
gradient is taken at the window's steps alone, so the update costs size/S of the full one. Outside the
window, no noise is drawn into the sample, so:

- before the window, the samples of a group that share x_T (``share_group_noise``) are identical: their
  ODE prefix runs once per group (Flow-GRPO-Fast branches the group at the window's first step);
- after the window, a higher-order solver (DPM-Solver++(2M), drl.sampling_flow.flow_dpmpp_2m_step) may
  finish the path, in fewer steps than the schedule's (MixGRPO's compressed "post" schedule; its Flash
  variant), since nothing after the window is trained.

Where the window sits, by epoch e (step indices 0 .. S-1; the window is [start, start + size)):

    fixed    start = sde_window_start
    random   start ~ U{0, ..., max_start}, a fresh draw every epoch (MixGRPO's "random" strategy;
             Flow-GRPO-Fast draws from {0, ..., S // 2}: set max_start to S // 2)
    sliding  start = start_0 + stride * (e // every), rolled back to start_0 once it passes max_start
             (MixGRPO's "progressive" strategy with prog_overlap and roll_back: the window moves by
             prog_overlap_step every iters_per_group iterations)

A random window is drawn from ``window_generator(seed)``, seeded by the run's seed and not the rank's: every rank of a
data-parallel run draws the same start, so all ranks sample and train the same steps (equal work per rank, and the
averaged gradient is over one set of steps), with no collective call.

max_start defaults to S - size (- skip_last_steps), so that the window always holds ``size`` steps.
(MixGRPO lets the window run past max_timesteps and shrink there, down to an empty window at its last
position; here it rolls back while it is still whole.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from drl.sampling_flow import FlowSchedule

@dataclass(frozen=True)
class SDEWindow:
    """Which steps of one epoch's chains are stochastic, and how the deterministic ones are solved."""

    start: int
    """First stochastic step (an index into the schedule's S steps)."""
    size: int
    """Stochastic steps: [start, start + size)."""
    ode_solver: str = "euler"
    """Deterministic steps: euler (the sampler's own first-order step: the flow ODE's Euler step, DDIM with eta = 0)
    or dpmpp_2m (flow models: DPM-Solver++(2M))."""
    tail_steps: int = 0
    """Steps after the window: 0 keeps the schedule's; k > 0 re-discretises the rest of the path into k steps (flow)."""

    @property
    def stop(self) -> int:
        return self.start + self.size


WINDOW_SEED_OFFSET = 7_919  # the window's stream: apart from the rank's sampling (seed + r·stride) and update (+ 1) streams


def window_generator(seed: int) -> torch.Generator:
    """The random window's generator: the same on every rank (the run's seed, not the rank's)."""
    return torch.Generator().manual_seed(seed + WINDOW_SEED_OFFSET)


def window_start(position: str, epoch: int, generator: torch.Generator, start: int, max_start: int, every: int = 1, stride: int = 1) -> int:
    """The window's first step in epoch ``epoch`` (module docstring); ``max_start`` >= ``start`` >= 0."""
    if position == "fixed":
        return start
    if position == "random":
        return int(torch.randint(0, max_start + 1, (1,), generator=generator))
    if position == "sliding":
        positions = (max_start - start) // stride + 1  # start, start + stride, ..., <= max_start
        return start + stride * ((epoch // every) % positions)
    raise ValueError(f"Unknown SDE window position {position!r}; use fixed, random or sliding.")


def step_etas(num_steps: int, window: SDEWindow, eta: float) -> list[float]:
    """The noise level of every step: ``eta`` inside the window, 0 (the ODE) outside it. [S]"""
    return [eta if window.start <= i < window.stop else 0.0 for i in range(num_steps)]


def compress_tail(schedule: FlowSchedule, stop: int, steps: int) -> FlowSchedule:
    """``schedule`` with its levels after step ``stop`` (from σ_stop down to 0) replaced by ``steps`` steps, evenly
    spaced in the unshifted level u and shifted as the scheduler shifts (σ = s·u / (1 + (s - 1)·u)), as MixGRPO
    rebuilds its post-window schedule. The first ``stop`` steps, the window's among them, keep their levels."""
    if not 0 < stop < schedule.num_steps:
        raise ValueError(f"compress_tail needs steps after the window: stop={stop} of {schedule.num_steps} steps.")
    s = schedule.shift
    sigma_stop = float(schedule.sigmas[stop])
    u_stop = sigma_stop / (s - (s - 1) * sigma_stop)  # the inverse of the shift
    u = torch.linspace(u_stop, 0.0, steps + 1, dtype=torch.float64)[1:]
    tail = s * u / (1 + (s - 1) * u)  # [steps], the last is 0
    sigmas = torch.cat([schedule.sigmas[: stop + 1], tail])
    timesteps = (sigmas[:-1] * schedule.num_train_timesteps).float()
    timesteps[: stop + 1] = schedule.timesteps[: stop + 1]  # the window's timesteps exactly as stored and re-scored
    return replace(schedule, sigmas=sigmas, timesteps=timesteps)
