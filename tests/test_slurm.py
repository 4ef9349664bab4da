"""Real SLURM submission (needs a cluster: `sudo bash scripts/slurm_local.sh start`, then `pytest -m slurm`).

One test, three jobs' worth: a two-point sweep through +launcher=slurm, a 2-task data-parallel job,
and a job sent SLURM's pre-timeout signal that checkpoints, requeues itself and ends exactly as
the uninterrupted sweep point with the same seed.
"""

import shutil
import subprocess
import sys
import time

import pytest

from conftest import read_records

pytestmark = [pytest.mark.slurm, pytest.mark.skipif(shutil.which("sbatch") is None, reason="no SLURM here (sbatch not found)")]

TINY_CLI = [
    "train.epochs=6", "train.samples_per_epoch=8", "train.batch_size=8", "train.grid_size=4", "scheduler.num_steps=4",
    "logger=none", "hardware.num_threads=1", "hydra.launcher.gpus_per_node=null", "hydra.launcher.timeout_min=10",
]  # fmt: skip


def _sweep(sweep_dir, *overrides, wait=True):
    command = [sys.executable, "-m", "drl.cli", "-m", "+launcher=slurm", *TINY_CLI, *overrides, f"hydra.sweep.dir={sweep_dir}"]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _slurm(*args):
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()


def test_sweep_two_tasks_and_a_pre_timeout_signal_requeue_on_a_real_cluster(tmp_path):
    # A two-point sweep: one job per seed, each with its own run dir and outputs.
    _sweep(tmp_path / "sweep", "seed=0,1")
    runs = sorted((tmp_path / "sweep").glob("*-toy_t2i-ddpo"))
    assert len(runs) == 2
    for run in runs:
        assert [r["epoch"] for r in read_records(run)] == list(range(6)) and (run / "model" / "unet").is_dir()
    reference = read_records(runs[0])  # seed=0, uninterrupted

    # A 2-task job: two ranks set up from srun's variables, one run dir written by rank 0.
    _sweep(tmp_path / "tasks", "hydra.launcher.tasks_per_node=2", "train.epochs=2")
    (run,) = (tmp_path / "tasks").glob("*-toy_t2i-ddpo")
    assert [r["samples"] for r in read_records(run)] == [16, 16]

    # The pre-timeout signal: checkpoint at the end of the epoch, requeue, resume, same final metrics.
    sweep = _sweep(tmp_path / "signal", "seed=0", wait=False)
    run = tmp_path / "signal" / "0-toy_t2i-ddpo"
    deadline = time.monotonic() + 300
    while not ((run / "metrics.jsonl").is_file() and len(read_records(run)) >= 2):
        assert sweep.poll() is None and time.monotonic() < deadline, "the job ended or never started"
        time.sleep(0.3)
    job = _slurm("squeue", "-h", "-o", "%i", "-n", "cli").splitlines()[0]
    _slurm("scancel", "--signal=USR1", job)
    # SLURM holds a requeued job back for ~2 min (Reason=BeginTime); this test's cluster lets it start now.
    requeued = False
    while not requeued or "JobState=PENDING" in (state := _slurm("scontrol", "show", "job", job)):
        assert time.monotonic() < deadline, "the job did not requeue itself"
        state = _slurm("scontrol", "show", "job", job)
        requeued = requeued or ("Restarts=1" in state and "JobState=PENDING" in state)
        if "Reason=BeginTime" in state:
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=False, capture_output=True)
        time.sleep(0.3)
    out, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, out[-3000:]
    logs = "".join(p.read_text() for p in (tmp_path / "signal").glob(".submitit/*/*_log.out"))
    assert "Resuming from" in logs  # continued from the checkpoint, not started over
    resumed = read_records(run)
    assert [r["epoch"] for r in resumed] == list(range(6))
    for a, b in zip(reference, resumed):
        assert (a["reward_mean"], a["train/loss"]) == (b["reward_mean"], b["train/loss"])
