"""Sweeps and launchers: the Optuna search returns its best trial; the SLURM and local launchers compose."""

import json
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from drl.compose import config_dir
from drl.config import register_configs

TINY_CLI = ["train.epochs=1", "train.batch_size=64", "train.grid_size=1", "scheduler.num_steps=2", "logger=none", "hardware.num_threads=1"]


def _compose_with_hydra(overrides):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def _last_reward(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return records[-1]["reward_mean"]


@pytest.mark.slow  # ~28 CPU-s; pytest -m slow tests/test_launchers.py
def test_optuna_search_runs_trials_and_reports_the_best(tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "drl.cli", "-m", "hparams_search=ddpo_optuna", "hydra.sweeper.n_trials=2", *TINY_CLI, f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = sorted(p for p in sweep.iterdir() if (p / "metrics.jsonl").is_file())
    assert len(trials) == 2
    rewards = [_last_reward(t) for t in trials]
    assert result["best_value"] == pytest.approx(max(rewards))  # maximised: the trials' own final rewards
    assert set(result["best_params"]) == {"algorithm.lr", "algorithm.clip_range", "train.samples_per_epoch"}
    assert 3e-5 <= result["best_params"]["algorithm.lr"] <= 3e-3
    assert result["best_params"]["train.samples_per_epoch"] in (32, 64, 128)


def test_slurm_launcher_composes_and_takes_a_cpu_only_cluster():
    cfg = _compose_with_hydra(["+launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.tasks_per_node=2", "hydra.launcher.partition=debug"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.partition, launcher.nodes) == (0, 2, "debug", 1)
    assert launcher.additional_parameters.requeue is True and launcher.signal_delay_s > 0
    for key in ("account", "constraint", "timeout_min"):
        assert key in launcher


def test_local_launcher_and_multi_gpu_hardware_compose():
    cfg = _compose_with_hydra(["+launcher=local", "hardware=multi_gpu", "hardware.num_processes=3"])
    assert cfg.hydra.launcher._target_.endswith("LocalLauncher")
    assert (cfg.hardware.num_processes, cfg.hardware.num_nodes, cfg.hardware.backend) == (3, 1, "auto")
