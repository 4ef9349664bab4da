"""How many generated samples each run needed to reach a reward (sample efficiency).

    python scripts/samples_to_reach.py outputs/.../alignprop-run outputs/.../ddpo-run --target -2.0

Reads each run's metrics.jsonl; a run "reaches" the target at the first epoch whose
reward_mean, averaged over a window of epochs (--window, default 3), is >= target.
Samples are counted cumulatively from the `samples` field of every epoch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def samples_to_reach(run_dir: Path, target: float, window: int) -> tuple[int | None, int | None]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    records = [r for r in records if "reward_mean" in r]
    total, rewards = 0, []
    for r in records:
        total += int(r.get("samples", 0))
        rewards.append(r["reward_mean"])
        recent = rewards[-window:]
        if len(recent) == window and sum(recent) / window >= target:
            return r["epoch"], total
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--target", type=float, required=True)
    parser.add_argument("--window", type=int, default=3)
    args = parser.parse_args()
    for run in args.runs:
        epoch, samples = samples_to_reach(run, args.target, args.window)
        verdict = "not reached" if epoch is None else f"epoch {epoch}, {samples} samples"
        print(f"{run}: {verdict}")


if __name__ == "__main__":
    main()
