"""End to end through the one loop: files a run leaves, resume, determinism, NaN rewards."""

import json
import math

import pytest
import torch

from drl import rewards as reward_registry
from drl.checkpoint import load_checkpoint
from drl.errors import NonFiniteError
from drl.rewards.base import Reward
from drl.train import train

from conftest import compose_config, read_records


def _run(run_dir, random_toy_model, *overrides):
    cfg = compose_config([f"model.path={random_toy_model}", *overrides])
    return train(cfg, run_dir)


def test_ddpo_run_leaves_everything_a_person_looks_at(tmp_path, random_toy_model):
    final = _run(tmp_path, random_toy_model)
    records = read_records(tmp_path)
    assert [r["epoch"] for r in records] == [0, 1]
    for key in ("reward_mean", "reward_std", "samples_per_s", "train/loss", "train/approx_kl", "train/clipfrac", "train/ratio_dev_first", "reward/toy_aesthetic"):
        assert math.isfinite(records[-1][key]), key
    assert records[0]["train/ratio_dev_first"] < 1e-4  # on-policy before the first update
    assert final == records[-1]["reward_mean"]
    for name in ("reward_curve.png", "samples_before.png", "samples_after.png", "checkpoints/last.pt", "model/unet/config.json"):
        assert (tmp_path / name).is_file(), name
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1
    # The fixed-input evaluation: 6 samples (the grid is the first 4), paired before/after.
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    before, after = torch.tensor(evaluation["before"]), torch.tensor(evaluation["after"])
    assert before.shape == after.shape == (6,)
    assert len((tmp_path / "samples_before.txt").read_text().splitlines()) == 1 + 4
    summary = evaluation["summary"]
    assert summary["eval/gain"] == pytest.approx(float((after - before).mean()), abs=1e-6)
    assert summary["eval/gain_se"] == pytest.approx(float((after - before).std() / 6**0.5), abs=1e-6)
    assert summary["eval/reward_before"] == pytest.approx(float(before.mean()), abs=1e-6)
    # Each term's (and monitor's) mean on the same samples; the one term has weight 1 here.
    assert evaluation["terms"]["after"]["toy_aesthetic"] == pytest.approx(float(after.mean()), abs=1e-6)


@pytest.mark.parametrize("algorithm", ["rwr", "pretrain", "alignprop"])
def test_other_algorithms_run(tmp_path, random_toy_model, algorithm):
    extra = ["algorithm.steps_per_epoch=2"] if algorithm == "pretrain" else []
    _run(tmp_path, random_toy_model, f"algorithm={algorithm}", *extra)
    records = read_records(tmp_path)
    assert len(records) == 2 and all(math.isfinite(r["train/loss"]) for r in records)
    assert all(math.isfinite(r["drift_from_base"]) for r in records) and records[-1]["drift_from_base"] > 0
    if algorithm != "pretrain":
        assert all(math.isfinite(r["reward_mean"]) for r in records)
    assert (tmp_path / "model" / "unet").is_dir()


def test_lora_trains_only_adapters_and_exports_them(tmp_path, random_toy_model):
    _run(tmp_path, random_toy_model, "model.finetune=lora", "model.lora_rank=4", "algorithm.lr=1e-2")
    weights = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["weights"]["unet"]
    assert weights and all("lora" in k for k in weights)
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_resume_continues_exactly(tmp_path, random_toy_model):
    common = ["train.save_every=1", "algorithm.lr=1e-3"]
    straight = tmp_path / "straight"
    _run(straight, random_toy_model, "train.epochs=3", *common)
    interrupted = tmp_path / "interrupted"
    _run(interrupted, random_toy_model, "train.epochs=2", *common)
    _run(interrupted, random_toy_model, "train.epochs=3", *common)  # same run dir: resumes at epoch 2
    a, b = read_records(straight), read_records(interrupted)
    assert [r["epoch"] for r in b] == [0, 1, 2]
    for ra, rb in zip(a, b):
        assert ra["reward_mean"] == rb["reward_mean"] and ra["train/loss"] == rb["train/loss"]


