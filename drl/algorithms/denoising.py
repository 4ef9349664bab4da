"""The denoising (L_simple) loss of a batch of clean latents, shared by pretrain and RWR; the forward-process
pairs and their minibatch loop, shared by NFT and AWM."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from drl.algorithms.base import chunks
from drl.algorithms.ddpo import select_train_steps
from drl.algorithms.regularization import prediction_kl
from drl.losses import l_simple
from drl.sampling import add_noise, sample_training_timesteps, training_target
from drl.types import Conditioning


def denoising_loss(ctx, x0: torch.Tensor, cond: Conditioning, generator: torch.Generator) -> torch.Tensor:
    """Per-sample L_simple at a uniformly random training timestep. [B]

    x0: [B, C, h, w] clean latents; cond: the prompts' conditioning (batch B).
    """
    n, device = x0.shape[0], x0.device
    t = sample_training_timesteps(ctx.schedule, n, generator).to(device)  # [B]
    noise = torch.randn(x0.shape, generator=generator).to(device)  # [B, C, h, w]
    x_t = add_noise(ctx.schedule, x0, noise, t)
    return _loss(ctx, x_t, t, cond, training_target(ctx.schedule, x0, noise, t))


def implied_noise(schedule, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The ε with add_noise(x0, ε, t) == x_t. [B, C, h, w]

    Every forward process here is affine in ε (DDPM: sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε; flow:
    (1 - σ) x_0 + σ ε), so ε = (x_t - add_noise(x0, 0, t)) / add_noise(0, 1, t).
    """
    x0, x_t = x0.float(), x_t.float()
    mean = add_noise(schedule, x0, torch.zeros_like(x0), t)
    scale = add_noise(schedule, torch.zeros_like(x0), torch.ones_like(x0), t)
    return (x_t - mean) / scale


def trajectory_denoising_loss(ctx, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """Per-pair L_simple at a state x_t of the sampling chain that ended in x0. [B]

    The same regression as :func:`denoising_loss` (the target is what the denoiser should
    output at x_t to point at x0), but x_t comes from the model's own chain instead of
    q(x_t | x0). For a perfect model the two have the same distribution; with a noise
    schedule whose last ᾱ_T > 0 (Stable Diffusion's, the toy model's) the chain starts
    from pure noise that q never produces, and only these states are the ones sampling visits.

    x_t: [B, C, h, w] stored chain states at timesteps t [B]; x0: [B, C, h, w] the chain's end.
    """
    noise = implied_noise(ctx.schedule, x_t, x0, t)
    return _loss(ctx, x_t, t, cond, training_target(ctx.schedule, x0, noise, t))


def _loss(ctx, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, target: torch.Tensor) -> torch.Tensor:
    with ctx.autocast():
        prediction = ctx.model.denoise(x_t, t, cond)
    return l_simple(prediction, target)


def forward_process_pairs(batch, schedule, timestep_fraction: float, generator: torch.Generator, device: torch.device):
    """(sample, timestep) pairs of a rollout on the forward process (NFT, AWM): each sample at a random
    ``timestep_fraction`` of the schedule's steps, with fresh noise. Returns b [N] (the sample of each pair), t [N],
    x_0, x_t and the training target [N, C, h, w]."""
    all_steps = torch.ones(schedule.num_steps, dtype=torch.bool)
    steps = select_train_steps(all_steps, batch.batch_size, timestep_fraction, generator)  # [B, K]
    b = torch.arange(batch.batch_size).unsqueeze(1).expand_as(steps).reshape(-1)  # [N]
    t = schedule.timesteps[steps.reshape(-1)].to(device)  # [N]
    x0 = batch.final_latents[b]  # [N, C, h, w]
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(device)  # [N, C, h, w]
    x_t = add_noise(schedule, x0, noise, t)  # [N, C, h, w]
    target = training_target(schedule, x0, noise, t)  # [N, C, h, w]
    return b, t, x0, x_t, target


def pair_minibatch_epochs(algorithm, num_pairs: int, chunk_loss: Callable) -> tuple[dict[str, float], int]:
    """NFT's and AWM's update loop over N forward-process pairs: ``num_inner_epochs`` shuffled passes, one optimizer
    step per minibatch, each minibatch in chunks of ``train.batch_size`` whose gradients accumulate.

    chunk_loss(c) takes the pair indices of a chunk [n] and returns (its mean loss with gradient, {name: the chunk's
    mean of another metric}). Returns the pair-weighted means of loss and those metrics, the mean grad_norm, and the
    number of optimizer steps taken.
    """
    cfg, ctx = algorithm.cfg, algorithm.ctx
    totals: dict[str, float] = defaultdict(float)
    optimizer_steps = 0
    for _ in range(cfg.num_inner_epochs):
        order = torch.randperm(num_pairs, generator=algorithm.generator)
        for minibatch in order.chunk(cfg.minibatches):
            for c in chunks(minibatch, ctx.cfg.train.batch_size):
                loss, others = chunk_loss(c)
                (loss * (len(c) / len(minibatch))).backward()
                weight = len(c) / num_pairs / cfg.num_inner_epochs
                for name, value in {"loss": loss.detach(), **others}.items():
                    totals[name] += float(value) * weight
            grad_norm, stepped = algorithm.optimizer_step()
            totals["grad_norm"] += grad_norm / (cfg.minibatches * cfg.num_inner_epochs)
            optimizer_steps += stepped
    return dict(totals), optimizer_steps


def kl_to_reference(algorithm, prediction: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """The mean KL of ``prediction`` [n, *D] to the frozen reference's on the same inputs when algorithm.cfg.kl_coef > 0
    (its denoiser calls added to algorithm.update_calls), else 0 (NFT, AWM)."""
    if algorithm.cfg.kl_coef <= 0:
        return torch.zeros((), device=prediction.device)
    with algorithm.ctx.autocast():
        kl = prediction_kl(prediction, algorithm.reference(x_t, t, cond)).mean()
    algorithm.update_calls += x_t.shape[0]
    return kl
