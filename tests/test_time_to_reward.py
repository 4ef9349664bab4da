"""scripts/time_to_reward.py: the target, the first reach and the medians on hand-made curves; its --smoke CPU mode
end to end (two drl-train children, their checkpoints evaluated on fixed inputs, table, JSON, figure)."""

import json
import math
import sys

import pytest
from conftest import load_script

ttr = load_script("time_to_reward")


def _result(config, seed, gains, cpu_per_epoch, calls_per_epoch=10):
    """A result as run_drl writes it: evaluations at epochs -1 (the base), 1, 3, ... with cumulative counts."""
    paired = [{"epoch": -1, "value": 0.0, "se": 0.0, "cpu_s": 0.0, "wall_s": 0.0, "denoiser_calls": 0, "samples": 0, "diversity_change": None}]
    for k, gain in enumerate(gains):
        epoch = 2 * k + 1
        counts = {"cpu_s": cpu_per_epoch * (epoch + 1), "wall_s": 2 * cpu_per_epoch * (epoch + 1), "denoiser_calls": calls_per_epoch * (epoch + 1), "samples": 8 * (epoch + 1)}
        paired.append({"epoch": epoch, "value": gain, "se": 0.1, "diversity_change": -0.1 * k, **counts})
    epochs = [{"epoch": e, "cpu_s": cpu_per_epoch * (e + 1), "reward_mean": 0.0} for e in range(2 * len(gains))]
    return {"config": config, "seed": seed, "paired": paired, "epochs": epochs, "process_cpu_s": 99.0}


def test_target_is_the_baselines_median_final_gain_and_reach_is_the_first_evaluation_above_it():
    configs = [ttr.Config("slow"), ttr.Config("fast"), ttr.Config("never")]
    results = [
        _result("slow", 0, [1.0, 2.0, 3.0], 10.0), _result("slow", 1, [1.0, 2.0, 5.0], 10.0), _result("slow", 2, [0.5, 1.0, 4.0], 10.0),
        _result("fast", 0, [4.5, 4.0, 6.0], 3.0), _result("fast", 1, [1.0, 4.0, 4.0], 3.0), _result("fast", 2, [0.0, 0.0, 0.0], 3.0),
        _result("never", 0, [0.0, 1.0, 2.0], 1.0),
    ]  # fmt: skip
    summary = ttr.aggregate(results, configs, "slow", "paired", 3, None)
    rows = {r["config"]: r for r in summary["rows"]}
    assert summary["target"] == 4.0  # the median of 3, 5, 4
    # slow reaches at its last evaluation (epoch 5: 6 epochs x 10 s) on seeds 1 and 2, never on seed 0
    assert rows["slow"]["reached"] == 2 and rows["slow"]["cpu_s_to_target_each"] == [None, 60.0, 60.0]
    assert rows["slow"]["cpu_s_to_target"] == 60.0  # median of (inf, 60, 60)
    # fast: epoch 1 (2 epochs x 3 s), epoch 3 (4 x 3 s), never: the median is 12 s, 0.2 of the baseline's
    assert rows["fast"]["cpu_s_to_target_each"] == [6.0, 12.0, None] and rows["fast"]["cpu_s_to_target"] == 12.0
    assert rows["fast"]["cpu_vs_baseline"] == pytest.approx(0.2)
    assert rows["fast"]["denoiser_calls_to_target"] == 40 and rows["fast"]["wall_s_to_target"] == 24.0
    assert rows["never"]["reached"] == 0 and math.isinf(rows["never"]["cpu_s_to_target"])
    assert rows["slow"]["final_mean"] == pytest.approx(4.0) and rows["slow"]["final_se"] == pytest.approx(1 / math.sqrt(3))
    assert rows["fast"]["diversity_change_median"] == pytest.approx(-0.2)
    text = ttr.table(summary)
    assert "| fast | 2/3 | 12 | 0.2 |" in text and "| never | 0/1 | ∞ |" in text
    assert "(the final value of slow, median over seeds)" in text
    given = ttr.aggregate(results, configs, "slow", "paired", 3, 2.0)  # --target 2: every slow seed reaches it
    assert given["target"] == 2.0 and {r["config"]: r["reached"] for r in given["rows"]} == {"slow": 3, "fast": 2, "never": 1}
    assert "Target: paired gain on the fixed inputs >= 2 (--target)." in ttr.table(given)


def test_the_base_evaluation_never_counts_as_reaching_a_target_at_or_below_zero():
    result = _result("a", 0, [-1.0, -0.5], 1.0)
    assert ttr.first_reach(result["paired"], -0.7)["epoch"] == 3


