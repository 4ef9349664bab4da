"""Device memory of a run's reward models: their weights, fp32 as drl loads them (drl/rewards/clip.py).

Published parameter counts of the networks each built-in reward loads; the toy rewards' weights are the
shipped assets' files. Rewards that hold nothing on the device (JPEG on the CPU, pixel statistics, a remote
server, a chat judge) count 0; a reward from your own code (``_target_``) is not known and says so.
"""

from __future__ import annotations

from collections.abc import Mapping

from drl.models.layout import ASSETS_DIR
from drl.rewards.pixel_stats import high_frequency_energy
from drl.rewards.toy_aesthetic import toy_aesthetic_score

CLIP_L14 = 427_616_513  # openai/clip-vit-large-patch14 (CLIPModel: vision 303 M + text 123 M + projections)
CLIP_H14 = 986_109_441  # laion/CLIP-ViT-H-14 (PickScore_v1's CLIPModel)

AESTHETIC_HEAD = 768 * 1024 + 1024 + 1024 * 128 + 128 + 128 * 64 + 64 + 64 * 16 + 16 + 16 + 1  # LAION's MLP (drl.rewards.clip.AestheticHead)

PARAMETERS = {"aesthetic": CLIP_L14 + AESTHETIC_HEAD, "clip_score": CLIP_L14, "pickscore": CLIP_H14}
TOY_ASSETS = {
    "toy_alignment": "toy_classifier", "toy_attribute_match": "toy_classifier", "toy_object": "toy_classifier",
    "toy_motion": "toy_video_classifier", "toy_motion_only": "toy_video_classifier",
}


def reward_bytes(reward_cfg) -> tuple[int, str]:
    """(bytes on the device, a note) for every term with a non-zero weight and every monitor (each model once)."""
    names = {name for name, spec in reward_cfg.terms.items() if _weight(spec) != 0} | set(reward_cfg.monitor)
    models: dict[str, int] = {}
    unknown = []
    for name in sorted(names):
        spec = reward_cfg.terms.get(name)
        if isinstance(spec, Mapping) and "_target_" in spec:
            unknown.append(name)
        elif name.removeprefix("frames_") in PARAMETERS:
            models[name] = PARAMETERS[name.removeprefix("frames_")] * 4  # each reward loads its own CLIP
        elif name.removeprefix("frames_") in TOY_ASSETS:
            asset = TOY_ASSETS[name.removeprefix("frames_")]
            models[name] = sum(f.stat().st_size for f in (ASSETS_DIR / asset).glob("*.safetensors"))
    note = ", ".join(models) or "none on the device"
    if unknown:
        note += f"; not counted: {', '.join(unknown)} (your own code)"
    return sum(models.values()), note


# Differentiable rewards that are functions of the pixels alone: the plan traces their forward + backward on meta
# tensors (AlignProp's tail). A reward network's activations (CLIP, the toy classifiers) are not traced yet.
PIXEL_SCORES = {"toy_aesthetic": toy_aesthetic_score, "high_frequency": high_frequency_energy}


def differentiable_scores(reward_cfg) -> tuple[tuple, list[str]]:
    """((name, images [B, 3, H, W] -> scores [B]) for each weighted term the plan can trace, names of those it cannot)."""
    names = sorted(name for name, spec in reward_cfg.terms.items() if _weight(spec) != 0)
    return tuple((n, PIXEL_SCORES[n]) for n in names if n in PIXEL_SCORES), [n for n in names if n not in PIXEL_SCORES]


def _weight(spec) -> float:
    return float(spec.get("weight", 1.0)) if isinstance(spec, Mapping) else float(spec)
