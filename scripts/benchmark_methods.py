"""Which method gets the most reward per generated sample (and per second) on the toy world.

    python scripts/benchmark_methods.py --budget 2560 --samples-per-epoch 64 --seeds 3 --out bench/

Runs ddpo, ddpo with groups (group-relative advantages), alignprop, nft and dpo with the same
reward for the same number of generated samples (--budget), with --seeds seeds each, through
the normal training loop (one run dir per method and seed under --out). Writes:

    <out>/results.md    reward at 0/25/50/100% of the budget (mean ± std over seeds), wall time
    <out>/reward_vs_samples.png   mean reward against generated samples, ±1 std over seeds

Every method generates train.samples_per_epoch samples per epoch, so epochs = budget / that.
"reward at 0%" is the first epoch's batch, sampled before any update. "eval gain" is the paired
before/after gain on the run's fixed evaluation inputs (eval.json): epoch means of different prompts
and noise are noisy, this is not. Extra config overrides for every run go after --, e.g.
`-- scheduler.num_steps=5`. A run dir that already holds a finished run is read, not rerun, so
several invocations with disjoint --methods can share the CPU and a last one writes the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

METHODS = {
    "ddpo": ["algorithm=ddpo"],
    "ddpo_groups": ["experiment=toy_alignment_grpo"],  # its tuned options (group 8, batch std, ...)
    "alignprop": ["algorithm=alignprop"],
    "nft": ["algorithm=nft"],
    "dpo": ["algorithm=dpo"],
}
FRACTIONS = (0.25, 0.5, 1.0)




def reward_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative generated samples after each epoch [E], that epoch's mean reward [E])."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    records = [r for r in records if "reward_mean" in r]
    return np.cumsum([r["samples"] for r in records]), np.array([r["reward_mean"] for r in records])


def reward_at(samples: np.ndarray, rewards: np.ndarray, count: float) -> float:
    """The reward of the first epoch whose cumulative samples reach ``count``."""
    return float(rewards[min(int(np.searchsorted(samples, count - 1e-9)), len(rewards) - 1)])


def run_all(args, extra: list[str]) -> dict[str, list[dict]]:
    from drl.compose import compose_config
    from drl.train import train

    epochs = max(1, args.budget // args.samples_per_epoch)
    results: dict[str, list[dict]] = {}
    for method in args.methods:
        for seed in range(args.seeds):
            run_dir = args.out / method / f"seed{seed}"
            overrides = [
                *METHODS[method],
                f"reward={args.reward}",
                f"seed={seed}",
                f"train.epochs={epochs}",
                f"train.samples_per_epoch={args.samples_per_epoch}",
                f"hardware.num_threads={args.threads}",
                "logger=none",
                *extra,
            ]
            done = run_dir / "bench.json"
            if not done.is_file():
                start = time.perf_counter()
                train(compose_config(overrides), run_dir)
                done.write_text(json.dumps({"wall_s": time.perf_counter() - start, "overrides": overrides}) + "\n")
            wall = json.loads(done.read_text())["wall_s"]
            samples, rewards = reward_curve(run_dir)
            gain = json.loads((run_dir / "eval.json").read_text())["summary"]["eval/gain"]
            results.setdefault(method, []).append({"samples": samples, "rewards": rewards, "wall_s": wall, "eval_gain": gain})
            print(f"{method} seed {seed}: {rewards[0]:.2f} -> {rewards[-1]:.2f} in {wall:.0f} s", flush=True)
    return results


def table(results: dict[str, list[dict]], budget: int) -> str:
    def cell(values) -> str:
        return f"{np.mean(values):.2f} ± {np.std(values):.2f}"

    header = "| method | reward at 0% | " + " | ".join(f"at {int(f * 100)}%" for f in FRACTIONS)
    header += " | eval gain (fixed inputs) | wall time (s) | eval gain / min |"
    lines = [header, "|" + "---|" * (len(FRACTIONS) + 5)]
    for method, runs in results.items():
        start = [r["rewards"][0] for r in runs]
        at = [[reward_at(r["samples"], r["rewards"], f * budget) for r in runs] for f in FRACTIONS]
        walls = [r["wall_s"] for r in runs]
        evals = [r["eval_gain"] for r in runs]
        gain_per_min = [g / (w / 60) for g, w in zip(evals, walls)]  # the paired gain, not the noisy epoch means
        lines.append(
            f"| {method} | {cell(start)} | " + " | ".join(cell(v) for v in at) + f" | {cell(evals)} | {cell(walls)} | {cell(gain_per_min)} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path, reward: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, runs in results.items():
        length = min(len(r["rewards"]) for r in runs)
        samples = runs[0]["samples"][:length]
        rewards = np.stack([r["rewards"][:length] for r in runs])  # [seeds, E]
        mean, std = rewards.mean(0), rewards.std(0)
        ax.plot(samples, mean, label=method)
        ax.fill_between(samples, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("generated samples")
    ax.set_ylabel(f"mean {reward} per epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=2560, help="generated samples per run")
    parser.add_argument("--samples-per-epoch", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--reward", default="toy_alignment")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--out", type=Path, default=Path("bench"))
    args, extra = parser.parse_known_args()
    extra = [e for e in extra if e != "--"]
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = run_all(args, extra)
    text = table(results, args.budget)
    command = "python scripts/benchmark_methods.py " + " ".join(
        [
            f"--budget {args.budget}",
            f"--samples-per-epoch {args.samples_per_epoch}",
            f"--seeds {args.seeds}",
            f"--reward {args.reward}",
            *([] if args.methods == list(METHODS) else ["--methods", *args.methods]),
            *extra,
        ]
    )
    (args.out / "results.md").write_text(f"`{command}`\n\n{text}\n")
    plot(results, args.out / "reward_vs_samples.png", args.reward)
    print(text)


if __name__ == "__main__":
    main()
