"""Data parallelism: two CPU ranks on gloo under torchrun, and the pure helpers of drl.distributed."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drl import distributed
from drl.checkpoint import load_checkpoint
from drl.config import HardwareConfig
from drl.errors import ConfigError

from conftest import read_records

WORKER = Path(__file__).parent / "distributed_worker.py"


def _torchrun(out: Path, model: str, *overrides: str) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(WORKER), str(out), model, *overrides]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("finetune", ["full", pytest.param("lora", marks=pytest.mark.slow)])
def test_two_ranks_differ_in_noise_agree_in_weights_and_log_the_mean_over_all_samples(tmp_path, random_toy_model, finetune):
    # 3 epochs; at epoch 1 rank 1 alone gets NaN rewards: both ranks must skip it together (or hang).
    overrides = ["train.epochs=3", "train.save_every=1", "algorithm.lr=1e-3", f"model.finetune={finetune}", "nan_epoch=1"]
    ranks = _torchrun(tmp_path, random_toy_model, *overrides)
    a, b = ranks
    # Different noise and prompts on each rank.
    assert not torch.allclose(a["x_T"][0], b["x_T"][0])
    assert a["prompts"][0] != b["prompts"][0]
    # After the updates, identical weights (all-reduced gradients), and they did move from the start.
    assert a["weights"].keys() == b["weights"].keys()
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    assert all(torch.equal(a["initial"][k], b["initial"][k]) for k in a["weights"])
    assert any(not torch.equal(a["initial"][k], a["weights"][k]) for k in a["weights"])
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert len(state["ranks"]) == 2 and not torch.equal(state["ranks"][0]["generator"], state["ranks"][1]["generator"])
    # The logged reward is the mean over both ranks' samples; the NaN epoch is skipped by both.
    records = read_records(tmp_path / "run")
    assert [r["epoch"] for r in records] == [0, 1, 2] and records[1].get("skipped_nonfinite") == 1
    for record, epoch in ((records[0], 0), (records[2], 2)):
        both = torch.cat([a["rewards"][epoch], b["rewards"][epoch]]).double()
        assert record["samples"] == both.numel() == 16
        assert record["reward_mean"] == pytest.approx(float(both.mean()), rel=1e-6)
        assert record["reward_std"] == pytest.approx(float(both.std(unbiased=False)), rel=1e-5)
    assert records[2]["train/optimizer_steps"] == 2 and records[0]["train/ratio_dev_first"] < 1e-4


def test_first_host_of_slurm_node_lists():
    assert distributed.first_host("gpu[03-05,07],cpu1") == "gpu03"
    assert distributed.first_host("localhost") == "localhost"
    assert distributed.first_host("n[1,4]") == "n1"


def test_launch_env_reads_torchrun_and_srun_but_not_a_batch_script():
    assert distributed.launch_env({}) is None
    assert distributed.launch_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == distributed.LaunchEnv(2, 4, 0, "torchrun")
    srun = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NTASKS": "2"}
    assert distributed.launch_env(srun) == distributed.LaunchEnv(1, 2, 1, "slurm")
    assert distributed.launch_env({"SLURM_NTASKS": "2", "SLURM_PROCID": "0"}) is None  # the batch script itself


def test_slurm_rendezvous_variables():
    env = {"SLURM_JOB_NODELIST": "node[07-08]", "SLURM_JOB_ID": "123", "SLURM_NTASKS_PER_NODE": "2(x2)"}
    distributed.export_slurm_rendezvous(distributed.LaunchEnv(3, 4, 1, "slurm"), env)
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("node07", "20123")
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"]) == ("3", "4", "1", "2")


def test_pooled_reward_std_matches_the_std_of_all_samples(monkeypatch):
    ranks = [torch.tensor([0.1, 0.5, 0.9]), torch.tensor([2.0, 2.5, 1.0])]
    records = [{"epoch": 3, "reward_mean": float(r.mean()), "reward_std": float(r.std(unbiased=False)), "samples": 3, "train/ratio_dev_first": k} for k, r in enumerate(ranks)]
    monkeypatch.setattr(distributed, "gather_objects", lambda record: records)
    out = distributed.reduce_metrics(records[0])
    both = torch.cat(ranks)
    assert out["reward_mean"] == pytest.approx(float(both.mean()))
    assert out["reward_std"] == pytest.approx(float(both.std(unbiased=False)))
    assert out["samples"] == 6 and out["train/ratio_dev_first"] == 1 and out["epoch"] == 3
    assert math.isfinite(out["reward_std"])


def test_denoiser_calls_and_cpu_seconds_are_summed_over_ranks(monkeypatch):
    records = [
        {"epoch": 0, "cpu_s": 2.0, "train/denoiser_calls_sample": 40, "train/denoiser_calls_update": 16, "train/loss": 1.0},
        {"epoch": 0, "cpu_s": 3.0, "train/denoiser_calls_sample": 60, "train/denoiser_calls_update": 16, "train/loss": 3.0},
    ]
    monkeypatch.setattr(distributed, "gather_objects", lambda record: records)
    out = distributed.reduce_metrics(records[0])
    assert out["cpu_s"] == 5.0 and out["train/denoiser_calls_sample"] == 100 and out["train/denoiser_calls_update"] == 32
    assert out["train/loss"] == 2.0  # a per-rank quantity: the mean


def test_multi_node_without_a_launcher_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="one launch per node"):
        distributed.relaunch(HardwareConfig(num_nodes=2), [], tmp_path)


def test_a_checkpoint_of_two_ranks_does_not_resume_in_one_process(tmp_path, random_toy_model):
    from drl.resume import restore_rank_rng
    from drl.train import build_context

    from conftest import compose_config

    _, _, algorithm = build_context(compose_config([f"model.path={random_toy_model}"]))
    state = {"ranks": [{"generator": torch.Generator().get_state()}] * 2}
    with pytest.raises(ConfigError, match="written by 2 process.*hardware.num_processes=2"):
        restore_rank_rng(state, torch.Generator(), algorithm)
