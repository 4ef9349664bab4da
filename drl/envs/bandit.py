"""Diffusion-QL's toy: a 2-D continuous bandit whose offline data has four action modes.

Wang et al. 2023, sec. 5 / fig. 1: the behaviour policy picks one of four Gaussian action
clusters; each cluster earns a different reward, one the best. Behaviour cloning should
reproduce all four clusters; an offline RL method should put its actions on the best one.
Every episode is one step; the observation is a constant (there is one state).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

MODE_CENTRES = np.array([[0.8, 0.8], [-0.8, 0.8], [-0.8, -0.8], [0.8, -0.8]])  # [4, 2]
MODE_REWARDS = np.array([1.0, 0.6, 0.3, 0.1])  # the top-right mode is the best
MODE_STD = 0.05  # spread of the behaviour policy around each centre
REWARD_WIDTH = 0.25  # reward falls off as a Gaussian bump of this width around each centre


def bandit_reward(actions: np.ndarray) -> np.ndarray:
    """r(a) = max_k R_k exp(-|a - c_k|^2 / (2 w^2)). actions [N, 2] -> [N]."""
    d2 = ((actions[:, None, :] - MODE_CENTRES[None]) ** 2).sum(-1)  # [N, 4]
    return (MODE_REWARDS[None] * np.exp(-d2 / (2 * REWARD_WIDTH**2))).max(1)


def behaviour_actions(n: int, rng: np.random.Generator) -> np.ndarray:
    """n actions of the behaviour policy: a uniformly chosen mode plus N(0, MODE_STD^2) noise. [n, 2]"""
    modes = rng.integers(len(MODE_CENTRES), size=n)
    return np.clip(MODE_CENTRES[modes] + MODE_STD * rng.standard_normal((n, 2)), -1, 1)


class MultimodalBandit(gym.Env):
    """One state, actions in [-1, 1]^2, reward bandit_reward(a), every episode ends after one step."""

    metadata = {"render_modes": []}

    def __init__(self, render_mode: str | None = None):
        self.render_mode = None  # nothing to render: the scatter plot of actions is the bandit's picture
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        reward = float(bandit_reward(np.asarray(action, dtype=np.float64)[None])[0])
        return np.zeros(1, dtype=np.float32), reward, True, False, {}
