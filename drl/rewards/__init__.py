"""Reward registry and weighted sums of rewards.

Every reward is ``fn(samples, prompts, metadata) -> scores [B]`` (drl.rewards.base.Reward);
a run's reward is ``sum_k weight_k * reward_k`` over ``reward.terms``.
"""

from __future__ import annotations

from typing import Callable

import torch

from drl.config import ConfigError, RewardConfig
from drl.rewards.base import Reward


def _jpeg(sign: str) -> Callable[[RewardConfig, torch.device], Reward]:
    def make(cfg: RewardConfig, device: torch.device) -> Reward:
        from drl.rewards import jpeg

        return getattr(jpeg, sign)(cfg.jpeg_quality)

    return make


def _toy_alignment(cfg: RewardConfig, device: torch.device) -> Reward:
    from drl.rewards.toy_alignment import toy_alignment  # heavy import stays in the factory

    return toy_alignment(cfg.classifier_path, device)


def _toy_aesthetic(cfg: RewardConfig, device: torch.device) -> Reward:
    from drl.rewards.toy_aesthetic import toy_aesthetic

    return toy_aesthetic()


def _aesthetic(cfg: RewardConfig, device: torch.device) -> Reward:
    from drl.rewards.clip import aesthetic

    return aesthetic(cfg.aesthetic_clip_path, cfg.aesthetic_head_path, device)


def _clip_score(cfg: RewardConfig, device: torch.device) -> Reward:
    from drl.rewards.clip import clip_score

    return clip_score(cfg.clip_path, device)


def _pickscore(cfg: RewardConfig, device: torch.device) -> Reward:
    from drl.rewards.clip import pickscore

    return pickscore(cfg.pickscore_path, cfg.pickscore_processor_path, device)


def _env_return(cfg: RewardConfig, device: torch.device) -> Reward:
    from drl.rewards.env_return import env_return

    return env_return()


REWARDS: dict[str, Callable[[RewardConfig, torch.device], Reward]] = {
    "jpeg_compressibility": _jpeg("jpeg_compressibility"),
    "jpeg_incompressibility": _jpeg("jpeg_incompressibility"),
    "toy_alignment": _toy_alignment,
    "toy_aesthetic": _toy_aesthetic,
    "aesthetic": _aesthetic,
    "clip_score": _clip_score,
    "pickscore": _pickscore,
    "env_return": _env_return,
}


class WeightedReward:
    """The weighted sum of several rewards; also returns each term for logging."""

    def __init__(self, rewards: list[Reward], weights: list[float]):
        self.rewards, self.weights = rewards, weights

    @property
    def differentiable(self) -> bool:
        return all(r.differentiable for r in self.rewards)

    def __call__(self, samples: torch.Tensor, prompts: list, metadata: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = {r.name: r(samples, prompts, metadata) for r in self.rewards}
        total = sum(w * terms[r.name] for r, w in zip(self.rewards, self.weights))
        return total, terms


def build_reward(cfg: RewardConfig, device: torch.device) -> WeightedReward:
    """The weighted sum of ``cfg.terms``; a weight of 0 switches a term off (Hydra merges dict overrides)."""
    unknown = [name for name in cfg.terms if name not in REWARDS]
    if unknown:
        raise ConfigError(f"Unknown reward {unknown[0]!r} in reward.terms; available: {', '.join(sorted(REWARDS))}.")
    terms = {name: float(w) for name, w in cfg.terms.items() if w != 0}
    return WeightedReward([REWARDS[name](cfg, device) for name in terms], list(terms.values()))
