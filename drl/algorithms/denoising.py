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
    with ctx.autocast():
        prediction = ctx.model.unet(x_t, t, encoder_hidden_states=embeds).sample
    return l_simple(prediction, training_target(ctx.schedule, x0, noise, t))
