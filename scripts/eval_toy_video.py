"""How well a toy text-to-video model follows its prompts: the video classifier's accuracy on its clips.

Samples one clip (or --repeats clips) for each of the 90 toy video prompts (fixed noise, deterministic DDIM)
and reports the fraction whose colour, shape and motion the shipped video classifier reads as prompted
(chance: 1/6, 1/3, 1/5), and the per-frame colour and shape accuracy of the image classifier (the guard against reward hacking).

It also prints how far apart the text encoder keeps the prompts' colours, shapes and motions (a collapsed
motion word cannot be followed, whatever the denoiser learns), and how much the denoiser reads each word: its
L_simple on real renders with that word made wrong, over the loss with the right prompt (1.0: ignored).

Then the checks that are not classifiers (so reward hacking cannot fool them through the same pixels),
each beside the same numbers for the base model and for real renders of the 90 prompts: the fraction of
background-grey pixels and the high-frequency energy per frame (drl/rewards/pixel_stats.py), and for a
fine-tuned model its KL-to-base surrogate at its own clips (drl/algorithms/regularization.py).

    python scripts/eval_toy_video.py                                   # the shipped base model
    python scripts/eval_toy_video.py --model outputs/<date>/<time>/model  # a fine-tuned one
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing the package

import torch  # noqa: E402

BASE_MODEL = "drl:toy_t2v"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=BASE_MODEL, help="t2v save_pretrained directory (default: the shipped one)")
    parser.add_argument("--base", default=BASE_MODEL, help="the base model it was fine-tuned from (for the comparisons)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps (eta 0)")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1: none)")
    parser.add_argument("--repeats", type=int, default=1, help="clips per prompt (different noise)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def pixel_statistics(clips: torch.Tensor) -> str:
    """clips [n, F, 3, H, W] in [0, 1] -> 'background x.xx ± s.e., high-frequency y ± s.e.' over the clips."""
    from drl.rewards.pixel_stats import background_fraction, high_frequency_energy, per_frame

    parts = []
    for name, statistic in (("background", background_fraction), ("high-frequency", high_frequency_energy)):
        values = per_frame(statistic, clips)  # [n]
        parts.append(f"{name} {float(values.mean()):.4f} ± {float(values.std() / len(values) ** 0.5):.4f}")
    return ", ".join(parts)


def motion_check(clips: torch.Tensor, scenes) -> str:
    """The non-classifier motion check on the clips of moving prompts: centroid direction accuracy ± s.e."""
    from drl.rewards.pixel_stats import centroid_direction_accuracy
    from drl.toyworld.video import MOTION_DIRECTIONS

    moving = [k for k, scene in enumerate(scenes) if scene.motion != "standing still"]
    directions = torch.tensor([MOTION_DIRECTIONS[scenes[k].motion] for k in moving])  # [M, 2]
    correct = centroid_direction_accuracy(clips[moving], directions)  # [M]
    return f"centroid moves as prompted {float(correct.mean()):.2f} ± {float(correct.std() / len(correct) ** 0.5):.2f} (chance 0.25)"


def kl_to_base(model, base, collector, batch, seed: int) -> float:
    """The training's KL-to-reference surrogate, mean_d (out_θ - out_base)² at forward-noised copies of the
    model's own final latents (one random t each), averaged over the clips."""
    import contextlib
    from types import SimpleNamespace

    from drl.algorithms.regularization import denoising_kl

    ctx = SimpleNamespace(schedule=collector.schedule, model=model, autocast=contextlib.nullcontext)
    reference = lambda x_t, t, cond: base.denoise(x_t, t, cond)  # noqa: E731
    x0 = batch.latents[:, -1]  # [n, C, F, h, w]
    return float(denoising_kl(ctx, reference, x0, batch.cond, torch.Generator().manual_seed(seed)).mean())


def caption_sensitivity(model, schedule, scenes, clips: torch.Tensor, seed: int) -> dict[str, float]:
    """How much the denoiser reads each prompt word: L_simple on real renders with one attribute's word swapped
    for a random wrong one, over L_simple with the right prompt (same x_t, t). 1.0: the word is ignored.
    "direction" swaps a moving clip's direction for another direction (on the moving clips only): a denoiser can
    read "moving" against "standing still" (frames alike or not) and still ignore which way.

    scenes: n toy scenes; clips: their renders [n, F, 3, H, W] in [-1, 1]. Returns {attribute: ratio}.
    """
    import numpy as np

    from drl.sampling import add_noise, sample_training_timesteps, training_target
    from drl.toyworld.video import MOTIONS, VIDEO_ATTRIBUTES

    generator, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    x0 = model.clips_to_latents(clips)  # [n, C, F, H, W]
    t = sample_training_timesteps(schedule, len(scenes), generator)  # [n]
    noise = torch.randn(x0.shape, generator=generator)
    x_t, target = add_noise(schedule, x0, noise, t), training_target(schedule, x0, noise, t)

    def loss(prompts: list[str], keep: list[int]) -> float:
        prediction = model.denoise(x_t[keep], t[keep], model.encode_prompts([prompts[k] for k in keep]))
        return float(((prediction - target[keep]) ** 2).mean())

    def swapped(name: str, values) -> list[str]:
        return [s.replace(**{name: rng.choice([v for v in values if v != getattr(s, name)])}).prompt for s in scenes]

    right, every = [s.prompt for s in scenes], list(range(len(scenes)))
    ratios = {name: loss(swapped(name, values), every) / loss(right, every) for name, values in VIDEO_ATTRIBUTES.items()}
    moving = [k for k, s in enumerate(scenes) if s.motion != "standing still"]
    ratios["direction"] = loss(swapped("motion", [m for m in MOTIONS if m != "standing still"]), moving) / loss(right, moving)
    return ratios


