"""Peak memory of one AlignProp update as the chain grows, with and without checkpointing.

Each configuration runs in a fresh process (peak RSS cannot be reset inside one), which
loads the model, warms up, then runs one full-backprop update (truncation=all). It reports
the growth of the peak resident set size over the peak before the update (glibc told to
return freed blocks at once, see below); on a GPU (`-- hardware=gpu`), the growth of
torch.cuda.max_memory_allocated as well, and "OOM" where the update ran out of GPU memory;
and the update's wall time (one run, after a warm-up sampling pass: an indication, not a benchmark).

    python scripts/bench_alignprop_memory.py                      # toy t2i: steps 5 10 20 50, batch 8
    python scripts/bench_alignprop_memory.py --steps 5 50 --batch-size 4
    python scripts/bench_alignprop_memory.py --video              # toy_t2v: frame subsetting x checkpointing
    python scripts/bench_alignprop_memory.py --video --modelscope-size --batch-size 1 --frames 16 --steps 10 \
        -- hardware=gpu                                           # ModelScope-sized random weights, 256 px, on a GPU
    python scripts/bench_alignprop_memory.py --video --model-path /models/modelscope -- hardware=gpu

--video measures one AlignProp update of a text-to-video model (truncation=all; the first of
--steps) on a per-frame reward, scoring K=2 random frames (VADER's subsetting) or all of
them, with and without checkpointing every denoiser call. The default model is the shipped
pixel-space toy_t2v (reward frames_toy_object); --model-path takes a ModelScope-layout
directory and --modelscope-size builds one first, with random weights at the size of
ali-vilab/text-to-video-ms-1.7b (UNet3DConditionModel's defaults are that model's config, SD's
VAE, a 1024-wide 23-layer CLIP text encoder), since nothing can be downloaded here; these use
the differentiable frames_toy_aesthetic reward, which reads any resolution, and LoRA.
Arguments after `--` are drl-train overrides for every configuration (hardware=gpu, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def measure(num_steps: int, checkpoint: bool, batch_size: int, video: dict | None, overrides: list[str]) -> dict:
    """Runs in the child process: one AlignProp update, returns peak memory figures in MiB.

    video=None: the toy image model; else {"frames", "frame_subset" (0: all), "model_path" (None: toy_t2v)}.
    """
    import torch
    from drl.compose import compose_config
    from drl.train import build_context

    base = [
        "logger=none", "algorithm=alignprop", "reward=toy_alignment", "algorithm.truncation=all",
        f"algorithm.checkpoint_denoiser={str(checkpoint).lower()}", f"scheduler.num_steps={num_steps}",
        f"train.samples_per_epoch={batch_size}", f"train.batch_size={batch_size}",
    ]
    if video is not None:
        if video["model_path"] is None:
            base += ["model=toy_t2v", "reward=frames_object"]
        else:
            base += ["model=modelscope_t2v", f"model.path={video['model_path']}", "reward=frames_toy_aesthetic"]
        base += [f"model.num_frames={video['frames']}", f"reward.frame_subset={video['frame_subset']}"]
    cfg = compose_config(base + overrides)
    ctx, _, algorithm = build_context(cfg)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # warm-up: allocator pools and lazy inits happen before the baseline
        ctx.collector.collect(ctx.prompts.first(batch_size), [{}] * batch_size, generator)
    cuda = ctx.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated()
    before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    try:
        algorithm.update(algorithm.collect(generator), epoch=0)
    except torch.OutOfMemoryError:
        return {"oom": True}
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start  # sampling the chain with grad + the reward + backward + step
    after_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"peak_rss_growth_mib": (after_rss - before_rss) / 1024, "peak_rss_mib": after_rss / 1024, "update_s": seconds}
    if cuda:
        result["cuda_peak_growth_mib"] = (torch.cuda.max_memory_allocated() - before) / 2**20
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def build_modelscope_sized(directory: str) -> str:
    """Random components at ModelScope text-to-video 1.7B's size, saved in its diffusers layout."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from drl.models.t2v import T2VModel
    from drl.testing.tiny import SD_SCHEDULER, build_clip_tokenizer

    tokenizer = build_clip_tokenizer(max_length=77)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
        num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    denoiser = UNet3DConditionModel(sample_size=32)  # the defaults are ModelScope's config (320-1280 wide, 1024 cross-attn)
    vae = AutoencoderKL(  # Stable Diffusion's VAE config (ModelScope uses it)
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=256,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    T2VModel(tokenizer, text_encoder, denoiser, dict(DDIMScheduler(**SD_SCHEDULER).config), vae=vae).save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="chain lengths (default 5 10 20 50; --video: 10)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--video", action="store_true", help="a text-to-video model: frame subsetting x checkpointing")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (--video)")
    parser.add_argument("--model-path", default=None, help="a ModelScope-layout directory (--video; default toy_t2v)")
    parser.add_argument("--modelscope-size", action="store_true", help="build random ModelScope-1.7B-sized weights first")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # JSON arguments of measure()
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"]
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return
    # glibc keeps freed heap blocks in the process, so without this the RSS peak counts memory
    # that autograd already released; with mmap for blocks >= 64 KiB (every activation here) it
    # returns them at once and the RSS peak tracks the live tensors.
    child_env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}

    def run_child(steps: int, checkpoint: bool, video: dict | None = None) -> dict:
        child = dict(num_steps=steps, checkpoint=checkpoint, batch_size=args.batch_size, video=video, overrides=overrides)
        out = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(child)], capture_output=True, text=True, env=child_env
        )
        if out.returncode != 0:
            raise SystemExit(f"configuration {child} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    if args.video:
        with tempfile.TemporaryDirectory() as scratch:
            model_path = build_modelscope_sized(scratch) if args.modelscope_size else args.model_path
            video_table(run_child, args, model_path)
        return
    steps_list = args.steps or [5, 10, 20, 50]
    rows = {(c, s): run_child(s, c) for c in (True, False) for s in steps_list}
    for key in memory_keys(rows.values()):
        print(f"one AlignProp update (truncation=all, batch {args.batch_size}), {key}:")
        print(f"{'steps':>6} {'checkpointing':>14} {'no checkpointing':>17}")
        for steps in steps_list:
            print(f"{steps:>6} {cell(rows[(True, steps)], key):>14} {cell(rows[(False, steps)], key):>17}")
    first, last = steps_list[0], steps_list[-1]
    key = memory_keys(rows.values())[0]
    for checkpoint in (True, False):
        if key in rows[(checkpoint, last)] and key in rows[(checkpoint, first)]:
            ratio = rows[(checkpoint, last)][key] / max(rows[(checkpoint, first)][key], 1e-9)
            print(f"{'with' if checkpoint else 'without'} checkpointing: peak at {last} steps / peak at {first} steps = {ratio:.2f}")


def memory_keys(rows) -> list[str]:
    """The figures to tabulate: on a GPU the CUDA allocator's peak growth first, then the RSS growth."""
    cuda = any("cuda_peak_growth_mib" in r for r in rows)
    memory = ["cuda_peak_growth_mib", "cuda_peak_mib", "peak_rss_growth_mib"] if cuda else ["peak_rss_growth_mib"]
    return memory + ["update_s"]


def cell(row: dict, key: str) -> str:
    return "OOM" if row.get("oom") else f"{row[key]:.2f}" if key == "update_s" else f"{row[key]:.1f}"


def video_table(run_child, args, model_path: str | None) -> None:
    """Peak memory of one text-to-video AlignProp update: reward on K=2 of the frames or all, checkpointing on/off."""
    steps = (args.steps or [10])[0]
    rows = {
        (c, k): run_child(steps, c, {"frames": args.frames, "frame_subset": k, "model_path": model_path})
        for c in (True, False)
        for k in (2, 0)
    }
    name = "toy_t2v, reward frames_toy_object" if model_path is None else f"{model_path}, reward frames_toy_aesthetic"
    for key in memory_keys(rows.values()):
        print(f"{name}, {args.frames}-frame clips, one AlignProp update ({steps} steps, truncation=all, batch {args.batch_size}), {key}:")
        print(f"{'frames scored':>14} {'checkpointing':>14} {'no checkpointing':>17}")
        for k, label in ((2, f"2 of {args.frames}"), (0, f"all {args.frames}")):
            print(f"{label:>14} {cell(rows[(True, k)], key):>14} {cell(rows[(False, k)], key):>17}")


if __name__ == "__main__":
    main()
