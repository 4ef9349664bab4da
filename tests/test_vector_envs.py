"""env.num_envs: episodes from gymnasium vector envs (async subprocesses or sync), seeded per episode, in order.

A deterministic actor gives the very same episodes with 1 and with 4 environments. A stochastic policy
cannot: its noise is drawn per actor call, and the calls see other batches (all running episodes at
once with 1 environment, at most 4 with 4). The documented difference, checked here: the same
episodes start from the same states, and each setting reproduces itself exactly for a given seed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from drl.config import PolicyModelConfig
from drl.envs.collector import policy_actor
from drl.envs.episodes import run_episodes
from drl.envs.make import BANDIT_ID
from drl.errors import ConfigError
from drl.models.policy import DiffusionPolicy
from drl.sampling import make_schedule

from conftest import compose_config

FIELDS = ("observations", "actions", "rewards", "terminations", "truncations", "next_observations", "executed_steps")


def row_by_row(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """x [n, K] @ weights [K, M], one row at a time: a row's product is computed the same way whatever n is
    (one matrix product of n rows may round a row differently than of 1 row), so episodes can be compared exactly."""
    return np.stack([row @ weights for row in x]) if len(x) else x @ weights


def wobbly_actor(obs_dim: int, act_dim: int, seed: int = 0):
    """obs [n, O] -> sin(10 obs W) [n, A]: deterministic row by row, and erratic enough that Hopper's
    episodes differ in length; each row's obs kept as an extra."""
    weights = np.random.default_rng(seed).normal(0, 1, (obs_dim, act_dim))

    def act(obs: np.ndarray):
        return np.sin(10 * row_by_row(obs, weights)).astype(np.float32), {"seen": torch.as_tensor(obs)}

    return act


def assert_same_episodes(a, b):
    assert [len(e) for e in a] == [len(e) for e in b]
    for x, y in zip(a, b):
        for name in FIELDS:
            assert np.array_equal(getattr(x, name), getattr(y, name)), name
        assert torch.equal(x.extras["seen"], torch.as_tensor(x.observations))


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_four_environments_give_the_episodes_of_one_in_the_same_order(mode):
    """Hopper ends its episodes at different steps, so sub-envs free up at different times and take the next episode."""
    actor = wobbly_actor(11, 3)
    one = run_episodes("Hopper-v5", actor, 7, seed=10)
    four = run_episodes("Hopper-v5", actor, 7, seed=10, num_envs=4, vector_mode=mode)
    assert len({len(e) for e in one}) > 3  # the lengths differ: sub-envs were reused at different steps
    assert all(e.terminations[-1] and not e.terminations[:-1].any() for e in one)
    assert_same_episodes(one, four)


def test_chunked_envs_give_the_same_episodes_in_vector_envs():
    """Action chunks (model.obs_horizon/action_horizon) and vector envs compose: every sub-env is a ChunkedEnv."""
    from drl.envs.chunking import Horizons

    weights = np.random.default_rng(0).normal(0, 1, (2 * 11, 4 * 3))

    def act(obs):  # obs [n, To=2, O=11] -> chunks [n, Ta=4, A=3]
        flat = obs.reshape(len(obs), -1)
        return np.sin(10 * row_by_row(flat, weights)).reshape(len(obs), 4, 3).astype(np.float32), {"seen": torch.as_tensor(obs)}

    horizons = Horizons(obs=2, action=4)
    one = run_episodes("Hopper-v5", act, 5, seed=3, horizons=horizons)
    three = run_episodes("Hopper-v5", act, 5, seed=3, horizons=horizons, num_envs=3, vector_mode="sync")
    assert one[0].observations.shape[1:] == (2, 11) and one[0].actions.shape[1:] == (4, 3)
    assert_same_episodes(one, three)


def test_a_chunked_episode_counts_the_env_steps_its_actions_ran():
    """Replaying a chunked episode's actions one by one in the plain env ends after Episode.env_steps steps (the last
    chunk may stop early); Pendulum's 200-step limit in chunks of 3: 67 decisions, 200 env steps."""
    from drl.envs.chunking import Horizons
    from drl.envs.make import make_env

    weights = np.random.default_rng(0).normal(0, 1, (11, 4 * 3))

    def act(obs):  # obs [n, To=1, O=11] -> chunks [n, Ta=4, A=3]
        return np.sin(10 * row_by_row(obs[:, -1], weights)).reshape(len(obs), 4, 3).astype(np.float32), {}

    episodes = run_episodes("Hopper-v5", act, 4, seed=5, horizons=Horizons(obs=1, action=4))
    replayed = []
    for k, episode in enumerate(episodes):
        env = make_env("Hopper-v5")
        env.reset(seed=5 + k)
        steps = 0
        for action in episode.actions.reshape(-1, 3):
            steps += 1
            if any(env.step(action)[2:4]):
                break
        replayed.append(steps)
        env.close()
    assert [e.env_steps for e in episodes] == replayed
    assert any(e.env_steps < 4 * len(e) for e in episodes)  # some chunk stopped at the fall
    pendulum = run_episodes("Pendulum-v1", wobbly_actor(3, 3), 1, seed=0, horizons=Horizons(obs=1, action=3))
    assert len(pendulum[0]) == 67 and pendulum[0].env_steps == 200


