"""JPEG (in)compressibility: the size of the real JPEG encoding of each image (DDPO paper, sec. 6.1)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from drl.rewards.base import Reward


def jpeg_size_kb(samples: torch.Tensor, quality: int = 95) -> torch.Tensor:
    """samples [B, 3, H, W] in [0, 1] -> encoded JPEG sizes in kB, [B] float32."""
    pixels = (samples.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    sizes = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000.0)
    return torch.tensor(sizes, dtype=torch.float32, device=samples.device)


def jpeg_compressibility(quality: int = 95) -> Reward:
    """Smaller files score higher: r = -size_kB."""
    return Reward("jpeg_compressibility", lambda s, p, m: -jpeg_size_kb(s, quality), differentiable=False)


def jpeg_incompressibility(quality: int = 95) -> Reward:
    """Larger files score higher: r = +size_kB."""
    return Reward("jpeg_incompressibility", lambda s, p, m: jpeg_size_kb(s, quality), differentiable=False)
