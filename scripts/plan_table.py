"""The memory plan's figures for the real-size families (docs/guide/real-models.md): one row per family and
fine-tuning setting, the per-GPU peak with each memory option added in turn, and what fits on 24, 48 and 80 GB.

Each cell is ``drl-train <family's overrides> <setting> <options> --plan``'s peak, computed in one process (the traced
calls are cached across rows). Nothing is downloaded: the plan builds the shipped real-size configs on the meta device.

    python scripts/plan_table.py                      # every family, as in the guide
    python scripts/plan_table.py --family flux        # one family
"""

from __future__ import annotations

import argparse

BASE = ["hardware.mixed_precision=bf16", "logger=none", "prompts=complex", "train.samples_per_epoch=16", "scheduler.num_steps=10"]
FAMILIES = {  # name -> (what the row says, its overrides)
    "flux": ("FLUX.1-dev, 1024 px", ["model=flux", "model.resolution=1024", "reward=pickscore", "train.batch_size=2"]),
    "flux2": ("FLUX.2-dev, 1024 px", ["model=flux2", "model.resolution=1024", "reward=pickscore", "train.batch_size=2"]),
    "qwen_image": ("Qwen-Image, 1024 px, true CFG 4", ["model=qwen_image", "model.resolution=1024", "reward=pickscore",
                                                      "scheduler.guidance_scale=4", "train.batch_size=2"]),
    "qwen_image_edit": ("Qwen-Image-Edit, 1024 px (source 1024 px), true CFG 4",
                        ["model=qwen_image_edit", "model.resolution=1024", "reward=pickscore", "scheduler.guidance_scale=4",
                         "train.batch_size=2"]),
    "wan22": ("Wan2.2-T2V-A14B, 480 px, 33 frames", ["model=wan22", "reward=frames_aesthetic", "train.batch_size=1"]),
    "wan22_i2v": ("Wan2.2-I2V-A14B, 480 px, 33 frames", ["model=wan22_i2v", "reward=frames_aesthetic", "train.batch_size=1"]),
    "sd3": ("SD3.5-medium, 512 px", ["model=sd3", "scheduler=flow", "reward=pickscore", "train.batch_size=2"]),
    "z_image": ("Z-Image-Turbo, 1024 px", ["model=z_image", "model.resolution=1024", "reward=pickscore", "train.batch_size=2"]),
}
SETTINGS = {
    "LoRA GRPO": ["algorithm=ddpo", "algorithm.group_size=8"],
    "LoRA NFT": ["algorithm=nft", "algorithm.group_size=8"],
    "full GRPO": ["algorithm=ddpo", "algorithm.group_size=8", "model.finetune=full"],
}
OPTIONS = {  # each column adds its options to the previous column's
    "as is": [],
    "+ checkpointing": ["model.gradient_checkpointing=true"],
    "+ text-encoder offload": ["model.gradient_checkpointing=true", "model.text_encoder_offload=true"],
    "+ FSDP over 8": ["model.gradient_checkpointing=true", "model.text_encoder_offload=true", "hardware.sharding=fsdp",
                      "hardware.num_processes=8"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    args = parser.parse_args()

    from drl.compose import compose_config
    from drl.plan.budget import CARDS_GB, GiB, memory_plan

    print("| model | setting | " + " | ".join(f"peak {o}" for o in OPTIONS) + " | smallest card that fits: what to turn on |")
    print("|---|---|" + "---|" * len(OPTIONS) + "---|")
    for family in args.family:
        what, overrides = FAMILIES[family]
        for setting, extra in SETTINGS.items():
            peaks, first_fit = [], {}
            for option, flags in OPTIONS.items():
                plan = memory_plan(compose_config([*BASE, *overrides, *extra, *flags]))
                peaks.append(plan.peak / GiB)
                for card in CARDS_GB:
                    if plan.fits(card) and card not in first_fit:
                        first_fit[card] = option
            fits = "; ".join(f"{card} GB: {first_fit[card]}" for card in CARDS_GB if card in first_fit) or "none"
            print(f"| {what} | {setting} | " + " | ".join(f"{p:.1f}" for p in peaks) + f" | {fits} |", flush=True)


if __name__ == "__main__":
    main()
