"""Offline datasets of transitions, generated deterministically by drl (no D4RL/Minari download here).

File format (``.npz``, written by :meth:`OfflineDataset.save`), N transitions, field names as
in Minari / D4RL's ``qlearning_dataset``:

    observations       [N, O] float32
    actions            [N, A] float32, rescaled to [-1, 1] (the env's Box mapped linearly)
    rewards            [N]    float32
    terminations       [N]    bool   the MDP ended here: TD targets do not bootstrap
    truncations        [N]    bool   a time limit (or the end of the data) cut the episode here
    next_observations  [N, O] float32
    metadata           JSON string: env_id, behaviour, seed, episodes, return statistics

Episodes are stored one after another; an episode ends where terminations | truncations.
Mixed levels (D4RL's medium-expert is its medium and expert data one after the other) are
:meth:`OfflineDataset.concatenate` of datasets of one environment (``make_dataset.py --mix``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from drl.envs.episodes import Episode, run_episodes

FIELDS = ("observations", "actions", "rewards", "terminations", "truncations", "next_observations")


@dataclass
class OfflineDataset:
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    next_observations: np.ndarray
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rewards)

    @classmethod
    def from_episodes(cls, episodes: list[Episode], metadata: dict) -> "OfflineDataset":
        cat = lambda name: np.concatenate([getattr(e, name) for e in episodes])  # noqa: E731
        dataset = cls(*(cat(name) for name in FIELDS), metadata=dict(metadata))
        dataset.metadata.update(dataset.return_summary())
        return dataset

    def episode_returns(self) -> np.ndarray:
        """The undiscounted return of every stored episode (a cut-off last one included). [episodes]"""
        ends = np.flatnonzero(self.terminations | self.truncations)
        if len(ends) == 0 or ends[-1] != len(self) - 1:
            ends = np.append(ends, len(self) - 1)
        return np.add.reduceat(self.rewards.astype(np.float64), np.concatenate([[0], ends[:-1] + 1]))

    def return_summary(self) -> dict:
        """The metadata's episode count and return statistics, of the episodes stored here."""
        returns = self.episode_returns()
        return {"episodes": len(returns), "return_mean": float(returns.mean()), "return_std": float(returns.std())}

    @classmethod
    def concatenate(cls, parts: list["OfflineDataset"]) -> "OfflineDataset":
        """Datasets of one environment one after another (D4RL's medium-expert = medium + expert).

        Each part's last transition is marked truncated if it did not end an episode, so that no episode
        runs from one part into the next; the metadata keeps every part's own metadata under ``parts``.
        """
        env_ids = {part.metadata.get("env_id") for part in parts}
        if len(env_ids) != 1:
            raise ValueError(f"Datasets of different environments cannot be mixed: {sorted(map(str, env_ids))}.")
        ended = [part.head(len(part)) for part in parts]  # copies, each closing its last episode
        mixed = cls(*(np.concatenate([getattr(part, name) for part in ended]) for name in FIELDS))
        mixed.metadata = {
            "env_id": env_ids.pop(),
            "behaviour": "+".join(str(part.metadata.get("behaviour")) for part in parts),
            "parts": [part.metadata for part in parts],
            **mixed.return_summary(),
        }
        return mixed

    def head(self, n: int) -> "OfflineDataset":
        """The first n transitions; the last one is marked truncated if the cut fell inside an episode."""
        part = OfflineDataset(*(getattr(self, name)[:n].copy() for name in FIELDS), metadata=dict(self.metadata))
        part.truncations[-1] |= not part.terminations[-1]
        part.metadata.update(part.return_summary())  # the cut episode counts with what is left of it
        return part

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **{name: getattr(self, name) for name in FIELDS}, metadata=json.dumps(self.metadata))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "OfflineDataset":
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"No dataset at {str(path)!r}: make one with `python scripts/make_dataset.py --help`.")
        with np.load(path) as data:
            missing = [name for name in FIELDS if name not in data]
            if missing:
                raise ValueError(f"{str(path)!r} is not a drl dataset: it lacks {', '.join(missing)}.")
            return cls(*(data[name] for name in FIELDS), metadata=json.loads(str(data["metadata"])))


def generate_dataset(
    env_id: str,
    behaviour: Callable[[np.ndarray, np.random.Generator], np.ndarray],
    size: int,
    seed: int,
    name: str,
    episodes_per_wave: int = 8,
) -> OfflineDataset:
    """Roll ``behaviour(obs [n, O], rng) -> actions [n, A]`` out until ``size`` transitions exist.

    Deterministic: the behaviour's rng and every env reset derive from ``seed``.
    """
    rng = np.random.default_rng(seed)
    episodes: list[Episode] = []
    wave = 0
    while sum(len(e) for e in episodes) < size:
        actor = lambda obs: (behaviour(obs, rng), {})  # noqa: E731
        episodes += run_episodes(env_id, actor, episodes_per_wave, seed=seed * 100_003 + wave * episodes_per_wave)
        wave += 1
    return OfflineDataset.from_episodes(episodes, {"env_id": env_id, "behaviour": name, "seed": seed}).head(size)


def bandit_dataset(size: int, seed: int) -> OfflineDataset:
    """The four-mode behaviour data of the bandit (drl.envs.bandit), ``size`` one-step episodes."""
    from drl.envs.bandit import behaviour_actions
    from drl.envs.make import BANDIT_ID

    return generate_dataset(BANDIT_ID, lambda obs, rng: behaviour_actions(len(obs), rng), size, seed, "four_modes", episodes_per_wave=size)
