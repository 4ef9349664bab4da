"""Drift from the base model: how far fine-tuning has moved the denoiser (reward-hacking watch)."""

from __future__ import annotations

import contextlib

import torch

from drl.models.t2i import T2IModel


class DriftProbe:
    """Mean squared difference between the current and the base model's predictions on fixed inputs.

    The base predictions are computed once, before any training or checkpoint load, so the
    probe needs no copy of the base weights.
    """

    def __init__(self, model: T2IModel, timesteps: torch.Tensor, prompts: list[str], latent_shape: tuple, seed: int, autocast=contextlib.nullcontext,
                 metadata: list[dict] | None = None):
        g = torch.Generator().manual_seed(seed)
        n = len(prompts)
        device = model.denoiser.device
        self.model, self.autocast = model, autocast
        self.x = torch.randn((n, *latent_shape), generator=g).to(device)  # [n, C, h, w]
        self.t = timesteps[torch.randint(len(timesteps), (n,), generator=g)].to(device)  # [n]
        self.cond = model.condition(prompts, metadata)  # batch n (an image-conditioned model: the prompts' images too)
        self.base = self._predict()

    @torch.no_grad()
    def _predict(self) -> torch.Tensor:
        was_training = self.model.denoiser.training
        self.model.denoiser.eval()
        with self.autocast():
            out = self.model.denoise(self.x, self.t, self.cond).float()
        self.model.denoiser.train(was_training)
        return out

    def __call__(self) -> float:
        return float((self._predict() - self.base).pow(2).mean())
