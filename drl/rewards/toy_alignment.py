"""Prompt alignment on the toy world: the toy analogue of a CLIP score, differentiable."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from drl.models.t2i import resolve_path
from drl.rewards.base import Reward
from drl.toyworld import Scene, alignment_log_prob, load_classifier
from drl.toyworld.classifier import attribute_match

CLASSIFIER_RESOLUTION = 32  # the image classifier was trained on 32x32 renders


def _scene_reward(name: str, classifier_path: str, device: torch.device | str, measure) -> Reward:
    """A differentiable reward: ``measure(classifier, images in [-1, 1], scenes) -> [B]`` of each prompt's scene."""
    classifier = load_classifier(resolve_path(classifier_path), device=device)
    classifier.requires_grad_(False).eval()

    def score(samples: torch.Tensor, prompts: list, metadata: list) -> torch.Tensor:
        scenes = [Scene.from_prompt(p) for p in prompts]
        return measure(classifier, samples.float() * 2 - 1, scenes).float()

    return Reward(name, score, differentiable=True)


def toy_alignment(classifier_path: str, device: torch.device | str = "cpu") -> Reward:
    """r = log p(colour) + log p(shape) + log p(position) + log p(size) of the prompt's scene
    under the shipped toy classifier (0 is perfect; about -6.2 is chance)."""
    return _scene_reward("toy_alignment", classifier_path, device, alignment_log_prob)


def toy_attribute_match(classifier_path: str, device: torch.device | str = "cpu") -> Reward:
    """r = mean over (colour, shape, position, size) of p(the prompt's value | image) under the toy
    classifier: the expected fraction of the prompt's attributes the image shows (1 is perfect; about
    0.30 is chance). Bounded, like the recall scores used for prompt alignment of real models."""
    return _scene_reward("toy_attribute_match", classifier_path, device, attribute_match)


def toy_object(classifier_path: str, device: torch.device | str = "cpu") -> Reward:
    """r = log p(colour) + log p(shape) of the prompt's object under the toy image classifier (0 is
    perfect; about -2.9 is chance). Any toy prompt, image or video; smaller images (video frames) are
    upsampled to the classifier's 32 px. Per frame of a clip: reward term ``frames_toy_object``."""
    from drl.toyworld.video import VideoScene

    classifier = load_classifier(resolve_path(classifier_path), device=device)
    classifier.requires_grad_(False).eval()

    def scene(prompt: str):
        try:
            return Scene.from_prompt(prompt)
        except ValueError:
            return VideoScene.from_prompt(prompt)

    def score(samples: torch.Tensor, prompts: list, metadata: list) -> torch.Tensor:
        images = samples.float() * 2 - 1  # [B, 3, H, W]
        if images.shape[-1] != CLASSIFIER_RESOLUTION:
            images = F.interpolate(images, size=CLASSIFIER_RESOLUTION, mode="bilinear", align_corners=False)
        return alignment_log_prob(classifier, images, [scene(p) for p in prompts], ("colour", "shape")).float()

    return Reward("toy_object", score, differentiable=True)
