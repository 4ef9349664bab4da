"""Check that a change left training bit-identical: ten short seeded runs, compared key by key.

    python scripts/check_identical_metrics.py run OUT_DIR           # the ten runs into OUT_DIR/<name>/
    python scripts/check_identical_metrics.py compare BASE_DIR OUT_DIR
    python scripts/check_identical_metrics.py run OUT_DIR --against BASE_DIR   # both

The runs: image DDPO (the default), RWR, AlignProp, NFT, toy-video AlignProp, and on the bandit Diffusion-QL,
behaviour cloning, and DDPO, DSRL and DPPO fine-tuning that behaviour-cloned policy. An override may name
another run's directory as {run:NAME} (the control fine-tunes: model.path={run:bandit_bc}); runs go in the
order listed, so NAME must come earlier. A difference in bandit_bc therefore shows in the three runs that
load it too.

Each run is cut to 3 epochs (and small batches) with a fixed seed, one torch thread and no W&B.
Every key of every metrics.jsonl record, and every value in eval.json / eval_before.json / eval_after.json,
must be equal bit for bit, except timings (wall times and throughput differ from run to run). `run` prints
each run's wall time; `compare` prints one line per run: identical, or the first key that differs with both
values; exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

SMALL = ["train.epochs=3", "train.samples_per_epoch=8", "train.batch_size=8", "train.grid_size=4", "train.eval_size=8"]
COMMON = ["seed=7", "hardware=cpu", "hardware.num_threads=1", "logger=none"]
BANDIT_SMALL = ["train.epochs=3", "env.eval_episodes=50"]
# The control fine-tunes: a small batch of rollouts per epoch from the bandit_bc run's policy.
FINETUNE_SMALL = [*BANDIT_SMALL, "model.path={run:bandit_bc}", "train.samples_per_epoch=64", "train.batch_size=64"]
RUNS: dict[str, list[str]] = {
    "default": SMALL,
    "rwr": ["algorithm=rwr", *SMALL],
    "alignprop": ["algorithm=alignprop", "reward=toy_alignment", *SMALL],
    "nft": ["algorithm=nft", "reward=toy_alignment", *SMALL],
    "bandit_diffusion_ql": ["experiment=bandit_diffusion_ql", *BANDIT_SMALL, "algorithm.steps_per_epoch=20"],
    "t2v_alignprop": ["model=toy_t2v", "algorithm=alignprop", "reward=toy_motion", *SMALL],
    "bandit_bc": ["experiment=bandit_bc", *BANDIT_SMALL, "algorithm.steps_per_epoch=20"],
    "bandit_ddpo": ["experiment=bandit_ddpo", *FINETUNE_SMALL],
    "bandit_dsrl": ["experiment=bandit_dsrl", *FINETUNE_SMALL, "algorithm.updates_per_epoch=20"],
    "bandit_dppo": ["experiment=bandit_dppo", *FINETUNE_SMALL],
}
RUN_DIR = re.compile(r"\{run:([A-Za-z0-9_]+)\}")
COMPARED_FILES = ("metrics.jsonl", "eval.json", "eval_before.json", "eval_after.json")


def is_timing(key: str) -> bool:
    """Wall and CPU times and throughput: the only values allowed to differ between two identical runs."""
    leaf = key.rsplit("/", 1)[-1]
    return leaf.endswith(("_time_s", "_per_s", "_seconds")) or leaf in {"time_s", "seconds", "wall_time", "cpu_s"}


def resolve_overrides(name: str, out: Path) -> list[str]:
    """RUNS[name] with each {run:OTHER} replaced by OTHER's directory under out; OTHER must run before name."""
    earlier = list(RUNS)[: list(RUNS).index(name)]

    def run_dir(match: re.Match) -> str:
        other = match.group(1)
        if other not in earlier:
            raise SystemExit(f"{name}: {match.group(0)} must name a run listed before it in RUNS (earlier: {', '.join(earlier) or 'none'})")
        return str(out / other)

    return [RUN_DIR.sub(run_dir, override) for override in RUNS[name]]


def run_all(out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    commands = {name: [sys.executable, "-m", "drl.cli", *COMMON, *resolve_overrides(name, out), f"hydra.run.dir={out / name}"] for name in RUNS}
    for name, cmd in commands.items():  # every placeholder resolved before the first run starts
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"{name}: drl-train exited with status {done.returncode}: {' '.join(cmd)}")
        print(f"{name}: ran in {time.perf_counter() - start:.1f} s", flush=True)


def read_records(path: Path) -> list:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(path.read_text())]


def first_difference(a, b, where: str) -> str | None:
    """The path of the first differing value (timings skipped) and both values, or None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if is_timing(key):
                continue
            if key not in a or key not in b:
                return f"{where}/{key}: {'missing' if key not in a else a[key]!r} vs {'missing' if key not in b else b[key]!r}"
            found = first_difference(a[key], b[key], f"{where}/{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    same = a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)  # NaN == NaN here
    return None if same and type(a) is type(b) else f"{where}: {a!r} vs {b!r}"


def compare(base: Path, out: Path) -> bool:
    identical = True
    for name in RUNS:
        difference = None
        for filename in COMPARED_FILES:
            a, b = base / name / filename, out / name / filename
            if not a.is_file() and not b.is_file():
                continue
            if a.is_file() != b.is_file():
                difference = f"{filename}: present in {'the first' if a.is_file() else 'the second'} only"
                break
            difference = first_difference(read_records(a), read_records(b), filename)
            if difference:
                break
        if not (base / name / "metrics.jsonl").is_file():
            difference = difference or "metrics.jsonl: missing in both"
        identical = identical and difference is None
        print(f"{name}: {'identical' if difference is None else 'DIFFERS at ' + difference}")
    return identical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the ten short runs into OUT_DIR")
    run.add_argument("out", type=Path)
    run.add_argument("--against", type=Path, help="then compare with this earlier OUT_DIR")
    cmp = sub.add_parser("compare", help="compare two OUT_DIRs")
    cmp.add_argument("base", type=Path)
    cmp.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        run_all(args.out.resolve())
        if args.against is None:
            return
        args.base = args.against
    sys.exit(0 if compare(args.base.resolve(), args.out.resolve()) else 1)


if __name__ == "__main__":
    main()
