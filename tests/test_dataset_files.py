"""env.dataset from disk: a Minari dataset (built here with Minari's DataCollector) and a D4RL-style HDF5 file
(built here with h5py), mapped to drl's fields, trained on through drl-train, and refused in one sentence
when they do not fit the task. Nothing is downloaded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

from drl.envs.dataset import FIELDS, OfflineDataset, bandit_dataset
from drl.envs.dataset_files import d4rl_transitions, read_dataset
from drl.errors import ConfigError

EXPORT = Path(__file__).resolve().parent.parent / "scripts" / "export_dataset.py"
DRL_TRAIN = shutil.which("drl-train") or os.path.join(os.path.dirname(sys.executable), "drl-train")
PENDULUM = "Pendulum-v1"  # action box [-2, 2]: the map to [-1, 1] is not the identity
MINARI_ID = "drl/pendulum/random-v0"
# Diffusion-QL for one short epoch; one evaluation episode of Pendulum (200 steps).
TINY_DQL = [
    "experiment=pendulum_diffusion_ql",
    "logger=none",
    "hardware.num_threads=1",
    "model.hidden_dim=32",
    "train.epochs=1",
    "train.batch_size=32",
    "algorithm.steps_per_epoch=3",
    "env.eval_episodes=1",
]


# ----------------------------------------------------------------- builders
def _random_episodes(num_episodes: int, seed: int, steps: int | None = None) -> list[dict]:
    """Episodes of uniform-random actions on Pendulum, recorded in the env's own action box [-2, 2]."""
    env, rng = gym.make(PENDULUM), np.random.default_rng(seed)
    episodes = []
    for k in range(num_episodes):
        obs, _ = env.reset(seed=seed + k)
        rows = {"observations": [], "actions": [], "rewards": [], "next_observations": [], "terminals": [], "timeouts": []}
        done = False
        while not done:
            action = rng.uniform(-2, 2, 1).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            truncated = truncated or (steps is not None and len(rows["rewards"]) + 1 == steps)
            for key, value in zip(rows, (obs, action, reward, next_obs, terminated, truncated)):
                rows[key].append(value)
            obs, done = next_obs, terminated or truncated
        episodes.append({key: np.asarray(value) for key, value in rows.items()})
    env.close()
    return episodes


def write_d4rl_hdf5(path, episodes: list[dict], with_next: bool = True, **attrs) -> None:
    with h5py.File(path, "w") as f:
        for key in ("observations", "actions", "rewards", "terminals", "timeouts", *(["next_observations"] if with_next else [])):
            f[key] = np.concatenate([e[key] for e in episodes])
        f.attrs.update(attrs)


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory):
    """A two-episode Pendulum dataset recorded by Minari's DataCollector under its own MINARI_DATASETS_PATH."""
    import minari

    root = tmp_path_factory.mktemp("minari")
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        env = minari.DataCollector(gym.make(PENDULUM))
        rng = np.random.default_rng(0)
        for k in range(2):
            env.reset(seed=k)
            done = False
            while not done:
                _, _, terminated, truncated, _ = env.step(rng.uniform(-2, 2, 1).astype(np.float32))
                done = terminated or truncated
        with pytest.warns(UserWarning):  # minari asks for an author, a description, ...
            env.create_dataset(dataset_id=MINARI_ID, algorithm_name="uniform-random")
        env.close()
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH")
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
    return root


