"""Prompt-alignment classifier for the toy world: predicts each scene attribute from pixels.

Its summed per-attribute log-probability of the prompt's values is the differentiable
`toy_alignment` reward: gradients flow from the score back to the image pixels.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from drl.toyworld.world import ATTRIBUTES, Scene, sample_images

# (n, rng, resolution) -> (inputs [n, C, H, W] in [-1, 1], scenes): what a classifier is trained on.
Sampler = Callable[[int, np.random.Generator, int], tuple[torch.Tensor, list]]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
RECREATE_COMMAND = "python scripts/train_toy_classifier.py"
HELD_OUT_IMAGES = 2000


class AttributeClassifier(nn.Module):
    """Small CNN (~100k parameters, ~0.4 MB) with one linear head per attribute.

    Four 3x3 conv stages, each halving the resolution after the first (32 -> 16 -> 8 -> 4),
    so the receptive field covers a large shape; with three stages circles, squares and
    triangles were confused (~86% shape accuracy). Two coordinate channels are appended to the input so that global average pooling
    keeps position information (otherwise the pooled features are nearly translation
    invariant and "top left" vs "bottom right" would be hard to tell apart).
    """

    def __init__(
        self,
        attributes: dict[str, tuple[str, ...]] | None = None,
        channels: tuple[int, ...] = (32, 48, 64, 96),
        groups: int = 8,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.attributes = {name: tuple(values) for name, values in (attributes or ATTRIBUTES).items()}
        self.channels = tuple(channels)
        self.groups = groups
        self.in_channels = in_channels  # 3 for RGB images; 3F for clips with their frames stacked (video.py)
        layers: list[nn.Module] = []
        in_channels = in_channels + 2  # + (x, y) coordinates
        for index, out_channels in enumerate(self.channels):
            stride = 1 if index == 0 else 2  # keep full resolution in the stem, then halve
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
                nn.GroupNorm(groups, out_channels),
                nn.SiLU(),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.heads = nn.ModuleDict(
            {name: nn.Linear(in_channels, len(values)) for name, values in self.attributes.items()}
        )

    def config(self) -> dict:
        """Constructor arguments, JSON-serialisable."""
        return {
            "attributes": {name: list(values) for name, values in self.attributes.items()},
            "channels": list(self.channels),
            "groups": self.groups,
            "in_channels": self.in_channels,
        }

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: [B, 3, H, W] in [-1, 1] -> {attribute: logits [B, n_values]}."""
        pooled = self.embed(images)  # [B, C]
        return {name: head(pooled) for name, head in self.heads.items()}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, H, W] in [-1, 1] -> the pooled features the heads read [B, C] (drl.evaluation's features)."""
        batch, _, height, width = images.shape
        ys = torch.linspace(-1.0, 1.0, height, device=images.device, dtype=images.dtype)
        xs = torch.linspace(-1.0, 1.0, width, device=images.device, dtype=images.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x, grid_y]).expand(batch, 2, height, width)  # [B, 2, H, W]
        features = self.features(torch.cat([images, coords], dim=1))  # [B, C, h, w]
        return features.mean(dim=(2, 3))  # [B, C]


