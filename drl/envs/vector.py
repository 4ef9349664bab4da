"""Episodes from N environments at once: gymnasium's vector envs (async = one subprocess per environment).

Episodes are handed to the sub-environments in order: sub-env i starts episode i, and whenever one
finishes its episode it takes the next episode k not yet started, reset with seed + k. Episode k
therefore starts from reset(seed=seed + k) whatever N is, exactly as in run_episodes' one-process
path, and the episodes come back in the order k = 0, 1, ...

Autoreset (gymnasium 1.x, next-step mode): a sub-env that ended at step t would reset itself on
step t + 1 (ignoring that step's action, returning reward 0) from its own RNG, not from seed + k.
So after every step, the sub-envs that ended and have a further episode to run are reset at once with
``reset(seed=..., options={"reset_mask": ...})``, which clears the pending autoreset; their next step is a
real step of the new episode. A step's ``next_observation`` is therefore always the true last state
(next-step mode returns it on the ending step; no final_obs bookkeeping). A sub-env with no episode
left idles: it is stepped with a zero action (a vector env steps all its envs) and what it returns
is dropped.
"""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np

from drl.envs.chunking import Horizons
from drl.envs.make import make_env

VECTOR_MODES = ("async", "sync")


def make_vector_env(env_id: str, num_envs: int, mode: str, horizons: Horizons = Horizons()) -> gym.vector.VectorEnv:
    """``num_envs`` copies of make_env(env_id, horizons=...) (whatever wrappers it applies), in subprocesses or here."""
    if mode not in VECTOR_MODES:
        raise ValueError(f"env.vector_mode={mode!r} is not one of {', '.join(VECTOR_MODES)}.")
    factories = [partial(make_env, env_id, horizons=horizons)] * num_envs
    vector_env = gym.vector.AsyncVectorEnv if mode == "async" else gym.vector.SyncVectorEnv
    return vector_env(factories, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)


def run_vector_episodes(
    env_id: str, actor, num_episodes: int, seed: int, num_envs: int, mode: str, horizons: Horizons = Horizons()
) -> list[list[tuple]]:
    """Each episode's steps ``(obs, action, reward, terminated, truncated, next_obs, extras, executed_steps)``, episode k
    at index k (executed_steps: the env steps a ChunkedEnv decision ran, 1 without chunks).

    ``actor(obs [n, ...]) -> (actions [n, ...], extras)`` is called once per vector step on the
    sub-envs that are running an episode (n <= num_envs).
    """
    n = min(num_envs, num_episodes)
    envs = make_vector_env(env_id, n, mode, horizons)
    steps: list[list[tuple]] = [[] for _ in range(num_episodes)]
    try:
        obs = np.asarray(envs.reset(seed=[seed + i for i in range(n)])[0], np.float32)  # [n, ...]: sub-env i runs episode i
        episode_of: list[int | None] = list(range(n))  # sub-env -> the episode it runs (None: idle)
        next_episode = n
        while any(k is not None for k in episode_of):
            live = [i for i, k in enumerate(episode_of) if k is not None]
            actions, extras = actor(obs[live])  # [len(live), ...]
            all_actions = np.zeros((n, *envs.single_action_space.shape), dtype=envs.single_action_space.dtype)
            all_actions[live] = actions
            next_obs, rewards, terminated, truncated, infos = envs.step(all_actions)
            executed = infos.get("executed_steps", np.ones(n, dtype=np.int64))  # [n] (ChunkedEnv's info)
            next_obs = np.asarray(next_obs, np.float32)  # [n, ...] the actor's dtype, as in run_episodes
            reset = np.zeros(n, dtype=bool)  # [n] sub-envs that start their next episode now
            reset_seeds: list[int | None] = [None] * n
            for j, i in enumerate(live):
                k = episode_of[i]
                row = {name: value[j] for name, value in extras.items()}
                steps[k].append((obs[i].copy(), actions[j], rewards[i], terminated[i], truncated[i], next_obs[i].copy(), row, int(executed[i])))
                if terminated[i] or truncated[i]:
                    episode_of[i] = next_episode if next_episode < num_episodes else None
                    if episode_of[i] is not None:
                        reset[i], reset_seeds[i] = True, seed + next_episode
                        next_episode += 1
            obs = next_obs
            if reset.any():
                obs = np.asarray(envs.reset(seed=reset_seeds, options={"reset_mask": reset})[0], np.float32)
    finally:
        envs.close()
    return steps
