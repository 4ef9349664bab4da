"""drl-train as a user runs it: from any directory, with good and bad overrides, and -m sweeps."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import TINY

DRL_TRAIN = shutil.which("drl-train") or os.path.join(os.path.dirname(sys.executable), "drl-train")


def drl_train(args, cwd):
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([DRL_TRAIN, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["algorithm=nope"], 2, "drl-train: error: algorithm=nope is not an option of the 'algorithm' group; its options are alignprop, awm,"),
        (["train.epochs=abc"], 2, "drl-train: error: train.epochs: Value 'abc' of type 'str' could not be converted to Integer."),
        (["train.epochs=[1"], 2, "drl-train: error: an override could not be parsed: no viable alternative at input '[1'"),
        (["train.epochs=-1"], 2, "drl-train: error: invalid config: train.epochs=-1 must be > 0."),
        (["algorithm.no_such_key=1"], 2, "drl-train: error: algorithm.no_such_key is not a key of drl's config: check its spelling"),
        (["+foo=1"], 2, "foo is not a key of drl's config"),
        (["+train.epoch=3"], 2, "train.epoch is not a key of drl's config"),
        (["reward.terms.toy_aesthetic=nan"], 2, "reward.terms.toy_aesthetic must be a finite number"),
        (["algorithm.lr=nan"], 2, "algorithm.lr must be a finite number"),
        (["model.path=/nowhere/model", "logger=none"], 2, "No model found at '/nowhere/model'"),
        # ~12 CPU-s each, the same path as /nowhere/model: pytest -m slow tests/test_cli.py
        pytest.param(["reward=aesthetic", "reward.aesthetic_clip_path=/nowhere/clip", "logger=none"], 2, "No CLIP ViT-L/14 (aesthetic reward) found at '/nowhere/clip'", marks=pytest.mark.slow),
        pytest.param(["model=modelscope_t2v", "model.path=/nowhere/video", "logger=none"], 2, "No model found at '/nowhere/video'", marks=pytest.mark.slow),
    ],
)
def test_bad_input_is_one_sentence_and_nonzero_exit(tmp_path, args, code, message):
    result = drl_train(args, tmp_path)
    assert result.returncode == code
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "error" in line.lower()]) == 1, result.stderr  # progress bars may precede it


def test_a_run_directory_hydra_cannot_create_is_one_sentence(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = drl_train(["hydra.run.dir=a_file/run"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "drl-train: error: Not a directory: a_file/run (Hydra could not create the run directory; choose another with hydra.run.dir=...)."
    )


def test_help_lists_the_groups(tmp_path):
    result = drl_train(["--help"], tmp_path)
    assert result.returncode == 0
    for line in ("algorithm: alignprop, awm, bc, ddpo, diffusion_ql, dpo, dppo, dsrl, fql, nft, pretrain, reinflow, rwr", "scheduler: ddim, ddpm", "hardware: cpu, gpu"):
        assert line in result.stdout


def test_multirun_sweeps_both_algorithms(tmp_path, random_toy_model):
    sweep_dir = tmp_path / "sweep"
    result = drl_train(
        ["-m", "algorithm=rwr,ddpo", *TINY, "train.epochs=1", f"model.path={random_toy_model}", f"hydra.sweep.dir={sweep_dir}"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / "metrics.jsonl").is_file())
    assert [p.name for p in runs] == ["0-toy_t2i-rwr", "1-toy_t2i-ddpo"]
    for run in runs:
        record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        assert record["epoch"] == 0 and "reward_mean" in record


EXIT_PROBE = """
import atexit, sys, threading, time
from drl.cli import exit_without_teardown
atexit.register(lambda: open(sys.argv[1], "w").write("atexit ran"))
if sys.argv[2] == "thread":  # a non-daemon thread still working: a normal exit waits for it
    threading.Thread(target=lambda: (time.sleep(0.5), print("thread finished", flush=True))).start()
print("unflushed", end="")
exit_without_teardown(3)
"""


@pytest.mark.parametrize("thread", ["none", "thread"])
def test_exit_without_teardown_keeps_what_a_normal_exit_shows(tmp_path, thread):
    marker = tmp_path / "marker"
    result = subprocess.run([sys.executable, "-c", EXIT_PROBE, str(marker), thread], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert result.stdout.startswith("unflushed")
    assert ("thread finished" in result.stdout) == (thread == "thread")
    assert marker.read_text() == "atexit ran"
