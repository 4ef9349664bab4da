"""Regularisation against reward hacking that every algorithm shares.

- ``algorithm.kl_coef``: a KL-to-reference penalty. The reference is the frozen base model
  (:class:`ReferenceDenoiser`). For two reverse Gaussians of equal variance the per-step KL is
  ||μ_θ - μ_ref||² / 2σ_t², and μ is affine in the denoiser's output at fixed (x_t, t), so it is
  a time-weighted ||out_θ - out_ref||²: :func:`denoising_kl` uses that squared difference,
  averaged over dimensions, at forward-noised points of the batch's clean samples (the weight
  per timestep is absorbed into kl_coef). DDPO keeps the exact per-step Gaussian KL on its
  stored transitions; DiffusionNFT's own KL is this same squared difference.
- ``algorithm.ema_decay``: an EMA of the trained weights (:class:`WeightEMA`, diffusers'
  EMAModel). The before/after grids and the exported model sample from it; rollouts keep
  sampling the trained weights so that likelihood ratios stay on-policy.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from diffusers.training_utils import EMAModel

from drl import sharding
from drl.models.finetune import base_weights, has_lora
from drl.models.t2i import T2IModel
from drl.sampling import add_noise, sample_training_timesteps
from drl.types import Conditioning


class ReferenceDenoiser:
    """The base model's prediction, without gradient.

    LoRA runs the same denoiser with its adapters off; full fine-tuning keeps a frozen copy,
    taken when the algorithm is built (before any checkpoint is loaded or any step is taken).
    """

    def __init__(self, model: T2IModel):
        self.model = model
        self.frozen = None if has_lora(model.denoiser) else copy.deepcopy(model.denoiser).requires_grad_(False).eval()

    @torch.no_grad()
    def __call__(self, x_t, t, cond, uncond=None, guidance_scale: float = 1.0) -> torch.Tensor:
        if self.frozen is not None:
            return self.model.denoise(x_t, t, cond, uncond, guidance_scale, denoiser=self.frozen)
        with base_weights(self.model.denoiser):
            return self.model.denoise(x_t, t, cond, uncond, guidance_scale)


def prediction_kl(prediction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-sample mean_d (out_θ - out_ref)², in float32. [B]"""
    return (prediction.float() - reference.float()).pow(2).flatten(1).mean(1)


def denoising_kl(ctx, reference: ReferenceDenoiser, x0: torch.Tensor, cond: Conditioning, generator: torch.Generator) -> torch.Tensor:
    """KL-to-reference surrogate at one uniformly random training timestep per sample. [B]

    x0: [B, C, h, w] clean latents (no gradient needed); cond: the prompts' conditioning (batch B).
    """
    n, device = x0.shape[0], x0.device
    t = sample_training_timesteps(ctx.schedule, n, generator).to(device)  # [B]
    noise = torch.randn(x0.shape, generator=generator).to(device=device, dtype=x0.dtype)  # [B, C, h, w]
    x_t = add_noise(ctx.schedule, x0.detach(), noise, t)
    with ctx.autocast():
        prediction = ctx.model.denoise(x_t, t, cond)
        ref = reference(x_t, t, cond)
    return prediction_kl(prediction, ref)


class WeightEMA:
    """EMA of the trained parameters, and a context that swaps it in for sampling or export."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params = params
        self.ema = EMAModel(params, decay=decay)

    def step(self) -> None:
        self.ema.step(self.params)

    @contextlib.contextmanager
    def applied(self):
        """Inside the block the trained parameters hold the EMA weights; restored afterwards."""
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            yield
        finally:
            self.ema.restore(self.params)

    def state_dict(self) -> dict:
        return sharding.full_state(self.ema.state_dict())  # whole tensors under FSDP too (collective)

    def load_state_dict(self, state: dict) -> None:
        shadows = [sharding.shard_like(s, p) for s, p in zip(state["shadow_params"], self.params, strict=True)]
        self.ema.load_state_dict({**state, "shadow_params": shadows})
