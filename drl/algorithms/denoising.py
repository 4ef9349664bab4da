"""The denoising (L_simple) loss of a batch of clean latents, shared by pretrain and RWR."""

from __future__ import annotations

import torch

from drl.losses import l_simple
from drl.sampling import add_noise, training_target


def denoising_loss(ctx, x0: torch.Tensor, embeds: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-sample L_simple at a uniformly random training timestep. [B]

    x0: [B, C, h, w] clean latents; embeds: [B, L, D] prompt embeddings.
    """
    n, device = x0.shape[0], x0.device
    num_train = ctx.schedule.alphas_cumprod.numel()
    t = torch.randint(num_train, (n,), generator=generator).to(device)  # [B]
    noise = torch.randn(x0.shape, generator=generator).to(device)  # [B, C, h, w]
    x_t = add_noise(ctx.schedule, x0, noise, t)
    return _loss(ctx, x_t, t, embeds, training_target(ctx.schedule, x0, noise, t))


def implied_noise(schedule, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The ε with x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε, i.e. add_noise(x0, ε, t) == x_t. [B, C, h, w]"""
    a_t = schedule.alphas_cumprod.to(t.device)[t].to(torch.float32).view(-1, *([1] * (x_t.ndim - 1)))
    return ((x_t.float() - a_t.sqrt() * x0.float()) / (1 - a_t).sqrt()).to(x_t.dtype)


def trajectory_denoising_loss(ctx, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    """Per-pair L_simple at a state x_t of the sampling chain that ended in x0. [B]

    The same regression as :func:`denoising_loss` (the target is what the denoiser should
    output at x_t to point at x0), but x_t comes from the model's own chain instead of
    q(x_t | x0). For a perfect model the two have the same distribution; with a noise
    schedule whose last ᾱ_T > 0 (Stable Diffusion's, the toy model's) the chain starts
    from pure noise that q never produces, and only these states are the ones sampling visits.

    x_t: [B, C, h, w] stored chain states at timesteps t [B]; x0: [B, C, h, w] the chain's end.
    """
    noise = implied_noise(ctx.schedule, x_t, x0, t)
    return _loss(ctx, x_t, t, embeds, training_target(ctx.schedule, x0, noise, t))


def _loss(ctx, x_t: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with ctx.autocast():
        prediction = ctx.model.unet(x_t, t, encoder_hidden_states=embeds).sample
    return l_simple(prediction, target)
