"""The denoising (L_simple) loss of a batch of clean latents, shared by pretrain and RWR."""

from __future__ import annotations

import torch

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
    with ctx.autocast():
        prediction = ctx.model.denoise(x_t, t, cond)
    return l_simple(prediction, training_target(ctx.schedule, x0, noise, t))
