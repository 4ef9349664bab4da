"""The flow-matching SDE step (drl.sampling_flow) against diffusers, an independent formula and exact marginals."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from drl.sampling import denoising_step, make_schedule


def _schedule(num_steps=10, shift=3.0):
    return make_schedule(FlowMatchEulerDiscreteScheduler(shift=shift), num_steps)


def test_eta_zero_is_the_schedulers_euler_step():
    reference = FlowMatchEulerDiscreteScheduler(shift=3.0)
    reference.set_timesteps(10)
    schedule = _schedule()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, 8, generator=g)
    for t in reference.timesteps:
        v = torch.randn(3, 4, 8, 8, generator=g)
        expected = reference.step(v, t, x).prev_sample
        ours = denoising_step(schedule, v, t.expand(3), x, eta=0.0, noise=torch.randn(x.shape, generator=g))
        torch.testing.assert_close(ours.prev_sample, expected, atol=1e-5, rtol=1e-5)
        assert not ours.stochastic.any()
        x = expected


def _independent_step(x, v, sigma, sigma_next, sigma_clip, a):
    """Flow-GRPO's expanded form of the Euler-Maruyama mean and std, float64, written out separately."""
    x, v = x.double(), v.double()
    dt = sigma_next - sigma
    std_dev_t = a * math.sqrt(sigma / (1 - (sigma_clip if sigma == 1 else sigma)))
    mean = x * (1 + std_dev_t**2 / (2 * sigma) * dt) + v * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
    return mean, std_dev_t * math.sqrt(-dt)


@pytest.mark.parametrize("eta", [0.3, 0.7, 1.0])
def test_log_prob_matches_an_independent_gaussian(eta):
    schedule = _schedule()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g)
    for i, t in enumerate(schedule.timesteps):
        v = torch.randn(2, 4, 8, 8, generator=g)
        step = denoising_step(schedule, v, t.expand(2), x, eta=eta, generator=g)
        sigma, sigma_next = float(schedule.sigmas[i]), float(schedule.sigmas[i + 1])
        mean, std = _independent_step(x, v, sigma, sigma_next, float(schedule.sigmas[1]), eta)
        torch.testing.assert_close(step.mean.double(), mean, atol=1e-5, rtol=1e-5)
        expected = torch.distributions.Normal(mean, std).log_prob(step.prev_sample.double()).flatten(1).sum(1)
        torch.testing.assert_close(step.log_prob.double(), expected, rtol=1e-5, atol=1e-2)
        assert step.stochastic.all()
        x = step.prev_sample


def test_sde_keeps_the_marginals_of_the_flow():
    """With the exact velocity of Gaussian data, the SDE ends at the data distribution N(m, s²)."""
    m, s, n = 1.5, 0.5, 8_000
    schedule = _schedule(num_steps=50, shift=1.0)

    def exact_velocity(x, sigma):  # E[ε - x_0 | x_σ] for x_0 ~ N(m, s²), x_σ = (1-σ) x_0 + σ ε
        a = 1 - sigma
        var = a**2 * s**2 + sigma**2
        return sigma / var * (x - a * m) - (m + a * s**2 / var * (x - a * m))

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, dtype=torch.float64, generator=g)
    for i, t in enumerate(schedule.timesteps):
        v = exact_velocity(x, float(schedule.sigmas[i]))
        x = denoising_step(schedule, v, t.expand(n), x, eta=0.7, generator=g).prev_sample.double()
    assert abs(float(x.mean()) - m) < 0.03
    assert abs(float(x.std()) - s) < 0.03
