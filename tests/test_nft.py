"""DiffusionNFT: its loss on hand-made numbers, the x̂_0-space form for every parameterisation, end to end."""

import math

import pytest
import torch
from diffusers import DDIMScheduler

from drl.algorithms.nft import optimality_probability
from drl.losses import nft_loss
from drl.sampling import add_noise, make_schedule, predict_x0_eps, step_mean_std, training_target, x0_error_scale

from conftest import read_records, train_toy_alignment


def _flow_or_ddim(prediction_type):
    from diffusers import FlowMatchEulerDiscreteScheduler

    if prediction_type == "flow":
        return make_schedule(FlowMatchEulerDiscreteScheduler(shift=3.0), 10)
    return make_schedule(DDIMScheduler(prediction_type=prediction_type, clip_sample=False), 10)


def test_nft_loss_by_hand():
    pred, old, target = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # beta = 0.5: v+ = 0.5 old + 0.5 pred = [1.5, 0]; v- = 1.5 old - 0.5 pred = [0.5, 0]
    # x0 errors (scale 2): v+ -> [3, -2], v- -> [1, -2]; squared means 6.5 and 2.5
    plain = nft_loss(pred, old, target, torch.tensor([0.25]), 0.5, torch.tensor([2.0]), adaptive=False)
    torch.testing.assert_close(plain, torch.tensor([(0.25 * 6.5 + 0.75 * 2.5) / 0.5]))
    # adaptive: divided by mean |error|: 6.5 / 2.5 and 2.5 / 1.5
    adaptive = nft_loss(pred, old, target, torch.tensor([0.25]), 0.5, torch.tensor([2.0]), adaptive=True)
    torch.testing.assert_close(adaptive, torch.tensor([(0.25 * 6.5 / 2.5 + 0.75 * 2.5 / 1.5) / 0.5]))
    # scaled by the reward clip c, as NVlabs' code does: c = 2 doubles the plain loss, (0.25 * 6.5 + 0.75 * 2.5) / 0.5 = 7
    scaled = nft_loss(pred, old, target, torch.tensor([0.25]), 0.5, torch.tensor([2.0]), adaptive=False, adv_clip=2.0)
    torch.testing.assert_close(scaled, torch.tensor([14.0]))


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_nft_gradient_at_old_policy_is_advantage_weighted_regression(beta):
    """At v_θ = v_old the gradient is 2 clip(A, -c, c) s² (v_old - v*) / D, whatever β and c (the c/β scaling).

    old = [1, -1], target 0, x̂_0 scale s = 1.5, D = 2: 2 A 2.25 [1, -1] / 2 = 2.25 A [1, -1].
    """
    old, target = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.0, 0.0]])
    # (A, c, r = 1/2 + clip(A, -c, c) / 2c, expected gradient)
    cases = [(1.0, 2.0, 0.75, [2.25, -2.25]), (1.0, 4.0, 0.625, [2.25, -2.25]), (-3.0, 2.0, 0.0, [-4.5, 4.5])]
    for advantage, clip, r, expected in cases:
        assert r == 0.5 + max(-clip, min(clip, advantage)) / (2 * clip)
        pred = old.clone().requires_grad_(True)
        nft_loss(pred, old, target, torch.tensor([r]), beta, torch.tensor([1.5]), adaptive=False, adv_clip=clip).sum().backward()
        torch.testing.assert_close(pred.grad, torch.tensor([expected]))  # descent: toward v* if A > 0, away if A < 0


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "flow"])
def test_the_regression_target_is_the_output_whose_x0_is_the_data(prediction_type):
    """What NFT and DPO regress onto (ε, v, or the flow velocity ε - x_0) is, at x_t = add_noise(x_0, ε, t),
    the output from which the sampler recovers x_0 exactly; the flow x_t is diffusers' own scale_noise."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    schedule = _flow_or_ddim(prediction_type)
    g = torch.Generator().manual_seed(1)
    t = schedule.timesteps[[0, 4, 9]]
    x0, eps = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    x_t = add_noise(schedule, x0, eps, t)
    x0_hat = step_mean_std(schedule, training_target(schedule, x0, eps, t), t, x_t, eta=0.0)[2]
    torch.testing.assert_close(x0_hat, x0, rtol=1e-4, atol=1e-4)
    if prediction_type == "flow":
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
        scheduler.set_timesteps(10)
        torch.testing.assert_close(x_t, scheduler.scale_noise(x0, t, eps))
        torch.testing.assert_close(training_target(schedule, x0, eps, t), eps - x0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "flow"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_nft_loss_in_output_space_is_the_x0_space_loss_of_every_parameterisation(prediction_type, adaptive):
    """The NFT module docstring's claim, checked with the sampler's own x̂_0 (drl.sampling.step_mean_std).

    x̂_0 is affine in the output, so v± formed from ε-, v- or flow outputs have x̂_0(v±) equal to the same
    combinations of x̂_0(v_old) and x̂_0(v_θ); and nft_loss on outputs equals the x̂_0-space loss
    c/β [r f(x̂_0(v+) - x_0) + (1 - r) f(x̂_0(v-) - x_0)], f the (adaptive) mean squared error.
    """
    schedule = _flow_or_ddim(prediction_type)
    g = torch.Generator().manual_seed(0)
    t = schedule.timesteps[[0, 4, 9]]  # [3]: noisy, middle, nearly clean
    x0, eps = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    x_t = add_noise(schedule, x0, eps, t)
    pred, old = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    r, beta, clip = torch.tensor([0.9, 0.2, 0.5]), 0.3, 2.0

    def x0_of(out):  # the x̂_0 that the sampler itself derives from a model output at (x_t, t)
        return step_mean_std(schedule, out, t, x_t, eta=0.0)[2]

    positive, negative = (1 - beta) * old + beta * pred, (1 + beta) * old - beta * pred
    torch.testing.assert_close(x0_of(positive), (1 - beta) * x0_of(old) + beta * x0_of(pred), rtol=1e-4, atol=1e-4)

    def f(error):
        squared = error.pow(2).flatten(1).mean(1)
        return squared / error.abs().flatten(1).mean(1) if adaptive else squared

    expected = clip / beta * (r * f(x0_of(positive) - x0) + (1 - r) * f(x0_of(negative) - x0))
    target = training_target(schedule, x0, eps, t)
    loss = nft_loss(pred, old, target, r, beta, x0_error_scale(schedule, t), adaptive, clip)
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)


def test_optimality_probability_by_hand():
    r = optimality_probability(torch.tensor([0.0, 2.0, 10.0, 10.0]), group_size=2, clip=2.0)
    torch.testing.assert_close(r, torch.tensor([0.25, 0.75, 0.5, 0.5]))  # A = -1, 1, 0, 0
    r_batch = optimality_probability(torch.tensor([0.0, 0.0, 4.0, 4.0]), group_size=1, clip=0.5)
    torch.testing.assert_close(r_batch, torch.tensor([0.0, 0.0, 1.0, 1.0]))  # A = -1, -1, 1, 1 clipped to [-0.5, 0.5]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_x0_error_scale_is_the_derivative_of_x0(prediction_type):
    schedule = make_schedule(DDIMScheduler(prediction_type=prediction_type, clip_sample=False), 10)
    t = torch.tensor([1, 501, 901])
    x, out, delta = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    x0_a, _ = predict_x0_eps(schedule, out, t, x)
    x0_b, _ = predict_x0_eps(schedule, out + delta, t, x)
    torch.testing.assert_close((x0_b - x0_a).abs(), x0_error_scale(schedule, t).view(-1, 1) * delta.abs(), rtol=1e-4, atol=1e-5)


def test_nft_runs_end_to_end_on_policy_with_kl_and_ema(tmp_path, random_toy_model):
    train_toy_alignment(tmp_path, random_toy_model, "algorithm=nft", "scheduler.eta=0", "algorithm.kl_coef=0.1", "algorithm.ema_decay=0.9")
    records = read_records(tmp_path)
    assert len(records) == 2 and all(math.isfinite(r["train/loss"]) for r in records)
    assert records[0]["train/old_dev_first"] == 0.0  # v_θ = v_old before the first step
    assert records[0]["train/pairs"] == 8 * 2  # half of 4 timesteps per sample
    # denoiser calls: 8 samples x 4 steps (no guidance); v_old, v_θ and the KL's reference on the 16 pairs
    assert all(r["train/denoiser_calls_sample"] == 8 * 4 and r["train/denoiser_calls_update"] == 3 * 16 for r in records)
    assert records[1]["train/kl_to_base"] > 0 and records[1]["drift_from_base"] > 0
    assert (tmp_path / "samples_after.png").is_file() and (tmp_path / "model" / "unet").is_dir()

