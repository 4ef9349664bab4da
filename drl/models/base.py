"""The interface every model drl trains implements: a denoiser network and what it denoises."""

from __future__ import annotations

import torch


class DenoiserModel:
    """A diffusion model as the algorithms see it: text-to-image (drl.models.t2i), text-to-video
    (drl.models.t2v) and control policies (drl.models.policy) all implement it.

    ``denoiser`` is the trained network whatever its architecture (a UNet, a transformer, an MLP).
    """

    denoiser: torch.nn.Module

    def denoise(self, latents: torch.Tensor, t: torch.Tensor, cond, uncond=None, guidance_scale: float = 1.0) -> torch.Tensor:
        """The denoiser's output at (x_t [B, *D], t [B]) given the conditioning (and guidance)."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The chain's final x_0 [B, *D] -> samples (images, clips or actions)."""
        raise NotImplementedError

    def make_scheduler(self, kind: str):
        """A diffusers scheduler of ``kind`` (ddim, ddpm, flow) with this model's noise schedule."""
        raise NotImplementedError
