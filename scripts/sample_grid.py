"""Sample a grid of images from a model (optionally with a LoRA adapter or a drl checkpoint's weights) and score it.

    python scripts/sample_grid.py --model drl:toy_t2i --out grid.png
    python scripts/sample_grid.py --model drl:toy_t2i --checkpoint outputs/.../checkpoints/last.pt --out after.png
    python scripts/sample_grid.py --model drl:toy_t2i --prompt "a large red circle at the center" -n 8
    python scripts/sample_grid.py --model ~/models/sd15 --lora outputs/.../lora --prompts-file prompts.txt \
        --resolution 512 --steps 50 --guidance 5 --reward "" --out sd15-lora.png
    python scripts/sample_grid.py --model ~/models/sd35 --scheduler flow --eta 0 --lora outputs/.../lora --out sd3.png

One image per prompt (the prompt list is cycled to -n images); the same seed gives the same noise,
so grids of the base model and of base + adapter compare tile by tile.
"""

from __future__ import annotations

import argparse

import torch

from drl.checkpoint import load_checkpoint, load_trainable_state
from drl.config import PromptsConfig, RewardConfig
from drl.errors import user_message
from drl.logging import image_grid
from drl.models.loading import load_t2i
from drl.prompts import build_prompt_source
from drl.rewards import build_reward
from drl.rollout import RolloutCollector
from drl.sampling import make_schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="drl:toy_t2i", help="diffusers directory, hub id or drl:<name>")
    parser.add_argument("--checkpoint", help="a drl checkpoint (full fine-tuning) whose weights replace the model's")
    parser.add_argument("--lora", help="a LoRA adapter directory in diffusers' format (a run's lora/)")
    parser.add_argument("--family", default="auto", choices=["auto", "sd", "sdxl", "sd3"])
    parser.add_argument("--resolution", type=int, help="image side in pixels (default: the model's native size)")
    parser.add_argument("--prompt", action="append", help="prompt (repeatable); default: toy-world prompts")
    parser.add_argument("--prompts-file", help="a text file, one prompt per line")
    parser.add_argument("-n", type=int, default=16, help="number of images")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--scheduler", help="ddim, ddpm or flow (default: the model's first: flow for SD3, else ddim)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reward", default="toy_alignment", help="reward name to score the grid with ('' for none)")
    parser.add_argument("--out", default="grid.png")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_t2i(args.model, args.family)
    if args.lora:  # the denoiser's part of a diffusers LoRA file ("unet." or "transformer." keys)
        prefix = "transformer" if model.LORA_LAYERS_ARG.startswith("transformer") else "unet"
        model.denoiser.load_lora_adapter(args.lora, prefix=prefix, weight_name="pytorch_lora_weights.safetensors")
    if args.checkpoint:
        weights = load_checkpoint(args.checkpoint)["weights"]
        modules = {"unet": model.denoiser, "text_encoder": model.text_encoder}
        for name, module in modules.items():
            module.requires_grad_(bool(weights.get(name)))  # load exactly what the checkpoint trained
        load_trainable_state(modules, weights)
    model.to(device).denoiser.eval()
    schedule = make_schedule(model.make_scheduler(args.scheduler or model.SCHEDULER_KINDS[0]), args.steps)
    model.resolution = args.resolution
    resolution = model.image_size
    collector = RolloutCollector(
        model, schedule, eta=args.eta, guidance_scale=args.guidance, batch_size=min(args.n, 8),
        resolution=resolution, device=device,
    )
    if args.prompts_file:
        prompts_cfg = PromptsConfig(source="file", path=args.prompts_file)
    elif args.prompt:
        prompts_cfg = PromptsConfig(source="list", prompts=args.prompt)
    else:
        prompts_cfg = PromptsConfig()
    source = build_prompt_source(prompts_cfg)
    prompts = source.first(args.n)
    batch = collector.collect(prompts, [{} for _ in prompts], torch.Generator().manual_seed(args.seed))
    image_grid(batch.samples).save(args.out)
    print(f"wrote {args.out}")
    if args.reward:
        scores, _ = build_reward(RewardConfig(terms={args.reward: 1.0}), device)(batch.samples, prompts, [{}] * len(prompts))
        print(f"{args.reward}: mean {float(scores.mean()):+.4f}  (s.e. {float(scores.std() / len(prompts) ** 0.5):.4f})")
        for prompt, score in zip(prompts, scores):
            print(f"  {float(score):+.3f}  {prompt}")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a user's mistake (a bad path, a damaged or unsafe checkpoint): one sentence
        message = user_message(e)
        if message is None:
            raise
        raise SystemExit(f"sample_grid: error: {message}") from None
