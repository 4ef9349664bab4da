"""What a run leaves for people: metrics.jsonl, W&B, reward_curve.png, sample grids."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from drl.config import LoggerConfig


def image_grid(images: torch.Tensor, columns: int | None = None, upscale: int = 4) -> Image.Image:
    """images [N, 3, H, W] in [0, 1] -> one PIL grid, pixels enlarged (nearest) so small images stay legible."""
    n, _, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    pad = 2
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for k, image in enumerate(pixels):
        r, c = divmod(k, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = image
    picture = Image.fromarray(grid)
    return picture.resize((picture.width * upscale, picture.height * upscale), Image.NEAREST)


def frame_strip(clips: torch.Tensor, upscale: int = 4) -> Image.Image:
    """clips [N, F, 3, H, W] in [0, 1] -> one PNG-able picture: a row per clip, a column per frame."""
    n, f = clips.shape[:2]
    return image_grid(clips.reshape(n * f, *clips.shape[2:]), columns=f, upscale=upscale)


def save_clip_grid_gif(clips: torch.Tensor, path: Path, fps: int = 4) -> None:
    """clips [N, F, 3, H, W] -> an animated GIF whose frame f is the grid of every clip's frame f."""
    frames = [image_grid(clips[:, k]) for k in range(clips.shape[1])]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)


def plot_reward_curve(records: list[dict], path: Path) -> None:
    """Mean reward per epoch with a ±1 standard-error band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in records if "reward_mean" in r]
    if not records:
        return
    epochs = np.array([r["epoch"] for r in records])
    mean = np.array([r["reward_mean"] for r in records])
    sem = np.array([r["reward_std"] / math.sqrt(max(1, r.get("samples", 1))) for r in records])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, mean, marker="o", markersize=3)
    ax.fill_between(epochs, mean - sem, mean + sem, alpha=0.3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("reward (mean ± s.e.)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class RunLogger:
    """Rank 0's writer: every call is a no-op on other ranks."""

    def __init__(self, run_dir: Path, cfg: LoggerConfig, config_dict: dict, run_name: str, enabled: bool = True):
        self.run_dir, self.enabled = run_dir, enabled
        self.metrics_path = run_dir / "metrics.jsonl"
        self.wandb = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.backend == "wandb" and cfg.mode != "disabled":
            import wandb

            self.wandb = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                name=run_name,
                tags=list(cfg.tags),
                config=config_dict,
                dir=str(run_dir),
                mode=cfg.mode,
                reinit="finish_previous",
            )

    def records(self) -> list[dict]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def truncate_after(self, epoch: int) -> None:
        """On resume, drop lines of epochs after the checkpoint (they will be redone)."""
        if self.enabled and self.metrics_path.is_file():
            kept = [r for r in self.records() if r.get("epoch", -1) <= epoch]
            self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log(record, step=record["epoch"])

    def log_grid(self, name: str, images: torch.Tensor, prompts: list[str], rewards: torch.Tensor, epoch: int) -> None:
        """images [N, 3, H, W], or clips [N, F, 3, H, W]: then also an animated GIF and a W&B video."""
        if not self.enabled:
            return
        video = images.ndim == 5
        grid = frame_strip(images) if video else image_grid(images)
        grid.save(self.run_dir / f"{name}.png")
        if video:
            save_clip_grid_gif(images.detach().float().cpu(), self.run_dir / f"{name}.gif")
        lines = [f"{k:3d}  {float(r):+.3f}  {p}" for k, (p, r) in enumerate(zip(prompts, rewards))]
        (self.run_dir / f"{name}.txt").write_text(
            f"# {name}: tile (row-major), reward, prompt; mean reward {float(rewards.mean()):+.4f}\n" + "\n".join(lines) + "\n"
        )
        if self.wandb is not None:
            import wandb

            caption = f"mean reward {float(rewards.mean()):.3f}"
            logged = {f"samples/{name}": wandb.Image(grid, caption=caption)}
            if video:
                logged[f"videos/{name}"] = wandb.Video(str(self.run_dir / f"{name}.gif"), caption=caption, format="gif")
            self.wandb.log(logged, step=epoch)

    def log_summary(self, values: dict, epoch: int) -> None:
        """Run-level figures (e.g. evaluation before/after) into the W&B summary; files hold them too."""
        if self.enabled and self.wandb is not None:
            self.wandb.summary.update(values)

    def log_image(self, name: str, path: Path, epoch: int) -> None:
        if self.enabled and self.wandb is not None:
            import wandb

            self.wandb.log({f"samples/{name}": wandb.Image(str(path))}, step=epoch)

    def log_video(self, name: str, path: Path, epoch: int) -> None:
        if self.enabled and self.wandb is not None:
            import wandb

            self.wandb.log({f"videos/{name}": wandb.Video(str(path), format="gif")}, step=epoch)

    def finish(self) -> None:
        if not self.enabled:
            return
        plot_reward_curve(self.records(), self.run_dir / "reward_curve.png")
        if self.wandb is not None:
            import wandb

            curve = self.run_dir / "reward_curve.png"
            if curve.is_file():
                self.wandb.log({"reward_curve": wandb.Image(str(curve))})
            self.wandb.finish()
            self.wandb = None
