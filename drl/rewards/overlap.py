"""Scoring that overlaps sampling: while chunk k+1 of the rollout is denoised, chunk k is scored.

The collector hands each finished chunk to a single worker thread (RolloutCollector.on_chunk); the
thread scores the chunks in order, and the epoch's scores are their concatenation, identical to
scoring the whole batch afterwards because every term is per-sample (Reward.per_sample) and groups
never straddle two chunks. Otherwise, and for anything but a Rollout, the batch is scored after sampling.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from drl.rewards import WeightedReward
from drl.rollout import RolloutCollector
from drl.types import Rollout


class ChunkScorer:
    """Scores chunks [b, ...] in one background thread, in submission order."""

    def __init__(self, reward: WeightedReward):
        self.reward = reward
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drl-reward")
        self.futures: list[Future] = []
        self.prompts: list = []  # every submitted chunk's prompts, in order

    def submit(self, samples: torch.Tensor | None, prompts: list, metadata: list, latents: torch.Tensor | None = None) -> None:
        self.prompts.extend(prompts)
        self.futures.append(self.pool.submit(self._score, samples, list(prompts), list(metadata), latents))

    def _score(self, samples: torch.Tensor | None, prompts: list, metadata: list, latents: torch.Tensor | None):
        with torch.no_grad():  # grad mode is per thread
            return self.reward(samples, prompts, metadata, latents=latents)

    def results(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(scores [B], terms {name: [B]}) of every submitted chunk, concatenated; re-raises a chunk's error."""
        parts = [f.result() for f in self.futures]
        scores = torch.cat([s for s, _ in parts])
        return scores, {k: torch.cat([t[k] for _, t in parts]) for k in parts[0][1]}

    def close(self) -> None:
        for f in self.futures:
            f.cancel()
        self.pool.shutdown(wait=True)


def can_overlap(reward: WeightedReward, chunk_size: int) -> bool:
    """Chunked scoring gives the batch's scores: per-sample terms, and whole groups in every chunk."""
    return reward.per_sample and (reward.group_size <= 1 or chunk_size % reward.group_size == 0)


def collect_and_score(algorithm, collector, reward: WeightedReward, generator: torch.Generator, overlap: bool):
    """(algorithm.collect(generator), its rewards [B]): a Rollout comes with its rewards and reward terms filled
    in (no gradient), unless its collector filled them (the environment's returns on a control task); any other
    batch (prompts alone, training data, transitions) with None: no reward scored it."""
    chunked = isinstance(collector, RolloutCollector)  # the image/video collector; control collectors run whole episodes
    scorer = ChunkScorer(reward) if overlap and chunked and can_overlap(reward, collector.batch_size) else None
    with contextlib.ExitStack() as stack:
        if scorer is not None:
            stack.callback(scorer.close)
            stack.enter_context(collector.chunk_callback(scorer.submit))
        if chunked:  # no term reads pixels: no VAE decode in the rollout
            stack.enter_context(collector.decoding(reward.needs_pixels))
        batch = algorithm.collect(generator)
        if not isinstance(batch, Rollout):
            return batch, None
        if batch.rewards is not None:  # rewarded by its environment
            return batch, batch.rewards
        if scorer is not None and scorer.futures and scorer.prompts == batch.prompts:  # the chunks are the batch
            batch.rewards, batch.reward_terms = scorer.results()
        else:
            with torch.no_grad():
                batch.rewards, batch.reward_terms = reward(batch.samples, batch.prompts, batch.metadata, latents=batch.final_latents)
    return batch, batch.rewards