def test_time_limits_end_episodes_in_vector_envs_without_terminating():
    actor = wobbly_actor(3, 1)
    one = run_episodes("Pendulum-v1", actor, 3, seed=4)
    two = run_episodes("Pendulum-v1", actor, 3, seed=4, num_envs=2, vector_mode="sync")
    assert [len(e) for e in two] == [200, 200, 200] and all(e.truncations[-1] and not e.terminations.any() for e in two)
    assert_same_episodes(one, two)


def test_a_stochastic_policy_starts_the_same_episodes_and_reproduces_itself():
    policy = DiffusionPolicy.build(1, 2, PolicyModelConfig(hidden_dim=16, diffusion_steps=3), seed=0)
    schedule = make_schedule(policy.make_scheduler("ddpm"), 3)

    def episodes(num_envs: int, mode: str = "async"):
        actor = policy_actor(policy, schedule, 1.0, torch.Generator().manual_seed(0))
        return run_episodes(BANDIT_ID, actor, 6, seed=0, num_envs=num_envs, vector_mode=mode)

    one, four, again, sync = episodes(1), episodes(4), episodes(4), episodes(4, "sync")
    assert np.array_equal(np.stack([e.observations for e in one]), np.stack([e.observations for e in four]))
    assert [e.total_reward for e in four] == [e.total_reward for e in again] == [e.total_reward for e in sync]
    # The documented difference: the noise of episodes 4 and 5 comes from another actor call (another batch).
    assert not np.array_equal(np.stack([e.actions for e in one]), np.stack([e.actions for e in four]))


def test_vector_settings_are_validated():
    base = ["experiment=bandit_diffusion_ql"]
    with pytest.raises(ConfigError, match="env.num_envs=0 must be > 0."):
        compose_config([*base, "env.num_envs=0"], tiny=False)
    with pytest.raises(ConfigError, match="env.vector_mode='threads' is not one of async, sync."):
        compose_config([*base, "env.vector_mode=threads"], tiny=False)


@pytest.mark.parametrize("experiment, extra", [("bandit_ddpo", []), ("bandit_dsrl", ["algorithm.updates_per_epoch=2"])])
def test_online_algorithms_collect_and_evaluate_in_vector_envs(tmp_path, monkeypatch, experiment, extra):
    """ddpo with env= and DSRL: their rollouts and evaluations run in 3 async environments, through the one loop."""
    import drl.envs.episodes
    from drl.train import train

    calls = []
    vector_episodes = drl.envs.episodes.run_vector_episodes
    monkeypatch.setattr(
        drl.envs.episodes, "run_vector_episodes", lambda *args: calls.append(args[2:]) or vector_episodes(*args)
    )  # (num_episodes, seed, num_envs, mode, horizons) of every vector rollout
    DiffusionPolicy.build(1, 2, PolicyModelConfig(hidden_dim=16, diffusion_steps=3), seed=0).save_pretrained(tmp_path / "bc")
    overrides = [
        f"experiment={experiment}",
        f"model.path={tmp_path / 'bc'}",
        "model.hidden_dim=16",
        "model.diffusion_steps=3",
        "scheduler.num_steps=3",
        "logger=none",
        "hardware.num_threads=1",
        "train.epochs=1",
        "train.samples_per_epoch=8",
        "train.batch_size=8",
        "env.eval_episodes=5",
        "env.num_envs=3",
        *extra,
    ]
    train(compose_config(overrides, tiny=False), tmp_path / "run")
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["samples"] == 8 and "eval/return_mean" in record
    assert json.loads((tmp_path / "run" / "eval_after.json").read_text())["eval/episodes"] == 5
    collected = [c for c in calls if c[0] == 8]
    evaluated = [c for c in calls if c[0] == 5]
    assert len(collected) == 1 and len(evaluated) == 3  # before, the last epoch, after
    assert all(c[2:4] == (3, "async") for c in calls)
