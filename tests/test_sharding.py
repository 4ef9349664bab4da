"""hardware.sharding=fsdp: FSDP2 on two gloo ranks against drl's own DDP path, and its checkpoints.

Gloo has every collective FSDP2 needs here (all-gather, reduce-scatter, all-reduce of the norm),
so the CPU test runs the real sharded path; the same worker runs on NCCL when two GPUs are present.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from drl.checkpoint import load_checkpoint, load_trainable_state, trainable_state
from drl.errors import ConfigError
from drl.train import build_context

from conftest import compose_config

WORKER = Path(__file__).parent / "fsdp_worker.py"
# Small enough for seconds per update; max_grad_norm far below the gradient's norm, so the
# clipping (by the global norm) shapes every step.
MAX_NORM = 0.01
SMALL = ["train.samples_per_epoch=4", "train.batch_size=4", "train.grid_size=2", "scheduler.num_steps=2", f"algorithm.max_grad_norm={MAX_NORM}"]


def _run_worker(out: Path, model: str, *overrides: str) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(WORKER), str(out), model, *SMALL, *overrides]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _check_fsdp_matches_ddp(ranks: list[dict], run_dir: Path, model: str, finetune: str, atol: float) -> None:
    for seen in ranks:
        ddp, fsdp = seen["ddp"], seen["fsdp"]
        # FSDP really sharded: each rank holds about half of the trained weights.
        assert sum(fsdp["sharded_local"]) < 0.6 * sum(ddp["sharded_local"])
        assert torch.equal(ddp["x_T"], fsdp["x_T"])  # the same start and the same batch
        # The global grad norm (not a shard's), and the same weights after the update.
        assert fsdp["metrics"]["train/grad_norm"] == pytest.approx(ddp["metrics"]["train/grad_norm"], rel=1e-5)
        assert ddp["metrics"]["train/grad_norm"] > 2 * MAX_NORM  # the clipping was active
        assert _max_diff(ddp["weights"], fsdp["weights"]) < atol
        # Whole optimizer and EMA state, in the 1-process layout: Adam's first moment is
        # (1 - beta1) * the clipped gradient, so it checks the gradients themselves.
        opt_ddp, opt_fsdp = ddp["algorithm"]["optimizer"], fsdp["algorithm"]["optimizer"]
        assert opt_ddp["param_groups"] == opt_fsdp["param_groups"] and opt_ddp["state"].keys() == opt_fsdp["state"].keys()
        for i, moments in opt_ddp["state"].items():
            scale = float(moments["exp_avg"].abs().max()) + 1e-12
            assert float((moments["exp_avg"] - opt_fsdp["state"][i]["exp_avg"]).abs().max()) < 1e-3 * scale
            assert type(opt_fsdp["state"][i]["exp_avg"]) is torch.Tensor
        shadows = zip(ddp["algorithm"]["ema"]["shadow_params"], fsdp["algorithm"]["ema"]["shadow_params"], strict=True)
        assert all(type(f) is torch.Tensor and float((d - f).abs().max()) < atol for d, f in shadows)
        # The ddp state loaded into a sharded run reads back bit for bit.
        back = seen["roundtrip"]
        assert _max_diff(back["weights"], ddp["weights"]) == 0
        for i, moments in opt_ddp["state"].items():
            assert all(torch.equal(v, back["algorithm"]["optimizer"]["state"][i][k]) for k, v in moments.items())
    a, b = ranks
    assert not torch.equal(a["fsdp"]["x_T"], b["fsdp"]["x_T"])  # each rank its own noise
    assert _max_diff(a["fsdp"]["weights"], b["fsdp"]["weights"]) == 0  # and both hold the same model

    # The loop under FSDP: 1 epoch, then a resume to 2 from its checkpoint; grids and the export exist.
    records = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 2 and all('"drift_from_base"' in r for r in records)
    assert (run_dir / "samples_before.png").is_file() and (run_dir / "samples_after.png").is_file()

    # The FSDP checkpoint loads in one process (whole tensors), and the exported model is its EMA.
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    one_process = [f"model.path={model}", f"model.finetune={finetune}", "algorithm.kl_coef=0.1", "algorithm.ema_decay=0.9"]
    ctx, _, algorithm = build_context(compose_config(one_process))
    load_trainable_state({"unet": ctx.model.denoiser}, state["weights"])
    algorithm.load_state_dict(state["algorithm"])
    assert _max_diff(trainable_state({"unet": ctx.model.denoiser})["unet"], state["weights"]["unet"]) == 0
    ema = state["algorithm"]["ema"]["shadow_params"]
    if finetune == "full":
        exported = list(UNet2DConditionModel.from_pretrained(run_dir / "model" / "unet").parameters())
        assert len(exported) == len(ema) and all(torch.equal(p, s) for p, s in zip(exported, ema, strict=True))
    else:  # the adapter file in diffusers' naming: each EMA tensor is in it
        exported = list(load_file(run_dir / "lora" / "pytorch_lora_weights.safetensors").values())
        assert len(exported) == len(ema) and all(any(torch.equal(e, s) for e in exported) for s in ema)


@pytest.mark.slow  # ~78 CPU-s (full); pytest -m slow tests/test_sharding.py
@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_fsdp_update_equals_ddp_update_and_checkpoints_are_whole(tmp_path, random_toy_model, finetune):
    ranks = _run_worker(tmp_path, random_toy_model, f"model.finetune={finetune}")
    _check_fsdp_matches_ddp(ranks, tmp_path / "run", random_toy_model, finetune, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (one NCCL rank each)")
def test_fsdp_on_two_gpus_with_nccl(tmp_path, random_toy_model):
    ranks = _run_worker(tmp_path, random_toy_model, "hardware.device=cuda")
    _check_fsdp_matches_ddp(ranks, tmp_path / "run", random_toy_model, "full", atol=1e-4)


def test_fsdp_needs_several_processes(random_toy_model):
    with pytest.raises(ConfigError, match="hardware.sharding=fsdp shards over several processes"):
        build_context(compose_config([f"model.path={random_toy_model}", "hardware.sharding=fsdp"]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["hardware.sharding=zero3"], "hardware.sharding='zero3' is not one of ddp, fsdp."),
        (["hardware.sharding=fsdp", "algorithm=pretrain"], "pretraining and control policies use hardware.sharding=ddp"),
    ],
)
def test_sharding_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("'", ".")):
        compose_config(overrides)
