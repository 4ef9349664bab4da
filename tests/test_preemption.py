"""Preemption and crashes: a signalled run checkpoints and stops; a killed run resumes; both end exactly
as the uninterrupted run does."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from drl import rewards as reward_registry
from drl.checkpoint import load_checkpoint
from drl.errors import ConfigError, Preempted
from drl.rewards.base import Reward
from drl.train import train

from conftest import TINY, compose_config, read_records

COMMON = ["train.epochs=4", "algorithm.lr=1e-3", "hardware.num_threads=1"]


def _final_weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["weights"]["unet"]


def _assert_same_run(a, b, epochs):
    ra, rb = read_records(a), read_records(b)
    assert [r["epoch"] for r in rb] == [r["epoch"] for r in ra] == list(range(epochs))
    for x, y in zip(ra, rb):
        assert (x["reward_mean"], x["train/loss"], x["train/grad_norm"]) == (y["reward_mean"], y["train/loss"], y["train/grad_norm"])
    wa, wb = _final_weights(a), _final_weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _signal_during_epoch(monkeypatch, signum, epoch):
    """The toy_aesthetic reward, which also sends ``signum`` to this process while scoring ``epoch``."""
    calls = {"n": 0}
    make = reward_registry.REWARDS["toy_aesthetic"]

    def signalling(cfg, device):
        inner = make(cfg, device)

        def fn(samples, prompts, metadata):
            calls["n"] += 1
            if calls["n"] == epoch + 2:  # call 1 is the before-grid
                os.kill(os.getpid(), signum)
            return inner(samples, prompts, metadata)

        return Reward(inner.name, fn, inner.differentiable)

    monkeypatch.setitem(reward_registry.REWARDS, "toy_aesthetic", signalling)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, random_toy_model):
    """The uninterrupted run that interrupted ones must reproduce."""
    run_dir = tmp_path_factory.mktemp("straight")
    train(compose_config([f"model.path={random_toy_model}", *COMMON]), run_dir)
    return run_dir


@pytest.mark.parametrize(
    "signum",  # SIGINT: Ctrl-C; the other two signals take the same path and ~10 CPU-s each: pytest -m slow tests/test_preemption.py
    [signal.SIGTERM, pytest.param(signal.SIGUSR1, marks=pytest.mark.slow), pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
)
def test_signal_checkpoints_at_the_epoch_end_and_the_rerun_continues_exactly(tmp_path, random_toy_model, straight_run, monkeypatch, signum):
    overrides = [f"model.path={random_toy_model}", *COMMON, "train.save_every=100"]
    straight, stopped = straight_run, tmp_path / "stopped"
    with monkeypatch.context() as patch:
        _signal_during_epoch(patch, signum, epoch=1)
        with pytest.raises(Preempted, match=f"{signum.name} after epoch 1") as stop:
            train(compose_config(overrides), stopped)
    assert not stop.value.requeued  # not inside a SLURM job
    assert load_checkpoint(stopped / "checkpoints" / "last.pt")["epoch"] == 1  # written although save_every=100
    assert signal.getsignal(signum) is not None and signal.getsignal(signum) != signal.SIG_IGN
    assert train(compose_config(overrides), stopped) == read_records(straight)[-1]["reward_mean"]
    _assert_same_run(straight, stopped, epochs=4)


@pytest.mark.slow
def test_sigkill_mid_run_then_the_same_command_ends_exactly_as_an_uninterrupted_run(tmp_path, random_toy_model):
    overrides = [*TINY, f"model.path={random_toy_model}", *COMMON, "train.epochs=6", "train.save_every=1"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train(compose_config(overrides, tiny=False), straight)
    command = [sys.executable, "-m", "drl.cli", *overrides, f"hydra.run.dir={killed}"]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not (checkpoint.is_file() and load_checkpoint(checkpoint)["epoch"] >= 1):
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.2)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert load_checkpoint(checkpoint)["epoch"] < 5  # killed mid-way
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=240)
    _assert_same_run(straight, killed, epochs=6)


def test_unknown_preemption_signal_is_a_config_error():
    with pytest.raises(ConfigError, match="preemption.requeue_signals='SIGFOO' is not one of"):
        compose_config(["preemption.requeue_signals=[SIGFOO]"])
