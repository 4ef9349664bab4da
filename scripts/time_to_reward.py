"""Time to reward: the CPU time, wall time, denoiser calls and samples each configuration needs before its
evaluation reward first reaches a target, over seeds, side by side.

    python scripts/time_to_reward.py --configs CONFIGS.yaml --seeds 0 1 2 --epochs 8 --eval-every 2 --out ttr/
    python scripts/time_to_reward.py --config 'grpo=experiment=toy_flow_grpo' \\
        --config 'fast=experiment=toy_flow_grpo algorithm.sde_window=2' --baseline grpo --out ttr/
    python scripts/time_to_reward.py --smoke --out /tmp/ttr-smoke        # seconds: the test's CPU mode

CONFIGS.yaml (read with yaml.safe_load; nothing in it runs as code):

    common: [model=toy_flow, reward=toy_alignment]     # overrides of every drl run
    baseline: grpo                                      # whose final gain is the target (default: the first)
    configs:
      grpo: [experiment=toy_flow_grpo]                  # a drl-train run: its overrides
      fast: [experiment=toy_flow_grpo, algorithm.sde_window=2]
      short: {overrides: [experiment=toy_flow_grpo, algorithm.lr=1e-3], epochs: 4}   # its own length (default --epochs)
      trl:  {command: [/tmp/trl-venv/bin/python, scripts/ttr/trl_ddpo.py, --save-lora-dir, "{lora}", --seed, "{seed}", --epochs, "{epochs}", --json, "{json}"]}

An entry with ``command`` is an external run (shared/tools/trl_anchor's ``ddpo``, through scripts/ttr/trl_ddpo.py): {seed}, {epochs}, {eval_every}, {json}
and {lora} are filled in, and the JSON it writes gives each epoch's wall_s, cpu_s, samples and reward_mean (and its denoiser calls
per epoch under "derived"). With --measure paired it must save its LoRA (diffusers format) after every evaluated epoch
e to {lora}/epoch<e, 4 digits>/ (scripts/ttr/trl_ddpo.py --save-lora-dir {lora} --save-lora-every {eval_every}, trl_anchor.py ddpo with the LoRA saved): each is loaded into the
adapter of the common overrides' model and evaluated on the same fixed inputs as the drl runs of its seed.

How it runs: for each seed, every configuration in turn (A, B, A, B: a change in the machine's load hits all alike),
one process at a time. A drl run is a child ``python -m drl.cli`` with a checkpoint every --eval-every epochs; each
checkpoint is kept (a hard link) and, after the run, evaluated here with the base model's fixed prompts and noise
(drl.images.evaluation_batch, the EMA weights if the run keeps one): the paired gain over the base model, and the
samples' diversity (the quality probe's features). The evaluation samples with --eval-eta (default 0: the ODE, how a
deployed model samples; "run": the run's scheduler.eta; a DDPM run always samples its own way), whatever SDE window the training used.

What is counted up to each evaluated epoch e (from metrics.jsonl): CPU seconds of the epochs (user + sys of the
training process, ``cpu_s``), their wall seconds (sample + update), denoiser calls (sample-steps through the
denoiser, guided ones twice: train/denoiser_calls_*), samples. Start-up, checkpoints and the evaluations are not
counted there; the child's whole-process CPU time (os.wait4's rusage) is recorded beside them as process_cpu_s.
On a shared machine CPU time is the figure to read; wall times are upper bounds.

Target: --target, else the baseline's final value (median over seeds). A run reaches it at its first evaluation
whose value is >= target (--measure paired: the paired gain; epoch_mean: the epoch reward mean, averaged over
--window epochs). Writes <out>/results.json, <out>/results.md and <out>/reward_vs_cpu.png. A run whose result.json
exists is read, not rerun, so an interrupted measurement continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import yaml

from drl.evaluation.models import LORA_FILE
from drl.evaluation.summary import epoch_totals, fmt, fmt_mean_se, markdown_table, mean_se, median, read_jsonl, save_figure

SMOKE = {
    "common": [
        "model=toy_t2i", "reward=jpeg_compressibility", "algorithm=ddpo", "scheduler=ddim", "scheduler.num_steps=4",
        "train.samples_per_epoch=4", "train.batch_size=4", "algorithm.minibatches=1",
    ],
    "configs": {"full": [], "window1": ["algorithm.sde_window=1"]},
}  # fmt: skip
SMOKE_SETTINGS = {"seeds": [0], "epochs": 2, "eval_every": 1, "eval_size": 2}
POLL_S = 0.2  # how often a running child's checkpoint is looked at
RESULT = "result.json"


class Config(NamedTuple):
    name: str
    overrides: tuple[str, ...] | list[str] = ()  # a drl run
    command: list[str] | None = None  # an external run
    epochs: int | None = None  # its own run length (default --epochs): a run that needs fewer to reach the target


CONFIG_KEYS = {"overrides", "command", "epochs"}


# ---------------------------------------------------------------- input
def parse_configs(args) -> tuple[list[Config], list[str], str | None]:
    """(the configurations, the common overrides, the baseline named in the file) from --configs / --config / --smoke."""
    spec = SMOKE if args.smoke else {}
    if args.configs:
        spec = yaml.safe_load(args.configs.read_text()) or {}
        if not isinstance(spec, dict) or not isinstance(spec.get("configs"), dict):
            raise ValueError(f"{args.configs} needs a 'configs:' mapping of name -> overrides (see --help).")
    configs = [_config(name, value) for name, value in (spec.get("configs") or {}).items()]
    for item in args.config or []:
        name, sep, overrides = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--config {item!r}: write NAME=OVERRIDES, e.g. 'fast=algorithm.sde_window=2'.")
        configs.append(Config(name.strip(), shlex.split(overrides)))
    if not configs:
        raise ValueError("no configurations: give --configs FILE, --config NAME=OVERRIDES (repeated) or --smoke.")
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"configuration names repeat: {names}.")
    common = [str(o) for o in spec.get("common", [])]
    return configs, common, spec.get("baseline")


def _config(name: str, value) -> Config:
    if isinstance(value, dict) and set(value) <= CONFIG_KEYS and ("command" in value) != ("overrides" in value):
        epochs = value.get("epochs")
        if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
            raise ValueError(f"configuration {name!r}: epochs is a whole number >= 1, not {epochs!r}.")
        if "command" in value:
            return Config(str(name), command=[str(a) for a in value["command"]], epochs=epochs)
        return _config(name, value["overrides"])._replace(epochs=epochs)
    if isinstance(value, list):
        return Config(str(name), [str(o) for o in value])
    if isinstance(value, str):
        return Config(str(name), shlex.split(value))
    raise ValueError(
        f"configuration {name!r}: a list of overrides, {{overrides: [...], epochs: N}} or {{command: [...], epochs: N}}, not {value!r}."
    )


# ------------------------------------------------------------ one drl run
def drl_overrides(args, common: list[str], config: Config, seed: int) -> list[str]:
    return [
        *common, *config.overrides, *args.overrides, f"seed={seed}", f"train.epochs={config.epochs or args.epochs}",
        f"train.save_every={args.eval_every}", f"hardware.num_threads={args.threads}", "logger=none",
        "train.eval_size=0", "train.grid_size=1",  # its own before/after evaluation: this script evaluates instead
    ]  # fmt: skip


def run_child(command: list[str], snapshot_dir: Path | None = None, checkpoint: Path | None = None, log: Path | None = None) -> dict:
    """Run ``command`` to its end; hard-link every new ``checkpoint`` into ``snapshot_dir`` meanwhile.
    -> {returncode, process_cpu_s (user + sys of the child and what it waited for), process_wall_s, max_rss_mb}."""
    start = time.perf_counter()
    with open(log or os.devnull, "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        seen, kept = None, 0
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if checkpoint is not None and checkpoint.is_file():
                try:
                    inode = checkpoint.stat().st_ino
                    if inode != seen:  # drl writes last.pt anew (atomic rename): a new inode is a new checkpoint
                        os.link(checkpoint, snapshot_dir / f"{kept:04d}.pt")
                        seen, kept = inode, kept + 1
                except FileNotFoundError:
                    pass  # replaced between the two calls: the next poll sees the new one
            if pid:
                break
            time.sleep(POLL_S)
    child.returncode = os.waitstatus_to_exitcode(status)  # wait4 reaped it: tell Popen
    return {
        "returncode": child.returncode,
        "process_cpu_s": usage.ru_utime + usage.ru_stime,
        "process_wall_s": time.perf_counter() - start,
        "max_rss_mb": usage.ru_maxrss / 1024,
    }


def evaluate_checkpoints(overrides: list[str], snapshots: list[Path], args) -> list[dict]:
    """The base model's and each checkpoint's rewards and diversity on the fixed evaluation inputs of the run's seed."""
    import torch

    from drl.checkpoint import load_checkpoint, load_trainable_state
    from drl.compose import compose_config
    from drl.evaluation.features import extract
    from drl.evaluation.models import load_lora_into
    from drl.evaluation.hacking import QualityProbe
    from drl.evaluation.metrics import diversity
    from drl.images import evaluation_batch
    from drl.runtime import seed_everything
    from drl.train import build_context

    kept = [o for o in overrides if not o.startswith(("train.eval_size=", "train.grid_size=", "train.eval_eta="))]
    cfg = compose_config([*kept, f"train.eval_size={args.eval_size}", f"train.grid_size={min(4, args.eval_size)}", "train.eval_eta=null"])
    if args.eval_eta != "run" and cfg.scheduler.kind != "ddpm":  # DDPM has no eta: its own sampler, not a refusal after training
        cfg.train.eval_eta = float(args.eval_eta)
    torch.set_num_threads(args.threads)
    seed_everything(cfg.seed)
    ctx, reward, algorithm = build_context(cfg)
    if args.eval_guidance is not None:
        ctx.collector.guidance_scale = args.eval_guidance
    probe = QualityProbe.for_run(cfg, ctx.model, ctx.device)

    def evaluate(epoch: int) -> dict:
        with algorithm.sampling_weights():
            batch, _ = evaluation_batch(ctx, reward, cfg.seed)
        point = {"epoch": epoch, "rewards": [float(r) for r in batch.rewards]}
        if probe is not None:
            point["diversity"] = diversity(extract(probe.extractor, batch.samples))
        return point

    points = [evaluate(-1)]  # the base model: epoch -1
    for path in snapshots:
        if path.is_dir():  # an external run's LoRA after epoch NNNN (epochNNNN/), into the run's own adapter
            load_lora_into(ctx.model.denoiser, path)
            points.append(evaluate(int(path.name.removeprefix("epoch"))))
            continue
        state = load_checkpoint(path)
        load_trainable_state(ctx.hooks.trainable_modules(), state["weights"])
        algorithm.load_state_dict(state["algorithm"])  # the EMA's weights, if any
        points.append(evaluate(int(state["epoch"])))
    return points


