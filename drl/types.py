"""Batches that flow between the collector, the rewards and the algorithms.

Shape legend:
    B  samples in the batch            S  denoising steps per sample
    C  latent channels                 h, w  latent height, width
    L  prompt tokens                   D  text hidden size
    H, W  decoded image height, width
    F  frames of a clip (video models, drl/models/t2v.py): a latent is [C, F, h, w] where an image's
       is [C, h, w], and samples are [B, F, 3, H, W] (frame-major) where images are [B, 3, H, W]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Rollout:
    """Trajectories of the denoising MDP for one epoch, as the collector returns them.

    Step i maps ``latents[:, i]`` (x_t at ``timesteps[:, i]``) to ``latents[:, i + 1]``.
    """

    prompts: list[str]  # [B]
    metadata: list[dict]  # [B] whatever the prompt source knows (e.g. the toy scene)
    prompt_embeds: torch.Tensor  # [B, L, D]
    uncond_embeds: torch.Tensor | None  # [B, L, D] empty-prompt embeddings when guidance is on
    latents: torch.Tensor  # [B, S + 1, C, h, w]  x_T ... x_0
    timesteps: torch.Tensor  # [B, S] long
    log_probs: torch.Tensor  # [B, S] float32, exact (summed) log p(x_{t-1} | x_t) at sampling time
    stochastic: torch.Tensor  # [S] bool: steps with a density (trainable by likelihood methods)
    samples: torch.Tensor  # [B, 3, H, W] float in [0, 1], the decoded x_0
    rewards: torch.Tensor | None = None  # [B] float32, filled in by the train loop
    reward_terms: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B] unweighted

    @property
    def batch_size(self) -> int:
        return self.latents.shape[0]

    def __len__(self) -> int:
        return self.batch_size

    @property
    def num_steps(self) -> int:
        return self.timesteps.shape[1]

    @property
    def final_latents(self) -> torch.Tensor:
        """x_0 in latent space: [B, C, h, w]."""
        return self.latents[:, -1]


@dataclass
class DataBatch:
    """Clean training data for algorithms that read a dataset instead of sampling (pretraining).

    images: [B, C, h, w] in the model's latent space ([-1, 1] pixels for the toy model)
    """

    images: torch.Tensor
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class PromptBatch:
    """Prompts only, for algorithms that sample inside their update (AlignProp)."""

    prompts: list[str]  # [B]
    metadata: list[dict]  # [B]

    def __len__(self) -> int:
        return len(self.prompts)
