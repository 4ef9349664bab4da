"""Offline datasets from disk: drl's own .npz, a Minari dataset, or a D4RL-style HDF5 file.

``read_dataset(spec, env_id)`` is what ``env.dataset`` names. Whatever the source, the result is an
:class:`~drl.envs.dataset.OfflineDataset` in drl's conventions:

- actions mapped linearly from the box they were recorded in to [-1, 1] (the diffusion policy's box,
  as drl.envs.make's RescaleAction does for acting) and clipped to it;
- episodes one after another, each ending where ``terminations | truncations``; a time limit (D4RL's
  ``timeouts``, Minari's ``truncations``) ends an episode without terminating it, so TD targets
  bootstrap through it;
- ``next_observations`` never taken from the next episode (see :func:`d4rl_transitions`).

A dataset that does not fit the environment (observation or action size, the env id the file names),
a file that is not what its suffix claims, or a missing one stops the run with one ConfigError sentence.
Nothing is ever downloaded: Minari ids are looked up under MINARI_DATASETS_PATH (default
~/.minari/datasets).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np

from drl.envs.dataset import FIELDS, OfflineDataset
from drl.envs.make import make_env
from drl.errors import ConfigError

HDF5_SUFFIXES = (".hdf5", ".h5")
D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def read_dataset(spec: str, env_id: str) -> OfflineDataset:
    """The dataset ``env.dataset=spec`` names, checked against the task ``env_id``."""
    path = Path(spec).expanduser()
    if path.suffix == ".npz":
        dataset = _read_npz(spec, path)
    elif path.suffix in HDF5_SUFFIXES:
        dataset = _read_d4rl_hdf5(spec, path, env_id)
    elif path.is_dir():
        dataset = _read_minari(spec, path, env_id)
    elif path.suffix or path.exists():
        raise ConfigError(
            f"env.dataset={spec!r} is none of drl's .npz, a D4RL-style .hdf5/.h5 file or a Minari dataset (a directory or a local id)."
        )
    else:
        dataset = _read_minari(spec, _minari_root() / spec, env_id)
    _check_fits(spec, dataset, env_id)
    return dataset


# --------------------------------------------------------------------- drl's own
def _read_npz(spec: str, path: Path) -> OfflineDataset:
    if not path.is_file():
        raise ConfigError(f"env.dataset={spec!r}: no such file; make one with `python scripts/make_dataset.py --help`.")
    if not zipfile.is_zipfile(path):  # else numpy would take it for a pickle, and refuse it with advice to unpickle
        raise ConfigError(f"env.dataset={spec!r} is not a .npz archive, though its suffix says so.")
    try:
        return OfflineDataset.load(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:  # ValueError: OfflineDataset.load's "lacks ..." sentence
        raise ConfigError(f"env.dataset={spec!r} is not a drl dataset ({e}).") from None


# ------------------------------------------------------------------- D4RL HDF5
def d4rl_transitions(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
    next_observations: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """D4RL's flat arrays (N rows, one per env step) -> drl's FIELDS, episode ends kept.

    With ``next_observations`` every row is kept: terminations = terminals, truncations = timeouts
    (and the last row, if the file stops inside an episode). Without it, row i's next observation is
    row i + 1's, except where row i + 1 already belongs to the next episode:
      - a timeout row (not terminal), and the file's last row unless terminal, have no next
        observation in the file: they are dropped, and the kept row before them is marked truncated
        (as D4RL's own qlearning_dataset drops them);
      - a terminal row keeps its own observation as next observation: TD targets do not bootstrap
        there, and the next episode's first observation must not leak into it.
    """
    n = len(rewards)
    terminals, timeouts = np.asarray(terminals, bool), np.asarray(timeouts, bool)
    if next_observations is not None:
        truncations = timeouts & ~terminals
        truncations[-1] |= not terminals[-1]
        return dict(
            observations=observations, actions=actions, rewards=rewards,
            terminations=terminals, truncations=truncations, next_observations=next_observations,
        )  # fmt: skip
    next_obs = np.empty_like(observations)  # [N, O]
    next_obs[:-1] = observations[1:]
    next_obs[terminals] = observations[terminals]
    unknown = timeouts & ~terminals  # [N] rows whose successor is in no row of the file
    unknown[-1] |= not terminals[-1]
    ended = terminals | timeouts  # [N] the row ends its episode
    truncations = np.zeros(n, bool)
    before = np.flatnonzero(unknown[1:] & ~ended[:-1])  # kept rows i whose episode's next row i + 1 is dropped
    truncations[before] = True
    keep = ~unknown
    return dict(
        observations=observations[keep], actions=actions[keep], rewards=rewards[keep],
        terminations=terminals[keep], truncations=truncations[keep], next_observations=next_obs[keep],
    )  # fmt: skip


def _read_d4rl_hdf5(spec: str, path: Path, env_id: str) -> OfflineDataset:
    import h5py

    if not path.is_file():
        raise ConfigError(f"env.dataset={spec!r}: no such file.")
    if not h5py.is_hdf5(path):
        raise ConfigError(f"env.dataset={spec!r} is not an HDF5 file, though its suffix says so.")
    with h5py.File(path, "r") as f:
        missing = [key for key in D4RL_KEYS if key not in f]
        if missing:
            raise ConfigError(f"env.dataset={spec!r} is not a D4RL-style dataset: it lacks {', '.join(missing)}.")
        recorded_on = f.attrs.get("env_id")
        arrays = {key: f[key][()] for key in (*D4RL_KEYS, "next_observations") if key in f}
    if recorded_on is not None:
        _check_env_id(spec, str(recorded_on), env_id)
    obs = _as_rows(spec, "observations", arrays["observations"])
    next_obs = _as_rows(spec, "next_observations", arrays["next_observations"]) if "next_observations" in arrays else None
    actions = _to_unit_box(_as_rows(spec, "actions", arrays["actions"]), task_spaces(env_id)[1])
    lengths = {key: len(a) for key, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ConfigError(f"env.dataset={spec!r} has arrays of different lengths: {lengths}.")
    fields = d4rl_transitions(
        obs, actions, arrays["rewards"].astype(np.float32), arrays["terminals"], arrays["timeouts"], next_obs
    )
    return _dataset(fields, {"env_id": env_id, "behaviour": path.stem, "source": f"hdf5:{path}"})


# ---------------------------------------------------------------------- Minari
def _minari_root() -> Path:
    """Minari's local dataset root (its own rule, without minari's side effect of creating it)."""
    return Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets")


def _read_minari(spec: str, path: Path, env_id: str) -> OfflineDataset:
    """A Minari dataset directory (``<id>/`` or its ``data/``), read locally with the minari package."""
    data_dir = path / "data" if (path / "data").is_dir() else path
    if not (data_dir / "metadata.json").is_file():
        if Path(spec).expanduser().is_dir():
            raise ConfigError(f"env.dataset={spec!r} is a directory but not a Minari dataset: it has no data/metadata.json.")
        raise ConfigError(
            f"env.dataset={spec!r}: no Minari dataset under {_minari_root()} (MINARI_DATASETS_PATH), "
            "and drl never downloads one (run `minari download <id>` yourself)."
        )
    try:
        import minari
    except ImportError:
        raise ConfigError("Reading a Minari dataset needs the minari package: pip install 'drl[control]'.") from None
    try:
        data = minari.MinariDataset(data_dir)
    except (ValueError, KeyError, OSError, AssertionError) as e:
        raise ConfigError(f"env.dataset={spec!r} is not a readable Minari dataset ({type(e).__name__}: {e}).") from None
    if data.env_spec is not None:
        _check_env_id(spec, data.env_spec.id, env_id)
    if not isinstance(data.observation_space, gym.spaces.Box) or not isinstance(data.action_space, gym.spaces.Box):
        raise ConfigError(
            f"env.dataset={spec!r} has {type(data.observation_space).__name__} observations and {type(data.action_space).__name__} actions; drl reads Box ones."
        )
    parts = {name: [] for name in FIELDS}
    for episode in data.iterate_episodes():  # observations [T + 1, ...]: the last one is the final state
        obs = np.asarray(episode.observations, np.float32).reshape(len(episode) + 1, -1)
        truncations = np.asarray(episode.truncations, bool).copy()
        truncations[-1] |= not episode.terminations[-1]  # an episode the recording cut off
        step = dict(
            observations=obs[:-1], next_observations=obs[1:],
            actions=np.asarray(episode.actions, np.float32).reshape(len(episode), -1),
            rewards=episode.rewards, terminations=episode.terminations, truncations=truncations,
        )  # fmt: skip
        for name in FIELDS:
            parts[name].append(step[name])
    fields = {name: np.concatenate(arrays) for name, arrays in parts.items()}
    fields["actions"] = _to_unit_box(fields["actions"], data.action_space)  # the box the data was recorded in
    return _dataset(fields, {"env_id": env_id, "behaviour": data.id, "source": f"minari:{data_dir.parent}"})


# --------------------------------------------------------------------- helpers
def _dataset(fields: dict[str, np.ndarray], metadata: dict) -> OfflineDataset:
    dtypes = {"terminations": bool, "truncations": bool}
    dataset = OfflineDataset(**{name: np.asarray(fields[name], dtypes.get(name, np.float32)) for name in FIELDS}, metadata=metadata)
    dataset.metadata.update(dataset.return_summary())
    return dataset


def _as_rows(spec: str, key: str, array: np.ndarray) -> np.ndarray:
    """[N, ...] -> [N, D] float32."""
    if array.ndim < 2:
        raise ConfigError(f"env.dataset={spec!r}: {key} must have one row per step, [N, size]; it has shape {array.shape}.")
    return array.reshape(len(array), -1).astype(np.float32)


def task_spaces(env_id: str) -> tuple[gym.spaces.Space, gym.spaces.Space]:
    """(observation space, action space) of one step of the task as gymnasium makes it, before drl's wrappers."""
    env = make_env(env_id)
    spaces = env.unwrapped.observation_space, env.unwrapped.action_space
    env.close()
    return spaces


