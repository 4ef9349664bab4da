"""Epoch throughput and whole-process time of drl-train, two sides compared, runs interleaved.

Each side is a drl source tree (e.g. a `git worktree` of an older commit) and a list of
drl-train overrides. The runs alternate A, B, A, B, ... (so machine drift hits both alike),
each in a fresh process; every run reports

  epoch s    median over epochs 2.. of sample_time_s + update_time_s from its metrics.jsonl
             (the first epoch is a warm-up: allocator, caches, torch.compile)
  process s  wall time of the whole drl-train process (imports, loading, evaluation, teardown)

and the script prints each side's medians over --repeats runs and the ratios A / B.

    git worktree add /tmp/drl-old <commit>
    python scripts/bench_epoch.py --a-src /tmp/drl-old --b-src . --repeats 5 \\
        --common model=sd15 model.path=/tmp/tiny-sd15 train.epochs=4 hardware.num_threads=1 \\
        --a train.batch_size=4 --b train.batch_size=4 train.sample_batch_size=16

Run it on an idle machine (torch on 2 threads slows several-fold when anything else runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(src: Path, overrides: list[str]) -> tuple[float, float]:
    """(median epoch seconds after the first, whole-process seconds) of one drl-train run."""
    with tempfile.TemporaryDirectory() as run_dir:
        env = {**os.environ, "PYTHONPATH": str(src.resolve()), "WANDB_SILENT": "true"}
        command = [sys.executable, "-m", "drl.cli", *overrides, f"hydra.run.dir={run_dir}"]
        t0 = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=run_dir, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"bench_epoch: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
        records = [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines() if line.strip()]
        epochs = [r["sample_time_s"] + r["update_time_s"] for r in records if "update_time_s" in r]
        if len(epochs) < 2:
            raise SystemExit("bench_epoch: give train.epochs >= 2 (the first epoch is a warm-up).")
        return statistics.median(epochs[1:]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a-src", type=Path, required=True, help="drl source tree of side A (the baseline)")
    parser.add_argument("--b-src", type=Path, required=True, help="drl source tree of side B")
    parser.add_argument("--common", nargs="*", default=[], help="overrides for both sides")
    parser.add_argument("--a", nargs="*", default=[], help="overrides for side A only")
    parser.add_argument("--b", nargs="*", default=[], help="overrides for side B only")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    sides = {"A": (args.a_src, [*args.common, *args.a]), "B": (args.b_src, [*args.common, *args.b])}
    figures: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
    for k in range(args.repeats):
        for name, (src, overrides) in sides.items():
            figures[name].append(run_once(src, overrides))
            epoch, process = figures[name][-1]
            print(f"run {k + 1} {name}: epoch {epoch:.3f} s, process {process:.1f} s", flush=True)
    medians = {name: [statistics.median(column) for column in zip(*runs)] for name, runs in figures.items()}
    for name, (src, overrides) in sides.items():
        epoch, process = medians[name]
        print(f"{name} ({src}; {' '.join(overrides)}): epoch {epoch:.3f} s, process {process:.1f} s (medians of {args.repeats})")
    (ea, pa), (eb, pb) = medians["A"], medians["B"]
    print(f"A / B: epoch throughput of B is {ea / eb:.2f}x A's; whole process {pa / pb:.2f}x")


if __name__ == "__main__":
    main()
