"""What the control algorithms share: evaluation in the environment on the loop's epochs, and what drl/control.py asks of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

import torch

from drl.algorithms.base import TrainContext
from drl.envs.chunking import Horizons
from drl.envs.episodes import Actor, vector_options
from drl.envs.evaluate import evaluate

if TYPE_CHECKING:
    from drl.models.policy import DiffusionPolicy

EVALUATION_SEED_OFFSET = 7  # the periodic evaluation's own noise, the same at every evaluation


def with_evaluation(
    ctx: TrainContext, metrics: dict[str, float], epoch: int, evaluation_actor: Callable[[torch.Generator], Actor], as_reward: bool
) -> dict[str, float]:
    """``metrics`` with eval/* added after every env.eval_every-th epoch and after the last (``epoch`` counts from 0).

    ``evaluation_actor(generator)``: how the algorithm acts at evaluation. Offline methods (``as_reward``)
    have no rollout of their own: they report the evaluation return as reward_mean.
    """
    cfg = ctx.cfg
    epochs_done = epoch + 1
    if epochs_done % cfg.env.eval_every != 0 and epochs_done != cfg.train.epochs:
        return metrics
    generator = torch.Generator().manual_seed(cfg.seed + EVALUATION_SEED_OFFSET)
    result = evaluate(
        cfg.env.id,
        evaluation_actor(generator),
        cfg.env.eval_episodes,
        cfg.seed,
        cfg.env.ref_min_score,
        cfg.env.ref_max_score,
        Horizons.of(cfg.model),
        **vector_options(cfg.env),
    )
    metrics.update(result)
    if as_reward:
        metrics.update(reward_mean=result["eval/return_mean"], reward_std=result["eval/return_std"], samples=result["eval/episodes"])
    return metrics


class ControlAlgorithm(Protocol):
    """What drl/control.py asks of an algorithm on a control task, beside ``collect`` and ``update``."""

    def evaluation_actor(self, generator: torch.Generator) -> Actor:
        """How it acts at evaluation (the periodic one, and the before/after runs of drl/control.py)."""

    def export_policy(self) -> DiffusionPolicy:
        """The policy a run saves as its result (an algorithm with more to save also has ``export_extra(run_dir)``)."""
