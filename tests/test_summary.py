"""drl-summary (drl/evaluation/summary.py): a real 3-seed sweep grouped by its overrides minus the seed, its paired
gain's mean ± s.e. recomputed by hand from the runs' eval.json; the grouping rule and the statistics on their own."""

import json
import math
import statistics

import pytest
from conftest import TINY
from test_cli import drl_train

from drl.evaluation import summary


def test_groups_are_the_overrides_minus_seed_and_hydra_keys():
    assert summary.group_of(["algorithm=ddpo", "seed=2", "hydra.sweep.dir=x", "train.epochs=1"]) == ("algorithm=ddpo train.epochs=1", 2)
    assert summary.group_of(["+seed=5"]) == ("(defaults)", 5)
    assert summary.mean_se([1.0, 2.0, 6.0]) == pytest.approx((3.0, statistics.stdev([1, 2, 6]) / math.sqrt(3)))
    assert summary.median([3.0, None, 1.0]) == 3.0  # a run that never got there counts as +inf


def test_overrides_every_group_shares_are_said_once_above_the_table():
    rows = [
        {"overrides": ["model=toy_flow", "algorithm=dpo", "train.epochs=20", "model.lora_targets=[to_q, to_k]"]},
        {"overrides": ["model=toy_flow", "algorithm=nft", "train.epochs=20", "model.lora_targets=[to_q, to_k]"]},
    ]
    common = summary.common_overrides(rows)
    # a value with a space in it ('[to_q, to_k]') is one override, shared as a whole
    assert common == ["model=toy_flow", "train.epochs=20", "model.lora_targets=[to_q, to_k]"]
    assert [summary.label_of(r, common) for r in rows] == ["algorithm=dpo", "algorithm=nft"]
    assert summary.common_overrides(rows[:1]) == []  # one group: its overrides are its label
    assert summary.label_of({"overrides": ["model=toy_flow"]}, ["model=toy_flow"]) == "(the common overrides alone)"


def _fake_run(directory, job, overrides, gain, diversity_change, cpu):
    run = directory / f"{job}-toy"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    summary = {"eval/gain": gain, "eval/gain_se": 0.1}
    if diversity_change is not None:
        summary["eval/diversity_change"] = diversity_change
    if gain is not None:
        (run / "eval.json").write_text(json.dumps({"summary": summary}))
    epochs = [{"epoch": e, "sample_time_s": 1.0, "update_time_s": 2.0, "cpu_s": cpu} for e in range(2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in epochs))


def test_hand_made_runs_group_by_overrides_minus_seed_with_mean_se_diversity_and_time(tmp_path):
    """Two groups: lr 1e-3 on seeds 0, 1, 2 (gains 1, 2, 6) and lr 1e-4 on seed 0 plus a run that never finished."""
    for job, (lr, seed, gain, div) in enumerate([(3, 0, 1.0, -0.1), (3, 1, 2.0, -0.3), (3, 2, 6.0, -0.2), (4, 0, 0.5, None), (4, 1, None, None)]):
        _fake_run(tmp_path, job, [f"algorithm.lr=1e-{lr}", f"seed={seed}", "hydra.sweep.dir=x"], gain, div, cpu=1.5)
    text, rows, figure = summary.summarize_directory(tmp_path)
    first, second = rows
    assert first["group"] == "algorithm.lr=1e-3" and first["seeds"] == [0, 1, 2] and first["gains"] == [1.0, 2.0, 6.0]
    assert (first["gain_mean"], first["gain_se"]) == pytest.approx((3.0, statistics.stdev([1, 2, 6]) / math.sqrt(3)))
    assert first["diversity_change_mean"] == pytest.approx(-0.2) and first["wall_s_per_run"] == 6.0 and first["cpu_s_per_run"] == 3.0
    assert second["seeds"] == [0] and second["incomplete"] == 1 and math.isnan(second["gain_se"])
    assert "| `algorithm.lr=1e-3` | 3 | 3 ± 1.5 | -20% | 6 | 3 |" in text and "1 (+1 incomplete)" in text
    assert json.loads((tmp_path / "summary.json").read_text())["groups"][0]["gains"] == [1.0, 2.0, 6.0]
    assert figure.startswith("figure:") and (tmp_path / "summary.png").stat().st_size > 0


@pytest.mark.slow  # three real drl-train runs (~40 s of CPU): pytest -m slow tests/test_summary.py
def test_a_three_seed_sweep_is_one_row_with_the_mean_and_se_over_seeds(tmp_path, random_toy_model, capsys):
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1,2", *TINY, "train.epochs=1", "train.eval_size=4", "hardware.num_threads=1", f"model.path={random_toy_model}", f"hydra.sweep.dir={sweep}"]
    result = drl_train(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary.main([str(sweep)])
    printed = capsys.readouterr().out
    doc = json.loads((sweep / "summary.json").read_text())
    [row] = doc["groups"]
    assert row["seeds"] == [0, 1, 2] and row["incomplete"] == 0 and "seed=" not in row["group"] and "train.eval_size=4" in row["group"]
    gains = [json.loads((sweep / f"{k}-toy_t2i-ddpo" / "eval.json").read_text())["summary"]["eval/gain"] for k in range(3)]
    assert row["gain_mean"] == pytest.approx(statistics.fmean(gains))
    assert row["gain_se"] == pytest.approx(statistics.stdev(gains) / math.sqrt(3))
    assert row["cpu_s_per_run"] > 0 and row["wall_s_per_run"] > 0 and math.isfinite(row["diversity_change_mean"])
    assert f"{row['gain_mean']:.3g} ± " in printed and (sweep / "summary.md").is_file() and (sweep / "summary.png").stat().st_size > 0


def test_a_directory_without_runs_is_one_sentence(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        summary.main([str(tmp_path)])
    assert stop.value.code == 2 and "No drl runs under" in capsys.readouterr().err
