"""algorithm=pretrain: the denoising loss on procedural toy-world images (drl/algorithms/pretrain.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict

from drl.algorithms.schemas.base import AlgorithmConfig
from drl.checks import fraction, positive

CAPTION_ATTRIBUTES = ("colour", "shape", "position", "size", "motion")


@dataclass
class PretrainConfig(AlgorithmConfig):
    """Pretraining of an image or video model on the toy world's procedural data (control policies use algorithm=bc)."""

    name: str = "pretrain"
    lr: float = 1e-3
    steps_per_epoch: int = 50
    """Optimizer steps per epoch, each on train.batch_size fresh procedural images."""
    caption_dropout: float = 0.1
    """Probability of training on the empty prompt, so classifier-free guidance works later."""
    caption_noise: Dict[str, float] = field(
        default_factory=lambda: {"colour": 0.2, "shape": 0.5, "position": 0.4, "size": 0.3, "motion": 0.8}
    )
    """Per-attribute probability of a wrong caption word (noisy web captions make the base model imperfect);
    each world uses its own attributes (images: colour, shape, position, size; clips: colour, shape, motion)."""
    train_text_encoder: bool = True
    """Also train the text encoder (only sensible when it was built from scratch)."""
    warmup_steps: int = 200
    ema_decay: float = 0.999
    """Pretraining exports an EMA of its weights by default."""

    offline: ClassVar[bool] = True

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        positive(p, "algorithm.steps_per_epoch", self.steps_per_epoch)
        fraction(p, "algorithm.caption_dropout", self.caption_dropout, closed_low=True)
        for attr, rate in self.caption_noise.items():
            fraction(p, f"algorithm.caption_noise.{attr}", rate, closed_low=True)
            if attr not in CAPTION_ATTRIBUTES:
                p.append(f"algorithm.caption_noise.{attr} is not a toy-world attribute ({', '.join(CAPTION_ATTRIBUTES)}).")
        return p