def paired_curve(points: list[dict]) -> list[dict]:
    """Each evaluation's paired gain over the base (mean, s.e. over the fixed inputs) and diversity change."""
    base = points[0]
    curve = []
    for p in points:
        diffs = [a - b for a, b in zip(p["rewards"], base["rewards"])]
        mean, se = mean_se(diffs)
        change = p["diversity"] / base["diversity"] - 1 if "diversity" in p and base.get("diversity") else None
        curve.append({"epoch": p["epoch"], "value": mean if p is not base else 0.0, "se": se if p is not base else 0.0, "diversity_change": change})
    return curve


def epoch_counts(records: list[dict]) -> list[dict]:
    """Cumulative CPU s, wall s, denoiser calls and samples after each epoch of metrics.jsonl (epoch -1: zeros)."""
    out, totals = [{"epoch": -1, "cpu_s": 0.0, "wall_s": 0.0, "denoiser_calls": 0, "samples": 0}], [0.0, 0.0, 0, 0]
    for r in records:
        if "sample_time_s" not in r:
            continue
        calls = r.get("train/denoiser_calls_sample", 0) + r.get("train/denoiser_calls_update", 0)
        for k, v in enumerate((r.get("cpu_s", math.nan), r["sample_time_s"] + r["update_time_s"], calls, r.get("samples", 0))):
            totals[k] += v
        out.append({"epoch": r["epoch"], "cpu_s": totals[0], "wall_s": totals[1], "denoiser_calls": totals[2], "samples": totals[3],
                    "reward_mean": r.get("reward_mean")})  # fmt: skip
    return out


