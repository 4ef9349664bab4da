"""Options that reproduce the references' conventions (issue 22): Flow-GRPO's KL form, NVlabs' global std."""

import math

import pytest
import torch
from conftest import compose_config

from drl.algorithms.ddpo import step_kl_to_reference
from drl.algorithms.nft import optimality_probability
from drl.errors import ConfigError
from drl.sampling_flow import FlowSchedule, flow_mean_std

# σ: 1 -> 0.6 -> 0.2 -> 0 (three steps); σ = 1 is clipped to the next level, 0.6, in g's denominator.
SCHEDULE = FlowSchedule(
    sigmas=torch.tensor([1.0, 0.6, 0.2, 0.0], dtype=torch.float64),
    timesteps=torch.tensor([1000.0, 600.0, 200.0]),
    num_train_timesteps=1000,
    sigma_clip=0.6,
)


def _kl_both_forms(step_index: int, eta: float = 0.7):
    """(exact mean-reduced KL, exact summed KL, flow_grpo KL) for a mean difference of (0.1, 0.2, 0.3, 0.4)."""
    t = SCHEDULE.timesteps[[step_index]]
    x, v = torch.zeros(1, 4), torch.zeros(1, 4)
    mean, std, _ = flow_mean_std(SCHEDULE, v, t, x, eta)  # std: the step's, g·sqrt(-Δ)
    ref_mean = mean - torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    exact_mean = step_kl_to_reference(mean, ref_mean, std, 1 / 4, "exact")
    exact_sum = step_kl_to_reference(mean, ref_mean, std, 1.0, "exact")
    flow_grpo = step_kl_to_reference(mean, ref_mean, std, 1 / 4, "flow_grpo", SCHEDULE, t, eta)
    return exact_mean, exact_sum, flow_grpo


def test_flow_grpo_kl_form_by_hand():
    # Step 1: σ = 0.6, σ' = 0.2, Δ = -0.4; g = 0.7 sqrt(0.6 / 0.4), g² = 0.735; mean_d Δμ² = 0.3 / 4 = 0.075.
    exact_mean, exact_sum, flow_grpo = _kl_both_forms(1)
    torch.testing.assert_close(flow_grpo, torch.tensor([0.075 / (2 * 0.735)]))  # 0.0510204
    torch.testing.assert_close(exact_mean, torch.tensor([0.075 / (2 * 0.735 * 0.4)]))  # 0.127551
    torch.testing.assert_close(exact_sum, torch.tensor([0.3 / (2 * 0.735 * 0.4)]))
    # exact (mean over dims) = Flow-GRPO's / (-Δ): ×2.5 here, and ×D more with the summed log-prob.
    torch.testing.assert_close(exact_mean / flow_grpo, torch.tensor([2.5]))
    # Step 0: σ = 1 (denominator clipped to 1 - 0.6), Δ = -0.4 -> g² = 0.49 / 0.4; step 2: Δ = -0.2, ratio 5.
    exact_mean, _, flow_grpo = _kl_both_forms(0)
    torch.testing.assert_close(flow_grpo, torch.tensor([0.075 / (2 * 0.49 / 0.4)]))
    exact_mean, _, flow_grpo = _kl_both_forms(2)
    torch.testing.assert_close(exact_mean / flow_grpo, torch.tensor([5.0]))


def test_flow_grpo_kl_form_is_flow_grpos_formula():
    """Flow-GRPO's scripts/train_sd3.py line for line on the same means: mean over (1,2,3) / (2 std_dev_t²)."""
    g = torch.Generator().manual_seed(0)
    t = SCHEDULE.timesteps[[0, 1, 2]]
    mean, ref_mean = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    sigma = SCHEDULE.sigmas[:3].view(-1, 1, 1, 1)
    std_dev_t = torch.sqrt(sigma / (1 - torch.where(sigma == 1, SCHEDULE.sigmas[1], sigma))) * 0.7
    expected = ((mean.double() - ref_mean.double()) ** 2).mean(dim=(1, 2, 3), keepdim=True) / (2 * std_dev_t**2)
    ours = step_kl_to_reference(mean, ref_mean, torch.ones(3), 1.0, "flow_grpo", SCHEDULE, t, 0.7)
    torch.testing.assert_close(ours.double(), expected.flatten(), rtol=1e-6, atol=0)


