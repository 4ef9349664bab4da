"""NFT, DPO and DDPO with groups end to end on tiny SD1.x (through drl-train), SDXL and SD3 (flow) components.

Each run checks its algorithm's own on-policy figure: DDPO's largest |ratio - 1| at the first inner
step of every epoch (train/ratio_dev_first, in float32, <= 1e-5), NFT's |v_θ - v_old| before the first
step (train/old_dev_first), DPO's loss log 2 while the model still equals its reference.
"""

import math

import pytest
from conftest import compose_config, read_records, tiny_model_overrides
from test_cli import drl_train

from drl.train import train

ON_POLICY_TOLERANCE = 1e-5


def _check_run(algorithm: str, records: list[dict], minibatches: int) -> None:
    """What every run of ``algorithm`` must log: finite losses, its on-policy check, weights that moved.
    (DPO's first-epoch loss is log 2 only with one minibatch: later ones follow an update.)"""
    assert len(records) == 2 and all(math.isfinite(r["train/loss"]) and math.isfinite(r["reward_mean"]) for r in records)
    assert records[-1]["drift_from_base"] > 0
    if algorithm == "ddpo":
        assert all(r["train/ratio_dev_first"] <= ON_POLICY_TOLERANCE for r in records)  # every epoch, every ddpo run
        assert all(r["train/advantage_abs_mean"] > 0 for r in records)
    elif algorithm == "nft":
        assert all(r["train/old_dev_first"] <= ON_POLICY_TOLERANCE and r["train/optimizer_steps"] == minibatches for r in records)
    else:
        assert records[0]["train/pairs"] == 2  # 4 samples in groups of 2: one (best, worst) pair per group
        assert records[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-4)  # the model is still its reference


@pytest.mark.slow  # ~26 CPU-s; pytest -m slow tests/test_nft_dpo_models.py
def test_nft_dpo_and_grouped_ddpo_run_through_drl_train_on_sd15(tmp_path, tiny_dirs):
    """One drl-train -m sweep (one process start) runs all three with groups of 2 samples per prompt."""
    sweep = tmp_path / "sweep"
    args = ["-m", "algorithm=nft,dpo,ddpo", "algorithm.group_size=2", "algorithm.minibatches=1", "algorithm.lr=1e-2", "train.epochs=2"]
    args.append("logger=none")
    result = drl_train([*args, *tiny_model_overrides("sd15", tiny_dirs), f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(p for p in sweep.iterdir() if (p / "metrics.jsonl").is_file())
    assert [p.name.split("-")[-1] for p in runs] == ["nft", "dpo", "ddpo"]
    for run in runs:
        _check_run(run.name.split("-")[-1], read_records(run), minibatches=1)
        assert (run / "lora" / "pytorch_lora_weights.safetensors").is_file() and (run / "samples_after.png").is_file()


@pytest.mark.parametrize(
    "name, algorithm, overrides",
    [
        ("sd3", "nft", ["algorithm.group_size=2", "scheduler.eta=0"]),  # NFT samples with the deterministic flow ODE
        ("sd3", "dpo", ["algorithm.group_size=2", "algorithm.minibatches=1"]),  # the flow-matching error v_θ - (ε - x_0) inside the DPO loss
        ("sd3", "ddpo", ["algorithm.group_size=2", "algorithm.share_group_noise=true"]),  # the on-policy ratio on a flow model
        ("sdxl", "nft", ["algorithm.group_size=2"]),  # SDXL's extra conditioning (pooled embeds, time ids) follows each pair
        ("sdxl", "dpo", ["algorithm.group_size=2", "algorithm.minibatches=1"]),
    ],
)
def test_new_methods_train_a_flow_model_and_sdxl(tmp_path, tiny_dirs, name, algorithm, overrides):
    cfg = compose_config(tiny_model_overrides(name, tiny_dirs, f"algorithm={algorithm}", "algorithm.lr=1e-2", *overrides))
    assert (cfg.scheduler.kind == "flow") == (name == "sd3") and cfg.train.epochs == 2
    train(cfg, tmp_path)
    _check_run(algorithm, read_records(tmp_path), cfg.algorithm.minibatches)