def paired_points(args, overrides: list[str], snapshots: list[Path], counts: list[dict]) -> list[dict]:
    """The paired curve of a run's snapshots, each point with the run's counts up to its epoch."""
    by_epoch = {c["epoch"]: c for c in counts}
    return [{**by_epoch[p["epoch"]], **p} for p in paired_curve(evaluate_checkpoints(overrides, snapshots, args))]


def run_drl(args, common: list[str], config: Config, seed: int, run_dir: Path) -> dict:
    overrides = drl_overrides(args, common, config, seed)
    snapshots = run_dir / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "drl.cli", *overrides, f"hydra.run.dir={run_dir / 'run'}"]
    print(f"[{config.name} seed {seed}] {shlex.join(command[2:])}", flush=True)
    process = run_child(command, snapshots, run_dir / "run" / "checkpoints" / "last.pt", run_dir / "train.log")
    if process["returncode"] != 0:
        raise RuntimeError(f"{config.name} seed {seed} failed (exit {process['returncode']}): see {run_dir / 'train.log'}")
    counts = epoch_counts(read_jsonl(run_dir / "run" / "metrics.jsonl"))
    # epoch_mean reads the epochs' own rewards: nothing to evaluate
    paired = paired_points(args, overrides, sorted(snapshots.glob("*.pt")), counts) if args.measure == "paired" else []
    return {"config": config.name, "seed": seed, "kind": "drl", "overrides": overrides, "paired": paired, "epochs": counts[1:], **process}


