"""The reverse steps against diffusers' own DDIMScheduler.step / DDPMScheduler.step."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from drl.sampling import add_noise, denoising_step, gaussian_log_prob, make_schedule, training_target

SCHEDULER_KW = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def _independent_log_prob(x, mean, std):
    """Gaussian log-density written out per element, in float64 (not the code under test)."""
    x, mean = x.double(), mean.double()
    var = float(std) ** 2
    return (-((x - mean) ** 2) / (2 * var) - 0.5 * math.log(2 * math.pi * var)).flatten(1).sum(1)


def _ddim(prediction_type="epsilon", clip=False, **kw):
    return DDIMScheduler(
        **SCHEDULER_KW, prediction_type=prediction_type, clip_sample=clip, set_alpha_to_one=False, steps_offset=1, **kw
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_step_matches_diffusers(prediction_type, eta, clip):
    reference = _ddim(prediction_type, clip)
    schedule = make_schedule(_ddim(prediction_type, clip), num_steps=10)
    reference.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g)
    for i, t in enumerate(reference.timesteps):
        out = torch.randn(4, 3, 8, 8, generator=g)
        z = torch.randn(4, 3, 8, 8, generator=g)
        expected = reference.step(out, t, x, eta=eta, variance_noise=z).prev_sample
        ours = denoising_step(schedule, out, t.expand(4), x, eta=eta, noise=z)
        torch.testing.assert_close(ours.prev_sample, expected, atol=1e-5, rtol=1e-5)
        # Variance from diffusers' own helper, the log-density written out independently.
        prev_t = t - reference.config.num_train_timesteps // 10
        std = eta * reference._get_variance(t, prev_t) ** 0.5
        if eta > 0:
            assert ours.stochastic.all()
            expected_lp = _independent_log_prob(expected, ours.mean, std)
            torch.testing.assert_close(ours.log_prob.double(), expected_lp, rtol=1e-5, atol=1e-3)
        else:
            assert not ours.stochastic.any() and (ours.log_prob == 0).all()
        x = expected


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("steps_offset", [0, 1])
def test_ddpm_step_matches_diffusers(variance_type, steps_offset):
    kw = dict(**SCHEDULER_KW, clip_sample=True, variance_type=variance_type, steps_offset=steps_offset)
    reference, schedule = DDPMScheduler(**kw), make_schedule(DDPMScheduler(**kw), num_steps=10)
    reference.set_timesteps(10)
    assert int(reference.timesteps[-1]) == steps_offset
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 8, 8, generator=g)
    for t in reference.timesteps:
        out = torch.randn(3, 3, 8, 8, generator=g)
        # diffusers draws its variance noise from a generator: give both the same draw.
        expected = reference.step(out, t, x, generator=torch.Generator().manual_seed(int(t))).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(int(t)))
        ours = denoising_step(schedule, out, t.expand(3), x, noise=z)
        torch.testing.assert_close(ours.prev_sample, expected, atol=1e-5, rtol=1e-5)
        if ours.stochastic.all():
            variance = reference._get_variance(t)
            std = variance**0.5 if variance_type == "fixed_small" else variance.sqrt()
            expected_lp = _independent_log_prob(expected, ours.mean, std)
            torch.testing.assert_close(ours.log_prob.double(), expected_lp, rtol=1e-5, atol=1e-3)
        else:
            assert not ours.stochastic.any() and (ours.log_prob == 0).all()
        x = expected
    # The last step: at t = 0 diffusers (and Ho et al.'s Algorithm 2) add no noise for either variance type;
    # at t = 1 fixed_small's variance is 0 (clamped to 1e-20) while fixed_large's is beta_1 > 0.
    assert ours.stochastic.any() == (variance_type == "fixed_large" and steps_offset == 1)


def test_rescoring_stored_sample_reproduces_its_log_prob():
    """The update phase passes the stored x_{t-1}: same inputs, same log-prob, to the bit."""
    schedule = make_schedule(_ddim(), num_steps=5)
    g = torch.Generator().manual_seed(2)
    x, out = torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 4, 6, 6, generator=g)
    t = schedule.timesteps[[0, 3]]  # different timesteps in one batch
    drawn = denoising_step(schedule, out, t, x, eta=1.0, generator=g)
    rescored = denoising_step(schedule, out, t, x, eta=1.0, prev_sample=drawn.prev_sample)
    assert torch.equal(drawn.log_prob, rescored.log_prob)


def test_mean_reduction_is_sum_over_dimension_count():
    x, mean = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    std = torch.tensor([0.3, 0.7])
    total = gaussian_log_prob(x, mean, std, "sum")
    torch.testing.assert_close(gaussian_log_prob(x, mean, std, "mean") * 48, total)
    # Hand-computed for one element: N(1; 0, 0.5^2).
    one = gaussian_log_prob(torch.ones(1, 1), torch.zeros(1, 1), torch.tensor([0.5]))
    torch.testing.assert_close(one, torch.tensor([-2.0 - math.log(0.5) - 0.5 * math.log(2 * math.pi)]))


def test_forward_process_and_targets_match_diffusers():
    scheduler = DDPMScheduler(**SCHEDULER_KW, prediction_type="v_prediction")
    schedule = make_schedule(scheduler, num_steps=10)
    x0, noise = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    t = torch.tensor([5, 500, 999])
    torch.testing.assert_close(add_noise(schedule, x0, noise, t), scheduler.add_noise(x0, noise, t))
    torch.testing.assert_close(training_target(schedule, x0, noise, t), scheduler.get_velocity(x0, noise, t))
