"""Pretraining with L_simple on procedural toy-world images (Ho et al. 2020).

The "collector" of this algorithm reads the procedural world instead of sampling the
model. Captions are corrupted per attribute (``caption_noise``), as web captions are,
so the base model follows its prompts only partly and RL has something to fix; a
fraction of captions is dropped to "" so classifier-free guidance works.
"""

from __future__ import annotations

import numpy as np
import torch

from drl.algorithms.base import Algorithm, TrainContext
from drl.algorithms.denoising import denoising_loss
from drl.config import PretrainConfig
from drl.toyworld import ATTRIBUTES, corrupt_caption, sample_images
from drl.toyworld.video import VIDEO_ATTRIBUTES, sample_clips
from drl.types import DataBatch


class Pretrain(Algorithm):
    def __init__(self, cfg: PretrainConfig, ctx: TrainContext):
        params = ctx.params
        if cfg.train_text_encoder:
            ctx.model.text_encoder.requires_grad_(True)
            params = params + list(ctx.model.text_encoder.parameters())
        super().__init__(cfg, ctx, params)
        self.cfg: PretrainConfig = cfg

    def collect(self, generator: torch.Generator) -> DataBatch:
        """steps_per_epoch x batch_size fresh procedural images (or clips) with noisy captions."""
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        n = self.cfg.steps_per_epoch * self.ctx.cfg.train.batch_size
        model_cfg = self.ctx.cfg.model
        if model_cfg.kind == "t2v":
            clips, scenes = sample_clips(n, rng, model_cfg.resolution, model_cfg.num_frames)  # [n, F, 3, H, W]
            images = self.ctx.model.clips_to_latents(clips)  # [n, 3, F, H, W]
            attributes = VIDEO_ATTRIBUTES
        else:
            images, scenes = sample_images(n, rng, model_cfg.resolution)  # [n, 3, H, W]
            attributes = ATTRIBUTES
        rates = {k: v for k, v in self.cfg.caption_noise.items() if k in attributes}  # this world's attributes
        prompts = [
            "" if rng.random() < self.cfg.caption_dropout else corrupt_caption(s, rates, rng, attributes).prompt
            for s in scenes
        ]
        return DataBatch(images=images.to(self.ctx.device), prompts=prompts)

    def update(self, batch: DataBatch, epoch: int) -> dict[str, float]:
        ctx, size = self.ctx, self.ctx.cfg.train.batch_size
        encode = ctx.model.encode_prompts_with_grad if self.cfg.train_text_encoder else ctx.model.encode_prompts
        losses, grad_norms = [], []
        ctx.model.denoiser.train()
        for start in range(0, len(batch), size):  # one optimizer step per train.batch_size images
            prompts = batch.prompts[start : start + size]
            loss = denoising_loss(ctx, batch.images[start : start + size], encode(prompts), self.generator).mean()
            loss.backward()
            grad_norm, _ = self.optimizer_step()  # also steps the weight EMA (ema_decay), which is exported
            losses.append(float(loss.detach()))
            grad_norms.append(grad_norm)
        ctx.model.denoiser.eval()
        return {"train/loss": float(np.mean(losses)), "train/grad_norm": float(np.mean(grad_norms)), "train/lr": self.lr}
