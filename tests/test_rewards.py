"""Rewards on images whose scores are known in advance."""

import numpy as np
import torch

from drl.config import RewardConfig
from drl.rewards import build_reward
from drl.rewards.jpeg import jpeg_size_kb
from drl.rewards.toy_aesthetic import toy_aesthetic_score
from drl.toyworld import Scene, sample_images


def _square(position: str, colour=(1.0, 0.0, 0.0), size=8) -> torch.Tensor:
    image = torch.full((3, 32, 32), 0.3)
    y, x = {"center": (12, 12), "corner": (2, 2)}[position]
    image[:, y : y + size, x : x + size] = torch.tensor(colour)[:, None, None]
    return image


def test_jpeg_size_grows_with_noise_and_signs_are_opposite():
    flat = torch.full((1, 3, 32, 32), 0.5)
    noisy = torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    assert float(jpeg_size_kb(noisy)) > 2 * float(jpeg_size_kb(flat))
    reward = build_reward(RewardConfig(terms={"jpeg_compressibility": 1.0, "jpeg_incompressibility": 0.5}), "cpu")
    total, terms = reward(torch.cat([flat, noisy]), ["", ""], [{}, {}])
    torch.testing.assert_close(terms["jpeg_compressibility"], -terms["jpeg_incompressibility"])
    torch.testing.assert_close(total, -0.5 * terms["jpeg_incompressibility"])
    assert not reward.differentiable


def test_toy_alignment_prefers_the_prompted_scene_and_has_gradients():
    reward = build_reward(RewardConfig(terms={"toy_alignment": 1.0}), "cpu")
    scene = Scene("red", "circle", "top left", "large")
    images, _ = sample_images(4, np.random.default_rng(0), scenes=[scene] * 4)
    samples = ((images + 1) / 2).requires_grad_(True)
    right, _ = reward(samples, [scene.prompt] * 4, [{}] * 4)
    wrong, _ = reward(samples, [scene.replace(colour="blue").prompt] * 4, [{}] * 4)
    assert float(right.mean()) > float(wrong.mean()) + 3
    right.sum().backward()
    assert samples.grad.abs().sum() > 0 and reward.differentiable


def test_toy_attribute_match_is_the_mean_attribute_probability():
    cfg = RewardConfig(terms={"toy_attribute_match": 1.0, "toy_alignment": 0.0}, monitor=["toy_alignment"])
    reward = build_reward(cfg, "cpu")
    scene = Scene("blue", "square", "bottom right", "small")
    images, _ = sample_images(4, np.random.default_rng(1), scenes=[scene] * 4)
    samples = ((images + 1) / 2).requires_grad_(True)
    right, terms = reward(samples, [scene.prompt] * 4, [{}] * 4)
    one_wrong, _ = reward(samples, [scene.replace(shape="circle").prompt] * 4, [{}] * 4)
    assert bool((right > 0.9).all()) and bool((right <= 1).all())
    # One attribute of four is wrong: its probability (~0) leaves about 3/4.
    torch.testing.assert_close(one_wrong, right - 0.25, atol=0.05, rtol=0)
    # The log-prob reward is the same classifier: a perfect match is near 0 in both.
    assert bool((terms["toy_alignment"] > -0.5).all())
    right.sum().backward()
    assert samples.grad.abs().sum() > 0 and reward.differentiable


def test_toy_aesthetic_prefers_centred_saturated_contrasting_objects():
    centred, corner = _square("center"), _square("corner")
    grey = _square("center", colour=(0.5, 0.5, 0.5))
    scores = toy_aesthetic_score(torch.stack([centred, corner, grey]))
    assert scores[0] > scores[1] and scores[0] > scores[2]
    assert bool(((0 <= scores) & (scores <= 1)).all())
    x = torch.stack([corner]).requires_grad_(True)
    toy_aesthetic_score(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
