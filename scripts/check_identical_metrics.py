"""Check that a change left training bit-identical: six short seeded runs, compared key by key.

    python scripts/check_identical_metrics.py run OUT_DIR           # the six runs into OUT_DIR/<name>/
    python scripts/check_identical_metrics.py compare BASE_DIR OUT_DIR
    python scripts/check_identical_metrics.py run OUT_DIR --against BASE_DIR   # both

Each run is cut to 3 epochs (and small batches) with a fixed seed, one torch thread and no W&B.
Every key of every metrics.jsonl record, and every value in eval.json / eval_after.json, must be
equal bit for bit, except timings (wall times and throughput differ from run to run). One line
per run: identical, or the first key that differs with both values; exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SMALL = ["train.epochs=3", "train.samples_per_epoch=8", "train.batch_size=8", "train.grid_size=4", "train.eval_size=8"]
COMMON = ["seed=7", "hardware=cpu", "hardware.num_threads=1", "logger=none"]
RUNS: dict[str, list[str]] = {
    "default": SMALL,
    "rwr": ["algorithm=rwr", *SMALL],
    "alignprop": ["algorithm=alignprop", "reward=toy_alignment", *SMALL],
    "nft": ["algorithm=nft", "reward=toy_alignment", *SMALL],
    "bandit_diffusion_ql": ["experiment=bandit_diffusion_ql", "train.epochs=3", "algorithm.steps_per_epoch=20", "env.eval_episodes=50"],
    "t2v_alignprop": ["model=toy_t2v", "algorithm=alignprop", "reward=toy_motion", *SMALL],
}
COMPARED_FILES = ("metrics.jsonl", "eval.json", "eval_before.json", "eval_after.json")


def is_timing(key: str) -> bool:
    """Wall times and throughput: the only values allowed to differ between two identical runs."""
    leaf = key.rsplit("/", 1)[-1]
    return leaf.endswith(("_time_s", "_per_s", "_seconds")) or leaf in {"time_s", "seconds", "wall_time"}


def run_all(out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for name, overrides in RUNS.items():
        run_dir = out / name
        cmd = [sys.executable, "-m", "drl.cli", *COMMON, *overrides, f"hydra.run.dir={run_dir}"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"{name}: drl-train exited with status {done.returncode}: {' '.join(cmd)}")


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
    run = sub.add_parser("run", help="run the six short runs into OUT_DIR")
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
