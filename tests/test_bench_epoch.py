"""scripts/bench_epoch.py: the call-size sweep's sides and one measured run's figures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_epoch")


def test_a_sweep_makes_one_side_per_value_and_refuses_a_malformed_one(bench):
    sides = bench.sweep_sides(REPO, ["train.epochs=2"], "train.batch_size=4,32")
    assert sides == {
        "train.batch_size=4": (REPO, ["train.epochs=2", "train.batch_size=4"]),
        "train.batch_size=32": (REPO, ["train.epochs=2", "train.batch_size=32"]),
    }
    with pytest.raises(SystemExit, match=r"--sweep 'train\.batch_size': write KEY=V1,V2,\.\.\."):
        bench.sweep_sides(REPO, [], "train.batch_size")


def test_a_run_reports_its_epoch_time_cpu_and_peak_memory(bench):
    run = bench.run_once(REPO, ["train.epochs=2", "train.samples_per_epoch=4", "train.batch_size=4", "scheduler.num_steps=2",
                                "train.eval_size=0", "train.grid_size=1", "hardware.num_threads=1", "logger=none"])  # fmt: skip
    assert run.epoch_s > 0 and run.process_s > run.epoch_s and 0 < run.sys_s < run.cpu_s
    assert 100 < run.peak_mib < 8192  # a whole drl-train process: torch and the toy model
    assert math.isnan(run.grad_steps)  # DDPO: no truncated backpropagation
