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

A call-size table: one source tree, one override swept over values, each value a side of its own (same order of
runs: every value once per repeat), with each run's peak memory (the process's max RSS) and system time (page faults):

    python scripts/bench_epoch.py --src . --sweep train.batch_size=4,8,16,32 --repeats 2 \
        --common model=sd15 model.path=/tmp/trl-anchor/models/small model.resolution=64 train.epochs=3 ...

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
from typing import NamedTuple


class RunFigures(NamedTuple):
    epoch_s: float  # median epoch seconds after the first (NaN with --process-only)
    process_s: float  # whole-process wall seconds
    cpu_s: float  # its user + system CPU seconds
    grad_steps: float  # AlignProp: mean train/steps_with_grad of those epochs, else NaN
    peak_mib: float  # the process's max RSS
    sys_s: float  # its system CPU seconds (mostly page faults of freed and re-touched memory)


def run_once(src: Path, overrides: list[str], epochs_needed: bool = True) -> RunFigures:
    """One drl-train run's figures; the epoch figures are NaN when not epochs_needed (--process-only: a 1-epoch
    run has no epoch after the first)."""
    with tempfile.TemporaryDirectory() as run_dir:
        env = {**os.environ, "PYTHONPATH": str(src.resolve()), "WANDB_SILENT": "true"}
        command = [sys.executable, "-m", "drl.cli", *overrides, f"hydra.run.dir={run_dir}"]
        t0 = time.perf_counter()
        with open(Path(run_dir, "stderr.txt"), "w") as err:
            child = subprocess.Popen(command, env=env, cwd=run_dir, stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage: its CPU and peak RSS
        seconds = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"bench_epoch: {' '.join(command)} failed:\n{Path(run_dir, 'stderr.txt').read_text()[-2000:]}")
        cpu, peak = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux: KiB
        records = [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines() if line.strip()]
        records = [r for r in records if "update_time_s" in r]
        epochs = [r["sample_time_s"] + r["update_time_s"] for r in records]
        if not epochs_needed:
            return RunFigures(float("nan"), seconds, cpu, float("nan"), peak, usage.ru_stime)
        if len(epochs) < 2:
            raise SystemExit("bench_epoch: give train.epochs >= 2 (the first epoch is a warm-up).")
        grad_steps = [r["train/steps_with_grad"] for r in records[1:] if "train/steps_with_grad" in r]
        grad = statistics.mean(grad_steps) if grad_steps else float("nan")
        return RunFigures(statistics.median(epochs[1:]), seconds, cpu, grad, peak, usage.ru_stime)


def sweep_sides(src: Path, common: list[str], sweep: str) -> dict[str, tuple[Path, list[str]]]:
    """--sweep KEY=V1,V2,...: one side per value, named by it."""
    key, sep, values = sweep.partition("=")
    if not sep or not key or not values:
        raise SystemExit(f"bench_epoch: --sweep {sweep!r}: write KEY=V1,V2,..., e.g. train.batch_size=4,8,16,32.")
    return {f"{key}={v}": (src, [*common, f"{key}={v}"]) for v in values.split(",")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a-src", type=Path, help="drl source tree of side A (the baseline)")
    parser.add_argument("--b-src", type=Path, help="drl source tree of side B")
    parser.add_argument("--src", type=Path, help="--sweep: the one drl source tree")
    parser.add_argument("--sweep", help="KEY=V1,V2,...: one side per value of one override (a call-size table), instead of A and B")
    parser.add_argument("--common", nargs="*", default=[], help="overrides for every side")
    parser.add_argument("--a", nargs="*", default=[], help="overrides for side A only")
    parser.add_argument("--b", nargs="*", default=[], help="overrides for side B only")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--process-only", action="store_true", help="time whole processes only (allows train.epochs=1)")
    args = parser.parse_args()
    if args.sweep:
        if args.src is None:
            parser.error("--sweep needs --src (one source tree).")
        sides = sweep_sides(args.src, args.common, args.sweep)
    elif args.a_src is None or args.b_src is None:
        parser.error("give --a-src and --b-src, or --src with --sweep.")
    else:
        sides = {"A": (args.a_src, [*args.common, *args.a]), "B": (args.b_src, [*args.common, *args.b])}

    figures: dict[str, list[RunFigures]] = {name: [] for name in sides}
    for k in range(args.repeats):
        for name, (src, overrides) in sides.items():
            run = run_once(src, overrides, epochs_needed=not args.process_only)
            figures[name].append(run)
            grad = "" if run.grad_steps != run.grad_steps else f", grad steps {run.grad_steps:.1f}"  # NaN: not AlignProp
            print(f"run {k + 1} {name}: epoch {run.epoch_s:.3f} s, process {run.process_s:.1f} s, cpu {run.cpu_s:.1f} s "
                  f"(sys {run.sys_s:.1f}), peak {run.peak_mib:.0f} MiB{grad}", flush=True)  # fmt: skip
    medians = {name: RunFigures(*(statistics.median(column) for column in zip(*runs))) for name, runs in figures.items()}
    print(f"\n| side | epoch s | process s | CPU s | sys s | peak MiB |  (medians of {args.repeats}; {' '.join(args.common)})")
    print("|---|---|---|---|---|---|")
    for name, m in medians.items():
        print(f"| {name} | {m.epoch_s:.3f} | {m.process_s:.1f} | {m.cpu_s:.1f} | {m.sys_s:.1f} | {m.peak_mib:.0f} |")
    if not args.sweep:
        a, b = medians["A"], medians["B"]
        print(f"A / B: epoch throughput of B is {a.epoch_s / b.epoch_s:.2f}x A's; whole process {a.process_s / b.process_s:.2f}x (wall), "
              f"{a.cpu_s / b.cpu_s:.2f}x (cpu), peak memory {b.peak_mib / a.peak_mib:.2f}x")  # fmt: skip
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
