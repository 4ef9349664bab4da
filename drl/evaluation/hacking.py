"""Reward hacking as a number: the training run's fixed-input samples, before and after, in feature space.

The loop's evaluation samples the same prompts and noise before and after training (drl.train.evaluation_batch).
This probe turns the two sample sets into:

    diversity_before / _after   mean pairwise feature distance among the fixed-input samples (drl.evaluation.metrics)
    diversity_change            diversity_after / diversity_before - 1 (-0.6: 60% of the spread is gone)
    distance_to_base            mean feature distance between each sample and the base model's for the same input
    fid_to_base, kid_to_base    FID and KID of the after-set against the before-set (the base model's samples)

FID and KID need at least MIN_SAMPLES samples in each set (a covariance, a kernel mean over pairs): with fewer,
they are skipped and ``fid_skipped`` says why. And, once, one sentence when diversity fell by more than
``quality.max_diversity_drop`` while the reward rose (its paired gain above two standard errors): the model may be
pleasing the reward by collapsing, as the default run's yellow blobs do. The before-features are kept in the run
dir, so a resumed run still compares with them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from drl.config import Config, QualityConfig
from drl.evaluation.features import FeatureExtractor, build_features, extract, is_toy_model
from drl.evaluation.metrics import diversity, frechet_distance, kernel_distance, paired_distance

FEATURES_FILE = "eval_features.safetensors"  # the before/after samples' features, beside eval.json
REWARD_ROSE_IN_SE = 2.0  # the paired reward gain counts as a rise above this many standard errors
MIN_SAMPLES = 2  # FID estimates a covariance and KID averages over pairs: neither is defined for one sample


def hacking_warning(quality: dict, gain: float, gain_se: float, max_drop: float) -> str | None:
    """The one-sentence warning, or None: diversity fell by more than ``max_drop`` while the reward rose."""
    change = quality.get("diversity_change", float("nan"))
    if not (gain > REWARD_ROSE_IN_SE * gain_se and change < -max_drop):
        return None
    return (
        f"Possible reward hacking: the reward rose by {gain / max(gain_se, 1e-12):.0f} standard errors on the fixed inputs while the "
        f"samples' diversity fell by {-change:.0%} (more than quality.max_diversity_drop={max_drop:g}); "
        f"look at samples_after.png, and consider algorithm.kl_coef or a second reward term."
    )


class QualityProbe:
    """Features of the evaluation samples at ``observe("before" | "after", ...)``; ``judge`` adds the verdict."""

    def __init__(self, extractor: FeatureExtractor, cfg: QualityConfig, seed: int = 0):
        self.extractor, self.cfg, self.seed = extractor, cfg, seed

    @classmethod
    def for_run(cls, cfg: Config, model, device: torch.device) -> QualityProbe | None:
        """The run's probe, or None with quality.features=none."""
        if cfg.quality.features == "none":
            return None
        extractor = build_features(
            cfg.quality.features,
            video=cfg.model.kind == "t2v",
            toy=is_toy_model(model),
            num_frames=cfg.model.num_frames,
            clip_path=cfg.quality.clip_path,
            inception_weights=cfg.quality.inception_weights,
            classifier_path=cfg.reward.classifier_path,
            video_classifier_path=cfg.reward.video_classifier_path,
            device=device,
        )
        return cls(extractor, cfg.quality, cfg.seed)

    def observe(self, run_dir: Path, stage: str, samples: torch.Tensor) -> dict:
        """stage "before" or "after": the samples' diversity; after, also their distance to the before-samples."""
        features = extract(self.extractor, samples.detach())  # [N, D]
        path = run_dir / FEATURES_FILE
        stored = load_file(str(path)) if path.is_file() and stage == "after" else {}
        save_file({**stored, stage: features.contiguous()}, str(path))
        result = {"features": self.extractor.name, "diversity": diversity(features)}
        base = stored.get("before")
        if stage == "after" and base is not None and base.shape == features.shape:
            distances = paired_distance(features, base)  # [N]
            n = len(distances)
            result.update(
                distance_to_base=float(distances.mean()),
                distance_to_base_se=float(distances.std() / n**0.5) if n > 1 else float("nan"),
            )
            if n >= MIN_SAMPLES:
                result.update(fid_to_base=frechet_distance(base, features), kid_to_base=kernel_distance(base, features, self.seed)[0])
            else:
                result["fid_skipped"] = (
                    f"FID and KID to the base model were skipped: they need at least {MIN_SAMPLES} evaluation samples and "
                    f"this run has {n} (max(train.eval_size, train.grid_size)); raise train.eval_size to measure them."
                )
                tqdm.write(f"drl-train: note: {result['fid_skipped']}", file=sys.stderr)
        return result

    def conclude(self, record: dict, summary: dict) -> dict:
        """After training: the eval/ summary keys of the quality record; prints them, and the warning once
        (also kept in record["warning"])."""
        extra, warning = self.judge(record.get("quality", {}), summary["eval/gain"], summary["eval/gain_se"])
        if extra:
            tqdm.write(
                f"diversity of the fixed-input samples ({self.extractor.name} features) {extra['eval/diversity_before']:.4g} -> "
                f"{extra['eval/diversity_after']:.4g} ({extra['eval/diversity_change']:+.0%}); distance to the base model's "
                f"samples {extra['eval/distance_to_base']:.3g} ± {extra['eval/distance_to_base_se']:.2g}, FID {extra['eval/fid_to_base']:.3g}"
            )
        if warning is not None:
            tqdm.write(warning)
            record["warning"] = warning
        return extra

    def judge(self, quality: dict, gain: float, gain_se: float) -> tuple[dict, str | None]:
        """quality: {"before": observe(...), "after": observe(...)} -> (eval/ summary keys, warning or None)."""
        before, after = quality.get("before", {}), quality.get("after", {})
        if "diversity" not in before or "distance_to_base" not in after:
            return {}, None
        summary = {
            "eval/diversity_before": before["diversity"],
            "eval/diversity_after": after["diversity"],
            "eval/diversity_change": after["diversity"] / max(before["diversity"], 1e-12) - 1,
            **{f"eval/{k}": after.get(k, float("nan")) for k in ("distance_to_base", "distance_to_base_se", "fid_to_base", "kid_to_base")},
        }
        warning = hacking_warning({"diversity_change": summary["eval/diversity_change"]}, gain, gain_se, self.cfg.max_diversity_drop)
        summary["eval/hacking_warning"] = int(warning is not None)
        return summary, warning
