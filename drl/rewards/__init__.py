"""Reward registry and weighted sums of rewards.

Every reward is ``fn(samples, prompts, metadata) -> scores [B]`` (drl.rewards.base.Reward);
a run's reward is ``sum_k weight_k * reward_k`` over ``reward.terms``.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch

from drl.config import ConfigError, RewardConfig
from drl.rewards.base import Reward


def _jpeg(sign: str) -> Callable[[RewardConfig, torch.device], Reward]:
    def make(cfg: RewardConfig, device: torch.device) -> Reward:
        from drl.rewards import jpeg

        return getattr(jpeg, sign)(cfg.jpeg_quality)

    return make


def _without_options(module: str, name: str) -> Callable[[RewardConfig, torch.device], Reward]:
    """The factory of a reward that takes no config: drl.rewards.<module>.<name>(), imported when built."""

    def make(cfg: RewardConfig, device: torch.device) -> Reward:
        return getattr(importlib.import_module(f"drl.rewards.{module}"), name)()

    return make


def _toy_alignment(cfg: RewardConfig, device: torch.device) -> Reward:
    from drl.rewards.toy_alignment import toy_alignment  # heavy import stays in the factory

    return toy_alignment(cfg.classifier_path, device)


def _toy_attribute_match(cfg: RewardConfig, device: torch.device) -> Reward:
    from drl.rewards.toy_alignment import toy_attribute_match

    return toy_attribute_match(cfg.classifier_path, device)


def _aesthetic(cfg: RewardConfig, device: torch.device) -> Reward:
    from drl.rewards.clip import aesthetic

    return aesthetic(cfg.aesthetic_clip_path, cfg.aesthetic_head_path, device)


def _clip_score(cfg: RewardConfig, device: torch.device) -> Reward:
    from drl.rewards.clip import clip_score

    return clip_score(cfg.clip_path, device)


def _pickscore(cfg: RewardConfig, device: torch.device) -> Reward:
    from drl.rewards.clip import pickscore

    return pickscore(cfg.pickscore_path, cfg.pickscore_processor_path, device)


def _toy_object(cfg: RewardConfig, device: torch.device) -> Reward:
    from drl.rewards.toy_alignment import toy_object

    return toy_object(cfg.classifier_path, device)


def _toy_motion(attributes: tuple[str, ...] | None) -> Callable[[RewardConfig, torch.device], Reward]:
    """The video classifier's log-likelihood of the prompt: every attribute (None) or only ``attributes``."""

    def make(cfg: RewardConfig, device: torch.device) -> Reward:
        from drl.rewards.video import toy_motion

        return toy_motion(cfg.video_classifier_path, device, attributes)

    return make


REWARDS: dict[str, Callable[[RewardConfig, torch.device], Reward]] = {
    "jpeg_compressibility": _jpeg("jpeg_compressibility"),
    "jpeg_incompressibility": _jpeg("jpeg_incompressibility"),
    "toy_alignment": _toy_alignment,
    "toy_attribute_match": _toy_attribute_match,
    "toy_aesthetic": _without_options("toy_aesthetic", "toy_aesthetic"),
    "aesthetic": _aesthetic,
    "clip_score": _clip_score,
    "pickscore": _pickscore,
    "env_return": _without_options("env_return", "env_return"),
    "toy_object": _toy_object,
    "toy_motion": _toy_motion(None),
    "toy_motion_only": _toy_motion(("motion",)),
    "temporal_consistency": _without_options("video", "temporal_consistency"),
    "toy_background": _without_options("pixel_stats", "toy_background"),
    "high_frequency": _without_options("pixel_stats", "high_frequency"),
}
FRAMES_PREFIX = "frames_"  # frames_<image reward>: that image reward on K random frames of each clip


def _make(name: str, cfg: RewardConfig, device: torch.device) -> Reward:
    if name.startswith(FRAMES_PREFIX) and name[len(FRAMES_PREFIX) :] in REWARDS:
        from drl.rewards.video import frame_subset

        image_reward = REWARDS[name[len(FRAMES_PREFIX) :]](cfg, device)
        if image_reward.video:
            raise ConfigError(f"reward {name!r}: {image_reward.name} already scores whole clips; use it without the prefix.")
        return frame_subset(image_reward, cfg.frame_subset)
    return REWARDS[name](cfg, device)


class WeightedReward:
    """The weighted sum of several rewards; also returns each term (and each monitor) for logging.

    Monitors are scored without gradient and do not enter the sum: they watch what the
    optimised reward may break (e.g. the per-frame object while training for motion).
    """

    def __init__(self, rewards: list[Reward], weights: list[float], monitors: list[Reward] | None = None):
        self.rewards, self.weights, self.monitors = rewards, weights, list(monitors or [])

    @property
    def differentiable(self) -> bool:
        return all(r.differentiable for r in self.rewards)

    @property
    def frames_needed(self) -> int:
        """How many frames of each clip the terms and monitors read: 0 when any reads the whole clip."""
        frames = [r.frames for r in self.rewards + self.monitors]
        return 0 if min(frames) == 0 else max(frames)

    def __call__(self, samples: torch.Tensor, prompts: list, metadata: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = {r.name: r(samples, prompts, metadata) for r in self.rewards}
        total = sum(w * terms[r.name] for r, w in zip(self.rewards, self.weights))
        with torch.no_grad():
            terms.update({r.name: r(samples.detach(), prompts, metadata) for r in self.monitors if r.name not in terms})
        return total, terms


def build_reward(cfg: RewardConfig, device: torch.device, video: bool = False) -> WeightedReward:
    """The weighted sum of ``cfg.terms``; a weight of 0 switches a term off (Hydra merges dict overrides).

    ``video``: the model makes clips, so every term must score clips (frames_<image reward> adapts one).
    """
    known = lambda name: name in REWARDS or (name.startswith(FRAMES_PREFIX) and name[len(FRAMES_PREFIX) :] in REWARDS)  # noqa: E731
    unknown = [name for name in [*cfg.terms, *cfg.monitor] if not known(name)]
    if unknown:
        raise ConfigError(
            f"Unknown reward {unknown[0]!r} in reward.terms; available: {', '.join(sorted(REWARDS))} "
            f"(and {FRAMES_PREFIX}<image reward> for clips)."
        )
    terms = {name: float(w) for name, w in cfg.terms.items() if w != 0}
    rewards = [_make(name, cfg, device) for name in terms]
    monitors = [_make(name, cfg, device) for name in cfg.monitor]
    for reward in rewards + monitors:
        if reward.video != video:
            hint = f"use {FRAMES_PREFIX}{reward.name} to score K frames of each clip" if video else "choose an image reward"
            raise ConfigError(
                f"reward {reward.name!r} scores {'clips' if reward.video else 'images'} but the model makes "
                f"{'clips' if video else 'images'}: {hint}."
            )
    return WeightedReward(rewards, list(terms.values()), monitors)
