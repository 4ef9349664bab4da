"""What the control algorithms share: periodic evaluation in the environment, and its state."""

from __future__ import annotations

import torch

from drl.envs.chunking import Horizons
from drl.envs.episodes import Actor, vector_options
from drl.envs.evaluate import evaluate


class Evaluates:
    """Mixin for Algorithm subclasses on an env: evaluate every env.eval_every epochs and at the end."""

    epochs_done = 0

    def evaluation_actor(self, generator: torch.Generator) -> Actor:
        raise NotImplementedError(f"{type(self).__name__} must say how it acts at evaluation")

    def evaluate(self) -> dict[str, float]:
        cfg = self.ctx.cfg
        generator = torch.Generator().manual_seed(cfg.seed + 7)
        return evaluate(
            cfg.env.id,
            self.evaluation_actor(generator),
            cfg.env.eval_episodes,
            cfg.seed,
            cfg.env.ref_min_score,
            cfg.env.ref_max_score,
            Horizons.of(cfg.model),
            **vector_options(cfg.env),
        )

    def with_evaluation(self, metrics: dict[str, float], as_reward: bool) -> dict[str, float]:
        """Add eval/* on evaluation epochs; offline methods (``as_reward``) report the eval return as reward_mean."""
        self.epochs_done += 1
        cfg = self.ctx.cfg
        if self.epochs_done % cfg.env.eval_every == 0 or self.epochs_done == cfg.train.epochs:
            result = self.evaluate()
            metrics.update(result)
            if as_reward:
                metrics.update(
                    reward_mean=result["eval/return_mean"], reward_std=result["eval/return_std"], samples=result["eval/episodes"]
                )
        return metrics

    def state_dict(self) -> dict:
        return {**super().state_dict(), "epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.epochs_done = state["epochs_done"]
