"""An aesthetic-like score for toy images: differentiable, hand-written, and easy to hack.

It rewards a bold, saturated object standing out from its background and placed at the
image centre. That last part conflicts with every prompt that asks for a corner, so
combined with ``toy_alignment`` it shows the trade-off (and, alone, the reward hacking:
everything drifts to the centre) that real aesthetic predictors cause.
"""

from __future__ import annotations

import torch

from drl.rewards.base import Reward


def object_saliency(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """images [B, 3, H, W] in [0, 1] -> (saliency [B, H, W] in [0, 1], weight [B, H, W] summing to 1).

    Saliency is each pixel's distance to the background colour (the border's mean); the
    weights pick out "the object" without knowing its shape (also used by drl.rewards.video).
    """
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], dim=-1)
    background = border.mean(-1)[:, :, None, None]  # [B, 3, 1, 1]
    saliency = ((images - background).pow(2).sum(1) / 3 + 1e-12).sqrt()  # [B, H, W] in [0, 1]
    weight = saliency / (saliency.sum((1, 2), keepdim=True) + 1e-8)  # [B, H, W], sums to 1
    return saliency, weight


def toy_aesthetic_score(images: torch.Tensor) -> torch.Tensor:
    """images [B, 3, H, W] in [0, 1] -> score [B] in [0, 1], the mean of three terms:

    contrast    how far the object's pixels are from the background colour (border mean)
    centring    1 - distance of the object's centroid from the image centre (normalised)
    saturation  max(RGB) - min(RGB) of the object's pixels
    where "the object" weighs each pixel by its saliency, its distance to the background colour.
    """
    b, _, h, w = images.shape
    saliency, weight = object_saliency(images)
    contrast = (weight * saliency).sum((1, 2))  # [B]
    ys = torch.linspace(-1, 1, h, device=images.device, dtype=images.dtype)
    xs = torch.linspace(-1, 1, w, device=images.device, dtype=images.dtype)
    cy, cx = (weight.sum(2) * ys).sum(1), (weight.sum(1) * xs).sum(1)  # centroid, [B] each
    centring = 1 - (cy.pow(2) + cx.pow(2) + 1e-12).sqrt() / 2**0.5
    saturation = (weight * (images.amax(1) - images.amin(1))).sum((1, 2))
    return (contrast + centring + saturation) / 3


def toy_aesthetic() -> Reward:
    return Reward("toy_aesthetic", lambda s, p, m: toy_aesthetic_score(s.float()), differentiable=True)
