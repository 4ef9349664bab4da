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
