"""What a reward is: ``fn(samples, prompts, metadata) -> scores [B]`` (or ``(scores, info)``) plus flags.

The contract every reward keeps, built-in or plug-in (docs/guide/your-own-reward.md):
    samples   images [B, 3, H, W] or clips [B, F, 3, H, W], float in [0, 1], on the run's device
    prompts   list of B strings;  metadata  list of B dicts (the prompt source's per-prompt fields)
    returns   scores [B] floating point, or (scores [B], info) with info {key: B numbers} logged beside it
``Reward.score`` checks the output of every call and raises RewardError with one sentence naming the reward.

A pairwise reward compares two samples instead: ``fn(first, second, prompts, metadata) -> preferences [P]``, the
probability that ``first[k]`` is preferred to ``second[k]``; drl calls it on the pairs of each group and scores
each sample by its win rate in the group (``win_rates``).

A latent reward (``space="latent"``) reads the denoiser's clean latents x_0 [B, *latent_shape] instead of
decoded samples, before the VAE decode; when no term reads pixels, training rollouts skip the decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from drl.errors import RewardError

RewardFn = Callable[[torch.Tensor, list, list], torch.Tensor]
SPACES = ("pixel", "latent")  # a reward reads decoded samples, or the latents before the VAE decode


@dataclass
class Reward:
    """A named reward.

    fn: samples [B, 3, H, W] float in [0, 1] (clips: [B, F, 3, H, W]), prompts [B], metadata [B] -> scores [B] float32.
    differentiable: scores carry gradients back to ``samples`` (AlignProp-style methods need this).
    video: it scores clips [B, F, 3, H, W] instead of images.
    frames: how many frames of a clip it reads (0: all), so that AlignProp decodes only those.
    groupwise: it scores the samples of one prompt together (e.g. ranks them): each call gets one whole group.
    per_sample: a sample's score does not depend on the other samples of the call or on how often it was
        called, so scoring a batch in chunks gives the same scores (what overlapped scoring needs).
    pairwise: fn compares pairs, fn(first [P, ...], second [P, ...], prompts [P], metadata [P]) -> preferences [P] in
        [0, 1] (1: first preferred, 0: second, 0.5: a tie); called on every pair of a group, it scores each sample by its
        win rate there (groupwise, so only under algorithms that sample groups).
    space: what ``fn`` reads as its first argument: "pixel", the decoded samples; or "latent", the x_0 latents
        [B, C, h, w] (video: [B, C, F, h, w]) the denoiser produced, before the VAE decode (and its scaling).
    plugin: the ``_target_`` it was built from, for a reward from the user's code ("" for built-ins).
    """

    name: str
    fn: RewardFn
    differentiable: bool
    video: bool = False
    frames: int = 0
    groupwise: bool = False
    per_sample: bool = True
    pairwise: bool = False
    space: str = "pixel"
    plugin: str = ""

    def __post_init__(self):
        self.groupwise = self.groupwise or self.pairwise  # a pairwise reward compares within groups
        if self.space not in SPACES:
            raise RewardError(f"reward {self.name!r}: space={self.space!r} is not one of {', '.join(SPACES)} (what the reward reads).")

    def __call__(self, samples: torch.Tensor, prompts: list, metadata: list) -> torch.Tensor:
        return self.score(samples, prompts, metadata)[0]

    def score(
        self, samples: torch.Tensor, prompts: list, metadata: list, group_size: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(scores [B], info {key: [B]}), checked. A groupwise reward is called once per group: ``group_size``
        consecutive samples, or (group_size 0) the samples that share a prompt."""
        groups = self.groups(prompts, len(samples), group_size)
        if len(groups) == 1:
            return self._checked(samples, prompts, metadata)
        parts = [self._checked(samples[g], [prompts[i] for i in g], [metadata[i] for i in g]) for g in groups]
        back = torch.tensor([i for g in groups for i in g]).argsort()  # concatenated group order -> batch order
        scores = torch.cat([s for s, _ in parts])[back.to(parts[0][0].device)]
        return scores, {k: torch.cat([info[k] for _, info in parts])[back] for k in parts[0][1]}

    def groups(self, prompts: list, n: int, group_size: int) -> list[list[int]]:
        """The index lists this reward is called on: the whole batch, unless it is groupwise."""
        if not self.groupwise:
            return [list(range(n))]
        if group_size > 0:
            if n % group_size:
                raise RewardError(f"reward {self.name!r} scores groups of {group_size} samples, but the batch has {n}.")
            return [list(range(i, i + group_size)) for i in range(0, n, group_size)]
        by_prompt: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            by_prompt.setdefault(prompt, []).append(i)
        return list(by_prompt.values())

    def _checked(self, samples: torch.Tensor, prompts: list, metadata: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        try:
            out = self._pairwise(samples, prompts, metadata) if self.pairwise else self.fn(samples, prompts, metadata)
        except RewardError as e:  # e.g. a remote reward's server is down: say which term
            raise e if str(e).startswith("reward ") else RewardError(f"reward {self.name!r}: {e}") from None
        scores, info = out if isinstance(out, tuple) and len(out) == 2 else (out, {})
        return check_scores(self.name, scores, len(samples)), check_info(self.name, info, len(samples))


    def _pairwise(self, samples: torch.Tensor, prompts: list, metadata: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One group's win rates [n] from one call of fn on all its n(n-1)/2 pairs (i < j)."""
        n = len(samples)
        if n < 2:  # nobody to compare with
            return torch.full((n,), 0.5, device=samples.device), {}
        first, second = torch.triu_indices(n, n, offset=1)  # [P] each, P = n(n-1)/2
        out = self.fn(samples[first], samples[second], [prompts[i] for i in first.tolist()], [metadata[i] for i in first.tolist()])
        preferences = check_scores(self.name, out[0] if isinstance(out, tuple) else out, len(first), what="preferences")
        low, high = float(preferences.detach().min()), float(preferences.detach().max())
        if low < 0 or high > 1:
            raise RewardError(
                f"reward {self.name!r} is pairwise and returned preferences in [{low:.3g}, {high:.3g}]: return, for each pair, "
                "the probability in [0, 1] that the first sample is preferred (1: first, 0: second, 0.5: a tie)."
            )
        return win_rates(preferences, first.to(preferences.device), second.to(preferences.device), n), {}


def win_rates(preferences: torch.Tensor, first: torch.Tensor, second: torch.Tensor, n: int) -> torch.Tensor:
    """Each sample's win rate in its group of n: its expected wins over the n - 1 others (Pref-GRPO, Wang et al. 2025).

        w_i = 1/(n-1) * sum_{j != i} P(i beats j),   P(j beats i) = 1 - P(i beats j)

    preferences [P]: P(first[k] beats second[k]), each unordered pair once. With 0/1 preferences, w_i is
    the fraction of the group that sample i beats; the scores of a group always average 0.5.
    """
    wins = torch.zeros(n, dtype=preferences.dtype, device=preferences.device)
    wins = wins.index_add(0, first, preferences).index_add(0, second, 1 - preferences)
    return wins / (n - 1)


def check_scores(name: str, scores, n: int, what: str = "scores") -> torch.Tensor:
    """The reward's scores, or RewardError saying what is wrong with them and how to fix it."""
    each = "sample" if what == "scores" else "pair"
    if not isinstance(scores, torch.Tensor):
        raise RewardError(
            f"reward {name!r} returned a {type(scores).__name__}, not a torch.Tensor: return one float per {each} "
            f"as a tensor of shape [{n}] (e.g. torch.tensor({what}, device=images.device))."
        )
    if tuple(scores.shape) != (n,):
        raise RewardError(
            f"reward {name!r} returned {what} of shape {list(scores.shape)} for {n} {each}s: return shape [{n}], "
            f"one per {each} (e.g. {what}.reshape(-1) or {what}.mean(dim=1))."
        )
    if not scores.is_floating_point():
        raise RewardError(f"reward {name!r} returned {scores.dtype} {what}: return a floating-point tensor (e.g. {what}.float()).")
    return scores


def check_info(name: str, info, n: int) -> dict[str, torch.Tensor]:
    """Per-sample extra values {key: [B]} (logged as reward/<name>/<key>), as float tensors."""
    if not isinstance(info, dict):
        raise RewardError(f"reward {name!r} returned (scores, {type(info).__name__}): the second item must be a dict of per-sample values.")
    checked = {}
    for key, values in info.items():
        try:
            values = torch.as_tensor(values if not isinstance(values, torch.Tensor) else values.detach(), dtype=torch.float32).cpu()
        except (TypeError, ValueError, RuntimeError):
            raise RewardError(f"reward {name!r}: info[{key!r}] is not numbers; return {n} numbers per key (or leave the key out).") from None
        if tuple(values.shape) != (n,):
            raise RewardError(f"reward {name!r}: info[{key!r}] has shape {list(values.shape)}; return one number per sample, shape [{n}].")
        checked[f"{name}/{key}"] = values
    return checked