def _nvlabs_advantages(rewards: list[float], group_size: int, global_std: bool) -> torch.Tensor:
    """NVlabs' PerPromptStatTracker.update (flow_grpo/stat_tracking.py): group mean, std + 1e-4, population std."""
    r = torch.tensor(rewards, dtype=torch.float64)
    out = []
    for group in r.view(-1, group_size):
        std = (r.std(unbiased=False) if global_std else group.std(unbiased=False)) + 1e-4
        out.append((group - group.mean()) / std)
    return torch.cat(out)


def test_nft_batch_std_is_nvlabs_global_std():
    rewards = [1.0, 1.2, 0.9, 1.1, 3.0, 0.0, 2.0, 1.0]  # two prompts, groups of 4; one tight group, one spread
    for std_over, global_std in (("batch", True), ("group", False)):
        a = _nvlabs_advantages(rewards, 4, global_std)
        expected = a.clamp(-2, 2) / 4 + 0.5  # NVlabs: (clip(A, -c, c) / c) / 2 + 1/2, c = adv_clip_max = 2
        # adv_std_eps=1e-4 is NVlabs' std + 1e-4 exactly; the default (max(std, 1e-6)) differs by a relative 1e-4 / std.
        exact = optimality_probability(torch.tensor(rewards), 4, 2.0, 1e-6, std_over, std_eps=1e-4)
        torch.testing.assert_close(exact.double(), expected, rtol=1e-6, atol=1e-7)
        default = optimality_probability(torch.tensor(rewards), 4, 2.0, 1e-6, std_over)
        torch.testing.assert_close(default.double() - 0.5, expected - 0.5, rtol=1e-3, atol=1e-7)
        assert not torch.allclose(default.double() - 0.5, expected - 0.5, rtol=1e-5, atol=0)
    # The tight group's spread is small next to the batch's: its r stays near 1/2 under the batch std only.
    batch = optimality_probability(torch.tensor(rewards), 4, 2.0, 1e-6, "batch")
    group = optimality_probability(torch.tensor(rewards), 4, 2.0, 1e-6, "group")
    assert (batch[:4] - 0.5).abs().max() < 0.15 < (group[:4] - 0.5).abs().max()
    assert math.isclose(float(batch.mean()), 0.5, abs_tol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["algorithm.kl_form=flow_grpo"], "algorithm.kl_form=flow_grpo is Flow-GRPO's KL for flow models"),
        (["algorithm.kl_form=approx"], "algorithm.kl_form='approx' is not one of exact, flow_grpo"),
        (["algorithm=nft", "algorithm.group_std=prompt"], "algorithm.group_std='prompt' is not one of group, batch"),
    ],
)
def test_reference_options_fail_with_a_sentence(overrides, message):
    with pytest.raises(ConfigError) as info:
        compose_config(overrides)
    assert message in str(info.value)


@pytest.mark.parametrize("warmup", ["copy", "initial"])
def test_diffusion_ql_ema_warmup(warmup):
    """Before ema_start the EMA actor copies the live one (copy) or keeps the initial weights (initial, the official
    code's step_start_ema); from ema_start on it averages: d·ema + (1 - d)·live."""
    from drl.control import build_control_context

    overrides = ["experiment=bandit_diffusion_ql", "logger=none", "hardware.num_threads=1", "model.hidden_dim=32"]
    overrides += ["env.dataset_size=64", "algorithm.ema_start=3", "algorithm.ema_every=1", f"algorithm.ema_warmup={warmup}"]
    cfg = compose_config(overrides, tiny=False)
    ctx, _, algorithm = build_control_context(cfg, torch.device("cpu"))
    first = lambda module: next(module.parameters()).detach().clone()  # noqa: E731
    initial = first(ctx.model.denoiser)
    batch = ctx.collector.sample(16, torch.Generator().manual_seed(0))
    for _ in range(2):  # steps 1, 2 < ema_start
        algorithm.gradient_step(batch)
    live, ema = first(ctx.model.denoiser), first(algorithm.ema_actor)
    assert not torch.equal(live, initial)
    assert torch.equal(ema, live if warmup == "copy" else initial)
    algorithm.gradient_step(batch)  # step 3 = ema_start: the first average
    torch.testing.assert_close(first(algorithm.ema_actor), 0.995 * ema + 0.005 * first(ctx.model.denoiser))
