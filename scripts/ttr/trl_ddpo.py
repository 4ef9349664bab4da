"""trl 0.23.1's DDPOTrainer as shared/tools/trl_anchor's ``ddpo`` runs it, with drl's ``reward=target_colour`` and its
LoRA saved for scripts/time_to_reward.py's paired evaluation. Run it with the trl venv's python (never drl's: the
project does not depend on trl):

    /tmp/trl-venv/bin/python scripts/ttr/trl_ddpo.py --save-lora-dir DIR --save-lora-every K [--target-rgb R G B] \
        <trl_anchor.py ddpo's own options>

- The reward is -mean over (c, y, x) of (pixel - target)² with pixels in [0, 1], drl's target_colour
  (drl/rewards/pixel_stats.py), in place of the anchor's JPEG size.
- After every K-th epoch e (0-based, (e + 1) % K == 0), the UNet's LoRA is written in diffusers' format to
  DIR/epoch<e, 4 digits>/ by trl's own save hook (DefaultDDPOStableDiffusionPipeline.save_checkpoint). The write
  happens inside the anchor's timed epoch, so trl's times include it (stderr prints each write's seconds).
- The anchor is found at --anchor, else $TRL_ANCHOR, else ../shared/tools/trl_anchor/trl_anchor.py beside the checkout.
"""

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

DEFAULT_ANCHOR = Path(__file__).resolve().parents[3] / "shared" / "tools" / "trl_anchor" / "trl_anchor.py"


def load_anchor(path: Path):
    if not path.is_file():
        sys.exit(f"trl_ddpo: no trl anchor at {path}: give --anchor PATH or set TRL_ANCHOR.")
    spec = importlib.util.spec_from_file_location("trl_anchor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def colour_distance(target_rgb):
    """Each image's mean squared distance to the colour; the anchor rewards its negative, drl's target_colour."""
    import torch

    def distances(images):  # images: (B, 3, H, W) in [0, 1]
        target = torch.tensor(target_rgb, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        return ((images.detach().float() - target) ** 2).mean(dim=(1, 2, 3)).tolist()

    return distances


def save_lora_every(directory: Path, every: int):
    """Wraps DDPOTrainer.step: after epoch e with (e + 1) % every == 0, trl's save hook writes the UNet's LoRA."""
    from trl import DDPOTrainer

    step = DDPOTrainer.step

    def step_and_save(self, epoch, global_step):
        global_step = step(self, epoch, global_step)
        if (epoch + 1) % every == 0:
            start = time.perf_counter()
            self.sd_pipeline.save_checkpoint([self.sd_pipeline.unet], [], str(directory / f"epoch{epoch:04d}"))
            print(f"[trl_ddpo] epoch {epoch}: LoRA saved in {time.perf_counter() - start:.3f}s", file=sys.stderr, flush=True)
        return global_step

    DDPOTrainer.step = step_and_save


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchor", type=Path, default=Path(os.environ.get("TRL_ANCHOR", DEFAULT_ANCHOR)))
    parser.add_argument("--save-lora-dir", type=Path, required=True)
    parser.add_argument("--save-lora-every", type=int, default=1)
    parser.add_argument("--target-rgb", type=float, nargs=3, default=[0.0, 0.0, 1.0], help="the colour, in [0, 1]")
    ours, anchor_args = parser.parse_known_args(argv)
    if ours.save_lora_every < 1:
        parser.error("--save-lora-every must be a positive number of epochs.")
    anchor = load_anchor(ours.anchor)
    anchor.jpeg_kb = colour_distance(ours.target_rgb)  # the anchor's ddpo rewards -jpeg_kb(images)
    save_lora_every(ours.save_lora_dir, ours.save_lora_every)
    sys.argv = [str(ours.anchor), "ddpo", *anchor_args]
    anchor.main()


if __name__ == "__main__":
    main()
