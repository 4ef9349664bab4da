"""Reward registry and weighted sums of rewards.

Every reward is ``fn(samples, prompts, metadata) -> scores [B]`` (drl.rewards.base.Reward);
a run's reward is ``sum_k weight_k * reward_k`` over ``reward.terms``. A term is a registered
name with its weight, or a plug-in from the user's code named by ``_target_`` (drl.rewards.plugin).
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch

from drl.config import RewardConfig, term_weight
from drl.errors import ConfigError, RewardError
from drl.rewards.base import Reward
from drl.rewards.plugin import build_plugin, is_plugin


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


def _target_colour(cfg: RewardConfig, device: torch.device) -> Reward:
    from drl.rewards.pixel_stats import target_colour

    return target_colour(cfg.target_rgb)


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
    "toy_object": _toy_object,
    "toy_motion": _toy_motion(None),
    "toy_motion_only": _toy_motion(("motion",)),
    "temporal_consistency": _without_options("video", "temporal_consistency"),
    "toy_background": _without_options("pixel_stats", "toy_background"),
    "high_frequency": _without_options("pixel_stats", "high_frequency"),
    "target_colour": _target_colour,
}
FRAMES_PREFIX = "frames_"  # frames_<image reward>: that image reward on K random frames of each clip
EVAL_PREFIX = "eval:"  # evaluation rewards' keys among an evaluation batch's reward terms


def _make(name: str, cfg: RewardConfig, device: torch.device, spec=None) -> Reward:
    if is_plugin(spec):
        return build_plugin(name, spec, device)
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
    Evaluation rewards (reward.eval_terms) are scored only by :meth:`evaluate`, on the fixed evaluation batch.
    group_size: the layout of training batches (consecutive groups of one prompt), for groupwise rewards.
    """

    def __init__(
        self,
        rewards: list[Reward],
        weights: list[float],
        monitors: list[Reward] | None = None,
        eval_rewards: list[Reward] | None = None,
        group_size: int = 1,
    ):
        self.rewards, self.weights, self.monitors = rewards, weights, list(monitors or [])
        self.eval_rewards, self.group_size = list(eval_rewards or []), group_size

    @property
    def per_sample(self) -> bool:
        """Scoring the batch in chunks gives the same scores (see Reward.per_sample; groups stay whole)."""
        return all(r.per_sample for r in self.rewards + self.monitors)

    @property
    def differentiable(self) -> bool:
        return all(r.differentiable for r in self.rewards)

    @property
    def needs_pixels(self) -> bool:
        """Some term or monitor reads decoded samples; False: every one reads latents, and training skips the decode."""
        return any(r.space == "pixel" for r in self.rewards + self.monitors)

    @property
    def frames_needed(self) -> int:
        """How many frames of each clip the terms and monitors read: 0 when any reads the whole clip."""
        frames = [r.frames for r in self.rewards + self.monitors]
        return 0 if min(frames) == 0 else max(frames)

    def __call__(
        self, samples: torch.Tensor | None, prompts: list, metadata: list, group_size: int | None = None, latents: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(weighted sum [B], {term, monitor and info name: [B]}). group_size (groupwise rewards): None, the
        training layout (consecutive groups of self.group_size); 0, the samples that share a prompt.
        latents [B, *latent_shape]: x_0 before the decode, for terms with space "latent" (samples may then be None)."""
        group_size = self.group_size if group_size is None else group_size
        terms, info = {}, {}
        for r in self.rewards:
            terms[r.name], extra = r.score(reads(r, samples, latents), prompts, metadata, group_size)
            info.update(extra)
        total = sum(w * terms[r.name] for r, w in zip(self.rewards, self.weights))
        with torch.no_grad():
            for r in self.monitors:
                if r.name not in terms:
                    terms[r.name], extra = r.score(reads(r, samples, latents).detach(), prompts, metadata, group_size)
                    info.update(extra)
        return total, {**terms, **info}

    @torch.no_grad()
    def evaluate(self, samples: torch.Tensor, prompts: list, metadata: list, latents: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Each evaluation reward's scores [B] on the fixed evaluation batch (groups: by prompt), keyed eval:<name>."""
        return {f"{EVAL_PREFIX}{r.name}": r.score(reads(r, samples, latents), prompts, metadata, 0)[0] for r in self.eval_rewards}


def refuse_latent_terms(reward: WeightedReward, why: str) -> None:
    """ConfigError (one sentence) when a term, monitor or evaluation term reads latents, for a program that scores only
    decoded samples; ``why`` ends the sentence: what the program is given, and what to do instead."""
    latent = [r.name for r in reward.rewards + reward.monitors + reward.eval_rewards if r.space == "latent"]
    if latent:
        raise ConfigError(f"reward {latent[0]!r} reads latents (space: latent), and {why}")


def reads(reward: Reward, samples: torch.Tensor | None, latents: torch.Tensor | None) -> torch.Tensor:
    """What ``reward`` is called on: the latents for space "latent", else the decoded samples."""
    wanted = latents if reward.space == "latent" else samples
    if wanted is None:
        what = "latents (space: latent)" if reward.space == "latent" else "decoded samples"
        raise RewardError(f"reward {reward.name!r} reads {what}, and this call has none: pass them (drl's bug if you did not call it yourself).")
    return wanted


def build_reward(cfg: RewardConfig, device: torch.device, video: bool = False, group_size: int = 1) -> WeightedReward:
    """The weighted sum of ``cfg.terms``; a weight of 0 switches a term off (Hydra merges dict overrides).

    ``video``: the model makes clips, so every term must score clips (frames_<image reward> adapts one).
    ``group_size``: training batches hold consecutive groups of this many samples of one prompt (groupwise rewards).
    """
    known = lambda name: name in REWARDS or (name.startswith(FRAMES_PREFIX) and name[len(FRAMES_PREFIX) :] in REWARDS)  # noqa: E731
    named = {**cfg.terms, **{name: 1.0 for name in cfg.monitor}, **cfg.eval_terms}
    unknown = [name for name, spec in named.items() if not is_plugin(spec) and not known(name)]
    if unknown:
        raise ConfigError(
            f"Unknown reward {unknown[0]!r} in reward.terms; available: {', '.join(sorted(REWARDS))} "
            f"(and {FRAMES_PREFIX}<image reward> for clips, or _target_: module.factory for your own)."
        )
    terms = {name: spec for name, spec in cfg.terms.items() if term_weight(spec) != 0}
    rewards = [_make(name, cfg, device, spec) for name, spec in terms.items()]
    monitors = [_make(name, cfg, device) for name in cfg.monitor]
    eval_rewards = [_make(name, cfg, device, spec) for name, spec in cfg.eval_terms.items()]
    grouped = [r.name for r in rewards + monitors if r.groupwise]
    if grouped and group_size == 1:  # 0: set per call (drl-reward-server)
        raise ConfigError(
            f"reward {grouped[0]!r} scores whole groups of samples of one prompt, and this algorithm samples none: "
            "use algorithm=ddpo, nft or dpo with algorithm.group_size > 1."
        )
    for reward in rewards + monitors + eval_rewards:
        if reward.video != video:
            hint = f"use {FRAMES_PREFIX}{reward.name} to score K frames of each clip" if video else "choose an image reward"
            if reward.plugin:
                hint = f"if {reward.plugin} scores {'clips' if video else 'images'}, set video: {str(video).lower()} on the term"
            raise ConfigError(
                f"reward {reward.name!r} scores {'clips' if reward.video else 'images'} but the model makes "
                f"{'clips' if video else 'images'}: {hint}."
            )
    return WeightedReward(rewards, [term_weight(spec) for spec in terms.values()], monitors, eval_rewards, group_size)
