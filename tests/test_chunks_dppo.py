"""Action chunks with observation history (drl/envs/chunking.py) through every control algorithm, and DPPO's pieces."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from drl.algorithms.control_losses import generalized_advantages
from drl.config import PolicyModelConfig
from drl.envs.chunking import ChunkedEnv, Horizons, chunk_windows
from drl.envs.collector import DatasetReader, PolicyCollector
from drl.envs.dataset import OfflineDataset, generate_dataset
from drl.envs.make import BANDIT_ID, make_env
from drl.errors import ConfigError
from drl.models.policy import DiffusionPolicy, load_policy
from drl.sampling import denoising_step, make_schedule
from drl.train import build_context, train

from conftest import compose_config

TO, TA = 2, 3  # Pendulum: O = 3, A = 1
PENDULUM = ["env=pendulum", "model=diffusion_policy", "scheduler=ddpm", "logger=none", "hardware.num_threads=1"]
CHUNKED = [f"model.obs_horizon={TO}", f"model.action_horizon={TA}", "model.hidden_dim=32", "model.diffusion_steps=5", "scheduler.num_steps=5"]


# ---------------------------------------------------------------- the wrapper
def test_chunked_env_executes_the_chunk_and_keeps_the_history():
    env, plain = make_env("Pendulum-v1", horizons=Horizons(TO, TA)), make_env("Pendulum-v1")
    obs, _ = env.reset(seed=3)
    first, _ = plain.reset(seed=3)
    assert isinstance(env, ChunkedEnv) and obs.shape == (TO, 3) and env.action_space.shape == (TA, 1)
    assert np.array_equal(obs, np.stack([first, first]))  # padded with the first observation
    chunk = np.array([[0.5], [-1.0], [0.25]], dtype=np.float32)
    obs, reward, terminated, truncated, info = env.step(chunk)
    seen, total = [], 0.0
    for a in chunk:
        o, r, *_ = plain.step(a)
        seen.append(o)
        total += r
    assert info["executed_steps"] == TA and not (terminated or truncated)
    assert math.isclose(reward, total, rel_tol=1e-6)  # summed, undiscounted
    assert np.allclose(obs, np.stack(seen[-TO:]))  # the last To observations


def test_chunk_stops_when_the_episode_ends():
    env = make_env(BANDIT_ID, horizons=Horizons(1, 4))  # every bandit episode is one step
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.full((4, 2), 0.8, dtype=np.float32))
    assert terminated and info["executed_steps"] == 1 and math.isclose(reward, 1.0)
    assert not isinstance(make_env(BANDIT_ID), ChunkedEnv)  # To = Ta = 1: the env as it was


def test_dataset_windows_respect_episode_boundaries():
    # Two episodes: steps 0-2 terminated, steps 3-4 truncated. Observation k is [k], action k is [10 k].
    obs = np.arange(5, dtype=np.float32)[:, None]
    data = OfflineDataset(
        observations=obs,
        actions=10 * obs,
        rewards=np.array([1, 2, 3, 4, 5], dtype=np.float32),
        terminations=np.array([0, 0, 1, 0, 0], dtype=bool),
        truncations=np.array([0, 0, 0, 0, 1], dtype=bool),
        next_observations=obs + 0.5,
    )
    w = chunk_windows(data, Horizons(2, 2))
    assert w["observations"].shape == (5, 2, 1) and w["actions"].shape == (5, 2, 1)
    assert w["observations"][:, :, 0].tolist() == [[0, 0], [0, 1], [1, 2], [3, 3], [3, 4]]
    assert w["actions"][:, :, 0].tolist() == [[0, 10], [10, 20], [20, 20], [30, 40], [40, 40]]  # padded with the last
    assert w["rewards"].tolist() == [3, 5, 3, 9, 5]  # summed over the executed steps only
    # Next history: up to o_{k+1}, k the last executed step (the episode's final next_observation at its end).
    assert w["next_observations"][:, :, 0].tolist() == [[1, 2], [2, 2.5], [2, 2.5], [4, 4.5], [4, 4.5]]
    assert w["terminations"].tolist() == [False, True, True, False, False]  # truncation still bootstraps


# ------------------------------------------------------------- shapes in runs
@pytest.fixture(scope="module")
def chunked_setup(tmp_path_factory):
    """A tiny random Pendulum dataset and a chunked policy trained on it for one short epoch (BC)."""
    root = tmp_path_factory.mktemp("chunks")
    data = generate_dataset("Pendulum-v1", lambda o, rng: rng.uniform(-1, 1, (len(o), 1)), 400, seed=0, name="uniform", episodes_per_wave=2)
    data.save(root / "pendulum.npz")
    common = [*PENDULUM, *CHUNKED, f"env.dataset={root / 'pendulum.npz'}", "env.eval_episodes=2", "train.epochs=1", "train.batch_size=32"]
    train(compose_config(["algorithm=bc", *common, "algorithm.steps_per_epoch=5"], tiny=False), root / "bc")
    return root, common


def test_chunk_shapes_through_collector_and_log_probs(chunked_setup):
    root, _ = chunked_setup
    policy = load_policy(root / "bc")
    assert policy.obs_shape == (TO, 3) and policy.action_shape == (TA, 1)
    schedule = make_schedule(policy.make_scheduler("ddpm"), 5)
    rollout = PolicyCollector(policy, schedule, "Pendulum-v1", 1.0, 0.99, torch.device("cpu"), Horizons(TO, TA)).collect(
        10, torch.Generator().manual_seed(0)
    )
    n = math.ceil(200 / TA)  # one episode of Pendulum's 200 steps, in chunks
    assert rollout.cond["states"].shape == (n, TO, 3) and rollout.samples.shape == (n, TA, 1)
    assert rollout.latents.shape == (n, 6, TA, 1) and rollout.log_probs.shape == (n, 5)
    for i in range(5):  # the stored log-probs are the update's: re-scored, they agree
        t = rollout.timesteps[:, i]
        out = policy.denoise(rollout.latents[:, i], t, rollout.cond)
        rescored = denoising_step(schedule, out, t, rollout.latents[:, i], prev_sample=rollout.latents[:, i + 1])
        assert torch.allclose(rescored.log_prob, rollout.log_probs[:, i], atol=1e-4)
    reader = DatasetReader(OfflineDataset.load(root / "pendulum.npz"), torch.device("cpu"), Horizons(TO, TA))
    mb = reader.sample(7, torch.Generator().manual_seed(0))
    assert mb.observations.shape == (7, TO, 3) and mb.actions.shape == (7, TA, 1) and mb.next_observations.shape == (7, TO, 3)


@pytest.mark.parametrize("algorithm", ["bc", "diffusion_ql", "dsrl", "ddpo", "dppo"])
def test_every_control_algorithm_runs_on_chunks(chunked_setup, tmp_path, algorithm):
    root, common = chunked_setup
    extra = {
        "bc": ["algorithm.steps_per_epoch=3"],
        "diffusion_ql": ["algorithm.steps_per_epoch=3", "algorithm.candidates=4"],
        "dsrl": [f"model.path={root / 'bc'}", "model.from_scratch=false", "scheduler=ddim", "scheduler.eta=0", "algorithm.updates_per_epoch=3"],
        "ddpo": [f"model.path={root / 'bc'}", "model.from_scratch=false", "algorithm.per_prompt_stat_tracking=false"],
        "dppo": [f"model.path={root / 'bc'}", "model.from_scratch=false", "algorithm.ft_denoising_steps=2", "algorithm.update_epochs=1"],
    }[algorithm]
    cfg = compose_config([f"algorithm={algorithm}", *common, "train.samples_per_epoch=60", *extra], tiny=False)
    train(cfg, tmp_path)
    record = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    assert math.isfinite(record["train/loss"]) and math.isfinite(record["eval/return_mean"])
    assert load_policy(tmp_path).action_shape == (TA, 1)
    if algorithm == "dppo":  # whole Pendulum episodes of 200 env steps, ceil(200 / Ta) decisions each
        episodes = math.ceil(60 / math.ceil(200 / TA))
        assert record["train/decisions"] == episodes * math.ceil(200 / TA) and record["train/env_steps"] == episodes * 200
    if algorithm == "dsrl":
        _, _, dsrl = build_context(cfg)
        noise, _ = dsrl.actor(torch.zeros(5, TO * 3))
        assert noise.shape == (5, TA) and dsrl.steer(torch.zeros(5, TO, 3), noise).shape == (5, TA)  # the chunk's noise


def test_a_policy_of_other_horizons_is_refused(chunked_setup):
    root, common = chunked_setup
    cfg = compose_config(["algorithm=dppo", *common, f"model.path={root / 'bc'}", "model.from_scratch=false", "model.action_horizon=1"], tiny=False)
    with pytest.raises(ConfigError, match=r"acts \[3, 1\].*needs \[2, 3\] and \[1, 1\]"):
        build_context(cfg)


# --------------------------------------------------------------------- DPPO
def test_gae_matches_hand_computed_values():
    rewards, values = np.array([1.0, 0.0, 2.0], dtype=np.float32), np.array([0.5, 1.0, 1.5], dtype=np.float32)
    gamma, lam = 0.9, 0.8
    d2 = 2.0 + gamma * 4.0 - 1.5  # bootstrapped from V(s_T) = 4 (a time limit)
    d1 = 0.0 + gamma * 1.5 - 1.0
    d0 = 1.0 + gamma * 1.0 - 0.5
    a2, a1 = d2, d1 + gamma * lam * d2
    expected = np.array([d0 + gamma * lam * a1, a1, a2])
    advantages, returns = generalized_advantages(rewards, values, 4.0, gamma, lam)
    assert np.allclose(advantages, expected, atol=1e-6) and np.allclose(returns, expected + values, atol=1e-6)
    terminated, _ = generalized_advantages(rewards, values, 0.0, gamma, lam)
    assert math.isclose(terminated[2], 2.0 - 1.5, abs_tol=1e-6)


def test_min_std_floors_the_step_and_its_log_prob():
    policy = DiffusionPolicy.build(3, 2, PolicyModelConfig(hidden_dim=16, diffusion_steps=5), seed=0)
    schedule = make_schedule(policy.make_scheduler("ddpm"), 5)
    states, g = torch.randn(4, 3), torch.Generator().manual_seed(0)
    chain = policy.sample(schedule, states, generator=g, min_std=0.3)
    assert chain.stochastic.all()  # DDPM's last step is deterministic, but not under a floor
    x_t, x_prev, t = chain.latents[:, 4], chain.latents[:, 5], chain.timesteps[:, 4]
    step = denoising_step(schedule, policy.denoise(x_t, t, states), t, x_t, prev_sample=x_prev, min_std=0.3)
    by_hand = (-((x_prev - step.mean) ** 2) / (2 * 0.3**2) - math.log(0.3) - 0.5 * math.log(2 * math.pi)).sum(1)
    assert torch.allclose(step.std, torch.full((4,), 0.3)) and torch.allclose(chain.log_probs[:, 4], by_hand, atol=1e-5)


def test_dppo_fine_tunes_only_the_last_steps_of_the_chain():
    """With K fine-tuned steps the first S - K steps run the frozen base: a changed denoiser moves only the last K."""
    policy = DiffusionPolicy.build(3, 2, PolicyModelConfig(hidden_dim=16, diffusion_steps=5), seed=0)
    schedule = make_schedule(policy.make_scheduler("ddpm"), 5)
    base = __import__("copy").deepcopy(policy.denoiser)
    with torch.no_grad():
        for p in policy.denoiser.parameters():
            p.add_(0.5)
    states = torch.randn(4, 3)
    run = lambda: policy.sample(schedule, states, generator=torch.Generator().manual_seed(1), fine_tuned_steps=2, frozen_denoiser=base)  # noqa: E731
    mixed = run()
    frozen = DiffusionPolicy(base, policy.scheduler_config).sample(schedule, states, generator=torch.Generator().manual_seed(1))
    assert torch.equal(mixed.latents[:, :4], frozen.latents[:, :4])  # x_T .. after step 3 of 5: the base's
    assert not torch.allclose(mixed.latents[:, 5], frozen.latents[:, 5])


def test_dppo_config_errors_are_sentences():
    base = ["experiment=bandit_dppo", "model.path=x", "logger=none"]
    with pytest.raises(ConfigError, match="ft_denoising_steps=11 must be between 1 and scheduler.num_steps=10"):
        compose_config([*base, "algorithm.ft_denoising_steps=11"], tiny=False)
    with pytest.raises(ConfigError, match="gae_lambda=1.5 must be in"):
        compose_config([*base, "algorithm.gae_lambda=1.5"], tiny=False)
    with pytest.raises(ConfigError, match="model.obs_horizon=0 must be > 0"):
        compose_config([*base, "model.obs_horizon=0"], tiny=False)
