"""The end of a run: the trained result is exported first, then the evaluation's probes look at it; a probe
that cannot measure or that raises is one line and an entry in eval.json, never the end of a finished run."""

import json

from conftest import compose_config
from conftest import tiny_model_overrides as _overrides

import drl.images
from drl.evaluation.hacking import QualityProbe
from drl.train import train

LORA = "lora/pytorch_lora_weights.safetensors"


def test_one_evaluation_sample_skips_fid_says_why_and_the_lora_is_exported(tmp_path, tiny_dirs, capfd):
    """Issue 34's run: a tiny SD1.x, prompts from a file, train.eval_size=0 and train.grid_size=1 (one sample)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\na green triangle\n")
    overrides = ["model.finetune=lora", "prompts=file", f"prompts.path={prompts}", "reward=jpeg_compressibility", "train.epochs=1",
                 "train.eval_size=0", "train.grid_size=1"]  # fmt: skip
    train(compose_config(_overrides("sd15", tiny_dirs, *overrides)), tmp_path / "run")  # returns: drl-train exits 0
    assert (tmp_path / "run" / LORA).is_file()
    reason = json.loads((tmp_path / "run" / "eval.json").read_text())["quality"]["after"]["fid_skipped"]
    assert reason.startswith("FID and KID to the base model were skipped: they need at least 2 evaluation samples and this run has 1")
    said = [line for line in capfd.readouterr().err.splitlines() if "FID" in line]
    assert said == [f"drl-train: note: {reason}"]


def test_a_probe_that_raises_is_reported_and_the_exported_model_stays(tmp_path, tiny_dirs, monkeypatch, capfd):
    run_dir, seen = tmp_path / "run", {}
    observe = QualityProbe.observe

    def failing_after_training(self, directory, stage, samples):
        if stage == "after":
            seen["exported"] = (run_dir / LORA).is_file()
            raise RuntimeError("the feature extractor broke\non two lines")
        return observe(self, directory, stage, samples)

    monkeypatch.setattr(QualityProbe, "observe", failing_after_training)
    log_grid = drl.images.RunLogger.log_grid
    monkeypatch.setattr(drl.images.RunLogger, "log_grid", lambda self, name, *a: log_grid(self, name, *a) if name != "samples_after" else 1 / 0)
    train(compose_config(_overrides("sd15", tiny_dirs, "model.finetune=lora", "train.epochs=1", "train.eval_size=3")), run_dir)
    assert seen == {"exported": True}  # the LoRA was on disk before the probe ran
    assert (run_dir / LORA).is_file() and not (run_dir / "samples_after.png").exists()
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert evaluation["probe_failures"] == {
        "after": {"grid": "ZeroDivisionError: division by zero", "quality": "RuntimeError: the feature extractor broke on two lines"}
    }
    assert len(evaluation["after"]) == 3 and "after" not in evaluation["quality"]  # the rest of the evaluation is there
    assert evaluation["summary"]["eval/n"] == 3 and "eval/fid_to_base" not in evaluation["summary"]
    warnings = [line for line in capfd.readouterr().err.splitlines() if "probe of the" in line]
    assert warnings == [
        "drl-train: warning: the grid probe of the after evaluation failed and was skipped (ZeroDivisionError: division by zero)",
        "drl-train: warning: the quality probe of the after evaluation failed and was skipped (RuntimeError: the feature extractor broke on two lines)",
    ]


def test_an_evaluation_reward_that_raises_is_skipped_by_itself(tmp_path, tiny_dirs, monkeypatch):
    """reward.eval_terms scored only on the evaluation batch: its failure leaves the run's own rewards and the model."""

    def broken(self, samples, prompts, metadata, latents=None):
        raise ValueError("no judge")

    monkeypatch.setattr(drl.images.WeightedReward, "evaluate", broken)
    train(compose_config(_overrides("sd15", tiny_dirs, "model.finetune=lora", "train.epochs=1")), tmp_path)
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    assert evaluation["probe_failures"] == {stage: {"eval_terms": "ValueError: no judge"} for stage in ("before", "after")}
    assert (tmp_path / LORA).is_file() and "summary" in evaluation