def _to_unit_box(actions: np.ndarray, space: gym.spaces.Space) -> np.ndarray:
    """[N, A] actions in ``space`` -> [-1, 1], the same linear map as gymnasium's RescaleAction."""
    low, high = np.ravel(space.low).astype(np.float64), np.ravel(space.high).astype(np.float64)
    if actions.shape[1] != len(low):
        return actions  # _check_fits reports the size mismatch
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ConfigError(f"The dataset's action box {space} is unbounded; drl maps actions to [-1, 1] and needs finite bounds.")
    unit = 2.0 * (actions - low) / (high - low) - 1.0
    return np.clip(unit, -1.0, 1.0).astype(np.float32)


def _check_env_id(spec: str, recorded_on: str, env_id: str) -> None:
    if recorded_on != env_id:
        raise ConfigError(f"env.dataset={spec!r} was recorded on {recorded_on!r}, not env.id={env_id!r}.")


def _check_fits(spec: str, dataset: OfflineDataset, env_id: str) -> None:
    """Some data; the env id the file names (drl's .npz); the observation and action sizes."""
    if len(dataset) == 0:
        raise ConfigError(f"env.dataset={spec!r} holds no transitions.")
    recorded_on = dataset.metadata.get("env_id")
    if recorded_on is not None:
        _check_env_id(spec, str(recorded_on), env_id)
    spaces = dict(zip(("observation", "action"), task_spaces(env_id)))
    sizes = {kind: int(np.prod(space.shape)) for kind, space in spaces.items()}
    for kind, array in (("observation", dataset.observations), ("action", dataset.actions)):
        have = int(np.prod(array.shape[1:]))
        if have != sizes[kind]:
            raise ConfigError(f"env.dataset={spec!r} has {kind}s of size {have}; env.id={env_id!r} has {kind}s of size {sizes[kind]}.")