def run_external(args, common: list[str], config: Config, seed: int, run_dir: Path) -> dict:
    """An external run (trl_anchor's ddpo): its JSON's epochs as the curve; with --measure paired, the LoRA it saved
    under {lora}/epochNNNN/ evaluated on the drl runs' fixed inputs of its seed (the common overrides' model)."""
    out, lora = run_dir / "external.json", run_dir / "lora"
    fill = {"{seed}": str(seed), "{epochs}": str(config.epochs or args.epochs), "{eval_every}": str(args.eval_every), "{json}": str(out), "{lora}": str(lora)}
    command = [fill.get(a, a) for a in config.command]  # whole words only: other braces stay as written
    print(f"[{config.name} seed {seed}] {shlex.join(command)}", flush=True)
    process = run_child(command, log=run_dir / "train.log")
    if process["returncode"] != 0:
        raise RuntimeError(f"{config.name} seed {seed} failed (exit {process['returncode']}): see {run_dir / 'train.log'}")
    doc = json.loads(out.read_text())
    derived = doc.get("derived", {})
    calls = derived.get("unet_calls_sampling_per_epoch", 0) + derived.get("unet_fwd_bwd_training_per_epoch", 0)
    records = [
        {"epoch": e["epoch"], "sample_time_s": e["wall_s"], "update_time_s": 0.0, "cpu_s": e["cpu_s"], "samples": e["samples"],
         "reward_mean": e["reward_mean"], "train/denoiser_calls_sample": calls}
        for e in doc["epochs"]
    ]  # fmt: skip
    counts, paired = epoch_counts(records), []
    if args.measure == "paired":
        saved = sorted(path.parent for path in lora.glob(f"epoch*/{LORA_FILE}"))
        if not saved:
            raise RuntimeError(f"{config.name} seed {seed} saved no LoRA under {{lora}}/epochNNNN/: --measure paired evaluates those (or use --measure epoch_mean).")
        paired = paired_points(args, drl_overrides(args, common, Config(config.name), seed), saved, counts)
    return {"config": config.name, "seed": seed, "kind": "external", "command": command, "paired": paired, "epochs": counts[1:], **process}


# ------------------------------------------------------------- aggregation
def curve(result: dict, measure: str, window: int) -> list[dict]:
    """The points (each with cpu_s, wall_s, denoiser_calls, samples, value) the target is looked for on."""
    if measure == "paired":
        return result["paired"]
    points, recent = [], []
    for e in result["epochs"]:
        recent = (recent + [e["reward_mean"]])[-window:]
        if len(recent) == window:
            points.append({**e, "value": statistics.fmean(recent)})
    return points


def first_reach(points: list[dict], target: float) -> dict | None:
    """The first point after training began (epoch >= 0) whose value is >= target, or None."""
    return next((p for p in points if p["epoch"] >= 0 and p["value"] >= target), None)


