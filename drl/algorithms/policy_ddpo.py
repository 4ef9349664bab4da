"""DDPO on a diffusion policy: PPO over each environment step's denoising chain.

Every env step's action is one reverse chain conditioned on the state (the "prompt embedding"
of the image side); its reward is that step's discounted return-to-go from the environment,
which the collector puts in the batch (drl/envs/collector.py). The update is DDPO's own
(drl/algorithms/ddpo.py), unchanged: only sampling differs, so ``collect`` is overridden
(and ``update`` adds the periodic evaluation).
"""

from __future__ import annotations

import torch

from drl.algorithms.control_base import with_evaluation
from drl.algorithms.ddpo import DDPO
from drl.envs.collector import policy_actor
from drl.types import Rollout


class PolicyDDPO(DDPO):
    def collect(self, generator: torch.Generator) -> Rollout:
        return self.ctx.collector.collect(self.ctx.cfg.train.samples_per_epoch, generator)

    def update(self, batch: Rollout, epoch: int) -> dict[str, float]:
        return with_evaluation(self.ctx, super().update(batch, epoch), epoch, self.evaluation_actor, as_reward=False)

    def evaluation_actor(self, generator: torch.Generator):
        return policy_actor(self.ctx.model, self.ctx.schedule, self.ctx.cfg.scheduler.eta, generator)

    def export_policy(self):
        return self.ctx.model
