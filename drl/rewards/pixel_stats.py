"""Pixel statistics that watch for reward hacking without a classifier.

A classifier reward (and a classifier guard) can be fooled by the same pixels: reward backprop
turns clips into textures that both classifiers score highly. These measures are fixed, hand-written
functions of the pixels, so gradients cannot move them except by changing what the image is:

    toy_background   fraction of pixels that look like the toy world's background: a dark-to-mid
                     grey (the renderer draws 15-110 grey levels plus at most ±12 of noise, the
                     same in every channel). A render is ~0.8 background and one saturated object;
                     noisy colour textures and pale, washed-out frames are not.
    high_frequency   mean squared difference between a frame and its 3x3 box blur (per pixel and
                     channel, [0, 1] units): ~0 on the renders' flat background and soft shape edges,
                     large on pixel noise and texture.

``target_colour`` is a reward, not a monitor: -mean_(c, y, x) (pixel - target RGB)², differentiable, the pixel
statistic a random-weight pipeline can learn in a few epochs (trl's AlignProp example and shared/tools/trl_anchor
use the same one).

The monitors take images [B, 3, H, W] in [0, 1] (clips: ``frames_<name>``, or :func:`per_frame` for every
frame) and return [B]. :func:`centroid_direction_accuracy` checks the motion itself without a classifier:
the object's saliency-weighted centroid per frame, and whether it travels the way the prompt says. They are monitors (``reward.monitor``): toy_background is a hard count and
not differentiable, so AlignProp refuses it as a term, and neither enters the optimised sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from drl.rewards.base import Reward
from drl.rewards.toy_aesthetic import object_saliency

# The renderer's background (drl.toyworld.world.BACKGROUND_GREY_RANGE, BACKGROUND_NOISE_MAX) plus a margin
# for the model's small errors: grey at most (110 + 12 + 8) / 255, channels within 0.1 of each other.
BACKGROUND_MAX_GREY = 130 / 255
BACKGROUND_MAX_SPREAD = 0.1  # max(RGB) - min(RGB); the palette's colours spread 0.6-0.75


def background_fraction(images: torch.Tensor) -> torch.Tensor:
    """images [B, 3, H, W] in [0, 1] -> fraction of background-like pixels [B] in [0, 1]."""
    spread = images.amax(1) - images.amin(1)  # [B, H, W], 0 on a grey pixel
    grey = images.mean(1)  # [B, H, W]
    background = (spread <= BACKGROUND_MAX_SPREAD) & (grey <= BACKGROUND_MAX_GREY)
    return background.float().mean((1, 2))


def high_frequency_energy(images: torch.Tensor) -> torch.Tensor:
    """images [B, 3, H, W] in [0, 1] -> mean_(c, y, x) (image - 3x3 box blur)² [B]; replicate padding,
    so a flat image scores exactly 0."""
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")  # [B, 3, H+2, W+2]
    blurred = F.avg_pool2d(padded, kernel_size=3, stride=1)  # [B, 3, H, W]
    return (images - blurred).pow(2).mean((1, 2, 3))


def per_frame(statistic, clips: torch.Tensor) -> torch.Tensor:
    """An image statistic averaged over every frame: clips [B, F, 3, H, W] -> [B]."""
    b, f = clips.shape[:2]
    return statistic(clips.reshape(b * f, *clips.shape[2:])).view(b, f).mean(1)


def object_centroids(clips: torch.Tensor) -> torch.Tensor:
    """clips [B, F, 3, H, W] in [0, 1] -> the object's centroid per frame [B, F, 2] (x, y), fractions of the width,
    weighting each pixel by its distance to the border's mean colour (``object_saliency``)."""
    b, f, _, h, w = clips.shape
    _, weight = object_saliency(clips.reshape(b * f, *clips.shape[2:]))  # [B*F, H, W], sums to 1
    xs = (torch.arange(w, dtype=weight.dtype, device=weight.device) + 0.5) / w  # [W]
    ys = (torch.arange(h, dtype=weight.dtype, device=weight.device) + 0.5) / h  # [H]
    centroid = torch.stack([(weight.sum(1) * xs).sum(1), (weight.sum(2) * ys).sum(1)], dim=1)  # [B*F, 2]
    return centroid.view(b, f, 2)


def centroid_direction_accuracy(clips: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Does the object's centroid travel (first -> last frame) most along the prompted direction?

    clips [B, F, 3, H, W] in [0, 1]; directions [B, 2] unit (dx, dy), image coordinates, of moving prompts.
    Returns [B] float 0/1: whether the prompted one of the four directions has the largest dot product
    with the displacement (chance 1/4).
    """
    track = object_centroids(clips)  # [B, F, 2]
    displacement = track[:, -1] - track[:, 0]  # [B, 2]
    compass = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]], dtype=displacement.dtype)  # [4, 2]
    chosen = (displacement @ compass.T).argmax(1)  # [B]
    prompted = (directions.to(compass.dtype) @ compass.T).argmax(1)  # [B]
    return (chosen == prompted).float()


def toy_background() -> Reward:
    return Reward("toy_background", lambda s, p, m: background_fraction(s.float()), differentiable=False)


def high_frequency() -> Reward:
    return Reward("high_frequency", lambda s, p, m: high_frequency_energy(s.float()), differentiable=True)


def colour_distance(images: torch.Tensor, rgb) -> torch.Tensor:
    """images [B, 3, H, W] in [0, 1] -> mean_(c, y, x) (pixel - rgb)² [B]."""
    target = torch.as_tensor(list(rgb), dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - target).pow(2).mean((1, 2, 3))


def target_colour(rgb) -> Reward:
    """r = -colour_distance: images closer to one colour score higher."""
    rgb = tuple(float(c) for c in rgb)
    return Reward("target_colour", lambda s, p, m: -colour_distance(s.float(), rgb), differentiable=True)