def test_bad_input_is_one_sentence_before_any_run(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("configs: [a, b]\n")
    for argv, message in [
        (["--configs", str(tmp_path / "c.yaml")], "needs a 'configs:' mapping"),
        (["--config", "novalue"], "write NAME=OVERRIDES"),
        (["--config", "a=seed=1", "--baseline", "b"], "is not one of the configurations"),
        (["--config", "a=seed=1", "--eval-every", "0"], "--eval-every must be >= 1"),
    ]:
        with pytest.raises(SystemExit) as stop:
            ttr.main([*argv, "--out", str(tmp_path / "out")])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    (tmp_path / "e.yaml").write_text("configs:\n  a: {overrides: [seed=1], epochs: 0}\n")
    with pytest.raises(SystemExit) as stop:
        ttr.main(["--configs", str(tmp_path / "e.yaml"), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2 and "epochs is a whole number >= 1, not 0" in capsys.readouterr().err


def test_a_configuration_may_run_its_own_number_of_epochs(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "configs:\n  long: [algorithm=ddpo]\n  short: {overrides: [algorithm.lr=1e-3], epochs: 4}\n"
        "  ext: {command: [run, '{epochs}', '{lora}'], epochs: 3}\n"
    )
    args, configs, common, _ = ttr.parse_args(["--configs", str(tmp_path / "c.yaml"), "--epochs", "20"])
    long, short, ext = configs
    assert (long.epochs, short.epochs, ext.epochs, short.overrides) == (None, 4, 3, ["algorithm.lr=1e-3"])
    assert "train.epochs=20" in ttr.drl_overrides(args, common, long, 0)
    assert "train.epochs=4" in ttr.drl_overrides(args, common, short, 0)
    assert "train.epochs=20" not in ttr.drl_overrides(args, common, short, 0)


# In the default run, as the benchmark's CPU check: about 45 CPU-s (two child drl-train runs and their evaluation).
def test_smoke_mode_runs_two_configurations_and_writes_table_json_and_figure(tmp_path):
    summary = ttr.main(["--smoke", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [r["config"] for r in doc["runs"]] == ["full", "window1"]
    for run in doc["runs"]:
        assert run["process_cpu_s"] > 0 and [p["epoch"] for p in run["paired"]] == [-1, 0, 1]  # the base, then each epoch
        cpu = [p["cpu_s"] for p in run["paired"]]
        assert cpu[0] == 0 < cpu[1] < cpu[2] and all(math.isfinite(p["value"]) for p in run["paired"])
    full, window = (r["paired"][-1]["denoiser_calls"] for r in doc["runs"])
    assert (full, window) == (2 * 4 * (4 + 4), 2 * 4 * (4 + 1))  # per epoch: 4 samples x 4 steps + the pairs trained
    assert summary["baseline"] == "full" and "| window1 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "reward_vs_cpu.png").stat().st_size > 0
    again = ttr.main(["--smoke", "--out", str(tmp_path), "--report-only"])  # finished runs are read, not rerun
    assert [r["cpu_s_to_target"] for r in again["rows"]] == [r["cpu_s_to_target"] for r in summary["rows"]]


def test_the_trl_config_parses_and_an_external_run_is_read_from_its_json(tmp_path):
    """scripts/ttr/trl_small.yaml names trl's run (shared/tools/trl_anchor's ddpo through scripts/ttr/trl_ddpo.py);
    an external command that writes the harness's JSON (epochs: wall_s, cpu_s, samples, reward_mean) is timed from it."""
    args, configs, _, baseline = ttr.parse_args(["--configs", "scripts/ttr/trl_small.yaml", "--measure", "epoch_mean"])
    assert baseline == "trl" and configs[0].command[1] == "scripts/ttr/trl_ddpo.py" and {"{json}", "{lora}"} <= set(configs[0].command)
    (tmp_path / "no_lora.yaml").write_text("configs:\n  trl: {command: [python, run.py, '{json}']}\n")
    with pytest.raises(SystemExit):
        ttr.parse_args(["--configs", str(tmp_path / "no_lora.yaml")])  # paired: a run that saves no LoRA cannot be evaluated
    writer = (
        "import json, sys; json.dump({'derived': {'unet_calls_sampling_per_epoch': 640, 'unet_fwd_bwd_training_per_epoch': 640},"
        " 'epochs': [{'epoch': e, 'wall_s': 2.0, 'cpu_s': 1.5, 'samples': 32, 'reward_mean': -5.0 + e} for e in range(int(sys.argv[2]))]},"
        " open(sys.argv[1], 'w'))"
    )
    config = ttr.Config("fake_trl", command=[sys.executable, "-c", writer, "{json}", "{epochs}"])
    args.epochs = 5
    result = ttr.run_external(args, [], config, 0, tmp_path)
    points = ttr.curve(result, "epoch_mean", 3)  # 3-epoch running means: -4, -3, -2 after epochs 2, 3, 4
    assert [p["value"] for p in points] == [-4.0, -3.0, -2.0]
    reach = ttr.first_reach(points, -3.0)
    assert (reach["epoch"], reach["cpu_s"], reach["denoiser_calls"], reach["samples"]) == (3, 6.0, 4 * 1280, 128)


LORA_RUN = ["model=toy_t2i", "model.finetune=lora", "model.lora_rank=2", "model.lora_alpha=2", "model.lora_targets=[to_q,to_v]",
            "reward=toy_aesthetic", "scheduler=ddim", "scheduler.num_steps=2", "scheduler.eta=1.0"]  # fmt: skip


def _saved_lora(directory):
    """A LoRA with non-zero weights on the toy model, saved as trl's DDPOTrainer saves its UNet's (diffusers' format)."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    from drl.compose import compose_config
    from drl.train import build_context

    ctx, _, _ = build_context(compose_config(LORA_RUN))
    with torch.no_grad():
        for name, p in ctx.model.denoiser.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(ctx.model.denoiser))
    StableDiffusionPipeline.save_lora_weights(save_directory=str(directory), unet_lora_layers=state)
    return {name: p.detach().clone() for name, p in ctx.model.denoiser.named_parameters() if "lora_" in name}


def test_an_external_lora_loads_into_the_runs_adapter_and_is_evaluated_on_its_fixed_inputs(tmp_path):
    """trl's LoRA (diffusers' format) goes into drl's own adapter weight for weight; an external run that saves one per
    evaluated epoch gets a paired curve on the drl runs' fixed inputs; a LoRA of another rank is one sentence."""
    from drl.compose import compose_config
    from drl.errors import ConfigError
    from drl.evaluation.models import load_lora_into
    from drl.train import build_context

    weights = _saved_lora(tmp_path / "src")
    ctx, _, _ = build_context(compose_config(LORA_RUN))
    load_lora_into(ctx.model.denoiser, tmp_path / "src")
    loaded = {name: p for name, p in ctx.model.denoiser.named_parameters() if "lora_" in name}
    assert loaded.keys() == weights.keys() and all(bool((loaded[n] == weights[n]).all()) for n in weights)
    other, _, _ = build_context(compose_config([*LORA_RUN, "model.lora_rank=4", "model.lora_alpha=4"]))
    with pytest.raises(ConfigError, match=r"^the LoRA in .* does not fit the run's adapter"):
        load_lora_into(other.model.denoiser, tmp_path / "src")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "pytorch_lora_weights.safetensors").write_text("not a tensor file")
    with pytest.raises(ConfigError, match=r"is not a readable safetensors LoRA"):
        load_lora_into(other.model.denoiser, tmp_path / "bad")

    writer = (
        "import json, shutil, sys; shutil.copytree(sys.argv[3], sys.argv[2] + '/epoch0001');"
        " json.dump({'epochs': [{'epoch': e, 'wall_s': 2.0, 'cpu_s': 1.5, 'samples': 4, 'reward_mean': 0.0} for e in range(2)]},"
        " open(sys.argv[1], 'w'))"
    )
    (tmp_path / "c.yaml").write_text(json.dumps({"common": LORA_RUN, "configs": {"ext": {"command": [sys.executable, "-c", writer, "{json}", "{lora}", str(tmp_path / "src")]}}}))
    args, configs, common, _ = ttr.parse_args(["--configs", str(tmp_path / "c.yaml"), "--epochs", "2", "--eval-every", "2", "--eval-size", "2"])
    (tmp_path / "run").mkdir()
    result = ttr.run_external(args, common, configs[0], 0, tmp_path / "run")
    assert [p["epoch"] for p in result["paired"]] == [-1, 1] and result["paired"][1]["cpu_s"] == 3.0
    assert result["paired"][1]["value"] != 0.0  # the LoRA changed the samples, so their rewards


def test_trls_side_scores_the_colour_as_drls_target_colour_does():
    """scripts/ttr/trl_ddpo.py (run in trl's venv) rewards -colour_distance(images): drl's target_colour on the same images."""
    import torch

    from drl.rewards.pixel_stats import target_colour

    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # (B, 3, H, W) in [0, 1]
    trl_side = torch.tensor(load_script("ttr/trl_ddpo").colour_distance([0.0, 0.0, 1.0])(images))
    drl_side = target_colour([0.0, 0.0, 1.0]).fn(images, None, None)
    assert torch.allclose(-trl_side, drl_side.float(), atol=1e-6)  # float32: two reductions of the same squares
