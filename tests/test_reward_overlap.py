"""Scoring that overlaps sampling: chunk k is scored in a worker thread while chunk k+1 denoises,
with the same scores, in the same order, as scoring the whole batch afterwards."""

import threading
import time

import torch
from conftest import compose_config, read_records

from drl import rewards as reward_registry
from drl.rewards import WeightedReward
from drl.rewards.base import Reward
from drl.rewards.overlap import ChunkScorer, can_overlap
from drl.rewards.video import frame_subset
from drl.train import train


def _spy(monkeypatch, name: str) -> list:
    """Wrap registered reward ``name``; returns the list of (batch size, thread name) of its calls."""
    calls, make = [], reward_registry.REWARDS[name]

    def spying(cfg, device):
        inner = make(cfg, device)

        def fn(samples, prompts, metadata):
            calls.append((len(samples), threading.current_thread().name))
            return inner.fn(samples, prompts, metadata)

        return Reward(inner.name, fn, inner.differentiable)

    monkeypatch.setitem(reward_registry.REWARDS, name, spying)
    return calls


def test_overlapped_scoring_trains_exactly_as_sequential_scoring(tmp_path, monkeypatch):
    calls = _spy(monkeypatch, "toy_alignment")
    overrides = ["reward=aligned_and_compressible", "train.samples_per_epoch=12", "train.batch_size=4",
                 "hardware.num_threads=1"]  # fmt: skip
    train(compose_config([*overrides, "reward.overlap=false"]), tmp_path / "sequential")
    sequential_calls, calls[:] = list(calls), []
    train(compose_config([*overrides, "reward.overlap=true"]), tmp_path / "overlapped")
    # Training batches: one call of 12 in the main thread, or three chunks of 4 in the worker (grids: 6, main).
    assert sequential_calls == [(6, "MainThread"), (12, "MainThread"), (12, "MainThread"), (6, "MainThread")]
    assert [n for n, _ in calls] == [6, 4, 4, 4, 4, 4, 4, 6] and all(t.startswith("drl-reward") for _, t in calls[1:-1])
    keys = ["reward_mean", "reward_std", "reward/toy_alignment", "reward/jpeg_compressibility", "train/loss", "train/grad_norm"]
    for a, b in zip(read_records(tmp_path / "sequential"), read_records(tmp_path / "overlapped"), strict=True):
        assert [a[k] for k in keys] == [b[k] for k in keys]


def test_the_worker_scores_in_the_background_and_returns_chunks_in_order():
    def slow(images, prompts, metadata):
        time.sleep(0.2)
        return images.mean(dim=(1, 2, 3))

    scorer = ChunkScorer(WeightedReward([Reward("slow", slow, False)], [2.0]))
    chunks = [torch.rand(3, 3, 4, 4) for _ in range(3)]
    start = time.perf_counter()
    for k, chunk in enumerate(chunks):
        scorer.submit(chunk, [f"p{k}"] * 3, [{}] * 3)
    assert time.perf_counter() - start < 0.15  # submitting does not wait for the 0.6 s of scoring
    scores, terms = scorer.results()
    scorer.close()
    expected = torch.cat([c.mean(dim=(1, 2, 3)) for c in chunks])
    assert torch.equal(terms["slow"], expected) and torch.equal(scores, 2 * expected)


def test_rewards_whose_scores_depend_on_the_batch_are_scored_after_sampling():
    image = Reward("img", lambda s, p, m: s.mean(dim=(1, 2, 3)), False)
    assert can_overlap(WeightedReward([image], [1.0]), chunk_size=4)
    assert not can_overlap(WeightedReward([frame_subset(image, 2)], [1.0]), chunk_size=4)  # frames drawn once per call
    grouped = Reward("rank", lambda s, p, m: s.mean(dim=(1, 2, 3)), False, groupwise=True)
    assert can_overlap(WeightedReward([grouped], [1.0], group_size=4), chunk_size=8)
    assert not can_overlap(WeightedReward([grouped], [1.0], group_size=4), chunk_size=6)  # a group would straddle chunks
