"""Flow Q-Learning (Park, Li & Levine 2025, "Flow Q-Learning"; seohongpark/fql, agents/fql.py).

Offline: the collector reads a dataset. Three networks train at every gradient step:

    critic:    y = r + gamma (1 - d) agg_i Q'_i(s', clip(mu_omega(s', z'))),   L_Q = mean_i (Q_i(s, a) - y)^2
    BC flow:   mu_theta, the flow policy, by the rectified-flow loss on dataset actions (policy_bc_loss on the flow schedule)
    one-step:  mu_omega(s, z) minimises  alpha ||mu_omega(s, z) - ODE_theta(s, z)||^2 - agg_i Q_i(s, clip(mu_omega(s, z)))
               where ODE_theta is the BC flow's deterministic chain from the same noise z (scheduler.num_steps Euler steps,
               the one chain, no gradient): the Q gradient never goes through the chain, unlike Diffusion-QL's
    actor loss = BC flow + alpha * distillation + Q term (one optimizer); targets Q' <- Polyak(Q, tau)

Acting: a = clip(mu_omega(s, z)), z ~ N(0, I): one network call per action. The saved policy/ is the BC flow; the
one-step policy and the critics are saved beside it (export_extra).
"""

from __future__ import annotations

import numpy as np
import torch

from drl.algorithms.base import TrainContext
from drl.algorithms.control_base import OfflineTwinQ
from drl.algorithms.control_losses import fql_critic_loss, fql_distillation_loss, fql_q_loss, policy_bc_loss, td_target
from drl.algorithms.schemas.fql import FQLConfig
from drl.models.critic import OneStepPolicy, soft_update
from drl.types import TransitionBatch


class FQL(OfflineTwinQ):
    def __init__(self, cfg: FQLConfig, ctx: TrainContext):
        policy, model_cfg = ctx.model, ctx.cfg.model
        torch.manual_seed(ctx.cfg.seed)
        self.one_step = OneStepPolicy(policy.obs_dim, policy.act_dim, model_cfg.hidden_dim, model_cfg.num_layers).to(ctx.device)
        super().__init__(cfg, ctx, params=[*ctx.params, *self.one_step.parameters()])  # the BC flow and the one-step policy
        self.cfg: FQLConfig = cfg
        self.build_critics(cfg.critic_hidden_dim, cfg.critic_lr)

    # -------------------------------------------------------------------- acting
    def one_step_actions(self, states: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """clip(mu_omega(s, z)) [B, *action_shape] (gradients as the caller has them)."""
        return self.one_step(states, noise).clamp(-1, 1)

    def _noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn((n, *self.ctx.model.action_shape), generator=generator).to(self.ctx.device)  # [n, *action_shape]

    def evaluation_actor(self, generator: torch.Generator):
        @torch.no_grad()
        def act(obs: np.ndarray):
            states = torch.as_tensor(obs, device=self.ctx.device)
            return self.one_step_actions(states, self._noise(len(states), generator)).cpu().numpy(), {}

        return act

    # ------------------------------------------------------------------ update
    def gradient_step(self, mb: TransitionBatch) -> dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        s, a = mb.observations, mb.actions
        # Critic: TD on dataset transitions, next actions from the one-step policy.
        with torch.no_grad():
            next_actions = self.one_step_actions(mb.next_observations, self._noise(len(a), self.generator))
            nq1, nq2 = self.critic_target(mb.next_observations, next_actions)
            next_q = (nq1 + nq2) / 2 if cfg.q_agg == "mean" else torch.minimum(nq1, nq2)
            y = td_target(mb.rewards, mb.terminations, next_q, ctx.cfg.env.gamma)
        q1, q2 = self.critic(s, a)
        critic_loss = fql_critic_loss(q1, q2, y)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_grad = float(torch.nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm or float("inf")))
        self.critic_optimizer.step()

        # Actor: BC flow + alpha * distillation of the flow's ODE into the one-step policy + its Q term.
        bc_loss = policy_bc_loss(ctx.model.denoiser, ctx.schedule, s, a, self.generator)
        noise = self._noise(len(a), self.generator)
        with torch.no_grad():
            flow_actions = ctx.model.sample(ctx.schedule, s, eta=0.0, initial_noise=noise).actions  # the ODE, clipped
        raw = self.one_step(s, noise)
        distill_loss = fql_distillation_loss(raw, flow_actions)
        new_q1, new_q2 = self.critic(s, raw.clamp(-1, 1))
        q_loss = fql_q_loss(new_q1, new_q2, cfg.q_agg, cfg.normalize_q_loss)
        actor_loss = bc_loss + cfg.alpha * distill_loss + q_loss
        actor_loss.backward()
        self.critic.zero_grad(set_to_none=True)  # the actor's loss must not move the critic
        actor_grad, _ = self.optimizer_step()
        soft_update(self.critic_target, self.critic, cfg.tau)
        losses = {"loss": actor_loss, "bc_loss": bc_loss, "distill_loss": distill_loss, "q_loss": q_loss,
                  "critic_loss": critic_loss}  # fmt: skip
        return self.step_metrics(losses, q1, y, actor_grad, critic_grad)

    # -------------------------------------------------------------------- export
    def export_policy(self):
        """The BC flow policy (the one-step policy that acts is saved beside it by export_extra)."""
        return self.ctx.model

    def export_extra(self, run_dir) -> None:
        torch.save(self.one_step.state_dict(), run_dir / "one_step_policy.pt")
        torch.save(self.critic.state_dict(), run_dir / "critic.pt")

    # --------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {**super().state_dict(), "one_step": self.one_step.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.one_step.load_state_dict(state["one_step"])
