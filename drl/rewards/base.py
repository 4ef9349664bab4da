"""What a reward is: ``fn(samples, prompts, metadata) -> scores [B]`` plus a flag."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

RewardFn = Callable[[torch.Tensor, list, list], torch.Tensor]


@dataclass
class Reward:
    """A named reward.

    fn: samples [B, 3, H, W] float in [0, 1] (clips: [B, F, 3, H, W]), prompts [B], metadata [B] -> scores [B] float32.
    differentiable: scores carry gradients back to ``samples`` (AlignProp-style methods need this).
    video: it scores clips [B, F, 3, H, W] instead of images.
    frames: how many frames of a clip it reads (0: all), so that AlignProp decodes only those.
    """

    name: str
    fn: RewardFn
    differentiable: bool
    video: bool = False
    frames: int = 0

    def __call__(self, samples: torch.Tensor, prompts: list, metadata: list) -> torch.Tensor:
        return self.fn(samples, prompts, metadata)
