"""Build gymnasium environments with actions rescaled to [-1, 1] (the diffusion policy's box)."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

BANDIT_ID = "drl/MultimodalBandit-v0"


def _register() -> None:
    if BANDIT_ID not in gym.registry:
        gym.register(BANDIT_ID, entry_point="drl.envs.bandit:MultimodalBandit")


def make_env(env_id: str, render: bool = False) -> gym.Env:
    """gymnasium.make(env_id) with RescaleAction to [-1, 1]; MuJoCo renders headless (EGL) when asked."""
    _register()
    if render:
        os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        env = gym.make(env_id, render_mode="rgb_array" if render else None)
    except gym.error.Error as e:
        raise ValueError(f"env.id={env_id!r} cannot be made by gymnasium: {e}") from None
    if not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(f"env.id={env_id!r} has a {type(env.action_space).__name__} action space; diffusion policies need a Box.")
    low, high = env.action_space.low, env.action_space.high
    if not (np.allclose(low, -1) and np.allclose(high, 1)):
        env = gym.wrappers.RescaleAction(env, -1.0, 1.0)
    return env


def space_sizes(env_id: str) -> tuple[int, int]:
    """(observation size O, action size A) of a task."""
    env = make_env(env_id)
    sizes = int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
    env.close()
    return sizes
