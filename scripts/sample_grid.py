"""Sample a grid of images from a model (optionally with a drl checkpoint's weights) and score it.

    python scripts/sample_grid.py --model drl:toy_t2i --out grid.png
    python scripts/sample_grid.py --model drl:toy_t2i --checkpoint outputs/.../checkpoints/last.pt --out after.png
    python scripts/sample_grid.py --model drl:toy_t2i --prompt "a large red circle at the center" -n 8
"""

from __future__ import annotations

import argparse

import torch

from drl.checkpoint import load_checkpoint, load_trainable_state
from drl.logging import image_grid
from drl.models.t2i import load_t2i
from drl.prompts import build_prompt_source
from drl.config import PromptsConfig, RewardConfig
from drl.rewards import build_reward
from drl.rollout import RolloutCollector
from drl.sampling import make_schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="drl:toy_t2i", help="diffusers directory, hub id or drl:<name>")
    parser.add_argument("--checkpoint", help="a drl checkpoint (full fine-tuning) whose weights replace the model's")
    parser.add_argument("--prompt", action="append", help="prompt (repeatable); default: toy-world prompts")
    parser.add_argument("-n", type=int, default=16, help="number of images")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--scheduler", default="ddim", choices=["ddim", "ddpm"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reward", default="toy_alignment", help="reward name to score the grid with ('' for none)")
    parser.add_argument("--out", default="grid.png")
    args = parser.parse_args()

    model = load_t2i(args.model)
    if args.checkpoint:
        weights = load_checkpoint(args.checkpoint)["weights"]
        modules = {"unet": model.unet, "text_encoder": model.text_encoder}
        for name, module in modules.items():
            module.requires_grad_(bool(weights.get(name)))  # load exactly what the checkpoint trained
        load_trainable_state(modules, weights)
    model.unet.eval()
    schedule = make_schedule(model.make_scheduler(args.scheduler), args.steps)
    resolution = model.unet.config.sample_size * (1 if model.vae is None else 8)
    collector = RolloutCollector(
        model, schedule, eta=args.eta, guidance_scale=args.guidance, batch_size=args.n,
        resolution=resolution, device=torch.device("cpu"),
    )
    source = build_prompt_source(PromptsConfig(source="list", prompts=args.prompt) if args.prompt else PromptsConfig())
    prompts = source.first(args.n)
    batch = collector.collect(prompts, [{} for _ in prompts], torch.Generator().manual_seed(args.seed))
    image_grid(batch.samples).save(args.out)
    print(f"wrote {args.out}")
    if args.reward:
        scores, _ = build_reward(RewardConfig(terms={args.reward: 1.0}), torch.device("cpu"))(batch.samples, prompts, [])
        print(f"{args.reward}: mean {float(scores.mean()):+.4f}  (s.e. {float(scores.std() / len(prompts) ** 0.5):.4f})")
        for prompt, score in zip(prompts, scores):
            print(f"  {float(score):+.3f}  {prompt}")


if __name__ == "__main__":
    main()
