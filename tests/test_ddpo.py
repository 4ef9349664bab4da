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