def attribute_targets(
    scenes: list[Scene],
    attributes: dict[str, tuple[str, ...]] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Index of each scene's value per attribute: {attribute: [B] int64}."""
    attributes = attributes or ATTRIBUTES
    return {
        name: torch.tensor([values.index(getattr(scene, name)) for scene in scenes], dtype=torch.long, device=device)
        for name, values in attributes.items()
    }


def alignment_log_prob(
    classifier: AttributeClassifier, images: torch.Tensor, scenes: list, attributes: tuple[str, ...] | None = None
) -> torch.Tensor:
    """Sum over attributes (default: all the classifier's) of log p(scene's value | image); returns [B],
    differentiable in images."""
    names = tuple(classifier.attributes) if attributes is None else attributes
    logits = classifier(images)
    targets = attribute_targets(scenes, {n: classifier.attributes[n] for n in names}, device=images.device)
    total = torch.zeros(images.shape[0], device=images.device, dtype=images.dtype)  # [B]
    for name in names:
        log_probs = F.log_softmax(logits[name].float(), dim=-1)  # [B, n_values]
        total = total + log_probs.gather(1, targets[name][:, None]).squeeze(1).to(total.dtype)
    return total


def attribute_match(
    classifier: AttributeClassifier, images: torch.Tensor, scenes: list, attributes: tuple[str, ...] | None = None
) -> torch.Tensor:
    """Mean over attributes of p(scene's value | image): the expected fraction of the prompt's attributes
    the image shows, in [0, 1]; returns [B], differentiable in images."""
    names = tuple(classifier.attributes) if attributes is None else attributes
    logits = classifier(images)
    targets = attribute_targets(scenes, {n: classifier.attributes[n] for n in names}, device=images.device)
    probs = [F.softmax(logits[n].float(), dim=-1).gather(1, targets[n][:, None]).squeeze(1) for n in names]
    return torch.stack(probs).mean(0).to(images.dtype)


def save_classifier(model: AttributeClassifier, directory: str | Path) -> Path:
    """Write `model.safetensors` and `config.json` into `directory`; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(model.config(), indent=2) + "\n")
    return directory


def load_classifier(
    directory: str | Path,
    device: torch.device | str = "cpu",
    expected_attributes: dict[str, tuple[str, ...]] = ATTRIBUTES,
    recreate_command: str = RECREATE_COMMAND,
) -> AttributeClassifier:
    """Load a classifier saved by `save_classifier`, in eval mode with frozen weights."""
    directory = Path(directory)
    weights_path, config_path = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    if not weights_path.is_file() or not config_path.is_file():
        raise FileNotFoundError(
            f"No toy classifier found at {directory} (expected {WEIGHTS_FILE} and {CONFIG_FILE}); "
            f"recreate it with `{recreate_command}`."
        )
    config = json.loads(config_path.read_text())
    saved_attributes = {name: tuple(values) for name, values in config["attributes"].items()}
    if saved_attributes != expected_attributes:
        raise ValueError(
            f"The toy classifier at {directory} was trained on attribute vocabularies {saved_attributes}, "
            f"which differ from the current toy world's {expected_attributes}; retrain it with `{recreate_command}`."
        )
    model = AttributeClassifier(
        attributes=saved_attributes,
        channels=tuple(config["channels"]),
        groups=config["groups"],
        in_channels=config.get("in_channels", 3),
    )
    model.load_state_dict(load_file(str(weights_path)))
    model.requires_grad_(False)  # a reward model: gradients flow to the images, not the weights
    return model.to(device).eval()


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mild blur and Gaussian noise, since diffusion samples are softer and noisier than renders."""
    batch = images.shape[0]
    # Blur a random third of the batch with a 3x3 binomial kernel.
    kernel = torch.tensor([1.0, 2.0, 1.0])
    channels = images.shape[1]
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(channels, 1, 3, 3)  # [C, 1, 3, 3]
    blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=channels)
    blur_mask = (torch.rand(batch, 1, 1, 1, generator=generator) < 1 / 3).float()
    images = blur_mask * blurred + (1 - blur_mask) * images
    # Per-image noise level, uniform in [0, 0.15] (in [-1, 1] units).
    noise_std = 0.15 * torch.rand(batch, 1, 1, 1, generator=generator)
    return images + noise_std * torch.randn(images.shape, generator=generator)


@torch.no_grad()
def evaluate_classifier(
    model: AttributeClassifier,
    n: int,
    rng: np.random.Generator,
    resolution: int = 32,
    batch_size: int = 500,
    sampler: Sampler = sample_images,
) -> dict[str, float]:
    """Per-attribute accuracy on `n` freshly rendered images (or `sampler`'s inputs): {attribute: accuracy}."""
    model.eval()
    correct = {name: 0 for name in model.attributes}
    for start in range(0, n, batch_size):
        images, scenes = sampler(min(batch_size, n - start), rng, resolution)
        logits = model(images)
        targets = attribute_targets(scenes, model.attributes)
        for name in model.attributes:
            correct[name] += int((logits[name].argmax(dim=-1) == targets[name]).sum())
    return {name: count / n for name, count in correct.items()}


def train_classifier(
    steps: int,
    batch_size: int,
    seed: int,
    lr: float,
    resolution: int = 32,
    sampler: Sampler = sample_images,
    build: Callable[[], AttributeClassifier] = AttributeClassifier,
) -> tuple[AttributeClassifier, dict[str, float]]:
    """Train `build()` on freshly generated inputs from `sampler` (images by default; deterministic for a fixed seed).

    Returns the model (eval mode) and metrics: `accuracy_<attribute>` on held-out
    images, `final_loss` (mean of the last 50 steps) and `train_seconds`.
    """
    torch.manual_seed(seed)
    train_rng = np.random.default_rng([seed, 0])
    held_out_rng = np.random.default_rng([seed, 1])  # independent stream: held-out images are never trained on
    generator = torch.Generator().manual_seed(seed)

    model = build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)

    def lr_factor(step: int) -> float:
        # Linear warm-up, then cosine decay to zero.
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    start = time.perf_counter()
    recent_losses: list[float] = []
    model.train()
    for _ in range(steps):
        images, scenes = sampler(batch_size, train_rng, resolution)  # [B, C, H, W]
        logits = model(_augment(images, generator))
        targets = attribute_targets(scenes, model.attributes)
        loss = sum(F.cross_entropy(logits[name], targets[name]) for name in model.attributes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        recent_losses = (recent_losses + [loss.item()])[-50:]
    train_seconds = time.perf_counter() - start

    accuracies = evaluate_classifier(model, HELD_OUT_IMAGES, held_out_rng, resolution, sampler=sampler)
    metrics = {f"accuracy_{name}": accuracy for name, accuracy in accuracies.items()}
    metrics["final_loss"] = float(np.mean(recent_losses)) if recent_losses else float("nan")
    metrics["train_seconds"] = train_seconds
    return model.eval(), metrics
