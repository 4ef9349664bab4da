"""Build gymnasium environments with actions rescaled to [-1, 1] (the diffusion policy's box)."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from drl.envs.chunking import ChunkedEnv, Horizons

BANDIT_ID = "drl/MultimodalBandit-v0"


def _register() -> None:
    if BANDIT_ID not in gym.registry:
        gym.register(BANDIT_ID, entry_point="drl.envs.bandit:MultimodalBandit")


def make_env(env_id: str, render: bool = False, horizons: Horizons = Horizons()) -> gym.Env:
    """gymnasium.make(env_id) with RescaleAction to [-1, 1]; MuJoCo renders headless (EGL) when asked.

    With To or Ta > 1 (``horizons``) the env is wrapped in ChunkedEnv: observations [To, O], actions [Ta, A].
    """
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
    return ChunkedEnv(env, horizons) if horizons.chunked else env


def space_shapes(env_id: str, horizons: Horizons = Horizons()) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(observation shape, action shape) of a task: ((O,), (A,)), or ((To, O), (Ta, A)) when chunked."""
    env = make_env(env_id, horizons=horizons)
    shapes = tuple(env.observation_space.shape), tuple(env.action_space.shape)
    env.close()
    return shapes


def space_sizes(env_id: str) -> tuple[int, int]:
    """(observation size O, action size A) of a task."""
    obs_shape, act_shape = space_shapes(env_id)
    return int(np.prod(obs_shape)), int(np.prod(act_shape))
