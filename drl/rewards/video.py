"""Differentiable rewards of video clips (VADER, Prabhudesai et al. 2024, on the toy world).

Every reward here takes clips [B, F, 3, H, W] in [0, 1] and returns scores [B]:

    toy_motion            log p(colour, shape, motion of the prompt | clip) under the shipped video classifier
    toy_motion_only       log p(motion of the prompt | clip), the same classifier's motion term alone
    temporal_consistency  the object keeps its colour and size from frame to frame
    frames_<image reward> any image reward applied to a random subset of K frames, averaged (VADER's memory trick)
"""

from __future__ import annotations

import torch

from drl.rewards.base import Reward
from drl.rewards.toy_aesthetic import object_saliency


def temporal_consistency_score(clips: torch.Tensor) -> torch.Tensor:
    """clips [B, F, 3, H, W] in [0, 1] -> score [B] <= 0; 0 when the object looks the same in every frame.

    Per frame, the object's appearance is its saliency-weighted mean colour [3] and its area (mean
    saliency); the score is minus their variance over frames (summed over the 4 numbers). It does not
    care where the object is, so motion is free while flicker, colour drift and a growing or vanishing
    object are penalised.
    """
    b, f = clips.shape[:2]
    frames = clips.reshape(b * f, *clips.shape[2:])  # [B*F, 3, H, W]
    saliency, weight = object_saliency(frames)  # [B*F, H, W] each
    colour = (weight.unsqueeze(1) * frames).sum((2, 3))  # [B*F, 3]
    area = saliency.mean((1, 2)).unsqueeze(1)  # [B*F, 1]
    appearance = torch.cat([colour, area], dim=1).view(b, f, 4)  # [B, F, 4]
    return -appearance.var(dim=1, unbiased=False).sum(1)


def temporal_consistency() -> Reward:
    return Reward(
        "temporal_consistency", lambda s, p, m: temporal_consistency_score(s.float()), differentiable=True, video=True
    )


def frame_subset(image_reward: Reward, k: int, seed: int = 0) -> Reward:
    """Score K random frames of each clip with an image reward and average them (k=0: every frame).

    The same K frames (drawn afresh at every call from the reward's own generator) are used for
    the whole batch; only their graph is kept, so the image reward's activations cost K/F of
    scoring every frame.
    """
    generator = torch.Generator().manual_seed(seed)

    def score(clips: torch.Tensor, prompts: list, metadata: list) -> torch.Tensor:
        b, f = clips.shape[:2]
        chosen = torch.randperm(f, generator=generator)[: min(k, f)] if k > 0 else torch.arange(f)  # [K]
        frames = clips[:, chosen.to(clips.device)]  # [B, K, 3, H, W]
        n = frames.shape[1]
        per_frame = image_reward(
            frames.reshape(b * n, *frames.shape[2:]),
            [p for p in prompts for _ in range(n)],
            [m for m in metadata for _ in range(n)] if metadata else [],
        )
        return per_frame.view(b, n).mean(1)

    name = f"frames_{image_reward.name}"
    # per_sample=False: the frames are drawn once per call, so scoring in chunks would draw other frames.
    return Reward(name, score, differentiable=image_reward.differentiable, video=True, frames=k, per_sample=False)


def toy_motion(
    classifier_path: str, device: torch.device | str = "cpu", attributes: tuple[str, ...] | None = None
) -> Reward:
    """r = sum over ``attributes`` (default all: colour, shape, motion) of log p(the prompt's value | clip) under
    the shipped toy video classifier (0 is perfect; about -4.5 is chance for all three).

    ``attributes=("motion",)`` is ``toy_motion_only``: colour is the easiest term to raise, and in the
    full sum it soaks up most of the gradient (docs/results/2026-11-26-video.md); the motion term alone asks only for motion.
    """
    from drl.models.t2i import resolve_path
    from drl.toyworld.classifier import alignment_log_prob
    from drl.toyworld.video import VIDEO_ATTRIBUTES, VideoScene, load_video_classifier, stack_frames

    if attributes is not None and not set(attributes) <= set(VIDEO_ATTRIBUTES):
        raise ValueError(f"Unknown video attributes {attributes}; expected some of {tuple(VIDEO_ATTRIBUTES)}.")
    classifier = load_video_classifier(resolve_path(classifier_path), device=device)
    name = "toy_motion" if attributes is None else "toy_" + "_".join(attributes) + "_only"

    def score(clips: torch.Tensor, prompts: list, metadata: list) -> torch.Tensor:
        scenes = [VideoScene.from_prompt(p) for p in prompts]
        return alignment_log_prob(classifier, stack_frames(clips.float() * 2 - 1), scenes, attributes).float()

    return Reward(name, score, differentiable=True, video=True)
