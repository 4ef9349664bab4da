"""Many ranks against one reward server, end to end: drl-train with hardware=multi_gpu hardware.num_processes=2
(two CPU ranks on gloo, relaunched under torchrun) and reward=remote gives the metrics of the same two-rank run
with the reward in process."""

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from conftest import read_records
from test_reward_server import free_port

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TOLERANCE = 1e-5
"""Absolute, on per-epoch means: the server scores each request as the ranks' in-process reward scores its
chunk (same samples, same batch size), but in another process whose float32 kernels may sum in another order."""


def drl_train(run_dir, *overrides: str) -> None:
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0", "DRL_REWARD_TOKEN": ""}
    done = subprocess.run([sys.executable, "-m", "drl.cli", *overrides, f"hydra.run.dir={run_dir}"], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_ranks_scored_by_one_server_match_the_same_two_rank_run_scored_in_process(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "drl.rewards.server", "reward=toy_aesthetic", "--port", str(port), "--device", "cpu", "--max-batch", "4"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "DRL_REWARD_TOKEN": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read() if server.poll() is not None else "no server"
                time.sleep(0.3)
        common = ["hardware=multi_gpu", "hardware.num_processes=2", "hardware.num_threads=1", "train.epochs=2", "train.samples_per_epoch=8",
                  "train.batch_size=4", "train.eval_size=4", "train.grid_size=4", "scheduler.num_steps=4", "logger=none"]  # fmt: skip
        judge = "+reward.terms.judge={_target_: drl.rewards.remote.remote, urls: [%s], batch_size: 4, retries: 1}" % url
        drl_train(tmp_path / "remote", *common, "reward.terms.toy_aesthetic=0", judge)
        served = httpx.get(f"{url}/health").json()
        drl_train(tmp_path / "local", *common)  # reward=toy_aesthetic in each rank
    finally:
        server.terminate()
        server.wait(timeout=60)
    remote, local = read_records(tmp_path / "remote"), read_records(tmp_path / "local")
    assert [r["epoch"] for r in remote] == [r["epoch"] for r in local] == [0, 1]
    for r, l in zip(remote, local):
        assert r["samples"] == l["samples"] == 16  # both ranks' samples in every logged mean
        assert r["reward_mean"] == pytest.approx(l["reward_mean"], abs=TOLERANCE)
        assert r["reward_std"] == pytest.approx(l["reward_std"], abs=TOLERANCE)
        assert r["reward/judge"] == pytest.approx(l["reward/toy_aesthetic"], abs=TOLERANCE)
        assert r["train/loss"] == pytest.approx(l["train/loss"], abs=10 * TOLERANCE)
    # Both ranks scored there: 2 epochs x 2 ranks x 8 samples, besides the start's dry calls and the evaluations.
    assert served["served"] >= 32 and served["refused"] == {} and served["timeouts"] == 0
    before = json.loads((tmp_path / "remote" / "eval.json").read_text())["before"]
    assert before == pytest.approx(json.loads((tmp_path / "local" / "eval.json").read_text())["before"], abs=TOLERANCE)
