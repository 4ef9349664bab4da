"""The environment's return as a reward: control collectors put each step's return-to-go in metadata."""

from __future__ import annotations

import torch

from drl.rewards.base import Reward


def env_return() -> Reward:
    def fn(samples: torch.Tensor, prompts: list, metadata: list) -> torch.Tensor:
        if not metadata or "return_to_go" not in metadata[0]:
            raise ValueError("reward env_return needs a control run (env=...): the batch carries no environment returns.")
        return torch.tensor([m["return_to_go"] for m in metadata], dtype=torch.float32, device=samples.device)

    return Reward("env_return", fn, differentiable=False)
