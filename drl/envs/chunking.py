"""Action chunks and observation history: the env side (a gymnasium wrapper) and the dataset side.

Diffusion Policy (Chi et al. 2023) and DPPO (Ren et al. 2024) predict a chunk of Ta actions from the
last To observations and execute the chunk receding-horizon. :class:`ChunkedEnv` turns an env into
that decision process (DPPO's ``MultiStep`` wrapper); :func:`chunk_windows` cuts an offline dataset
into the same decisions, so offline and online algorithms see one MDP.

Shape legend:
    To  observation horizon (past observations the policy reads)
    Ta  action horizon (actions executed per decision)
    O   observation size       A  action size       N  decisions
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class Horizons:
    """To and Ta of a run (model.obs_horizon, model.action_horizon); (1, 1) is the unwrapped env."""

    obs: int = 1
    action: int = 1

    @property
    def chunked(self) -> bool:
        return self.obs > 1 or self.action > 1

    @classmethod
    def of(cls, model_cfg) -> "Horizons":
        """The horizons of a PolicyModelConfig (1, 1 for any other model)."""
        return cls(getattr(model_cfg, "obs_horizon", 1), getattr(model_cfg, "action_horizon", 1))


class ChunkedEnv(gym.Wrapper):
    """Observation = the last To observations [To, O]; action = a chunk [Ta, A] executed step by step.

    At reset the history is the first observation repeated To times (Diffusion Policy's padding).
    The chunk's reward is the plain sum of the rewards of the steps executed, undiscounted: the wrapped
    env is a new MDP whose decisions are chunks, and an algorithm discounts by env.gamma per decision,
    as DPPO does (its MultiStep wrapper sums, its GAE discounts per chunk). The chunk stops early
    when the episode ends (terminated or truncated); ``info["executed_steps"]`` says how many ran.
    """

    def __init__(self, env: gym.Env, horizons: Horizons):
        super().__init__(env)
        self.horizons = horizons
        obs_space, act_space = env.observation_space, env.action_space
        self.observation_space = gym.spaces.Box(
            np.repeat(obs_space.low[None], horizons.obs, 0), np.repeat(obs_space.high[None], horizons.obs, 0), dtype=obs_space.dtype
        )
        self.action_space = gym.spaces.Box(
            np.repeat(act_space.low[None], horizons.action, 0), np.repeat(act_space.high[None], horizons.action, 0), dtype=act_space.dtype
        )
        self.history: deque[np.ndarray] = deque(maxlen=horizons.obs)

    def _observation(self) -> np.ndarray:
        return np.stack(self.history)  # [To, O]

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.history.extend([obs] * self.horizons.obs)
        return self._observation(), info

    def step(self, action):
        chunk = np.asarray(action).reshape(self.action_space.shape)  # [Ta, A]
        total, terminated, truncated, info, executed = 0.0, False, False, {}, 0
        for a in chunk:
            obs, reward, terminated, truncated, info = self.env.step(a)
            self.history.append(obs)
            total += float(reward)
            executed += 1
            if terminated or truncated:
                break
        return self._observation(), total, terminated, truncated, {**info, "executed_steps": executed}


def _history(sequence: np.ndarray, end: int, to: int) -> np.ndarray:
    """sequence[end - To + 1 .. end], the indices below 0 padded with sequence[0]. [To, ...]"""
    index = np.clip(np.arange(end - to + 1, end + 1), 0, None)
    return sequence[index]


def chunk_windows(dataset, horizons: Horizons) -> dict[str, np.ndarray]:
    """Every step of every episode as a ChunkedEnv decision (stride 1; episode boundaries respected).

    Decision at step t of an episode of length T: observations = the To observations up to t (padded at the
    episode's start with its first), actions = steps t .. t + Ta - 1 (past the episode's end padded with its
    last action, as Diffusion Policy does; those are never executed), rewards = the sum over the executed
    steps t .. k, k = min(t + Ta, T) - 1, next_observations = the To observations up to o_{k+1},
    terminations = the episode terminated at k. Returns observations [N, To, O], actions [N, Ta, A],
    rewards [N], next_observations [N, To, O], terminations [N] bool.
    """
    to, ta = horizons.obs, horizons.action
    ends = np.flatnonzero(dataset.terminations | dataset.truncations)
    if len(ends) == 0 or ends[-1] != len(dataset) - 1:
        ends = np.append(ends, len(dataset) - 1)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminations")}
    start = 0
    for end in ends:
        episode = slice(start, end + 1)
        obs = np.concatenate([dataset.observations[episode], dataset.next_observations[end : end + 1]])  # o_0 .. o_T: [T + 1, O]
        actions, rewards, terms = dataset.actions[episode], dataset.rewards[episode], dataset.terminations[episode]
        length = len(rewards)
        for t in range(length):
            k = min(t + ta, length) - 1
            out["observations"].append(_history(obs, t, to))
            out["actions"].append(actions[np.clip(np.arange(t, t + ta), None, length - 1)])
            out["rewards"].append(rewards[t : k + 1].sum(dtype=np.float64))
            out["next_observations"].append(_history(obs, k + 1, to))
            out["terminations"].append(terms[k])
        start = end + 1
    return {
        "observations": np.stack(out["observations"]).astype(np.float32),
        "actions": np.stack(out["actions"]).astype(np.float32),
        "rewards": np.asarray(out["rewards"], dtype=np.float32),
        "next_observations": np.stack(out["next_observations"]).astype(np.float32),
        "terminations": np.asarray(out["terminations"], dtype=bool),
    }
