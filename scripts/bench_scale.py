"""drl at Stable Diffusion scale: random weights in the real architectures, timed through drl's own code.

For each family (SD1.5 UNet at 512 px / 64x64 latents, SDXL at 1024 px, an SD3.5-medium-sized
transformer at 512 px) it builds the denoiser, VAE and CLIP text encoders at their published sizes
with random weights (nothing can be downloaded; speed and memory do not depend on the values),
puts LoRA on the denoiser as the model configs do, and measures through drl.train.build_context:

  ddpo_sample   RolloutCollector.collect of --samples prompts (guidance on: 2 denoiser passes a step)
  ddpo_update   DDPO.update on that batch (every stochastic step, one inner epoch)
  alignprop     one AlignProp update with gradients through every step (truncation=all), with and
                without checkpointing each denoiser call, for each of --alignprop-steps

Each figure is the median of --repeats timed runs after a warm-up. FLOPs are counted in that
warm-up with torch.utils.flop_counter (the same call, untimed), so the MFU column is
achieved FLOP/s over the device's dense bf16 peak (known GPUs, or --peak-tflops; blank on a CPU).
Peak memory is torch.cuda.max_memory_allocated (GPU only). SD3.5 runs without its T5 encoder
(drl feeds zeros in its place, as diffusers does when it is dropped): it only conditions.

    python scripts/bench_scale.py --device cuda                       # all three at full resolution, bf16
    python scripts/bench_scale.py --device cpu --families sd15 --resolution 128 --steps 4 --samples 2
    python scripts/bench_scale.py --smoke                             # tiny models on the CPU (the tests)

Writes a markdown table to stdout and every figure to --out (JSON).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "4090": 165.0}
"""Dense bf16 tensor-core peaks (vendor datasheets), matched against torch.cuda.get_device_name()."""

FULL_RESOLUTION = {"sd15": 512, "sdxl": 1024, "sd3": 512}


# ---------------------------------------------------------------- real-size random models
def _clip_text(tokenizer, hidden: int, layers: int, heads: int, projection: int | None, act: str):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=77, projection_dim=projection or hidden, hidden_act=act,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _sd_vae(latent_channels: int = 4, **kw):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, **kw,
    )


def build_real_size(family: str):
    """SD1.5 / SDXL-base / SD3.5-medium component sizes (their published configs), random weights."""
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, UNet2DConditionModel

    from drl.models.sd3 import SD3Model
    from drl.models.sdxl import SDXLModel
    from drl.models.t2i import T2IModel
    from drl.testing.tiny import SD_SCHEDULER, build_clip_tokenizer

    tok = build_clip_tokenizer(77)  # character-level: the embedding table is smaller than CLIP's, nothing else
    clip_l = lambda projection=None: _clip_text(tok, 768, 12, 12, projection, "quick_gelu")  # noqa: E731
    clip_g = lambda: _clip_text(tok, 1280, 32, 20, 1280, "gelu")  # noqa: E731
    ddim = dict(DDIMScheduler(**SD_SCHEDULER).config)
    if family == "sd15":
        denoiser = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # diffusers' defaults are SD1.x's
        return T2IModel(tok, clip_l(), denoiser, ddim, _sd_vae(scaling_factor=0.18215))
    if family == "sdxl":
        denoiser = UNet2DConditionModel(
            sample_size=128, block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        )
        return SDXLModel(tok, clip_l(), denoiser, ddim, _sd_vae(scaling_factor=0.13025), text_encoder_2=clip_g(), tokenizer_2=tok)
    if family == "sd3":
        transformer = SD3Transformer2DModel(
            sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
            num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
            pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm",
        )
        vae = _sd_vae(16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
        flow = dict(FlowMatchEulerDiscreteScheduler(shift=3.0).config)
        return SD3Model(tok, clip_l(768), transformer, flow, vae, text_encoder_2=clip_g(), tokenizer_2=tok)
    raise ValueError(f"unknown family {family!r}: sd15, sdxl or sd3")


# ---------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> tuple[float, object, float]:
    """(median seconds of ``repeats`` calls after one warm-up, the last call's result, the FLOPs of one call).

    The FLOPs (forward and backward) are counted by torch.utils.flop_counter during the untimed warm-up,
    which runs the same kernels: at full size on a CPU a call takes minutes, and counting costs no extra one.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        result = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result, float(counter.get_total_flops())


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in GPU_PEAK_TFLOPS.items() if key in name), None)


