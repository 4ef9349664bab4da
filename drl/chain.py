"""The reverse denoising chain, written once for every sampler in drl.

    x_T -> x_{T-1} -> ... -> x_0,   each step drl.sampling.denoising_step (the function the update re-scores with)

Three callers: the rollout collector (no gradient; every x_t and log-prob recorded for the update; with an SDE
window (drl.sde_window) its chain runs in parts, only the window recorded),
AlignProp's differentiable samples (gradients through chosen steps, optionally checkpointed, ReFL's
early stop; nothing recorded) and a diffusion policy's actions (gradients as the caller has them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from drl.sampling import NoiseSchedule, denoising_step
from drl.sampling_flow import flow_dpmpp_2m_step


@dataclass
class Chain:
    """What a chain of S steps leaves; the recorded fields are None when ``record=False``."""

    sample: torch.Tensor  # [B, *D] x_0 (or, stopped early, that step's prediction x̂_0)
    latents: torch.Tensor | None  # [B, S + 1, *D] x_T, ..., x_0
    timesteps: torch.Tensor | None  # [B, S]
    log_probs: torch.Tensor | None  # [B, S] float32, log p(x_{t-1} | x_t)
    stochastic: torch.Tensor | None  # [S] bool: the step adds noise (a deterministic step's log-prob is not a density)
    means: torch.Tensor | None = None  # [B, S, *D] float32 μ_θ(x_t) of each step (record_means=True)
    last_x0: torch.Tensor | None = None  # [B, *D] the last step's x̂_0: a multistep solver's history for the next part


def gaussian_noise(generator: torch.Generator | None, draw_dtype: torch.dtype, device: torch.device, dtype: torch.dtype):
    """shape -> z ~ N(0, I): drawn on the CPU generator in ``draw_dtype`` (runs reproduce across devices), then moved."""
    return lambda shape: torch.randn(shape, generator=generator, dtype=draw_dtype).to(device, dtype)


def run_chain(
    schedule: NoiseSchedule,
    x: torch.Tensor,
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: Callable[[tuple], torch.Tensor],
    *,
    eta: float | list[float],
    record: bool = True,
    grad_steps: torch.Tensor | None = None,
    checkpoint_steps: bool = False,
    reentrant: bool = True,
    stop_step: int | None = None,
    min_std: float = 0.0,
    steps: tuple[int, int] | None = None,
    ode_solver: str = "euler",
    prev_x0: torch.Tensor | None = None,
    record_means: bool = False,
    step_std: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Chain:
    """Denoise x_T [B, *D] through every timestep of ``schedule``.

    ``denoise(x_t, t [B])`` is the model's output; ``noise(shape)`` draws each step's z (reparameterised:
    x_{t-1} = mu_theta + sigma_t * z, so gradients flow through mu_theta).
    ``grad_steps`` [S] bool: gradients on at those steps only (elsewhere the step runs without a graph,
    which cuts the gradient path); None leaves the caller's grad mode. [B, S]: each row its own steps
    (AlignProp's micro-batches sharing a call); a step where rows differ runs as two calls, the rows with
    gradient and the rest, so ``denoise`` must then also take ``rows`` (an index tensor of the rows in x_t).
    ``checkpoint_steps``: recompute each step with gradients in the backward pass (only x_t is kept per
    step); ``reentrant=False`` for an FSDP-sharded denoiser (FSDP2 supports non-reentrant checkpoints).
    ``stop_step`` (ReFL): stop at that step and return its x̂_0. ``min_std``: floor of every step's std
    (DPPO's exploration noise).

    ``eta`` may be a list, one noise level per step of the schedule (an SDE window: 0 outside it).
    ``steps`` = (first, stop): run only those steps, x being x at step ``first`` (an SDE window's chain runs
    in parts). ``ode_solver="dpmpp_2m"``: the deterministic steps of a flow schedule take DPM-Solver++(2M)
    (drl.sampling_flow.flow_dpmpp_2m_step), whose history is each step's x̂_0; ``prev_x0`` carries it in
    from a previous part (no gradient: rollouts only). ``record_means``: also keep every step's μ_θ.
    ``step_std(x_t, t [B])``: each step's std, [B] or [B, *D], in place of the schedule's (ReinFlow's noise network;
    the step's mean stays the schedule's); not with per-row ``grad_steps``.
    """
    n = x.shape[0]
    first, stop = steps if steps is not None else (0, schedule.num_steps)
    etas = list(eta) if isinstance(eta, (list, tuple)) else [eta] * schedule.num_steps
    if ode_solver != "euler" and (grad_steps is not None or checkpoint_steps or schedule.kind != "flow"):
        raise ValueError(f"ode_solver={ode_solver} solves a flow model's deterministic steps in rollouts without gradients.")
    if step_std is not None and grad_steps is not None and grad_steps.dim() > 1:
        raise ValueError("step_std gives one std per row of the whole batch: it does not split rows by grad_steps.")
    timesteps = schedule.timesteps.to(x.device)[first:stop]
    latents, log_probs, stochastic, means = [x], [], [], []
    checkpointed = ("reentrant" if reentrant else "non_reentrant") if checkpoint_steps else False
    x0 = prev_x0
    for i, t in zip(range(first, stop), timesteps):
        t_batch = t.expand(n)
        z = noise(x.shape)  # [B, *D]
        multistep = ode_solver == "dpmpp_2m" and etas[i] == 0
        # partial binds this step's t and z now: a checkpointed step is recomputed later, in backward.
        step = functools.partial(
            _step, schedule, t=t_batch, noise=z, eta=etas[i], min_std=min_std, prev_x0=x0 if multistep else None, multistep=multistep,
            step_std=step_std,
        )
        grad = None if grad_steps is None else grad_steps[..., i]  # [] or [B]
        if grad is None or grad.dim() == 0 or bool(grad.all()) or not bool(grad.any()):
            with_grad = None if grad is None else bool(grad.flatten()[0])
            x_prev, x0, log_prob, step_stochastic, mean = _run_step(step, denoise, x, with_grad, checkpointed)
        else:
            x_prev, x0, log_prob, step_stochastic, mean = _run_step_split(step, denoise, x, grad, checkpointed)
        if i == stop_step:
            break
        x = x_prev
        if record:
            latents.append(x)
            log_probs.append(log_prob)
            stochastic.append(bool(step_stochastic[0]))
            if record_means:
                means.append(mean)
    final = x0 if stop_step is not None else x
    if not record:
        return Chain(final, None, None, None, None, last_x0=x0)
    return Chain(
        sample=final,
        latents=torch.stack(latents, dim=1),
        timesteps=timesteps.unsqueeze(0).expand(n, len(timesteps)).clone(),
        log_probs=torch.stack(log_probs, dim=1),
        stochastic=torch.tensor(stochastic, device=x.device, dtype=torch.bool),
        means=torch.stack(means, dim=1) if record_means else None,
        last_x0=x0,
    )


def _step(schedule, denoise, x, t, noise, eta, min_std, rows=None, prev_x0=None, multistep=False, step_std=None):
    """x_t -> (x_{t-1}, x̂_0, log-prob [B], stochastic [B], μ_θ); ``rows`` [b]: only those rows of the batch.
    ``multistep``: a deterministic DPM-Solver++(2M) flow step from the previous step's x̂_0 ``prev_x0``.
    ``step_std(x_t, t)``: the step's own std (run_chain)."""
    if rows is not None:
        t, noise, denoise = t[rows], noise[rows], functools.partial(denoise, rows=rows)
        prev_x0 = None if prev_x0 is None else prev_x0[rows]
    if multistep:
        x_prev, x0 = flow_dpmpp_2m_step(schedule, denoise(x, t), t, x, prev_x0)
        zeros = torch.zeros(x.shape[0], device=x.device)
        return x_prev.to(x.dtype), x0, zeros, zeros.bool(), x_prev
    std = None if step_std is None else step_std(x, t)
    out = denoising_step(schedule, denoise(x, t), t, x, eta=eta, noise=noise, min_std=min_std, std=std)
    return out.prev_sample, out.pred_original_sample, out.log_prob, out.stochastic, out.mean


def _run_step(step, denoise, x, with_grad: bool | None, checkpointed: str | bool, rows=None) -> tuple:
    """One step with gradients on (True), off (False) or as the caller has them (None); ``checkpointed``:
    False, "reentrant" or "non_reentrant"."""
    if with_grad is None:
        return step(denoise, x, rows=rows)
    with torch.set_grad_enabled(with_grad):
        if not (with_grad and checkpointed):
            return step(denoise, x, rows=rows)
        step = functools.partial(step, denoise, rows=rows)
        if checkpointed == "non_reentrant":
            return checkpoint(step, x, use_reentrant=False)
        # Reentrant: the first pass runs without a graph and the backward re-runs the step, which costs less
        # than the non-reentrant saved-tensor hooks, one per saved activation (docs/results/2026-12-03-speed.md).
        # It needs an input that requires grad, so the chain's first step with gradient gets a leaf.
        return checkpoint(step, x if x.requires_grad else x.detach().requires_grad_(), use_reentrant=True)


def _run_step_split(step, denoise, x, grad: torch.Tensor, checkpointed: str | bool) -> tuple:
    """A step whose rows differ in ``grad`` [B]: the rows with gradient and the rest as two calls, put back in order."""
    on, off = grad.nonzero().flatten(), (~grad).nonzero().flatten()
    with_grad = _run_step(step, denoise, x[on], True, checkpointed, rows=on)
    without = _run_step(step, denoise, x[off], False, checkpointed, rows=off)
    order = torch.argsort(torch.cat([on, off]))  # row r of the batch is row order[r] of the two calls' rows
    return tuple(torch.cat([a, b])[order] for a, b in zip(with_grad, without))
