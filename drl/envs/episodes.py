"""Roll a batched actor out in several environments in lockstep (one actor call per env step).

Used by dataset generation, evaluation, DDPO's collector and DSRL's online collection; with
env.num_envs > 1 the episodes run in a gymnasium vector env (drl.envs.vector).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from drl.envs.chunking import Horizons
from drl.envs.make import make_env
from drl.envs.vector import run_vector_episodes

# obs [n, O] float32 -> (actions [n, A] in [-1, 1], extras: name -> tensor [n, ...] kept per step);
# on a ChunkedEnv obs [n, To, O] -> actions [n, Ta, A]
Actor = Callable[[np.ndarray], tuple[np.ndarray, dict[str, torch.Tensor]]]


@dataclass
class Episode:
    """One episode, T steps. Field names follow Minari/D4RL."""

    observations: np.ndarray  # [T, O] ([T, To, O] chunked)
    actions: np.ndarray  # [T, A] ([T, Ta, A] chunked)
    rewards: np.ndarray  # [T]
    terminations: np.ndarray  # [T] bool: the MDP ended (no bootstrap)
    truncations: np.ndarray  # [T] bool: time limit (bootstrap through it)
    next_observations: np.ndarray  # [T, O] ([T, To, O] chunked)
    executed_steps: np.ndarray  # [T] int: env steps each step ran (1; a ChunkedEnv decision: Ta, or fewer at the end)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [T, ...]
    frames: list[np.ndarray] = field(default_factory=list)  # rendered RGB frames when asked

    @property
    def total_reward(self) -> float:
        return float(self.rewards.sum())

    @property
    def env_steps(self) -> int:
        """The underlying env's steps (= len(self) without chunks)."""
        return int(self.executed_steps.sum())

    def __len__(self) -> int:
        return len(self.rewards)


def run_episodes(
    env_id: str,
    actor: Actor,
    num_episodes: int,
    seed: int,
    render: bool = False,
    horizons: Horizons = Horizons(),
    num_envs: int = 1,
    vector_mode: str = "async",
) -> list[Episode]:
    """``num_episodes`` episodes in order, episode k reset with seed + k.

    num_envs == 1: one env per episode in this process, all stepped together until each ends (one
    actor call per step over the episodes still running). num_envs > 1: a gymnasium vector env of
    num_envs sub-envs (drl.envs.vector), each running episodes one after another.
    With ``horizons`` chunked, a step is a decision of ChunkedEnv (Ta env steps, their summed reward).
    """
    if num_envs > 1 and not render:
        return [_episode(s, []) for s in run_vector_episodes(env_id, actor, num_episodes, seed, num_envs, vector_mode, horizons)]
    envs = [make_env(env_id, render=render, horizons=horizons) for _ in range(num_episodes)]
    obs = np.stack([env.reset(seed=seed + k)[0] for k, env in enumerate(envs)]).astype(np.float32)  # [n, O]
    steps: list[list[tuple]] = [[] for _ in envs]
    frames: list[list[np.ndarray]] = [[env.render()] if render else [] for env in envs]
    active = list(range(num_episodes))
    while active:
        actions, extras = actor(obs[active])
        for j, k in enumerate(active):
            next_obs, reward, terminated, truncated, info = envs[k].step(actions[j])
            next_obs = np.asarray(next_obs, dtype=np.float32)
            row = {n: v[j] for n, v in extras.items()}
            steps[k].append((obs[k].copy(), actions[j], reward, terminated, truncated, next_obs, row, info.get("executed_steps", 1)))
            if render:
                frames[k].append(envs[k].render())
            obs[k] = next_obs
        active = [k for k in active if not (steps[k][-1][3] or steps[k][-1][4])]
    for env in envs:
        env.close()
    return [_episode(s, f) for s, f in zip(steps, frames)]


def vector_options(env_cfg) -> dict:
    """run_episodes' num_envs and vector_mode, from the env.* config."""
    return {"num_envs": env_cfg.num_envs, "vector_mode": env_cfg.vector_mode}


def _episode(steps: list[tuple], frames: list[np.ndarray]) -> Episode:
    o, a, r, term, trunc, o2, extras, executed = zip(*steps)
    names = extras[0].keys()
    return Episode(
        observations=np.stack(o).astype(np.float32),
        actions=np.stack(a).astype(np.float32),
        rewards=np.asarray(r, dtype=np.float32),
        terminations=np.asarray(term, dtype=bool),
        truncations=np.asarray(trunc, dtype=bool),
        next_observations=np.stack(o2).astype(np.float32),
        executed_steps=np.asarray(executed, dtype=np.int64),
        extras={n: torch.stack([e[n] for e in extras]) for n in names},
        frames=frames,
    )


def discounted_returns_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_k gamma^k r_{t+k} over one episode. [T] -> [T]"""
    out, running = np.zeros_like(rewards, dtype=np.float64), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out.astype(np.float32)
