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


# ------------------------------------------------------------------- CPS (coefficients-preserving sampling)
def _authors_cps_step(x, v, sigma, sigma_next, noise_level, z):
    """IamCreateAI/FlowCPS's sde_step_with_logprob (flow_grpo's "cps"), written out: (prev, mean, std, their log-prob)."""
    std_dev_t = sigma_next * math.sin(noise_level * math.pi / 2)
    pred_original_sample = x - sigma * v
    noise_estimate = x + v * (1 - sigma)
    mean = pred_original_sample * (1 - sigma_next) + noise_estimate * math.sqrt(sigma_next**2 - std_dev_t**2)
    prev = mean + std_dev_t * z
    log_prob = (-((prev - mean) ** 2)).mean(dim=tuple(range(1, prev.ndim)))  # "remove all constants"
    return prev, mean, std_dev_t, log_prob


@pytest.mark.parametrize("eta", [0.3, 0.7, 1.0])
def test_cps_step_is_the_authors_step_with_the_exact_log_prob(eta):
    """Identical x, v, σ and noise: the same mean, std and sample (float32, 1e-5); our exact mean-reduced log-prob is
    the authors' constant-free one / 2s² - log s - ½ log 2π, and the summed one the Gaussian density of torch."""
    schedule = make_schedule(FlowMatchEulerDiscreteScheduler(shift=3.0), 10, sde_type="cps")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 8, 8, generator=g)
    for i, t in enumerate(schedule.timesteps[:-1]):  # the last step (σ' = 0) is deterministic: below
        v, z = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        sigma, sigma_next = float(schedule.sigmas[i]), float(schedule.sigmas[i + 1])
        prev, mean, std, theirs = _authors_cps_step(x, v, sigma, sigma_next, eta, z)
        ours = denoising_step(schedule, v, t.expand(2), x, eta=eta, noise=z)
        ours_mean = denoising_step(schedule, v, t.expand(2), x, eta=eta, prev_sample=prev, reduction="mean")
        torch.testing.assert_close(ours.mean, mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.prev_sample, prev, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.std, torch.full((2,), std), atol=1e-7, rtol=1e-6)
        expected_mean = theirs / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
        torch.testing.assert_close(ours_mean.log_prob, expected_mean, atol=1e-4, rtol=1e-5)
        expected_sum = torch.distributions.Normal(mean.double(), std).log_prob(prev.double()).flatten(1).sum(1)
        torch.testing.assert_close(ours.log_prob.double(), expected_sum, atol=1e-2, rtol=1e-5)
        assert ours.stochastic.all()
        x = prev


def test_cps_without_noise_is_the_euler_step_and_its_last_step_is_deterministic():
    euler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    euler.set_timesteps(6)
    schedule = make_schedule(FlowMatchEulerDiscreteScheduler(shift=3.0), 6, sde_type="cps")
    g = torch.Generator().manual_seed(3)
    x, v = torch.randn(3, 4, 4, 4, generator=g), torch.randn(3, 4, 4, 4, generator=g)
    for t in euler.timesteps:
        expected = euler.step(v, t, x).prev_sample
        torch.testing.assert_close(denoising_step(schedule, v, t.expand(3), x, eta=0.0).prev_sample, expected, atol=1e-5, rtol=1e-5)
    last = denoising_step(schedule, v, schedule.timesteps[-1:].expand(3), x, eta=0.7, generator=g)
    assert not last.stochastic.any() and torch.equal(last.log_prob, torch.zeros(3))


# ------------------------------------------------------------------- DPM-Solver++(2M) on the flow ODE
def test_dpmpp_2m_is_diffusers_flow_dpm_solver_on_the_same_levels():
    """diffusers' DPMSolverMultistepScheduler (use_flow_sigmas, flow_prediction, dpmsolver++, order 2, midpoint) and
    ours, stepped on its own levels with the same velocity field: the same sample after every step (float32, 1e-5)."""
    from diffusers import DPMSolverMultistepScheduler

    from drl.sampling_flow import FlowSchedule, flow_dpmpp_2m_step

    reference = DPMSolverMultistepScheduler(
        use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction", solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint"
    )
    reference.set_timesteps(8)
    sigmas = reference.sigmas.double()
    schedule = FlowSchedule(sigmas=sigmas, timesteps=reference.timesteps.float(), num_train_timesteps=1000, sigma_clip=float(sigmas[1]))
    g = torch.Generator().manual_seed(4)
    bias = torch.randn(len(reference.timesteps), 2, 4, 8, 8, generator=g)
    velocity = lambda x, i: 0.8 * x + bias[i]  # noqa: E731  a smooth field, the same for both
    x = torch.randn(2, 4, 8, 8, generator=g)
    ours, prev_x0 = x.clone(), None
    for i, t in enumerate(reference.timesteps):
        x = reference.step(velocity(x, i), t, x).prev_sample
        ours, prev_x0 = flow_dpmpp_2m_step(schedule, velocity(ours, i), schedule.timesteps[i].expand(2), ours, prev_x0)
        torch.testing.assert_close(ours, x, atol=1e-5, rtol=1e-5)
