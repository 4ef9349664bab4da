"""Write a drl dataset (.npz) as a D4RL-style HDF5 file or as a local Minari dataset, for other libraries.

    python scripts/export_dataset.py data/hopper-medium.npz --hdf5 data/hopper-medium.hdf5
    MINARI_DATASETS_PATH=data/minari python scripts/export_dataset.py data/hopper-medium.npz --minari drl/hopper/medium-v0

Actions go back to the task's own action box (drl stores them in [-1, 1]); drl's env.dataset reads both
files back to the same fields (tests/test_dataset_files.py). The HDF5 file carries ``next_observations``,
``terminals`` = terminations, ``timeouts`` = truncations and an ``env_id`` attribute; the Minari dataset
gets one episode per stored episode, its T + 1 observations ending with the last next observation.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

from drl.envs.dataset import OfflineDataset
from drl.envs.dataset_files import task_spaces


def from_unit_box(actions: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    """[N, A] in [-1, 1] -> the box's own range (the inverse of drl's map)."""
    low, high = np.ravel(space.low), np.ravel(space.high)
    return (low + (actions.astype(np.float64) + 1.0) * 0.5 * (high - low)).astype(np.float32)


def episode_slices(dataset: OfflineDataset) -> list[slice]:
    ends = np.flatnonzero(dataset.terminations | dataset.truncations)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [slice(int(s), int(e) + 1) for s, e in zip(starts, ends)]


def write_hdf5(dataset: OfflineDataset, env_id: str, path: str) -> None:
    import h5py

    _, action_space = task_spaces(env_id)
    with h5py.File(path, "w") as f:
        f["observations"], f["next_observations"] = dataset.observations, dataset.next_observations
        f["actions"], f["rewards"] = from_unit_box(dataset.actions, action_space), dataset.rewards
        f["terminals"], f["timeouts"] = dataset.terminations, dataset.truncations
        f.attrs["env_id"] = env_id


def write_minari(dataset: OfflineDataset, env_id: str, dataset_id: str) -> None:
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    _, action_space = task_spaces(env_id)
    actions = from_unit_box(dataset.actions, action_space)
    buffers = [
        EpisodeBuffer(
            id=k,
            observations=np.concatenate([dataset.observations[s], dataset.next_observations[s][-1:]]),  # [T + 1, O]
            actions=actions[s],
            rewards=list(dataset.rewards[s]),
            terminations=list(dataset.terminations[s]),
            truncations=list(dataset.truncations[s]),
            infos={},
        )
        for k, s in enumerate(episode_slices(dataset))
    ]
    minari.create_dataset_from_buffers(
        dataset_id, buffers, env=env_id, algorithm_name=str(dataset.metadata.get("behaviour")), description="Exported by drl's scripts/export_dataset.py."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("npz", help="a dataset made by scripts/make_dataset.py")
    parser.add_argument("--hdf5", help="write a D4RL-style HDF5 file here")
    parser.add_argument("--minari", metavar="ID", help="write a Minari dataset of this id under MINARI_DATASETS_PATH")
    args = parser.parse_args()
    if not (args.hdf5 or args.minari):
        parser.error("say where to write: --hdf5 PATH and/or --minari ID.")
    dataset = OfflineDataset.load(args.npz)
    env_id = dataset.metadata["env_id"]
    if args.hdf5:
        write_hdf5(dataset, env_id, args.hdf5)
    if args.minari:
        write_minari(dataset, env_id, args.minari)


if __name__ == "__main__":
    main()
