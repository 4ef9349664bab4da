"""What differs by domain, as interfaces: the one loop in drl/train.py calls these and never asks which domain it runs.

Two domains implement them: images and video (drl/images.py) and control tasks (drl/control.py).
Each has a builder ``build(cfg, device, model) -> (TrainContext, reward, algorithm)`` that sets
``ctx.hooks`` to its :class:`DomainHooks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Union

import torch

if TYPE_CHECKING:
    from drl.envs.collector import DatasetReader, PolicyCollector
    from drl.logging import RunLogger
    from drl.rollout import RolloutCollector

Collector = Union["RolloutCollector", "PolicyCollector", "DatasetReader"]
"""What ``ctx.collector`` holds: the image/video rollout collector, the policy acting in its
environment, or an offline dataset's reader. Each algorithm's ``collect(generator)`` knows which."""


class DomainHooks(Protocol):
    """The loop's domain-specific steps. ``before`` and ``after`` run on the ranks that take part in
    probes (rank 0, or every rank of a sharded model); they write only where ``logger.enabled``."""

    def start(self, main: bool) -> None:
        """Take the base model's reference points (drift, sample quality) before any weights are loaded or trained."""

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        """The modules whose weights a checkpoint saves and a resume loads, by name."""

    def drift(self) -> float:
        """How far training has moved the model from the base model (drift_from_base)."""

    def before(self, logger: RunLogger) -> None:
        """What the run shows before training (evaluation, sample grids, plots)."""

    def export(self, run_dir: Path) -> None:
        """Save the trained result in ``run_dir`` (called before ``after``, so a failing probe cannot lose it)."""

    def after(self, logger: RunLogger) -> None:
        """What the run shows after training, once its result is exported."""
