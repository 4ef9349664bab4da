"""The process's compute settings that every program shares: the device it runs on and its seeds."""

from __future__ import annotations

import random

import numpy as np
import torch

from drl.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """hardware.device -> a torch device: auto is CUDA when one is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hardware.device=cuda but no CUDA device is visible; use hardware=cpu.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global random streams."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