def test_nan_reward_is_skipped_then_stops_and_keeps_the_good_checkpoint(tmp_path, random_toy_model, monkeypatch):
    calls = {"n": 0}

    def flaky(cfg, device):
        def fn(samples, prompts, metadata):
            calls["n"] += 1
            scores = samples.mean(dim=(1, 2, 3))
            # grid (call 1) and epoch 0 (call 2) are fine; every later call returns NaN
            return scores if calls["n"] <= 2 else torch.full_like(scores, float("nan"))

        return Reward("flaky", fn, differentiable=False)

    monkeypatch.setitem(reward_registry.REWARDS, "toy_aesthetic", flaky)
    with pytest.raises(NonFiniteError, match="3 epochs in a row"):
        _run(tmp_path, random_toy_model, "train.epochs=6", "train.save_every=1")
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["weights"]["unet"].values())
    assert sum(r.get("skipped_nonfinite", 0) for r in read_records(tmp_path)) == 2


def test_wandb_offline_run_is_written_into_the_run_dir(tmp_path, random_toy_model):
    _run(tmp_path, random_toy_model, "logger=wandb", "logger.mode=offline", "train.epochs=1")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


@pytest.mark.parametrize(
    "variant",
    [
        # ~21 CPU-s under `pytest -n 2`: the KL term's path is kl-lora's with a full copy as reference (slow suite)
        pytest.param(["algorithm.kl_coef=0.1", "algorithm.lr=1e-2"], marks=pytest.mark.slow),
        ["algorithm.kl_coef=0.1", "algorithm.lr=1e-2", "model.finetune=lora"],
        ["algorithm.logprob_reduction=sum", "algorithm.clip_range=0.2"],
        ["algorithm.group_size=4", "algorithm.num_inner_epochs=2", "algorithm.timestep_fraction=0.5"],
        ["scheduler=ddpm", "scheduler.guidance_scale=2.0"],
    ],
    ids=["kl-full", "kl-lora", "sum-reduction", "groups", "ddpm-cfg"],
)
def test_ddpo_variants_run_on_policy(tmp_path, random_toy_model, variant):
    _run(tmp_path, random_toy_model, *variant)
    records = read_records(tmp_path)
    assert records[0]["train/ratio_dev_first"] < 1e-3  # float32, identical inputs: ~0
    if "algorithm.kl_coef=0.1" in variant:
        assert records[0]["train/kl_to_base"] > 0 and math.isfinite(records[1]["train/kl_to_base"])
    if "algorithm.group_size=4" in variant:
        assert records[0]["train/pairs"] == 8 * 2  # 8 samples x half of 4 steps


def test_alignprop_accumulates_gradients_and_trains_lora(tmp_path, random_toy_model):
    _run(
        tmp_path, random_toy_model, "algorithm=alignprop", "reward=toy_alignment", "model.finetune=lora",
        "train.samples_per_epoch=8", "train.batch_size=4", "algorithm.gradient_accumulation=2",
        "algorithm.truncation=last", "algorithm.truncation_steps=2",
    )
    records = read_records(tmp_path)
    assert all(r["train/optimizer_steps"] == 1 and r["train/steps_with_grad"] == 2 for r in records)
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_both_domains_implement_the_loops_interfaces_and_the_loop_asks_no_domain():
    import inspect

    import drl.train
    from drl.control import ControlHooks
    from drl.domain import DomainHooks
    from drl.images import ImageHooks
    from drl.models.base import DenoiserModel
    from drl.models.policy import DiffusionPolicy
    from drl.models.t2i import T2IModel
    from drl.models.t2v import T2VModel

    steps = {name for name in vars(DomainHooks) if not name.startswith("_")}
    assert steps == {"start", "trainable_modules", "drift", "before", "export", "after"}
    for hooks in (ImageHooks, ControlHooks):
        assert all(callable(getattr(hooks, name, None)) for name in steps), hooks
    assert all(issubclass(model, DenoiserModel) for model in (T2IModel, T2VModel, DiffusionPolicy))
    source = inspect.getsource(drl.train)
    for branch in ("cfg.env", "hooks is not None", "isinstance(batch", "Rollout"):
        assert branch not in source, branch
