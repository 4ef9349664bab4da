"""What the control algorithms share: evaluation in the environment on the loop's epochs, what drl/control.py asks of
them, and the offline actor-critic epoch (Diffusion-QL, FQL)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np
import torch

from drl.algorithms.base import Algorithm, TrainContext
from drl.envs.chunking import Horizons
from drl.envs.episodes import Actor, vector_options
from drl.envs.evaluate import evaluate
from drl.models.critic import TwinQ
from drl.types import TransitionBatch

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


class OfflineTwinQ(Algorithm):
    """What the offline actor-critic methods share (Diffusion-QL, FQL): batches of dataset transitions, twin critics with
    Polyak targets, and an epoch of ``gradient_step``s. Subclasses build the critics with ``build_critics`` in __init__."""

    def build_critics(self, hidden_dim: int, lr: float) -> None:
        """Q1, Q2 on (state, action), their frozen target copies and the critics' own Adam."""
        policy = self.ctx.model
        self.critic = TwinQ(policy.obs_dim, policy.act_dim, hidden_dim).to(self.ctx.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=lr)

    def collect(self, generator: torch.Generator) -> TransitionBatch:
        return self.ctx.collector.sample(self.cfg.steps_per_epoch * self.ctx.cfg.train.batch_size, generator)

    def gradient_step(self, mb: TransitionBatch) -> dict[str, float]:
        raise NotImplementedError

    @staticmethod
    def step_metrics(losses: dict[str, torch.Tensor], q1: torch.Tensor, target: torch.Tensor, actor_grad: float,
                     critic_grad: float) -> dict[str, float]:
        """A gradient step's log line: ``losses`` (name -> scalar; "loss" is the actor's), the critic's Q1 and target
        means, both gradient norms."""
        return {
            **{f"train/{name}": float(value.detach()) for name, value in losses.items()},
            "train/q_mean": float(q1.detach().mean()),
            "train/target_mean": float(target.mean()),
            "train/grad_norm": actor_grad,
            "train/critic_grad_norm": critic_grad,
        }

    def update(self, batch: TransitionBatch, epoch: int) -> dict[str, float]:
        totals: dict[str, list[float]] = {}
        for index in torch.arange(len(batch)).split(self.ctx.cfg.train.batch_size):
            for key, value in self.gradient_step(batch.minibatch(index)).items():
                totals.setdefault(key, []).append(value)
        metrics = {key: float(np.mean(values)) for key, values in totals.items()}
        metrics["train/lr"] = self.lr
        return with_evaluation(self.ctx, metrics, epoch, self.evaluation_actor, as_reward=True)

    def state_dict(self) -> dict:
        critics = {"critic": self.critic, "critic_target": self.critic_target, "critic_optimizer": self.critic_optimizer}
        return {**super().state_dict(), **{name: part.state_dict() for name, part in critics.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for name in ("critic", "critic_target", "critic_optimizer"):
            getattr(self, name).load_state_dict(state[name])
