"""drl-eval: models side by side on the same prompts and noise (toy images, toy clips, a tiny SD1.x + LoRA,
a checkpoint), the table's numbers, and one sentence for each bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from drl.checkpoint import trainable_state
from drl.compose import config_dir
from drl.config import register_configs
from drl.errors import ConfigError
from drl.evaluation.cli import validate_eval
from drl.evaluation.compare import compare

DRL_EVAL = shutil.which("drl-eval") or os.path.join(os.path.dirname(sys.executable), "drl-eval")
SMALL = ["num_prompts=3", "samples_per_prompt=2", "scheduler.num_steps=2", "logger=none", "grid_rows=2", "hardware.num_threads=1"]


def eval_config(*overrides):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return validate_eval(compose(config_name="eval", overrides=[*SMALL, *overrides]))


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory, random_toy_model):
    """A drl-train-style checkpoint of the toy model with perturbed denoiser weights (full fine-tuning)."""
    from drl.models.loading import load_t2i

    model = load_t2i(random_toy_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    model.denoiser.requires_grad_(True)
    torch.save({"epoch": 0, "weights": trainable_state({"unet": model.denoiser})}, path)
    return str(path)


def test_toy_models_side_by_side_with_paired_differences_and_metrics(tmp_path, random_toy_model, toy_checkpoint):
    cfg = eval_config(f"models=[{random_toy_model},{random_toy_model},{toy_checkpoint}]", f"model.path={random_toy_model}", "reward=aligned_and_aesthetic")
    record = compare(cfg, tmp_path, torch.device("cpu"))
    base, same, tuned = record["models"]
    assert record["n_samples"] == 6 and record["features"] == "toy" and record["reference"] == "auto"
    assert list(base["rewards"]) == ["reward", "toy_alignment", "toy_aesthetic"]
    # The same model on the same prompts and noise: identical samples, so every paired difference is 0.
    assert same["paired_vs_first"]["reward"] == {"mean": 0.0, "se": 0.0}
    assert same["metrics"]["distance_to_base"] == 0.0 and abs(same["metrics"]["fid_base"]) < 1e-6
    # A perturbed checkpoint differs, and its paired difference is the mean of the per-sample differences.
    assert tuned["metrics"]["distance_to_base"] > 0 and tuned["metrics"]["fid_base"] > 0
    assert tuned["paired_vs_first"]["toy_aesthetic"]["mean"] == pytest.approx(
        tuned["rewards"]["toy_aesthetic"]["mean"] - base["rewards"]["toy_aesthetic"]["mean"], abs=1e-6
    )
    for m in record["models"]:
        assert {"fid_reference", "kid_reference", "diversity_within_prompt", "diversity"} <= set(m["metrics"])
    assert json.loads((tmp_path / "comparison.json").read_text()) == record
    table = (tmp_path / "comparison.md").read_text()
    assert "| model | reward | Δ reward vs first |" in table and "FID ref" in table
    assert (tmp_path / "comparison.png").is_file()
    # Deterministic for a seed.
    again = compare(cfg, tmp_path / "again", torch.device("cpu"))
    assert again["models"][2]["metrics"] == tuned["metrics"]


def test_toy_clips_compare_with_renders_as_reference_and_log_a_wandb_table(tmp_path):
    cfg = eval_config("model=toy_t2v", "reward=toy_motion", "models=[drl:toy_t2v]", "num_prompts=2", "logger=wandb", "logger.mode=offline")
    record = compare(cfg, tmp_path, torch.device("cpu"))
    (only,) = record["models"]
    assert record["features"] == "toy" and "toy_motion" in only["rewards"] and only["metrics"]["fid_reference"] > 0
    assert "frames_toy_object" in only["rewards"]  # monitors are columns too
    (table,) = list((tmp_path / "wandb").glob("offline-run-*/files/media/table/evaluation_*.table.json"))
    logged = json.loads(table.read_text())
    assert logged["columns"][:3] == ["prompt", "drl:toy_t2v sample", "drl:toy_t2v reward"] and len(logged["data"]) == 2


def test_tiny_sd15_with_a_lora_on_top(tmp_path, tiny_dirs):
    from drl.models.finetune import setup_trainable
    from drl.models.loading import load_t2i

    tuned = load_t2i(tiny_dirs["sd15"])
    setup_trainable(tuned.denoiser, "lora", 4, 4.0, ["to_q", "to_k", "to_v", "to_out.0"])
    torch.manual_seed(0)
    with torch.no_grad():
        for p in tuned.denoiser.parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)
    tuned.save_lora(tmp_path / "lora")
    cfg = eval_config(
        "model=sd15", f"model.path={tiny_dirs['sd15']}", "model.resolution=16", "reward=jpeg_compressibility",
        f"models=[{tiny_dirs['sd15']},{tmp_path / 'lora'}]",
    )  # fmt: skip
    record = compare(cfg, tmp_path / "out", torch.device("cpu"))
    assert record["features"] == "pixels" and record["reference"] is None
    assert record["models"][1]["metrics"]["distance_to_base"] > 0
    assert "jpeg_compressibility" in record["models"][1]["paired_vs_first"]
    # The same LoRA on a base it does not fit: one sentence.
    with pytest.raises(ConfigError, match=r"^the LoRA .* does not fit the base model 'drl:toy_t2i' \("):
        compare(eval_config(f"models=[drl:toy_t2i,{tmp_path / 'lora'}]"), tmp_path / "bad", torch.device("cpu"))


def test_bad_inputs_are_one_sentence(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        (["models=[/nowhere/model]"], FileNotFoundError, "model '/nowhere/model' does not exist"),
        ([f"reference={tmp_path / 'empty'}"], ConfigError, "holds 0 images"),
        (["prompts=file", "prompts.path=/nowhere/prompts.txt"], FileNotFoundError, "prompts.path='/nowhere/prompts.txt' does not exist"),
    ]
    for overrides, error, message in cases:
        with pytest.raises(error, match=message):
            compare(eval_config(*overrides), tmp_path / "out", torch.device("cpu"))


@pytest.mark.slow  # ~14 CPU-s; pytest -m slow tests/test_drl_eval.py
def test_the_command_prints_one_sentence_and_exits_nonzero(tmp_path):
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    done = subprocess.run([DRL_EVAL, "models=[/nowhere/model]", "logger=none"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("drl-eval: error: model '/nowhere/model' does not exist")


def test_help_is_drl_evals_own(tmp_path):
    done = subprocess.run([DRL_EVAL, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0
    assert done.stdout.startswith("drl-eval: sample several models") and "drl-eval --hydra-help" in done.stdout
    assert "drl-train" not in done.stdout
