"""Epoch throughput and whole-process time of drl-train, two sides compared, runs interleaved.

Each side is a drl source tree (e.g. a `git worktree` of an older commit) and a list of
drl-train overrides. The runs alternate A, B, A, B, ... (so machine drift hits both alike),
each in a fresh process; every run reports

  epoch s    median over epochs 2.. of sample_time_s + update_time_s from its metrics.jsonl
             (the first epoch is a warm-up: allocator, caches, torch.compile)
  process s  wall time of the whole drl-train process (imports, loading, evaluation, teardown)
  cpu s      the process's user + system CPU time (steadier than wall time on a shared machine)
  grad steps AlignProp only: the mean train/steps_with_grad of those epochs (with random truncation
             the two sides' draws can differ, and the epoch time grows with them)

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
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(src: Path, overrides: list[str], epochs_needed: bool = True) -> tuple[float, float, float, float]:
    """(median epoch seconds after the first, whole-process wall seconds, its CPU seconds, mean steps with
    gradient of those epochs or NaN) of one drl-train run; the epoch figures are NaN when not epochs_needed
    (--process-only: a 1-epoch run has no epoch after the first)."""
    with tempfile.TemporaryDirectory() as run_dir:
        env = {**os.environ, "PYTHONPATH": str(src.resolve()), "WANDB_SILENT": "true"}
        command = [sys.executable, "-m", "drl.cli", *overrides, f"hydra.run.dir={run_dir}"]
        t0, cpu0 = time.perf_counter(), _children_cpu()
        done = subprocess.run(command, env=env, cwd=run_dir, capture_output=True, text=True)
        seconds, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
        if done.returncode != 0:
            raise SystemExit(f"bench_epoch: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
        records = [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines() if line.strip()]
        records = [r for r in records if "update_time_s" in r]
        epochs = [r["sample_time_s"] + r["update_time_s"] for r in records]
        if not epochs_needed:
            return float("nan"), seconds, cpu, float("nan")
        if len(epochs) < 2:
            raise SystemExit("bench_epoch: give train.epochs >= 2 (the first epoch is a warm-up).")
        grad_steps = [r["train/steps_with_grad"] for r in records[1:] if "train/steps_with_grad" in r]
        return statistics.median(epochs[1:]), seconds, cpu, statistics.mean(grad_steps) if grad_steps else float("nan")


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a-src", type=Path, required=True, help="drl source tree of side A (the baseline)")
    parser.add_argument("--b-src", type=Path, required=True, help="drl source tree of side B")
    parser.add_argument("--common", nargs="*", default=[], help="overrides for both sides")
    parser.add_argument("--a", nargs="*", default=[], help="overrides for side A only")
    parser.add_argument("--b", nargs="*", default=[], help="overrides for side B only")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--process-only", action="store_true", help="time whole processes only (allows train.epochs=1)")
    args = parser.parse_args()

    sides = {"A": (args.a_src, [*args.common, *args.a]), "B": (args.b_src, [*args.common, *args.b])}
    figures: dict[str, list[tuple[float, float, float, float]]] = {"A": [], "B": []}
    for k in range(args.repeats):
        for name, (src, overrides) in sides.items():
            figures[name].append(run_once(src, overrides, epochs_needed=not args.process_only))
            epoch, process, cpu, grad_steps = figures[name][-1]
            grad = "" if grad_steps != grad_steps else f", grad steps {grad_steps:.1f}"  # NaN: not AlignProp
            print(f"run {k + 1} {name}: epoch {epoch:.3f} s, process {process:.1f} s, cpu {cpu:.1f} s{grad}", flush=True)
    medians = {name: [statistics.median(column) for column in zip(*runs)] for name, runs in figures.items()}
    for name, (src, overrides) in sides.items():
        epoch, process, cpu, _ = medians[name]
        print(f"{name} ({src}; {' '.join(overrides)}): epoch {epoch:.3f} s, process {process:.1f} s, cpu {cpu:.1f} s (medians of {args.repeats})")
    (ea, pa, ca, _), (eb, pb, cb, _) = medians["A"], medians["B"]
    print(f"A / B: epoch throughput of B is {ea / eb:.2f}x A's; whole process {pa / pb:.2f}x (wall), {ca / cb:.2f}x (cpu)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