def throughput(seconds: float, flops: float, peak: float | None) -> dict:
    tflops = flops / seconds / 1e12
    return {"seconds": seconds, "tflops_per_s": tflops, "mfu": None if peak is None else tflops / peak}


# ------------------------------------------------------------------------- one family
def bench_family(family: str, args: argparse.Namespace) -> dict:
    from drl.algorithms import IMAGES, algorithm_class
    from drl.compose import compose_config as compose
    from drl.testing.tiny import BUILDERS
    from drl.rewards import build_reward
    from drl.sampling import make_schedule
    from drl.runtime import seed_everything
    from drl.train import build_context

    device = torch.device(args.device)
    resolution = args.resolution or (16 if args.smoke else FULL_RESOLUTION[family])
    common = [
        "logger=none", f"model={family}", "model.finetune=lora", f"model.resolution={resolution}",
        f"hardware.device={args.device}", f"hardware.mixed_precision={args.precision}",
        f"scheduler.num_steps={args.steps}", f"scheduler.guidance_scale={args.guidance}",
        f"train.samples_per_epoch={args.samples}", f"train.batch_size={args.train_batch}",
        f"train.sample_batch_size={args.samples}", *(["scheduler=flow"] if family == "sd3" else []),
    ]
    seed_everything(0)
    model = BUILDERS[family]() if args.smoke else build_real_size(family)
    model.resolution = resolution
    cfg = compose([*common, "algorithm=ddpo", "reward=jpeg_compressibility", "algorithm.timestep_fraction=1.0"])
    ctx, reward, ddpo = build_context(cfg, model=model)
    peak = peak_tflops(device, args.peak_tflops)
    result = {
        "family": family, "resolution": resolution, "latent_shape": list(ctx.collector.latent_shape),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "precision": args.precision,
        "denoiser_params_m": sum(p.numel() for p in model.denoiser.parameters()) / 1e6,
        "lora_params_m": sum(p.numel() for p in ctx.params) / 1e6,
        "steps": args.steps, "samples": args.samples, "train_batch": args.train_batch, "peak_tflops": peak,
    }

    # ------------------------------------------------------------- DDPO: sampling, update
    def sample():
        return ctx.collector.collect(*ctx.prompts.sample(args.samples, torch.Generator().manual_seed(0)), torch.Generator().manual_seed(1))

    seconds, batch, flops = timed(sample, args.repeats, device)
    result["ddpo_sample"] = {**throughput(seconds, flops, peak), "samples_per_s": args.samples / seconds}
    progress(family, "DDPO sampling", seconds)
    batch.rewards, _ = reward(batch.samples, batch.prompts, batch.metadata)
    weights = {k: v.clone() for k, v in model.denoiser.state_dict().items() if "lora" in k}
    optimizer_state = copy.deepcopy(ddpo.optimizer.state_dict())

    def update():
        ddpo.update(batch, epoch=0)
        model.denoiser.load_state_dict(weights, strict=False)  # every repeat starts from the same adapters
        ddpo.optimizer.load_state_dict(optimizer_state)

    seconds, _, flops = timed(update, args.repeats, device)
    pairs = args.samples * int(batch.stochastic.sum())
    result["ddpo_update"] = {**throughput(seconds, flops, peak), "pairs_per_s": pairs / seconds}
    progress(family, "DDPO update", seconds)

    # ---------------------------------------------- AlignProp: full backprop through S steps
    result["alignprop"] = []
    for steps in args.alignprop_steps:
        for checkpointing in (True, False):
            ap_cfg = compose([*common, "algorithm=alignprop", "reward=toy_aesthetic", "algorithm.truncation=all",
                              f"algorithm.checkpoint_denoiser={str(checkpointing).lower()}", f"scheduler.num_steps={steps}",
                              f"train.samples_per_epoch={args.train_batch}"])
            schedule = make_schedule(model.make_scheduler(ap_cfg.scheduler.kind), steps)
            collector = copy.copy(ctx.collector)
            collector.schedule = schedule
            ap_ctx = dataclasses.replace(ctx, cfg=ap_cfg, schedule=schedule, collector=collector,
                                         reward=build_reward(ap_cfg.reward, device))
            alignprop = algorithm_class("alignprop", IMAGES)(ap_cfg.algorithm, ap_ctx)
            prompts = alignprop.collect(torch.Generator().manual_seed(2))
            row = {"steps": steps, "checkpoint_denoiser": checkpointing}
            try:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                seconds, _, _ = timed(lambda: alignprop.update(prompts, epoch=0), args.repeats, device)
                row.update(seconds=seconds)
                progress(family, f"AlignProp {steps} steps, checkpointing {checkpointing}", seconds)
                if device.type == "cuda":
                    row["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            except torch.OutOfMemoryError:
                row["oom"] = True
            model.denoiser.load_state_dict(weights, strict=False)
            result["alignprop"].append(row)
    # The process's peak resident memory so far (on a CPU the only memory figure; it includes earlier families).
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def progress(family: str, what: str, seconds: float) -> None:
    """A line on stderr as each figure is taken (a CPU run at full size takes hours)."""
    print(f"{family}: {what}: {seconds:.2f} s", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- report
def markdown(results: list[dict]) -> str:
    def fmt(x, spec=".3g"):
        return "" if x is None else format(x, spec)

    lines = [
        "| family | px | denoiser M | DDPO sample/s | DDPO pairs/s | sample TFLOP/s (MFU) | update TFLOP/s (MFU) | process peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s, u = r["ddpo_sample"], r["ddpo_update"]
        lines.append(
            f"| {r['family']} | {r['resolution']} | {r['denoiser_params_m']:.0f} | {s['samples_per_s']:.3g} | {u['pairs_per_s']:.3g} "
            f"| {s['tflops_per_s']:.3g} ({fmt(s['mfu'], '.1%')}) | {u['tflops_per_s']:.3g} ({fmt(u['mfu'], '.1%')}) | {r['peak_rss_mib']:.0f} |"
        )
    lines += ["", "| family | AlignProp steps | checkpointing | update s | peak MiB |", "|---|---|---|---|---|"]
    for r in results:
        for a in r["alignprop"]:
            time_s = "OOM" if a.get("oom") else f"{a['seconds']:.3g}"
            lines.append(f"| {r['family']} | {a['steps']} | {a['checkpoint_denoiser']} | {time_s} | {fmt(a.get('peak_mib'), '.0f')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["sd15", "sdxl", "sd3"], choices=sorted(FULL_RESOLUTION))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default=None, choices=["no", "bf16", "fp16"], help="default: bf16 on CUDA, no on CPU")
    parser.add_argument("--resolution", type=int, default=None, help="image side (default: each family's own; 16 with --smoke)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps of the DDPO rollout")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=8, help="samples per rollout (one sampling batch)")
    parser.add_argument("--train-batch", type=int, default=4, help="(sample, step) pairs per training call; AlignProp's batch")
    parser.add_argument("--alignprop-steps", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU (known GPUs are looked up)")
    parser.add_argument("--smoke", action="store_true", help="tiny random models of each family on the CPU (seconds)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("bench_scale.json"))
    args = parser.parse_args()
    if args.smoke:
        args.device, args.steps, args.samples, args.train_batch, args.alignprop_steps, args.repeats = "cpu", 2, 2, 2, [2], 1
    if args.precision is None:
        args.precision = "bf16" if args.device.startswith("cuda") else "no"
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = []
    for family in args.families:
        results.append(bench_family(family, args))
        args.out.write_text(json.dumps(results, indent=1) + "\n")  # after each family: a crash keeps the rest
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print(markdown(results))


if __name__ == "__main__":
    main()
