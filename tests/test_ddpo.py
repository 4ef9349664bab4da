"""DDPO on images: group advantages by hand, shared group noise, the on-policy ratio."""

import torch

from drl.algorithms.ddpo import group_advantages

from conftest import compose_config, read_records, train_toy_alignment


def test_group_advantages_with_a_std_floor_by_hand():
    rewards = torch.tensor([1.0, 3.0, 5.0, 5.0, 0.0, 0.1])
    adv = group_advantages(rewards, group_size=2, std_floor=0.5)
    # groups: std 1 (kept), std 0 (ties -> 0), std 0.05 (floored to 0.5): +-0.05 / 0.5
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0, 0.0, 0.0, -0.1, 0.1]), atol=1e-6, rtol=0)


def test_group_advantages_over_the_batch_std_by_hand():
    rewards = torch.tensor([0.0, 2.0, 10.0, 10.1])
    adv = group_advantages(rewards, group_size=2, std_over="batch")
    std = rewards.std(unbiased=False)  # sqrt(mean r^2 - mean^2) of all four: ~4.53
    # the near-tied second group keeps its small spread instead of being blown up to +-1
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0, -0.05, 0.05]) / std, atol=1e-6, rtol=0)


def test_ddpo_shared_group_noise_starts_each_group_from_one_x_T(random_toy_model):
    from drl.algorithms.base import collect_groups
    from drl.train import build_context

    ctx, _, _ = build_context(compose_config([f"model.path={random_toy_model}", "algorithm.group_size=4"]))
    batch = collect_groups(ctx, 4, torch.Generator().manual_seed(0), share_noise=True)
    x_T = batch.latents[:, 0]
    assert torch.equal(x_T[0], x_T[3]) and not torch.equal(x_T[0], x_T[4])
    assert batch.prompts[0] == batch.prompts[3] and not torch.equal(batch.latents[0, -1], batch.latents[1, -1])


def test_ddpo_ratio_is_one_on_policy_in_float32(tmp_path, random_toy_model):
    """The on-policy check of every ddpo run, with group options on: <= 1e-5 at the first inner step of every epoch.

    (The same on a tiny flow model: tests/test_nft_dpo_models.py.)
    """
    train_toy_alignment(tmp_path, random_toy_model, "algorithm.group_size=4", "algorithm.share_group_noise=true", "algorithm.ema_decay=0.9")
    records = read_records(tmp_path)
    assert len(records) == 2 and all(r["train/ratio_dev_first"] <= 1e-5 for r in records)
    assert records[1]["drift_from_base"] > 0  # the second epoch's check comes after real updates



# --------------------------------------------------------------- GRPO-Guard (algorithm.ratio_norm, step_reweight)
def _guard_inputs(step_indices, seed=0, eta=0.7):
    """One flow SDE step per row at ``step_indices``: x', sampled under v_old, re-scored under v (mean-reduced log-probs)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from drl.sampling import denoising_step, make_schedule

    schedule = make_schedule(FlowMatchEulerDiscreteScheduler(shift=3.0), 10)
    g = torch.Generator().manual_seed(seed)
    n = len(step_indices)
    t = schedule.timesteps[step_indices]
    x, v_old = torch.randn(n, 4, 8, 8, generator=g), torch.randn(n, 4, 8, 8, generator=g)
    v = v_old + 0.05 * torch.randn(n, 4, 8, 8, generator=g)
    old = denoising_step(schedule, v_old, t, x, eta=eta, generator=g, reduction="mean")
    new = denoising_step(schedule, v, t, x, eta=eta, prev_sample=old.prev_sample, reduction="mean")
    z = (old.prev_sample - old.mean) / old.std.view(-1, 1, 1, 1)
    return schedule, t, old, new, z


def test_ratio_norm_is_flow_factorys_and_verl_omnis_guard_ratio():
    """Identical steps (one timestep per batch, as theirs): Flow-Factory's GRPOGuardTrainer ratio
    exp((logp - logp_old)·s + mse / 2s) and verl-omni's exp((logp - logp_old + mse / 2s²)·s), s = sqrt(-dt)·std_dev_t,
    mse = mean_d (μ - μ_old)²; both equal ours, and ours is exp(mean_d <z, μ - μ_old>) (float32, 1e-5)."""
    from drl.losses import guard_log_ratio

    for i in (0, 4, 8):
        schedule, t, old, new, z = _guard_inputs([i] * 3, seed=i)
        sigma, sigma_next = float(schedule.sigmas[i]), float(schedule.sigmas[i + 1])
        std_dev_t = 0.7 * (sigma / (1 - (float(schedule.sigmas[1]) if sigma == 1 else sigma))) ** 0.5
        s = (sigma - sigma_next) ** 0.5 * std_dev_t
        mse = (new.mean - old.mean).flatten(1).pow(2).mean(1)
        flow_factory = torch.exp((new.log_prob - old.log_prob) * s + mse / (2 * s))
        verl_omni = torch.exp((new.log_prob - old.log_prob + mse / (2 * s**2)) * s)
        ours = torch.exp(guard_log_ratio(new.log_prob, old.log_prob, new.mean, old.mean, new.std, 1 / z[0].numel()))
        torch.testing.assert_close(ours, flow_factory, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours, verl_omni, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.log(), (z * (new.mean - old.mean)).flatten(1).mean(1), atol=1e-5, rtol=1e-4)


def test_step_reweight_is_verl_omnis_guard_loss_per_timestep():
    """verl-omni's GRPOGuardLoss divides one timestep's clipped loss by sqrt(-dt)²; a batch mixing two timesteps in
    equal numbers gives the mean of its two losses (float32, 1e-6)."""
    from drl.losses import guard_log_ratio, ppo_clip_loss

    schedule, t, old, new, z = _guard_inputs([1, 1, 6, 6], seed=3)
    ratio = torch.exp(guard_log_ratio(new.log_prob, old.log_prob, new.mean, old.mean, new.std, 1 / z[0].numel()))
    adv, clip = torch.tensor([1.0, -0.5, 2.0, -1.5]), 1e-3
    weights = 1 / (schedule.sigma(t) - schedule.next_sigma(t)).float()
    ours, _ = ppo_clip_loss(adv, ratio, clip, weights)

    def verl_omni(rows):  # one timestep: mean(max(-A ρ, -A clip(ρ))) / sqrt_dt²
        r, a = ratio[rows], adv[rows]
        sqrt_dt = float(schedule.sigma(t[rows[:1]]) - schedule.next_sigma(t[rows[:1]])) ** 0.5
        return torch.maximum(-a * r, -a * r.clamp(1 - clip, 1 + clip)).mean() / sqrt_dt**2

    torch.testing.assert_close(ours, (verl_omni([0, 1]) + verl_omni([2, 3])) / 2, atol=1e-6, rtol=1e-6)
