"""Diffusion-QL (Wang et al. 2023, "Diffusion Policies as an Expressive Policy Class for Offline RL").

Offline: the collector reads a dataset. Each gradient step (the paper's Algorithm 1):

    critic:  y = r + gamma (1 - d) min_i Q'_i(s', a'),  a' ~ pi_EMA(. | s')      (clipped double Q)
             L_Q = sum_i (Q_i(s, a) - y)^2
    actor:   L_pi = L_BC(s, a) + eta * (-Q_i(s, a_theta) / mean |Q_j|),  a_theta ~ pi_theta(. | s)
             a_theta runs the whole reverse chain with gradients (drl.models.policy.DiffusionPolicy.sample)
    targets: Q' <- Polyak(Q, tau);  pi_EMA <- EMA(pi_theta) every ema_every steps after ema_start
             (before it pi_EMA copies pi_theta, or with ema_warmup=initial keeps the initial weights as the
             official code does: its first target actions then come from the untrained policy)

Acting at evaluation: ``candidates`` actions per state from pi_theta, one drawn with probability
softmax(min_i Q'_i(s, a)) (the paper's sample_action).

With action chunks (drl/envs/chunking.py) s is the observation history, a the chunk, r its summed reward and
s' the history Ta steps later: the TD target bootstraps once per chunk (env.gamma per decision).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from drl.algorithms.base import TrainContext
from drl.algorithms.control_base import OfflineTwinQ
from drl.algorithms.control_losses import diffusion_ql_q_loss, policy_bc_loss, td_target
from drl.algorithms.schemas.diffusion_ql import DiffusionQLConfig
from drl.models.critic import soft_update
from drl.types import TransitionBatch


class DiffusionQL(OfflineTwinQ):
    def __init__(self, cfg: DiffusionQLConfig, ctx: TrainContext):
        super().__init__(cfg, ctx)  # self.optimizer trains the actor (the policy's denoiser, ctx.params)
        self.cfg: DiffusionQLConfig = cfg
        self.build_critics(cfg.critic_hidden_dim, cfg.critic_lr)
        self.ema_actor = copy.deepcopy(ctx.model.denoiser).requires_grad_(False)
        self.ema = None  # algorithm.ema_decay means the paper's EMA actor here (ema_start, ema_every), not the shared weight EMA
        self.steps = 0

    def _chain(self, states: torch.Tensor, denoiser=None) -> torch.Tensor:
        """a ~ pi(. | s) through the run's reverse chain (gradients if enabled). [B, A]"""
        ctx = self.ctx
        return ctx.model.sample(ctx.schedule, states, eta=ctx.cfg.scheduler.eta, generator=self.generator, denoiser=denoiser).actions

    def gradient_step(self, mb: TransitionBatch) -> dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        # Critic: clipped double-Q TD on dataset transitions, target actions from the EMA actor.
        with torch.no_grad():
            next_actions = self._chain(mb.next_observations, denoiser=self.ema_actor)
            y = td_target(mb.rewards, mb.terminations, self.critic_target.q_min(mb.next_observations, next_actions), ctx.cfg.env.gamma)
        q1, q2 = self.critic(mb.observations, mb.actions)
        critic_loss = (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_grad = float(torch.nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm or float("inf")))
        self.critic_optimizer.step()

        # Actor: BC + eta * normalised -Q of a fresh action, backpropagated through the whole chain.
        bc_loss = policy_bc_loss(ctx.model.denoiser, ctx.schedule, mb.observations, mb.actions, self.generator)
        new_q1, new_q2 = self.critic(mb.observations, self._chain(mb.observations))
        use_q1 = bool(torch.rand((), generator=self.generator) < 0.5)
        q_loss = diffusion_ql_q_loss(new_q1, new_q2, use_q1)
        actor_loss = bc_loss + cfg.q_weight * q_loss
        actor_loss.backward()
        self.critic.zero_grad(set_to_none=True)  # the actor's loss must not move the critic
        actor_grad, _ = self.optimizer_step()

        # Targets.
        self.steps += 1
        if self.steps % cfg.ema_every == 0:
            if self.steps >= cfg.ema_start:
                soft_update(self.ema_actor, ctx.model.denoiser, 1 - cfg.ema_decay)
            elif cfg.ema_warmup == "copy":
                self.ema_actor.load_state_dict(ctx.model.denoiser.state_dict())
        soft_update(self.critic_target, self.critic, cfg.tau)
        losses = {"loss": actor_loss, "bc_loss": bc_loss, "q_loss": q_loss, "critic_loss": critic_loss}
        return self.step_metrics(losses, q1, y, actor_grad, critic_grad)

    # -------------------------------------------------------------------- acting
    def select_actions(self, states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``candidates`` actions per state, one drawn by softmax over min-Q of the target critics. [B, *action_shape]"""
        ctx, k = self.ctx, self.cfg.candidates
        repeated = states.repeat_interleave(k, dim=0)  # [B*k, *obs_shape]
        with torch.no_grad():
            actions = ctx.model.sample(ctx.schedule, repeated, eta=ctx.cfg.scheduler.eta, generator=generator).actions  # [B*k, *action_shape]
            q = self.critic_target.q_min(repeated, actions).view(-1, k)  # [B, k]
        pick = torch.multinomial(torch.softmax(q, dim=1).cpu(), 1, generator=generator).squeeze(1).to(q.device)  # [B]
        return actions.view(-1, k, *actions.shape[1:])[torch.arange(len(states)), pick]

    def evaluation_actor(self, generator: torch.Generator):
        def act(obs: np.ndarray):
            return self.select_actions(torch.as_tensor(obs, device=self.ctx.device), generator).cpu().numpy(), {}

        return act

    def export_policy(self):
        return self.ctx.model

    # --------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {**super().state_dict(), "ema_actor": self.ema_actor.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.ema_actor.load_state_dict(state["ema_actor"])
        self.steps = state["steps"]
