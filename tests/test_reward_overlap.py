"""Scoring that overlaps sampling: chunk k is scored in a worker thread while chunk k+1 denoises,
with the same scores (up to float rounding), in the same order, as scoring the whole batch afterwards."""

import threading
import time

import pytest
import torch
from conftest import compose_config, read_records

from drl import rewards as reward_registry
from drl.rewards import WeightedReward
from drl.rewards.base import Reward
from drl.rewards.overlap import ChunkScorer, can_overlap
from drl.rewards.video import frame_subset
from drl.train import train


def _spy(monkeypatch, name: str) -> tuple[list, list]:
    """Wrap registered reward ``name``; returns the (batch size, thread name) of its calls, and their scores."""
    calls, scores, make = [], [], reward_registry.REWARDS[name]

    def spying(cfg, device):
        inner = make(cfg, device)

        def fn(samples, prompts, metadata):
            calls.append((len(samples), threading.current_thread().name))
            out = inner.fn(samples, prompts, metadata)
            scores.append((out[0] if isinstance(out, tuple) else out).detach().clone())
            return out

        return Reward(inner.name, fn, inner.differentiable)

    monkeypatch.setitem(reward_registry.REWARDS, name, spying)
    return calls, scores


# Scoring 12 samples in one call or in three calls of 4 runs the reward's kernels on other batch shapes, which
# round differently on some CPUs (~1e-7 relative in float32); two epochs of training carry that through the
# update. 1e-5 relative is 100 times that rounding, while scores given to the wrong samples move the loss by
# tens of percent and the grad norm by percents (two chunks swapped: +53% and +4%). The loss, a mean of terms
# of size |advantage| ~ 1 that cancel to ~0.005, rounds relative to 1: hence the same bound as an absolute one.
FLOAT32_RUNS = 1e-5


@pytest.mark.slow  # ~16 CPU-s: two two-epoch runs compared
def test_overlapped_scoring_trains_as_sequential_scoring(tmp_path, monkeypatch):
    calls, scores = _spy(monkeypatch, "toy_alignment")
    overrides = ["reward=aligned_and_compressible", "train.samples_per_epoch=12", "train.batch_size=4",
                 "hardware.num_threads=1"]  # fmt: skip
    train(compose_config([*overrides, "reward.overlap=false"]), tmp_path / "sequential")
    sequential_calls, sequential_scores = list(calls), list(scores)
    calls[:], scores[:] = [], []
    train(compose_config([*overrides, "reward.overlap=true"]), tmp_path / "overlapped")
    # Training batches: one call of 12 in the main thread, or three chunks of 4 in the worker (grids: 6, main).
    assert sequential_calls == [(6, "MainThread"), (12, "MainThread"), (12, "MainThread"), (6, "MainThread")]
    assert [n for n, _ in calls] == [6, 4, 4, 4, 4, 4, 4, 6] and all(t.startswith("drl-reward") for _, t in calls[1:-1])
    # Epoch 0 samples the same images either way (same noise, same batch shapes): the chunks' scores, in order,
    # are the one call's, each sample's own.
    chunked, whole = torch.cat(scores[1:4]), sequential_scores[1]
    torch.testing.assert_close(chunked, whole, rtol=FLOAT32_RUNS, atol=0)
    gaps = (whole[:, None] - whole[None]).abs() + torch.eye(len(whole)) * whole.abs().max()
    assert gaps.min() > 10 * FLOAT32_RUNS * whole.abs().max()  # no two scores within the tolerance: a swap would show
    keys = ["reward_mean", "reward_std", "reward/toy_alignment", "reward/jpeg_compressibility", "train/loss", "train/grad_norm"]
    for a, b in zip(read_records(tmp_path / "sequential"), read_records(tmp_path / "overlapped"), strict=True):
        assert [b[k] for k in keys] == pytest.approx([a[k] for k in keys], rel=FLOAT32_RUNS, abs=FLOAT32_RUNS)


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