@torch.no_grad()
def main() -> None:
    from drl.models.t2i import resolve_path
    from drl.models.loading import load_t2v
    from drl.rollout import RolloutCollector
    from drl.sampling import make_schedule
    from drl.toyworld.classifier import attribute_targets, load_classifier
    from drl.toyworld.video import (
        TOY_FRAMES,
        TOY_RESOLUTION,
        VIDEO_ATTRIBUTES,
        all_video_scenes,
        attribute_spread,
        load_video_classifier,
        stack_frames,
    )

    args = parse_args()
    torch.set_num_threads(args.threads)
    model = load_t2v(resolve_path(args.model), TOY_FRAMES)
    schedule = make_schedule(model.make_scheduler("ddim"), args.steps)
    collector = RolloutCollector(
        model, schedule, eta=0.0, guidance_scale=args.guidance, batch_size=45, resolution=TOY_RESOLUTION, device=torch.device("cpu")
    )
    spreads = {name: attribute_spread(model, name) for name in VIDEO_ATTRIBUTES}
    print("text encoder, mean distance between prompts that differ in one word: " + ", ".join(f"{k} {v:.2f}" for k, v in spreads.items()))
    scenes = all_video_scenes() * args.repeats
    prompts = [s.prompt for s in scenes]
    batch = collector.collect(prompts, [{} for _ in prompts], torch.Generator().manual_seed(args.seed))
    clips = batch.samples  # [90 * repeats, F, 3, H, W] in [0, 1]

    video_classifier = load_video_classifier(resolve_path("drl:toy_video_classifier"))
    logits = video_classifier(stack_frames(clips * 2 - 1))  # clips [n, F, 3, H, W] in [0, 1]
    targets = attribute_targets(scenes, VIDEO_ATTRIBUTES)
    for name, values in VIDEO_ATTRIBUTES.items():
        correct = (logits[name].argmax(-1) == targets[name]).float()  # [n]
        se = correct.std() / len(correct) ** 0.5
        print(f"video classifier {name:>7}: {correct.mean():.2f} ± {se:.2f}  (chance {1 / len(values):.2f})")

    image_classifier = load_classifier(resolve_path("drl:toy_classifier"))
    frames = torch.nn.functional.interpolate(clips.flatten(0, 1) * 2 - 1, size=32, mode="bilinear")  # [n*F, 3, 32, 32]
    frame_logits = image_classifier(frames)
    for name in ("colour", "shape"):
        target = targets[name].repeat_interleave(clips.shape[1])
        accuracy = (frame_logits[name].argmax(-1) == target).float().mean()
        print(f"image classifier per frame {name:>6}: {accuracy:.2f}")

    import numpy as np

    from drl.toyworld.video import sample_clips

    renders, _ = sample_clips(len(scenes), np.random.default_rng(args.seed), TOY_RESOLUTION, TOY_FRAMES, scenes)
    print(f"pixels, real renders:  {pixel_statistics((renders + 1) / 2)}; {motion_check((renders + 1) / 2, scenes)}")
    model.denoiser.eval()
    ratios = caption_sensitivity(model, schedule, scenes, renders, args.seed)
    print("denoising loss on renders with one wrong word / with the right prompt (direction: moving clips only): " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    if args.model != args.base:
        base = load_t2v(resolve_path(args.base), TOY_FRAMES)
        base_collector = RolloutCollector(base, schedule, eta=0.0, guidance_scale=args.guidance, batch_size=45, resolution=TOY_RESOLUTION, device=torch.device("cpu"))
        base_clips = base_collector.collect(prompts, [{} for _ in prompts], torch.Generator().manual_seed(args.seed)).samples
        print(f"pixels, base model:    {pixel_statistics(base_clips)}; {motion_check(base_clips, scenes)}")
    print(f"pixels, this model:    {pixel_statistics(clips)}; {motion_check(clips, scenes)}")
    if args.model != args.base:
        print(f"KL-to-base surrogate at this model's clips: {kl_to_base(model, base, collector, batch, args.seed):.4g}")


if __name__ == "__main__":
    main()
