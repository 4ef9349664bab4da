"""The plan as text: the lines, the two phases, what fits on 24, 48 and 80 GB cards, and what to turn on."""

from __future__ import annotations

from drl.plan.budget import CARDS_GB, count, DEVICE_RESERVE, GiB, Line, MemoryPlan, memory_plan, with_overrides


def _gib(nbytes: int) -> str:
    return f"{nbytes / GiB:8.2f} GiB" if nbytes >= GiB / 10 else f"{nbytes / 2**20:8.2f} MiB"


def _rows(lines: list[Line]) -> list[str]:
    return [f"  {line.what:<44}{_gib(line.bytes)}   {line.note}" for line in lines]


def format_plan(plan: MemoryPlan, advice: dict[int, str] | None = None) -> str:
    gpus = f"per GPU, FSDP over {plan.world_size}" if plan.world_size > 1 else "per GPU"
    out = [
        f"Memory plan: {plan.model} ({count(plan.denoiser_params)} denoiser parameters, {count(plan.trainable_params)} trained), {gpus}",
        f"  sized from {plan.source}; built and traced on the meta device",
        "resident (all run long):",
        *_rows(plan.resident),
        "sampling (the largest of):",
        *_rows(plan.sampling),
        "update (on top of the resident):",
        *_rows(plan.update),
        f"  activations without / with model.gradient_checkpointing: {plan.activations_without_checkpointing / GiB:.2f} / "
        f"{plan.activations_with_checkpointing / GiB:.2f} GiB",
        f"peak: {plan.peak / GiB:.2f} GiB ({'update' if plan.update_peak >= plan.sampling_peak else 'sampling'}); "
        f"sampling {plan.sampling_peak / GiB:.2f} GiB, update {plan.update_peak / GiB:.2f} GiB",
        f"fits (peak + {DEVICE_RESERVE / GiB:.0f} GiB for the CUDA context and allocator slack):",
    ]
    for card in CARDS_GB:
        verdict = "fits" if plan.fits(card) else "does not fit"
        line = f"  {card:>2} GB card: {verdict}"
        if advice and card in advice:
            line += f"; {advice[card]}"
        out.append(line)
    return "\n".join(out)


# Options tried in this order, each kept once it is on: cheap in speed first, then in what the run learns.
def _steps(cfg) -> list[tuple[str, dict]]:
    m, hw, t = cfg.model, cfg.hardware, cfg.train
    steps = []
    if not m.gradient_checkpointing:
        steps.append(("model.gradient_checkpointing=true", {"model": {"gradient_checkpointing": True}}))
    if not m.text_encoder_offload:
        steps.append(("model.text_encoder_offload=true", {"model": {"text_encoder_offload": True}}))
    if hw.mixed_precision == "no":
        steps.append(("hardware.mixed_precision=bf16", {"hardware": {"mixed_precision": "bf16"}}))
    if m.finetune == "full":
        steps.append(("model.finetune=lora", {"model": {"finetune": "lora"}}))
    batch = t.batch_size
    while batch > 1:
        batch //= 2
        steps.append((f"train.batch_size={batch}", {"train": {"batch_size": batch, "sample_batch_size": min(t.sample_batch_size or t.batch_size, batch)}}))
    if t.samples_per_epoch > 8:
        steps.append(("train.samples_per_epoch=8 (the rollout stays on the GPU)", {"train": {"samples_per_epoch": 8}}))
    for n in (2, 4, 8):
        if n > hw.num_processes * hw.num_nodes:
            steps.append((f"hardware.sharding=fsdp hardware.num_processes={n}",
                          {"hardware": {"sharding": "fsdp", "num_processes": n, "num_nodes": 1}}))
    return steps


def advise(cfg, plan: MemoryPlan, replan=memory_plan) -> dict[int, str]:
    """For each card the run does not fit: the options (in _steps' order) that make it fit, or that nothing does."""
    advice: dict[int, str] = {}
    missing = [card for card in CARDS_GB if not plan.fits(card)]
    if not missing:
        return advice
    chosen: dict[str, str] = {}  # option key -> its setting: a later step of the same key (a smaller batch) replaces it
    merged: dict[str, dict] = {}
    for name, change in _steps(cfg):
        chosen[name.split("=")[0]] = name
        for group, values in change.items():
            merged[group] = {**merged.get(group, {}), **values}
        trial = replan(with_overrides(cfg, **merged))
        for card in list(missing):
            if trial.fits(card):
                advice[card] = f"turn on {' '.join(chosen.values())} ({trial.peak / GiB:.1f} GiB)"
                missing.remove(card)
        if not missing:
            break
    for card in missing:
        advice[card] = "no option of the plan makes it fit: more GPUs with FSDP, or a smaller model"
    return advice
