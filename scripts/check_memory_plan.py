"""Check the memory plan (``drl-train ... --plan``, drl/plan) against the peaks a real run measures.

For each configuration the plan is computed for the case's networks (built on the meta device), then the real
thing runs in a fresh process: the same networks with random weights, the run's own pieces (drl.train's
build_context: LoRA, optimizer, collector, reward, algorithm), warm-up epochs, then one measured epoch whose
sampling (the rollout and its rewards) and update are measured apart:

  CPU   growth of the peak resident set size over the process's RSS before the networks are built (everything
        imported and torch's kernels warmed up first). Before each phase the peak is reset (writing 5 to
        /proc/self/clear_refs resets VmHWM), and glibc is told to serve every block of 64 KiB or more with mmap
        (MALLOC_MMAP_THRESHOLD_=65536), so that freed tensors leave the RSS at once and its peak follows the live
        tensors rather than the heap's high-water mark.
  GPU   torch.cuda.max_memory_allocated (reset before each phase), which starts at 0: the plan's figure is the same
        quantity (its 1 GiB CUDA reserve is outside it).

Printed per configuration: the plan's weights (denoiser, text encoders, VAE), sampling peak and update peak beside
the measured ones, and measured / plan.

    python scripts/check_memory_plan.py                                # tiny and small, DDPO and AlignProp, +- checkpointing
    python scripts/check_memory_plan.py --case tiny --algorithm ddpo --checkpointing off
    python scripts/check_memory_plan.py --case sd35m --algorithm ddpo  # SD3.5-medium's transformer at real size (~15 GB RAM)
    python scripts/check_memory_plan.py --device cuda --json out.json
    python scripts/check_memory_plan.py --replan out.json             # the plan again, against the runs in out.json

Cases:
  tiny    drl.testing.tiny.build_tiny_sd: the SD 1.x layout, 16 px images from 8 x 8 latents
  small   drl.testing.tiny.build_small_sd: the time-to-reward issue's small SD 1.x pipeline, 64 px from 16 x 16 latents
  sd35m   SD3Transformer2DModel at SD3.5-medium's published size (drl/models/real_configs/sd35_medium.json) and its
          VAE, random weights; its two CLIP encoders one layer deep at their real widths (768, 1280), no T5
          (diffusers' zero slot): the denoiser's weights and activations are real-size, the encoders are not, and
          the plan is told so (it plans the networks that are built).
Arguments after ``--`` are drl-train overrides for every configuration (e.g. ``-- train.batch_size=2``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable

MiB = 2**20


# ---------------------------------------------------------------------------------------------- the cases
def _sd35_medium():
    """SD3.5-medium's transformer and VAE from the shipped published configs, random weights; thin CLIP encoders."""
    import torch
    from transformers import CLIPTextModelWithProjection

    from drl.models.sd3 import SD3Model
    from drl.plan.architecture import from_shipped, model_class, shipped_configs
    from drl.testing.tiny import _text_config, build_clip_tokenizer

    real = from_shipped(shipped_configs()["stabilityai/stable-diffusion-3.5-medium"]).components

    def build(name: str):
        c = real[name]
        return model_class(c.library, c.class_name).from_config({k: v for k, v in c.config.items() if not k.startswith("_")})

    tokenizer = build_clip_tokenizer()
    torch.manual_seed(0)
    transformer = build("transformer")
    vae = build("vae")

    def clip(width: int):  # the real encoder's width and projection, one layer: conditioning of the real shape
        return CLIPTextModelWithProjection(
            _text_config(tokenizer, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=1,
                         num_attention_heads=width // 64, projection_dim=width)
        )

    from diffusers import FlowMatchEulerDiscreteScheduler

    return SD3Model(tokenizer, clip(768), transformer, dict(FlowMatchEulerDiscreteScheduler(shift=3.0).config), vae,
                    text_encoder_2=clip(1280), tokenizer_2=tokenizer)


def _tiny():
    from drl.testing.tiny import build_tiny_sd

    return build_tiny_sd()


def _small():
    from drl.testing.tiny import build_small_sd

    return build_small_sd()


@dataclass
class Case:
    build: Callable[[], object]  # the DenoiserModel with random weights (also built on the meta device for the plan)
    overrides: list[str]  # the run's settings, sized so that tensors, not the interpreter, fill the memory
    algorithms: dict[str, list[str]] = field(default_factory=dict)  # algorithm -> its settings


COMMON = ["logger=none", "hardware=cpu", "hardware.num_threads=1", "prompts=toy", "model.finetune=lora", "seed=0"]
SD1 = ["model=sd15", "scheduler=ddim", "scheduler.eta=1.0", "scheduler.guidance_scale=5.0"]
DDPO = ["algorithm=ddpo", "reward=jpeg_compressibility", "algorithm.minibatches=1"]
ALIGNPROP = ["algorithm=alignprop", "reward=toy_aesthetic", "algorithm.truncation=last"]

CASES = {
    "tiny": Case(_tiny, [*SD1, "model.resolution=16", "scheduler.num_steps=10"], {
        "ddpo": [*DDPO, "train.samples_per_epoch=1024", "train.sample_batch_size=1024", "train.batch_size=256",
                 "algorithm.timestep_fraction=0.2"],
        "alignprop": [*ALIGNPROP, "algorithm.truncation_steps=10", "train.samples_per_epoch=256", "train.batch_size=256"],
    }),
    "small": Case(_small, [*SD1, "model.resolution=64", "scheduler.num_steps=4"], {
        "ddpo": [*DDPO, "train.samples_per_epoch=32", "train.sample_batch_size=32", "train.batch_size=16",
                 "algorithm.timestep_fraction=0.5"],
        "alignprop": [*ALIGNPROP, "algorithm.truncation_steps=4", "train.samples_per_epoch=8", "train.batch_size=8"],
    }),
    "sd35m": Case(_sd35_medium, ["model=sd3", "scheduler=flow", "model.resolution=256", "scheduler.num_steps=2",
                                 "scheduler.guidance_scale=1.0"], {
        "ddpo": [*DDPO, "train.samples_per_epoch=1", "train.batch_size=1", "algorithm.timestep_fraction=0.5"],
    }),
}
"""Settings: the batches are large enough that tensors, not the interpreter's objects (tens of MiB of RSS that a
GPU never sees), fill the memory; DDPO trains a fraction of the steps, as the peak is one call's."""


def configurations(args) -> list[dict]:
    out = []
    for case in args.case:
        for algorithm, settings in CASES[case].algorithms.items():
            if algorithm not in args.algorithm:
                continue
            for ckpt in args.checkpointing:
                on = ckpt == "on"
                # AlignProp's own checkpointing recomputes each denoiser call; model.gradient_checkpointing its blocks
                extra = [f"algorithm.checkpoint_denoiser={str(on).lower()}"] if algorithm == "alignprop" else []
                overrides = [*COMMON, *CASES[case].overrides, *settings, f"model.gradient_checkpointing={str(on).lower()}",
                             *extra, f"hardware.device={args.device}", *args.overrides]
                out.append(dict(case=case, algorithm=algorithm, checkpointing=on, overrides=overrides))
    return out


# ---------------------------------------------------------------------------------------------- the plan
def planned(case: str, overrides: list[str]) -> dict:
    """The plan's figures (bytes) for the case's networks, built on the meta device."""
    import torch

    from drl.compose import compose_config
    from drl.plan.architecture import architecture_of
    from drl.plan.budget import plan_for

    with torch.device("meta"):
        model = CASES[case].build()
    plan = plan_for(architecture_of(model, case), compose_config(overrides))
    weights = sum(line.bytes for line in plan.resident if line.what.startswith(("denoiser weights", "text encoders", "VAE")))
    rollout = sum(line.bytes for line in plan.resident if line.what.startswith("one epoch's rollout"))
    built = plan.resident_bytes - rollout  # weights, optimizer state, encoders, VAE, reward: there before an epoch
    return {"weights": weights, "sampling": plan.sampling_peak, "update": plan.update_peak, "peak": plan.peak,
            "peak_over_built": plan.peak - built,
            # what each phase adds to the memory at its start (the rollout is made during the sampling)
            "sampling_added": rollout + max((line.bytes for line in plan.sampling), default=0),
            "update_added": sum(line.bytes for line in plan.update),
            "lines": {line.what: line.bytes for line in [*plan.resident, *plan.sampling, *plan.update]}}


# ---------------------------------------------------------------------------------------------- the measurement
class Peak:
    """The device's memory now and its peak since the last reset: RSS on the CPU, the CUDA allocator on a GPU."""

    def __init__(self, device: str):
        import torch

        self.torch, self.cuda = torch, device.startswith("cuda")

    def now(self) -> int:
        if self.cuda:
            return self.torch.cuda.memory_allocated()
        return _status_kib("VmRSS") * 1024

    def reset(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS (Linux >= 4.0)

    def peak(self) -> int:
        if self.cuda:
            self.torch.cuda.synchronize()
            return self.torch.cuda.max_memory_allocated()
        return _status_kib("VmHWM") * 1024


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _warm_up_torch() -> None:
    """Run the kinds of kernels a denoiser runs (conv, group norm, attention, linear, backward) once, so that their
    lazy initialisation is in the baseline, not in the model's growth."""
    import torch

    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    y = torch.nn.functional.conv2d(x, torch.randn(8, 8, 3, 3), padding=1)
    y = torch.nn.functional.group_norm(y, 4).flatten(2).transpose(1, 2)
    y = torch.nn.functional.scaled_dot_product_attention(y, y, y)
    torch.nn.functional.linear(y, torch.randn(8, 8)).sum().backward()


def measured(case: str, overrides: list[str], warmup_epochs: int) -> dict:
    """Runs in the child process: the case's run, and the peaks (bytes over the baseline) of its phases."""
    import torch

    import drl.images  # noqa: F401  (imported before the baseline: code pages count in the RSS)
    from drl.compose import compose_config
    from drl.rewards.overlap import collect_and_score
    from drl.train import build_context

    cfg = compose_config(overrides)
    if cfg.hardware.num_threads > 0:
        torch.set_num_threads(cfg.hardware.num_threads)
    probe = Peak(cfg.hardware.device)
    _warm_up_torch()
    gc.collect()
    base = probe.now()
    model = CASES[case].build()
    gc.collect()
    weights = probe.now() - base  # on a GPU the model is still on the CPU here: 0, and the sampling peak counts it
    ctx, reward, algorithm = build_context(cfg, model)
    del model
    generator = torch.Generator().manual_seed(cfg.seed)

    def epoch(index: int) -> dict:
        probe.reset()
        before_sampling = probe.now() - base
        batch, _ = collect_and_score(algorithm, ctx.collector, reward, generator, cfg.reward.overlap)
        sampling = probe.peak() - base
        probe.reset()
        before_update = probe.now() - base
        algorithm.update(batch, index)
        update = probe.peak() - base
        return {"before_sampling": before_sampling, "sampling": sampling, "before_update": before_update, "update": update}

    for index in range(warmup_epochs):  # the optimizer's moments, the allocator's and kernels' caches
        epoch(index)
    return derived({"weights": 0 if probe.cuda else weights, **epoch(warmup_epochs)})


# ---------------------------------------------------------------------------------------------- the report
def run_child(config: dict, warmup_epochs: int) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    child = json.dumps({"case": config["case"], "overrides": config["overrides"], "warmup_epochs": warmup_epochs})
    out = subprocess.run([sys.executable, __file__, "--child", child], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"the run of {config['case']} {config['algorithm']} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


PHASES = {  # row -> (what it compares, held to the tolerance)
    "peak_over_built": ("the run's peak over the memory once the model is built, trained parts, optimizer state and "
                        "all (after the warm-up epochs): the issue's measure", True),
    "sampling_added": ("the sampling's peak over the memory at its start: the plan's sampling lines + the rollout", True),
    "update_added": ("the update's peak over the memory at its start: the plan's update lines", True),
    "weights": ("the networks' weights: RSS growth while they are built (CPU only; tiny models: Python objects)", False),
    "sampling": ("the sampling's peak over the memory before the model was built", False),
    "update": ("the update's peak over the memory before the model was built", False),
    "peak": ("the larger of the two: on the CPU with the run's Python objects (tens of MiB) the plan leaves out", False),
}


def derived(measure: dict) -> dict:
    """The compared figures from the child's raw ones (bytes over the baseline before the model was built)."""
    peak = max(measure["sampling"], measure["update"])
    return {**measure, "peak": peak, "peak_over_built": peak - measure["before_sampling"],
            "sampling_added": measure["sampling"] - measure["before_sampling"],
            "update_added": measure["update"] - measure["before_update"]}


def rows(config: dict, plan: dict, measure: dict) -> list[dict]:
    measure = derived(measure)
    phases = [p for p in PHASES if p != "weights" or measure["weights"]]
    if config["algorithm"] == "alignprop":  # it samples inside its update (with gradients): no sampling phase
        phases = [p for p in phases if not p.startswith("sampling")]
    return [{"case": config["case"], "algorithm": config["algorithm"], "checkpointing": config["checkpointing"],
             "phase": p, "plan_mib": plan[p] / MiB, "measured_mib": measure[p] / MiB, "checked": PHASES[p][1],
             "ratio": measure[p] / plan[p] if plan[p] else float("nan")} for p in phases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs="+", choices=list(CASES), default=["tiny", "small"])
    parser.add_argument("--algorithm", nargs="+", choices=["ddpo", "alignprop"], default=["ddpo", "alignprop"])
    parser.add_argument("--checkpointing", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--device", default="cpu", help="cpu (peak RSS) or cuda (torch.cuda.max_memory_allocated)")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="epochs run before the measured one")
    parser.add_argument("--tolerance", type=float, default=0.2, help="the largest |measured / plan - 1| that passes")
    parser.add_argument("--json", help="write the rows and the runs' measurements to this file")
    parser.add_argument("--replan", help="plan again for the runs measured in this --json file, without running them")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # JSON arguments of measured()
    args, overrides = parser.parse_known_args()
    args.overrides = [o for o in overrides if o != "--"]
    if args.child:
        print(json.dumps(measured(**json.loads(args.child))))
        return
    if args.replan and not os.path.isfile(args.replan):
        raise SystemExit(f"--replan: no such file {args.replan!r} (a --json file of an earlier check).")
    if args.device not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda, not {args.device!r}.")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device here.")
    if args.replan:  # earlier measurements (a --json file), planned again: the plan's code changed, the runs did not
        with open(args.replan) as f:
            runs = json.load(f)["runs"]
    else:
        runs = [{"config": config, "measured": None} for config in configurations(args)]
    table = []
    print(f"{'case':<6} {'algorithm':<10} {'ckpt':<4} {'phase':<14} {'plan MiB':>10} {'measured MiB':>13} {'ratio':>6}", flush=True)
    for run in runs:
        config = run["config"]
        plan = planned(config["case"], config["overrides"])
        run["measured"] = run["measured"] or run_child(config, args.warmup_epochs)
        for row in rows(config, plan, run["measured"]):
            table.append(row)
            print(f"{row['case']:<6} {row['algorithm']:<10} {'on' if row['checkpointing'] else 'off':<4} {row['phase']:<14} "
                  f"{row['plan_mib']:>10.1f} {row['measured_mib']:>13.1f} {row['ratio']:>6.2f}{'' if row['checked'] else '  (shown)'}",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": table, "runs": runs}, f, indent=1)
    checked = [r for r in table if r["checked"]]
    off = [r for r in checked if abs(r["ratio"] - 1) > args.tolerance]
    for phase, (what, held) in PHASES.items():
        print(f"  {phase:<16}{what}{'' if held else ' (shown, not held to the tolerance)'}")
    if off:
        print(f"{len(off)} of {len(checked)} checked figures are off by more than {args.tolerance:.0%}.")
        sys.exit(1)
    print(f"all {len(checked)} checked figures within {args.tolerance:.0%} of the plan.")


if __name__ == "__main__":
    main()
