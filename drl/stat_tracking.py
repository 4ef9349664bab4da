"""Per-prompt reward normalisation (DDPO paper, appendix; ddpo-pytorch's stat tracker)."""

from __future__ import annotations

from collections import deque

import numpy as np


class PerPromptStatTracker:
    """Advantage A_i = (r_i - mean_p) / (std_p + 1e-6) using the recent rewards of prompt p.

    A prompt with fewer than ``min_count`` remembered rewards falls back to the
    statistics of the whole batch. The state is checkpointed so a resumed run
    normalises exactly as the uninterrupted one would.
    """

    def __init__(self, buffer_size: int, min_count: int):
        self.buffer_size, self.min_count = buffer_size, min_count
        self.buffers: dict[str, deque] = {}

    def update(self, prompts: list[str], rewards: np.ndarray) -> np.ndarray:
        """prompts [B], rewards [B] -> advantages [B] (buffers updated first, as ddpo-pytorch does)."""
        rewards = np.asarray(rewards, dtype=np.float64)
        advantages = np.empty_like(rewards)
        batch_mean, batch_std = rewards.mean(), rewards.std()
        for prompt in set(prompts):
            mask = np.array([p == prompt for p in prompts])
            buffer = self.buffers.setdefault(prompt, deque(maxlen=self.buffer_size))
            buffer.extend(rewards[mask].tolist())
            if len(buffer) < self.min_count:
                mean, std = batch_mean, batch_std
            else:
                mean, std = np.mean(buffer), np.std(buffer)
            advantages[mask] = (rewards[mask] - mean) / (std + 1e-6)
        return advantages

    def state_dict(self) -> dict:
        return {"buffers": {k: list(v) for k, v in self.buffers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.buffers = {k: deque(v, maxlen=self.buffer_size) for k, v in state["buffers"].items()}
