"""FID, KID and CLIPScore from torchmetrics, and within-prompt diversity, on precomputed features.

Features are computed once per sample set (drl.evaluation.features) and then handed to torchmetrics through
:class:`Precomputed`, a pass-through "extractor": every metric of a comparison reads the same features, and
a rank's metric state holds only its own samples. ``sync=True`` lets torchmetrics reduce the states over
every rank of a torch.distributed job at ``compute()`` (sums for FID and diversity, gathered features for
KID); ``sync=False`` keeps a rank's numbers its own (the training loop's probe, which only rank 0 runs).

Symbols: N samples, D feature dimensions, G prompts (groups).
"""

from __future__ import annotations

import warnings
from typing import Hashable, Sequence

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

KID_SUBSETS = 100  # torchmetrics' default: KID is averaged over random subsets
KID_SUBSET_SIZE = 1000  # torchmetrics' default, capped by the smaller set's size


class Precomputed(nn.Module):
    """Identity "feature extractor" of width D: torchmetrics' FID/KID receive features [N, D] directly."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(reference: torch.Tensor, samples: torch.Tensor, sync: bool = False) -> float:
    """FID between two feature sets [N_ref, D] and [N, D] (torchmetrics' FrechetInceptionDistance, float64)."""
    fid = FrechetInceptionDistance(feature=Precomputed(reference.shape[1]), sync_on_compute=sync)
    fid.update(reference.double(), real=True)
    fid.update(samples.double(), real=False)
    return float(fid.compute())


def kernel_distance(reference: torch.Tensor, samples: torch.Tensor, seed: int = 0, sync: bool = False) -> tuple[float, float]:
    """KID (mean, std over subsets) between two feature sets; the subsets are drawn from a generator seeded by
    ``seed`` (torchmetrics draws them from torch's global RNG, which is left as it was)."""
    subset_size = min(KID_SUBSET_SIZE, *_global_counts(reference, samples, sync))
    with warnings.catch_warnings():  # "will save all extracted features in buffer": they are small here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(
            feature=Precomputed(reference.shape[1]), subsets=KID_SUBSETS, subset_size=subset_size, sync_on_compute=sync
        )
    kid.update(reference.double(), real=True)
    kid.update(samples.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return float(mean), float(std)


def _global_counts(reference: torch.Tensor, samples: torch.Tensor, sync: bool) -> tuple[int, int]:
    """The two sets' sizes over every rank (sync) or this one's."""
    counts = torch.tensor([len(reference), len(samples)])
    if sync and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(counts)
    return int(counts[0]), int(counts[1])


class WithinPromptDiversity(Metric):
    """Mean L2 distance between the features of two samples of the same prompt (all pairs, pooled).

    ``update(features [N, D], groups)`` takes every sample of a group in one call (a group is never split
    over calls or ranks); groups of one sample contribute no pair. With ``groups=None`` the whole call is
    one group: the diversity of a sample set regardless of prompts. States are sums, so ranks reduce exactly.
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("distance_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pairs", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, features: torch.Tensor, groups: Sequence[Hashable] | None = None) -> None:
        features = features.double()
        keys = [0] * len(features) if groups is None else list(groups)
        for key in dict.fromkeys(keys):
            members = features[[i for i, k in enumerate(keys) if k == key]]  # [n_g, D]
            n = len(members)
            if n < 2:
                continue
            distances = torch.cdist(members, members)  # [n_g, n_g], symmetric, zero diagonal
            self.distance_sum += distances.triu(diagonal=1).sum()
            self.pairs += n * (n - 1) // 2

    def compute(self) -> torch.Tensor:
        if int(self.pairs) == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.distance_sum / self.pairs


def diversity(features: torch.Tensor, groups: Sequence[Hashable] | None = None, sync: bool = False) -> float:
    """WithinPromptDiversity of one feature set (see the class); nan when no group has two samples."""
    metric = WithinPromptDiversity(sync_on_compute=sync)
    metric.update(features, groups)
    return float(metric.compute())


def paired_distance(features: torch.Tensor, base_features: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 distance [N] between a model's sample and the base model's for the same prompt and noise."""
    return (features.double() - base_features.double()).norm(dim=1)


def clip_score(images: torch.Tensor, prompts: list[str], clip_path: str, sync: bool = False, batch_size: int = 64) -> float:
    """torchmetrics' CLIPScore, max(100 cos(E_image, E_prompt), 0) averaged, under the local CLIP at ``clip_path``.

    images [N, 3, H, W] in [0, 1] (clips: every frame is scored against its clip's prompt).
    """
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    from drl.rewards.clip import _features as clip_features
    from drl.rewards.clip import hub_download, require_path

    directory = require_path(clip_path, "CLIP model (quality.clip_path)", hub_download("openai/clip-vit-large-patch14", clip_path))
    def load() -> tuple:
        model = CLIPModel.from_pretrained(directory).eval()
        # transformers 5 returns output objects from get_*_features, torchmetrics (1.9) expects tensors.
        for name in ("get_image_features", "get_text_features"):
            method = getattr(model, name)
            setattr(model, name, lambda *a, _method=method, **k: clip_features(_method(*a, **k)))
        return model, CLIPProcessor.from_pretrained(directory)

    metric = CLIPScore(model_name_or_path=load, sync_on_compute=sync)
    if images.ndim == 5:  # [N, F, 3, H, W] -> frames, each with its clip's prompt
        prompts = [p for p in prompts for _ in range(images.shape[1])]
        images = images.reshape(-1, *images.shape[2:])
    pixels = (images.float().clamp(0, 1) * 255).round()  # the CLIP processor rescales by 1/255
    for start in range(0, len(pixels), batch_size):
        metric.update(list(pixels[start : start + batch_size].cpu()), prompts[start : start + batch_size])
    return float(metric.compute())
