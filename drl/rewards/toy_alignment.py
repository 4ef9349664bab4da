"""Prompt alignment on the toy world: the toy analogue of a CLIP score, differentiable."""

from __future__ import annotations

import torch

from drl.models.t2i import resolve_path
from drl.rewards.base import Reward
from drl.toyworld import Scene, alignment_log_prob, load_classifier


def toy_alignment(classifier_path: str, device: torch.device | str = "cpu") -> Reward:
    """r = log p(colour) + log p(shape) + log p(position) + log p(size) of the prompt's scene
    under the shipped toy classifier (0 is perfect; about -6.2 is chance)."""
    classifier = load_classifier(resolve_path(classifier_path), device=device)
    classifier.requires_grad_(False).eval()

    def score(samples: torch.Tensor, prompts: list, metadata: list) -> torch.Tensor:
        scenes = [Scene.from_prompt(p) for p in prompts]
        return alignment_log_prob(classifier, samples.float() * 2 - 1, scenes).float()

    return Reward("toy_alignment", score, differentiable=True)
