"""drl-summary: one table for a sweep of runs, each configuration's paired gain over its seeds.

    drl-train -m algorithm=ddpo,nft seed=0,1,2          # writes multirun/<date>/<time>/<job>-<name>/
    drl-summary multirun/<date>/<time>                   # the table; summary.md, summary.json and summary.png there

Runs are grouped by their command-line overrides minus the seed (``seed=...``, and hydra's own keys). For each group:
the paired gain on the fixed evaluation inputs (eval.json's eval/gain: the same prompts and noise before and after
training) as mean ± standard error over seeds, the diversity change of the quality probe (eval/diversity_change),
and the time per run: wall seconds of the epochs (sample + update) and their CPU seconds (user + sys, summed over
ranks), from metrics.jsonl. A run without eval.json's summary (stopped, failed) is counted as incomplete.

The aggregation (mean_se, median, markdown_table, save_figure) is the one scripts/time_to_reward.py uses too.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import yaml

OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
OUTPUT_NAMES = ("summary.md", "summary.json", "summary.png")


# ---------------------------------------------------------------- statistics
def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error of the mean) of the finite values; s.e. is NaN below two values; (NaN, NaN) for none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    if len(finite) == 1:
        return finite[0], math.nan
    return statistics.fmean(finite), statistics.stdev(finite) / math.sqrt(len(finite))


def median(values: Sequence[float | None]) -> float:
    """The median of the values, None/NaN counting as +inf (a run that never got there); NaN for no values."""
    if not values:
        return math.nan
    return float(statistics.median([math.inf if v is None or math.isnan(v) else float(v) for v in values]))


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table: '—' for missing, '∞' for never."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞"
    return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"  # 2460, not 2.46e+03


def fmt_mean_se(pair: tuple[float, float], digits: int = 3) -> str:
    mean, se = pair
    return fmt(mean, digits) if math.isnan(se) else f"{fmt(mean, digits)} ± {fmt(se, 2)}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def save_figure(draw: Callable, path: Path) -> str:
    """draw(plt) -> a figure, saved to ``path``; returns one line saying where, or why there is none (no matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        return f"no figure: matplotlib is not installed (pip install matplotlib), {path.name} skipped"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(plt)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"figure: {path}"


# ------------------------------------------------------------------- one run
def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


@dataclass
class RunSummary:
    """What one run of a sweep contributes to its group's row."""

    path: str
    group: str  # its overrides minus the seed, joined
    seed: int | None
    gain: float | None  # eval/gain, the paired gain on the fixed inputs (None: no final evaluation)
    gain_se: float | None
    diversity_change: float | None  # eval/diversity_change (None: no quality probe)
    epochs: int  # epochs logged
    wall_s: float  # the epochs' wall time (sample + update)
    cpu_s: float | None  # the epochs' CPU time, user + sys summed over ranks (None: a run before cpu_s was logged)
    overrides: tuple[str, ...] = ()  # the group's overrides one by one (a value may hold spaces: 'k=[a, b]')


def kept_overrides(overrides: Sequence[str]) -> tuple[tuple[str, ...], int | None]:
    """(the overrides without the seed and hydra's keys; the seed or None)."""
    kept, seed = [], None
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key == "seed":
            seed = int(value)
        elif not key.startswith("hydra."):
            kept.append(item)
    return tuple(kept), seed


def group_of(overrides: Sequence[str]) -> tuple[str, int | None]:
    """(the overrides without the seed and hydra's keys, joined; the seed or None)."""
    kept, seed = kept_overrides(overrides)
    return group_label(kept), seed


def group_label(kept: Sequence[str]) -> str:
    return " ".join(kept) or "(defaults)"


def epoch_totals(records: list[dict]) -> tuple[int, float, float | None]:
    """(epochs, wall seconds, CPU seconds or None) of a run's metrics.jsonl records."""
    epochs = [r for r in records if "sample_time_s" in r]
    wall = sum(r["sample_time_s"] + r["update_time_s"] for r in epochs)
    cpu = sum(r["cpu_s"] for r in epochs) if epochs and all("cpu_s" in r for r in epochs) else None
    return len(epochs), wall, cpu


def read_run(run_dir: Path) -> RunSummary:
    overrides = yaml.safe_load((run_dir / OVERRIDES_FILE).read_text()) or []
    kept, seed = kept_overrides([str(o) for o in overrides])
    group = group_label(kept)
    eval_path = run_dir / "eval.json"
    summary = json.loads(eval_path.read_text()).get("summary", {}) if eval_path.is_file() else {}
    epochs, wall, cpu = epoch_totals(read_jsonl(run_dir / "metrics.jsonl"))
    return RunSummary(
        str(run_dir), group, seed, summary.get("eval/gain"), summary.get("eval/gain_se"), summary.get("eval/diversity_change"), epochs, wall, cpu, kept
    )


def find_runs(directory: Path) -> list[Path]:
    """Every run directory under ``directory`` (one holding .hydra/overrides.yaml), in job order."""
    found = [p.parent.parent for p in directory.rglob(str(OVERRIDES_FILE))]

    def job_number(path: Path):
        head = path.name.split("-", 1)[0]
        return (int(head), str(path)) if head.isdigit() else (math.inf, str(path))

    return sorted(found, key=job_number)


# ------------------------------------------------------------------ a sweep
def summarize(runs: list[RunSummary]) -> list[dict]:
    """One row per group (in first-seen order): seeds, paired gain mean ± s.e. over seeds, diversity change, time per run."""
    groups: dict[str, list[RunSummary]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    rows = []
    for group, members in groups.items():
        done = [r for r in members if r.gain is not None]
        gain, gain_se = mean_se([r.gain for r in done])
        div, div_se = mean_se([r.diversity_change for r in done if r.diversity_change is not None])
        cpus = [r.cpu_s for r in members if r.cpu_s is not None]
        rows.append(
            {
                "group": group,
                "overrides": list(members[0].overrides),
                "seeds": sorted(r.seed for r in done if r.seed is not None),
                "runs": len(members),
                "incomplete": len(members) - len(done),
                "gain_mean": gain,
                "gain_se": gain_se,
                "gains": [r.gain for r in done],
                "diversity_change_mean": div,
                "diversity_change_se": div_se,
                "wall_s_per_run": statistics.fmean([r.wall_s for r in members]),
                "cpu_s_per_run": statistics.fmean(cpus) if cpus else math.nan,
            }
        )
    return rows


def common_overrides(rows: list[dict]) -> list[str]:
    """The overrides every group shares (in the first group's order): said once, above the table, when there are several groups."""
    if len(rows) < 2:
        return []
    shared = set.intersection(*(set(r["overrides"]) for r in rows))
    return [item for item in rows[0]["overrides"] if item in shared]


def label_of(row: dict, common: list[str]) -> str:
    """A group's overrides without the common ones."""
    return " ".join(item for item in row["overrides"] if item not in common) or "(the common overrides alone)"


def table(rows: list[dict]) -> str:
    common = common_overrides(rows)
    header = ["configuration (overrides minus seed)", "seeds", "paired gain, mean ± s.e.", "diversity change", "wall s / run", "CPU s / run"]
    body = [
        [
            f"`{label_of(r, common)}`",
            f"{len(r['seeds'])}" + (f" (+{r['incomplete']} incomplete)" if r["incomplete"] else ""),
            fmt_mean_se((r["gain_mean"], r["gain_se"])),
            "—" if math.isnan(r["diversity_change_mean"]) else f"{r['diversity_change_mean']:+.0%}",
            fmt(r["wall_s_per_run"]),
            fmt(r["cpu_s_per_run"]),
        ]
        for r in rows
    ]
    above = f"Every configuration: `{' '.join(common)}`\n\n" if common else ""
    return above + markdown_table(header, body)


def draw_gains(rows: list[dict]) -> Callable:
    def draw(plt):
        common = common_overrides(rows)
        labels = [textwrap.fill(label_of(r, common), 48) for r in rows]
        lines = sum(label.count("\n") + 1 for label in labels)
        fig, ax = plt.subplots(figsize=(10, 0.2 * lines + 0.3 * len(rows) + 1.2))
        for y, row in enumerate(rows):
            ax.errorbar(row["gain_mean"], y, xerr=0 if math.isnan(row["gain_se"]) else row["gain_se"], fmt="o", color="C0", capsize=4)
            ax.scatter(row["gains"], [y] * len(row["gains"]), color="C1", s=12, zorder=3)
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        if common:
            ax.set_title(textwrap.fill("every run: " + " ".join(common), 110), fontsize=8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("paired gain on the fixed inputs (mean ± s.e.; dots: seeds)")
        ax.invert_yaxis()
        return fig

    return draw


def summarize_directory(directory: Path, out: Path | None = None) -> tuple[str, list[dict], str]:
    """Read every run under ``directory``; write summary.md/.json/.png to ``out`` (default: ``directory``).
    -> (the markdown table, the rows, the figure's line)."""
    runs = [read_run(p) for p in find_runs(directory)]
    if not runs:
        raise FileNotFoundError(f"No drl runs under {directory}: a sweep's run directories hold .hydra/overrides.yaml (drl-train -m ...).")
    out = directory if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(runs)
    text = table(rows)
    (out / OUTPUT_NAMES[0]).write_text(f"Sweep: {directory}\n\n{text}\n")
    (out / OUTPUT_NAMES[1]).write_text(json.dumps({"directory": str(directory), "groups": rows, "runs": [asdict(r) for r in runs]}, indent=1) + "\n")
    figure = save_figure(draw_gains(rows), out / OUTPUT_NAMES[2])
    return text, rows, figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drl-summary", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, help="a multirun directory (drl-train -m ...), or any directory holding run directories")
    parser.add_argument("--out", type=Path, default=None, help="where summary.md/.json/.png go (default: the directory)")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        print(f"drl-summary: error: {args.directory} is not a directory.", file=sys.stderr)
        sys.exit(2)
    try:
        text, _, figure = summarize_directory(args.directory, args.out)
    except FileNotFoundError as error:
        print(f"drl-summary: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(text)
    print(figure)


if __name__ == "__main__":
    main()
