"""The reverse denoising chain, written once for every sampler in drl.

    x_T -> x_{T-1} -> ... -> x_0,   each step drl.sampling.denoising_step (the function the update re-scores with)

Three callers: the rollout collector (no gradient; every x_t and log-prob recorded for the update),
AlignProp's differentiable samples (gradients through chosen steps, optionally checkpointed, ReFL's
early stop; nothing recorded) and a diffusion policy's actions (gradients as the caller has them).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from drl.sampling import NoiseSchedule, denoising_step


@dataclass
class Chain:
    """What a chain of S steps leaves; the recorded fields are None when ``record=False``."""

    sample: torch.Tensor  # [B, *D] x_0 (or, stopped early, that step's prediction x̂_0)
    latents: torch.Tensor | None  # [B, S + 1, *D] x_T, ..., x_0
    timesteps: torch.Tensor | None  # [B, S]
    log_probs: torch.Tensor | None  # [B, S] float32, log p(x_{t-1} | x_t)
    stochastic: torch.Tensor | None  # [S] bool: the step adds noise (a deterministic step's log-prob is not a density)


def gaussian_noise(generator: torch.Generator | None, draw_dtype: torch.dtype, device: torch.device, dtype: torch.dtype):
    """shape -> z ~ N(0, I): drawn on the CPU generator in ``draw_dtype`` (runs reproduce across devices), then moved."""
    return lambda shape: torch.randn(shape, generator=generator, dtype=draw_dtype).to(device, dtype)


def run_chain(
    schedule: NoiseSchedule,
    x: torch.Tensor,
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: Callable[[tuple], torch.Tensor],
    *,
    eta: float,
    record: bool = True,
    grad_steps: torch.Tensor | None = None,
    checkpoint_steps: bool = False,
    stop_step: int | None = None,
    min_std: float = 0.0,
) -> Chain:
    """Denoise x_T [B, *D] through every timestep of ``schedule``.

    ``denoise(x_t, t [B])`` is the model's output; ``noise(shape)`` draws each step's z (reparameterised:
    x_{t-1} = mu_theta + sigma_t * z, so gradients flow through mu_theta).
    ``grad_steps`` [S] bool: gradients on at those steps only (elsewhere the step runs without a graph,
    which cuts the gradient path); None leaves the caller's grad mode. ``checkpoint_steps``: recompute
    each step with gradients in the backward pass (only x_t is kept per step). ``stop_step`` (ReFL): stop
    at that step and return its x̂_0. ``min_std``: floor of every step's std (DPPO's exploration noise).
    """
    n = x.shape[0]
    timesteps = schedule.timesteps.to(x.device)
    latents, log_probs, stochastic = [x], [], []
    for i, t in enumerate(timesteps):
        t_batch = t.expand(n)
        z = noise(x.shape)  # [B, *D]
        with torch.set_grad_enabled(bool(grad_steps[i])) if grad_steps is not None else contextlib.nullcontext():
            # partial binds this step's t and z now: a checkpointed step is recomputed later, in backward.
            step = functools.partial(_step, schedule, denoise, t=t_batch, noise=z, eta=eta, min_std=min_std)
            if checkpoint_steps and grad_steps is not None and bool(grad_steps[i]):
                x_prev, x0, log_prob, step_stochastic = checkpoint(step, x, use_reentrant=False)
            else:
                x_prev, x0, log_prob, step_stochastic = step(x)
        if i == stop_step:
            break
        x = x_prev
        if record:
            latents.append(x)
            log_probs.append(log_prob)
            stochastic.append(bool(step_stochastic[0]))
    final = x0 if stop_step is not None else x
    if not record:
        return Chain(final, None, None, None, None)
    return Chain(
        sample=final,
        latents=torch.stack(latents, dim=1),
        timesteps=timesteps.unsqueeze(0).expand(n, len(timesteps)).clone(),
        log_probs=torch.stack(log_probs, dim=1),
        stochastic=torch.tensor(stochastic, device=x.device),
    )


def _step(schedule, denoise, x, t, noise, eta, min_std):
    """x_t -> (x_{t-1}, x̂_0, log-prob [B], stochastic [B])."""
    out = denoising_step(schedule, denoise(x, t), t, x, eta=eta, noise=noise, min_std=min_std)
    return out.prev_sample, out.pred_original_sample, out.log_prob, out.stochastic
