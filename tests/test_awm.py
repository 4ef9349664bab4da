"""AWM (Advantage Weighted Matching): its log-likelihood against the authors' code, its on-policy gradient, runs."""

import math

import pytest
import torch
from conftest import compose_config, read_records, tiny_model_overrides

from drl.errors import ConfigError
from drl.losses import awm_log_likelihood, ppo_clip_loss
from drl.train import train


def _authors_log_prob(model_output, noise, clean, timestep, weighting, power=0.25):
    """scxue/advantage_weighted_matching scripts/train_sd3_awm.py, compute_log_prob_awm after the forward pass,
    written out (float64, as theirs): -mean_d (v - (ε - x_0))², then the weighting by t = σ."""
    log_prob = -((model_output.double() - (noise.double() - clean.double())) ** 2)
    log_prob = log_prob.mean(dim=tuple(range(1, log_prob.ndim)))
    t = timestep.view(-1).double()
    if weighting == "t":
        log_prob = log_prob * t
    elif weighting == "t**2":
        log_prob = log_prob * t**2
    elif weighting == "huber":
        log_prob = -(torch.sqrt(-log_prob + 1e-10) - 1e-5) * t
    elif weighting == "ghuber":
        eps = torch.tensor(1e-10, dtype=torch.float64)
        log_prob = -(torch.pow(-log_prob + 1e-10, power) - torch.pow(eps, power)) * t / power
    return log_prob


@pytest.mark.parametrize("ours, theirs", [("uniform", "Uniform"), ("t", "t"), ("t2", "t**2"), ("huber", "huber"), ("ghuber", "ghuber")])
def test_log_likelihood_is_the_authors_on_the_same_inputs(ours, theirs):
    """Identical velocity, noise, clean latents and σ: float32 ours against float64 theirs, within 1e-6 relative."""
    g = torch.Generator().manual_seed(0)
    clean, noise, v = (torch.randn(6, 4, 8, 8, generator=g) for _ in range(3))
    sigma = torch.rand(6, generator=g)
    expected = _authors_log_prob(v, noise, clean, sigma, theirs)
    torch.testing.assert_close(awm_log_likelihood(v, noise - clean, sigma, ours).double(), expected, rtol=1e-6, atol=1e-7)


def test_on_policy_gradient_is_advantage_weighted_matching():
    """At ratio 1 the clipped surrogate's gradient in the prediction is that of Σ A_k e_k / N: matching weighted by A
    (the paper's claim, uniform weighting), whatever the clip range."""
    g = torch.Generator().manual_seed(1)
    prediction = torch.randn(4, 2, 3, 3, generator=g, requires_grad=True)
    target, adv = torch.randn(4, 2, 3, 3, generator=g), torch.tensor([1.5, -0.5, 0.0, 2.0])
    log_likelihood = awm_log_likelihood(prediction, target, torch.ones(4))
    loss, _ = ppo_clip_loss(adv, torch.exp(log_likelihood - log_likelihood.detach()), 1e-4)
    (grad,) = torch.autograd.grad(loss, prediction)
    weighted = (adv * (prediction - target).pow(2).flatten(1).mean(1)).sum() / 4
    (expected,) = torch.autograd.grad(weighted, prediction)
    torch.testing.assert_close(grad, expected, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("sd3", ["algorithm.weighting=ghuber", "scheduler.eta=0", "algorithm.kl_coef=0.01"]),  # ODE rollouts, the authors' weighting
        ("sd15", []),  # an ε-model: L_simple's error, uniform weighting
    ],
)
def test_awm_trains_a_tiny_model_through_the_loop(tmp_path, tiny_dirs, name, overrides):
    """2 epochs of 4 samples in groups of 2 with 2 steps: 4 pairs per epoch (half the steps), the ratio 1 on-policy,
    the weights moved; denoiser calls: 4·2 to sample, 4 for L_old + 4 to train (+ 4 for the KL's reference)."""
    cfg = compose_config(tiny_model_overrides(name, tiny_dirs, "algorithm=awm", "algorithm.group_size=2", "algorithm.lr=1e-2", *overrides))
    train(cfg, tmp_path)
    records = read_records(tmp_path)
    assert len(records) == 2 and all(math.isfinite(r["train/loss"]) for r in records)
    assert all(r["train/ratio_dev_first"] <= 1e-5 and r["train/pairs"] == 4 for r in records)
    assert all(r["train/denoiser_calls_sample"] == 8 for r in records)
    assert all(r["train/denoiser_calls_update"] == (12 if cfg.algorithm.kl_coef > 0 else 8) for r in records)
    assert records[-1]["drift_from_base"] > 0


def test_awm_refuses_a_flow_weighting_on_an_epsilon_model():
    with pytest.raises(ConfigError, match=r"^algorithm\.weighting=ghuber weights by the flow level σ \(scheduler=flow\); scheduler\.kind=ddim"):
        compose_config(["algorithm=awm", "algorithm.weighting=ghuber"])