def aggregate(results: list[dict], configs: list[Config], baseline: str, measure: str, window: int, target: float | None) -> dict:
    """Per configuration: medians over seeds of what it took to reach the target, and its final value."""
    finals = {c.name: [curve(r, measure, window)[-1]["value"] for r in results if r["config"] == c.name and curve(r, measure, window)] for c in configs}
    target_from = "given" if target is not None else "baseline"
    if target is None:
        target = median(finals[baseline]) if finals[baseline] else math.nan
    rows = []
    for c in configs:
        runs = [r for r in results if r["config"] == c.name]
        reached = [first_reach(curve(r, measure, window), target) for r in runs]
        last = [curve(r, measure, window)[-1] for r in runs if curve(r, measure, window)]
        row = {"config": c.name, "seeds": [r["seed"] for r in runs], "reached": sum(p is not None for p in reached)}
        for key in ("cpu_s", "wall_s", "denoiser_calls", "samples"):
            row[f"{key}_to_target"] = median([None if p is None else p[key] for p in reached])
            row[f"{key}_to_target_each"] = [None if p is None else p[key] for p in reached]
        row["final_mean"], row["final_se"] = mean_se([p["value"] for p in last])
        row["final_median"] = median([p["value"] for p in last])
        row["diversity_change_median"] = median([p["diversity_change"] for p in last if p.get("diversity_change") is not None]) if measure == "paired" else math.nan
        row["cpu_s_per_run_median"] = median([r["epochs"][-1]["cpu_s"] for r in runs if r["epochs"]])
        row["process_cpu_s_median"] = median([r["process_cpu_s"] for r in runs])
        rows.append(row)
    base = next(r for r in rows if r["config"] == baseline)
    for row in rows:
        row["cpu_vs_baseline"] = row["cpu_s_to_target"] / base["cpu_s_to_target"] if base["cpu_s_to_target"] not in (0, math.inf) else math.nan
    return {"target": target, "target_from": target_from, "baseline": baseline, "measure": measure, "rows": rows}


def table(summary: dict) -> str:
    header = [
        "configuration", "reached", "CPU s to target (median)", "× baseline CPU", "wall s to target (upper bound)",
        "denoiser calls to target", "samples to target", "final value, mean ± s.e.", "diversity change (final, median)",
        "CPU s per run",
    ]  # fmt: skip
    body = [
        [
            r["config"], f"{r['reached']}/{len(r['seeds'])}", fmt(r["cpu_s_to_target"]), fmt(r["cpu_vs_baseline"], 2),
            fmt(r["wall_s_to_target"]), fmt(r["denoiser_calls_to_target"]), fmt(r["samples_to_target"]),
            fmt_mean_se((r["final_mean"], r["final_se"])),
            "—" if math.isnan(r["diversity_change_median"]) else f"{r['diversity_change_median']:+.0%}", fmt(r["cpu_s_per_run_median"]),
        ]
        for r in summary["rows"]
    ]  # fmt: skip
    what = "paired gain on the fixed inputs" if summary["measure"] == "paired" else "epoch reward mean"
    source = "--target" if summary.get("target_from") == "given" else f"the final value of {summary['baseline']}, median over seeds"
    return f"Target: {what} >= {summary['target']:.4g} ({source}).\n\n" + markdown_table(header, body)