def drl_train(args, cwd, **env):
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([DRL_TRAIN, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


# ---------------------------------------------------------------- D4RL rows
def test_d4rl_rows_keep_episode_ends_and_never_borrow_the_next_episode():
    """Rows 0-2: an episode that terminates; 3-4: one cut by a timeout; 5: one the file cuts off."""
    obs = np.arange(6, dtype=np.float32)[:, None] * 10  # [6, 1]: row i observes 10 i
    terminals = np.array([0, 0, 1, 0, 0, 0], bool)
    timeouts = np.array([0, 0, 0, 0, 1, 0], bool)
    rows = (obs, obs[:, :1] / 100, np.arange(6, dtype=np.float32), terminals, timeouts)

    derived = d4rl_transitions(*rows)  # no next_observations: rows 4 (timeout) and 5 (file end) have none
    assert derived["rewards"].tolist() == [0, 1, 2, 3]
    assert derived["next_observations"][:, 0].tolist() == [10, 20, 20, 40]  # terminal row 2: its own state, not row 3's
    assert derived["terminations"].tolist() == [False, False, True, False]
    assert derived["truncations"].tolist() == [False, False, False, True]  # row 3 now ends the timed-out episode

    given = d4rl_transitions(*rows, next_observations=obs + 5)
    assert given["rewards"].tolist() == [0, 1, 2, 3, 4, 5] and given["next_observations"][:, 0].tolist() == [5, 15, 25, 35, 45, 55]
    assert given["terminations"].tolist() == [False, False, True, False, False, False]
    assert given["truncations"].tolist() == [False, False, False, False, True, True]  # timeout; the file's end


def test_hdf5_file_maps_to_drl_fields_with_rescaled_actions(tmp_path):
    episodes = _random_episodes(2, seed=3, steps=50)
    write_d4rl_hdf5(tmp_path / "with_next.hdf5", episodes, env_id=PENDULUM)
    write_d4rl_hdf5(tmp_path / "without_next.h5", episodes, with_next=False)

    full = read_dataset(str(tmp_path / "with_next.hdf5"), PENDULUM)
    raw_actions = np.concatenate([e["actions"] for e in episodes])
    assert len(full) == 100 and full.observations.shape == (100, 3) and full.actions.shape == (100, 1)
    np.testing.assert_allclose(full.actions, raw_actions / 2, atol=1e-6)  # [-2, 2] -> [-1, 1]
    assert np.flatnonzero(full.truncations).tolist() == [49, 99] and not full.terminations.any()
    np.testing.assert_allclose(full.episode_returns(), [e["rewards"].sum() for e in episodes], rtol=1e-5)
    assert full.metadata["env_id"] == PENDULUM and full.metadata["episodes"] == 2

    derived = read_dataset(str(tmp_path / "without_next.h5"), PENDULUM)
    assert len(derived) == 98  # each episode's timed-out last row has no next observation in the file
    assert np.flatnonzero(derived.truncations).tolist() == [48, 97]
    np.testing.assert_allclose(derived.next_observations, np.concatenate([e["next_observations"][:49] for e in episodes]), atol=1e-6)


def test_minari_dataset_maps_to_drl_fields(minari_root, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    by_id = read_dataset(MINARI_ID, PENDULUM)
    by_path = read_dataset(str(minari_root / MINARI_ID), PENDULUM)
    source = list(minari.load_dataset(MINARI_ID).iterate_episodes())
    assert len(by_id) == len(by_path) == 400 and np.array_equal(by_id.observations, by_path.observations)
    np.testing.assert_allclose(by_id.actions, np.concatenate([e.actions for e in source]) / 2, atol=1e-6)
    np.testing.assert_allclose(by_id.next_observations[:200], source[0].observations[1:], atol=1e-6)
    np.testing.assert_allclose(by_id.observations[200], source[1].observations[0], atol=1e-6)  # the second episode's start
    assert np.flatnonzero(by_id.truncations).tolist() == [199, 399] and not by_id.terminations.any()
    assert by_id.metadata["behaviour"] == MINARI_ID and by_id.metadata["episodes"] == 2


# ------------------------------------------------------------ what does not fit
def test_datasets_that_do_not_fit_stop_with_one_sentence(tmp_path, minari_root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    bandit = "drl/MultimodalBandit-v0"
    episodes = _random_episodes(1, seed=0, steps=10)
    write_d4rl_hdf5(tmp_path / "pendulum.hdf5", episodes)
    write_d4rl_hdf5(tmp_path / "named.hdf5", episodes, env_id="Hopper-v5")
    wide = [{**e, "actions": np.repeat(e["actions"], 2, axis=1)} for e in episodes]
    write_d4rl_hdf5(tmp_path / "wide.hdf5", wide)
    (tmp_path / "text.hdf5").write_text("not hdf5")
    (tmp_path / "text.npz").write_text("not a zip")
    with h5py.File(tmp_path / "partial.hdf5", "w") as f:
        f["observations"] = np.zeros((3, 3))
    bandit_dataset(8, seed=0).save(tmp_path / "bandit.npz")  # drl's own format names its env too
    cases = {
        (str(tmp_path / "pendulum.hdf5"), bandit): "has observations of size 3; env.id='drl/MultimodalBandit-v0' has observations of size 1.",
        (str(tmp_path / "wide.hdf5"), PENDULUM): "has actions of size 2; env.id='Pendulum-v1' has actions of size 1.",
        (str(tmp_path / "named.hdf5"), PENDULUM): "was recorded on 'Hopper-v5', not env.id='Pendulum-v1'.",
        (MINARI_ID, "Hopper-v5"): "was recorded on 'Pendulum-v1', not env.id='Hopper-v5'.",
        (str(tmp_path / "bandit.npz"), PENDULUM): f"was recorded on {bandit!r}, not env.id='Pendulum-v1'.",
        (str(tmp_path / "text.hdf5"), PENDULUM): "is not an HDF5 file, though its suffix says so.",
        (str(tmp_path / "text.npz"), PENDULUM): "is not a .npz archive",
        (str(tmp_path / "partial.hdf5"), PENDULUM): "is not a D4RL-style dataset: it lacks actions, rewards, terminals, timeouts.",
        (str(tmp_path / "missing.hdf5"), PENDULUM): "no such file.",
        ("drl/pendulum/expert-v0", PENDULUM): f"no Minari dataset under {minari_root} (MINARI_DATASETS_PATH), and drl never downloads one",
        (str(tmp_path), PENDULUM): "is a directory but not a Minari dataset: it has no data/metadata.json.",
        (str(tmp_path / "data.csv"), PENDULUM): "is none of drl's .npz, a D4RL-style .hdf5/.h5 file or a Minari dataset",
    }
    for (spec, env_id), message in cases.items():
        with pytest.raises(ConfigError) as error:
            read_dataset(spec, env_id)
        assert message in str(error.value), (spec, str(error.value))
        assert str(error.value).startswith(f"env.dataset={spec!r}") and "\n" not in str(error.value)


# ------------------------------------------------------------ through drl-train
@pytest.mark.slow
def test_drl_train_runs_diffusion_ql_on_minari_and_hdf5_data_and_refuses_a_mismatch(tmp_path, minari_root):
    write_d4rl_hdf5(tmp_path / "pendulum.hdf5", _random_episodes(2, seed=5, steps=100), env_id=PENDULUM)
    for name, dataset in (("minari", MINARI_ID), ("hdf5", str(tmp_path / "pendulum.hdf5"))):
        result = drl_train([*TINY_DQL, f"env.dataset={dataset}", f"hydra.run.dir={tmp_path / name}"], tmp_path, MINARI_DATASETS_PATH=str(minari_root))
        assert result.returncode == 0, result.stderr[-2000:]
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert np.isfinite(records[-1]["train/critic_loss"]) and "eval/return_mean" in records[-1]
    mismatch = drl_train([*TINY_DQL, f"env.dataset={MINARI_ID}", "env.id=Hopper-v5", f"hydra.run.dir={tmp_path / 'bad'}"], tmp_path, MINARI_DATASETS_PATH=str(minari_root))
    assert mismatch.returncode == 2 and "Traceback" not in mismatch.stderr
    assert mismatch.stderr.strip() == f"drl-train: error: env.dataset={MINARI_ID!r} was recorded on 'Pendulum-v1', not env.id='Hopper-v5'."


@pytest.mark.slow  # ~9 CPU-s; pytest -m slow tests/test_dataset_files.py
def test_diffusion_ql_trains_an_epoch_on_minari_and_hdf5_data(tmp_path, minari_root, monkeypatch):
    """The same runs in this process (the drl-train one above is marked slow: three processes start)."""
    from drl.train import train

    from conftest import compose_config

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    write_d4rl_hdf5(tmp_path / "pendulum.hdf5", _random_episodes(2, seed=5, steps=100), env_id=PENDULUM)
    for name, dataset in (("minari", MINARI_ID), ("hdf5", str(tmp_path / "pendulum.hdf5"))):
        train(compose_config([*TINY_DQL, f"env.dataset={dataset}"], tiny=False), tmp_path / name)
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert np.isfinite(records[-1]["train/critic_loss"]) and "eval/return_mean" in records[-1]


def test_the_same_episodes_read_alike_from_npz_hdf5_and_minari(tmp_path, monkeypatch):
    """drl's own rollouts, written as drl's .npz, as a D4RL-style HDF5 file and as a Minari dataset (the actions
    in Pendulum's own box [-2, 2] in the last two; each also by scripts/export_dataset.py), read back to the same fields."""
    import minari

    from drl.envs.episodes import run_episodes

    rng = np.random.default_rng(0)
    episodes = run_episodes(PENDULUM, lambda obs: (rng.uniform(-1, 1, (len(obs), 1)).astype(np.float32), {}), 2, seed=7)
    reference = OfflineDataset.from_episodes(episodes, {"env_id": PENDULUM})
    reference.save(tmp_path / "drl.npz")
    raw = [
        {"observations": e.observations, "actions": 2 * e.actions, "rewards": e.rewards, "next_observations": e.next_observations,
         "terminals": e.terminations, "timeouts": e.truncations}
        for e in episodes
    ]  # fmt: skip
    write_d4rl_hdf5(tmp_path / "d4rl.hdf5", raw)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    collector = minari.DataCollector(gym.make(PENDULUM))
    for k, episode in enumerate(episodes):
        collector.reset(seed=7 + k)
        for action in 2 * episode.actions:
            collector.step(action)
    with pytest.warns(UserWarning):
        collector.create_dataset(dataset_id="drl/pendulum/replayed-v0")
    export = [sys.executable, str(EXPORT), str(tmp_path / "drl.npz"), "--hdf5", str(tmp_path / "exported.hdf5"), "--minari", "drl/pendulum/exported-v0"]
    done = subprocess.run(export, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    with h5py.File(tmp_path / "exported.hdf5") as f:  # the task's own box again, as other libraries expect
        np.testing.assert_allclose(f["actions"][()], 2 * reference.actions, atol=1e-6)
    specs = [str(tmp_path / name) for name in ("drl.npz", "d4rl.hdf5", "exported.hdf5")] + ["drl/pendulum/replayed-v0", "drl/pendulum/exported-v0"]
    for spec in specs:
        dataset = read_dataset(spec, PENDULUM)
        for name in FIELDS:
            np.testing.assert_allclose(getattr(dataset, name), getattr(reference, name), atol=1e-6, err_msg=f"{spec}: {name}")
        assert dataset.metadata["episodes"] == 2
