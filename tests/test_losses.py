"""Each algorithm's loss on hand-made numbers."""

import math

import numpy as np
import torch

from drl.losses import gaussian_kl_equal_std, l_simple, ppo_clip_loss, rwr_weights
from drl.stat_tracking import PerPromptStatTracker


def test_l_simple_is_mean_squared_error_per_sample():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    torch.testing.assert_close(l_simple(pred, target), torch.tensor([2.5, 5.0]))


def test_ppo_clip_loss_by_hand():
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    ratio = torch.tensor([1.5, 0.5, 1.5, 0.5])
    loss, clipfrac = ppo_clip_loss(adv, ratio, clip_range=0.2)
    # max(-A r, -A clip(r)): [-1.2, -0.5, 1.5, 0.8] -> mean 0.15
    torch.testing.assert_close(loss, torch.tensor(0.15))
    assert float(clipfrac) == 1.0
    loss_in_range, frac = ppo_clip_loss(adv, torch.ones(4), clip_range=0.2)
    assert float(loss_in_range) == 0.0 and float(frac) == 0.0


def test_ppo_gradient_is_zero_when_clipped_in_the_good_direction():
    ratio = torch.tensor([1.5], requires_grad=True)
    loss, _ = ppo_clip_loss(torch.tensor([1.0]), ratio, 0.2)
    loss.backward()
    assert float(ratio.grad) == 0.0


def test_rwr_weights_by_hand():
    rewards = torch.tensor([0.0, 1.0])
    w = rwr_weights(rewards, beta=1.0, normalization="none")
    expected = 2 * torch.tensor([1.0, math.e]) / (1 + math.e)
    torch.testing.assert_close(w, expected)
    assert abs(float(w.mean()) - 1.0) < 1e-6
    # batch normalisation: rewards become [-1, 1]
    wb = rwr_weights(torch.tensor([3.0, 5.0]), beta=1.0, normalization="batch")
    torch.testing.assert_close(wb, 2 * torch.tensor([math.exp(-1), math.exp(1)]) / (math.exp(-1) + math.exp(1)), rtol=1e-5, atol=1e-5)
    assert float(rwr_weights(torch.tensor([0.0, 10.0]), 1.0, "none", max_weight=1.5).max()) == 1.5


def test_gaussian_kl_equal_std_by_hand():
    mean, ref = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    kl = gaussian_kl_equal_std(mean, ref, torch.tensor([0.5]))
    torch.testing.assert_close(kl, torch.tensor([2.0]))  # 1 / (2 * 0.25)
    torch.testing.assert_close(gaussian_kl_equal_std(mean, ref, torch.tensor([0.5]), "mean"), torch.tensor([1.0]))


def test_per_prompt_stat_tracker():
    tracker = PerPromptStatTracker(buffer_size=4, min_count=2)
    adv = tracker.update(["a", "a", "b"], np.array([1.0, 3.0, 10.0]))
    # "a" has 2 rewards -> its own stats (mean 2, std 1); "b" has 1 -> batch stats
    np.testing.assert_allclose(adv[:2], [-1.0, 1.0], atol=1e-5)
    batch_mean, batch_std = np.mean([1, 3, 10]), np.std([1, 3, 10])
    np.testing.assert_allclose(adv[2], (10 - batch_mean) / (batch_std + 1e-6), atol=1e-6)
    restored = PerPromptStatTracker(4, 2)
    restored.load_state_dict(tracker.state_dict())
    assert restored.update(["a"], np.array([2.0]))[0] == tracker.update(["a"], np.array([2.0]))[0]


def test_group_advantages_normalise_within_each_prompt_group():
    from drl.algorithms.ddpo import group_advantages

    rewards = torch.tensor([1.0, 3.0, 10.0, 10.0, -2.0, 2.0])
    adv = group_advantages(rewards, group_size=2)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0, 0.0, 0.0, -1.0, 1.0]), atol=1e-5, rtol=0)