def draw_curves(results: list[dict], configs: list[Config], summary: dict, measure: str, window: int):
    def draw(plt):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for k, c in enumerate(configs):
            curves = [curve(r, measure, window) for r in results if r["config"] == c.name]
            length = min((len(cv) for cv in curves), default=0)
            if length == 0:
                continue
            x = [statistics.fmean(cv[i]["cpu_s"] for cv in curves) for i in range(length)]
            values = [[cv[i]["value"] for cv in curves] for i in range(length)]
            ax.plot(x, [statistics.median(v) for v in values], "o-", color=f"C{k}", label=f"{c.name} (median of {len(curves)})", ms=3)
            ax.fill_between(x, [min(v) for v in values], [max(v) for v in values], color=f"C{k}", alpha=0.15)
        ax.axhline(summary["target"], color="grey", ls="--", lw=0.8, label="target")
        ax.set_xlabel("CPU seconds of training (user + sys)")
        ax.set_ylabel("paired gain on the fixed inputs" if measure == "paired" else f"epoch reward mean ({window}-epoch mean)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        return fig

    return draw


# ------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=Path, help="a YAML file: common, baseline, configs (see above)")
    parser.add_argument("--config", action="append", help="NAME=OVERRIDES, repeated (after --configs' own)")
    parser.add_argument("--baseline", help="the configuration whose final value is the target (default: the file's, else the first)")
    parser.add_argument("--target", type=float, help="the value to reach (default: the baseline's final value, median over seeds)")
    parser.add_argument("--measure", choices=("paired", "epoch_mean"), default="paired")
    parser.add_argument("--window", type=int, default=3, help="epoch_mean: epochs averaged")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=2, help="epochs between two evaluations (and checkpoints)")
    parser.add_argument("--eval-size", type=int, default=32, help="fixed prompts and noise per evaluation")
    parser.add_argument("--eval-eta", default="0", help="the evaluation's noise level: a number (0: the ODE) or 'run' (the run's scheduler.eta)")
    parser.add_argument("--eval-guidance", type=float, default=None, help="the evaluation's CFG scale (default: the run's): one sampler for configurations that train with different ones")
    parser.add_argument("--report-only", action="store_true", help="aggregate the finished runs under --out; run nothing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every run and the evaluation")
    parser.add_argument("--out", type=Path, default=Path("time_to_reward"))
    parser.add_argument("--smoke", action="store_true", help="a seconds-long CPU run: 2 configurations x 1 seed x 2 epochs on the toy world")
    parser.add_argument("overrides", nargs="*", help="after --: overrides of every drl run")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE_SETTINGS.items():
            setattr(args, key, value)
    for key in ("epochs", "eval_every", "eval_size", "threads", "window"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1.")
    if args.eval_eta != "run":
        try:
            float(args.eval_eta)
        except ValueError:
            parser.error(f"--eval-eta {args.eval_eta!r}: a number or 'run'.")
    try:
        configs, common, file_baseline = parse_configs(args)
    except (ValueError, OSError, yaml.YAMLError) as error:
        parser.error(str(error).splitlines()[0])
    baseline = args.baseline or file_baseline or configs[0].name
    if baseline not in {c.name for c in configs}:
        parser.error(f"--baseline {baseline!r} is not one of the configurations {[c.name for c in configs]}.")
    if args.measure == "paired" and any(c.command and "{lora}" not in c.command for c in configs):
        parser.error("an external run (command:) is evaluated paired only from the LoRA it saves: give it {lora} (a directory for epochNNNN/ LoRAs) or use --measure epoch_mean.")
    return args, configs, common, baseline


def main(argv=None) -> dict:
    args, configs, common, baseline = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:  # interleaved: A, B, A, B
        for config in configs:
            run_dir = args.out / "runs" / config.name / f"seed{seed}"
            done = run_dir / RESULT
            if args.report_only and not done.is_file():
                continue
            if not done.is_file():
                run_dir.mkdir(parents=True, exist_ok=True)
                result = run_external(args, common, config, seed, run_dir) if config.command else run_drl(args, common, config, seed, run_dir)
                done.write_text(json.dumps(result, indent=1) + "\n")
            results.append(json.loads(done.read_text()))
            last = results[-1]["epochs"][-1] if results[-1]["epochs"] else {}
            print(f"[{config.name} seed {seed}] {len(results[-1]['epochs'])} epochs, {fmt(last.get('cpu_s'))} CPU s", flush=True)
    configs = [c for c in configs if any(r["config"] == c.name for r in results)]  # --report-only: the finished ones
    if not any(c.name == baseline for c in configs):
        sys.exit(f"time_to_reward: error: no finished run of the baseline {baseline!r} under {args.out}.")
    summary = aggregate(results, configs, baseline, args.measure, args.window, args.target)
    text = table(summary)
    command = "python scripts/time_to_reward.py " + shlex.join((argv if argv is not None else sys.argv[1:]))
    (args.out / "results.md").write_text(f"`{command}`\n\n{text}\n")
    (args.out / "results.json").write_text(json.dumps({"command": command, **summary, "runs": results}, indent=1) + "\n")
    print(text)
    print(save_figure(draw_curves(results, configs, summary, args.measure, args.window), args.out / "reward_vs_cpu.png"))
    return summary


if __name__ == "__main__":
    main()
