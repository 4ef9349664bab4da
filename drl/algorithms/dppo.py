"""DPPO: PPO over the two-layer MDP of a diffusion policy (Ren et al. 2024, "Diffusion Policy Policy Optimization").

The outer MDP is the environment's (a decision = one action, or one chunk of Ta actions on a ChunkedEnv); inside
each decision the reverse chain is an inner MDP whose actions are the denoising steps. Following the paper and
irom-princeton/dppo (model/diffusion/diffusion_ppo.py, agent/finetune/train_ppo_diffusion_agent.py):

    rollout:   only the last K = ft_denoising_steps steps run the fine-tuned denoiser (the earlier ones the frozen
               base policy); every step's std is floored at min_std (exploration); the K transitions' log-probs kept
    critic:    V(s) on the environment state, GAE over decisions (drl/algorithms/control_ppo.py, shared with ReinFlow)
    advantage: denoising step k of a decision gets A_t * gamma_denoising^(K - 1 - k) (k = K - 1 the last)
    actor:     PPO's clipped surrogate per (decision, denoising step) pair: ratio = p_theta(x_{k-1} | x_k, s) /
               p_old(...), the Gaussian log-prob averaged over the action's dims (DPPO's mean), std floored at min_std
    BC:        optional -log p_theta of chains the frozen base policy samples at the batch's states (bc_coef)

The per-step log-prob is drl.sampling.denoising_step (the rollout's own function) and the surrogate is DDPO's
ppo_clip_loss (drl.losses). Differences from the reference code: no per-dim log-prob clamp to [-5, 2], a constant
clip range (DPPO's Gym configs set clip_ploss_coef_base = clip_ploss_coef), a constant reward_scale instead of the
running return std, and GAE over whole episodes (a time limit bootstraps from V(s_T), a termination from 0).
"""

from __future__ import annotations

import copy

import torch

from drl.algorithms.base import TrainContext
from drl.algorithms.control_ppo import DecisionBatch, PolicyPPO
from drl.algorithms.schemas.dppo import DPPOConfig
from drl.losses import ppo_clip_loss
from drl.sampling import denoising_step


class DPPO(PolicyPPO):
    def __init__(self, cfg: DPPOConfig, ctx: TrainContext):
        super().__init__(cfg, ctx)  # self.optimizer trains the policy's denoiser (ctx.params); V(s) and its optimizer
        self.cfg: DPPOConfig = cfg
        self.base = copy.deepcopy(ctx.model.denoiser).requires_grad_(False).eval()  # the first S - K steps, and BC's teacher

    # ---------------------------------------------------------------- sampling
    def chain(self, states: torch.Tensor, generator: torch.Generator, explore: bool = True, denoiser=None):
        """The two-layer policy's chain at states: base denoiser, then the last K steps with ``denoiser`` (the fine-tuned).
        ``explore``: every fine-tuned step's std floored at min_std; without (the paper's evaluation), the scheduler's own."""
        ctx = self.ctx
        return ctx.model.sample(
            ctx.schedule,
            states,
            eta=ctx.cfg.scheduler.eta,
            generator=generator,
            denoiser=denoiser,
            fine_tuned_steps=self.cfg.ft_denoising_steps,
            frozen_denoiser=self.base,
            min_std=self.cfg.min_std if explore else 0.0,
        )

    # ------------------------------------------------------------------ update
    def units(self, batch: DecisionBatch, adv: torch.Tensor):
        """Every (decision, fine-tuned step) pair; step k's advantage is discounted by gamma_denoising^(K - 1 - k)."""
        K, S = self.cfg.ft_denoising_steps, self.ctx.schedule.num_steps
        denoising_discount = self.cfg.gamma_denoising ** torch.arange(K - 1, -1, -1, dtype=torch.float32, device=adv.device)  # [K]
        decision = torch.arange(len(batch)).repeat_interleave(K)  # [N*K]
        k = torch.arange(K).repeat(len(batch))  # [N*K] fine-tuned step index 0..K-1
        return decision, S - K + k, adv[decision] * denoising_discount[k]

    def _log_prob(self, states, x_t, x_prev, t) -> torch.Tensor:
        """log p_theta(x_prev | x_t, s) of the fine-tuned denoiser, std floored at min_std, mean over dims. [n]"""
        ctx = self.ctx
        out = ctx.model.denoise(x_t, t, states)
        step = denoising_step(ctx.schedule, out, t, x_t, eta=ctx.cfg.scheduler.eta, prev_sample=x_prev, min_std=self.cfg.min_std)
        return step.log_prob / self.dims

    def policy_loss(self, batch: DecisionBatch, b: torch.Tensor, i: torch.Tensor, adv: torch.Tensor, train_actor: bool):
        """PPO's clipped surrogate of the pairs (decision b[j], denoising step i[j]) (+ bc_coef * BC)."""
        states = batch.states[b]
        log_prob = self._log_prob(states, batch.latents[b, i], batch.latents[b, i + 1], batch.timesteps[b, i])
        ratio = torch.exp(log_prob - batch.log_probs[b, i] / self.dims)
        loss, clipfrac = ppo_clip_loss(adv, ratio, self.cfg.clip_range)
        stats, terms = {"train/policy_loss": loss.detach(), "train/clipfrac": clipfrac}, [loss]
        if train_actor and self.cfg.bc_coef > 0:
            bc_loss = self._bc_loss(states)
            terms.append(self.cfg.bc_coef * bc_loss)
            stats["train/bc_loss"] = bc_loss.detach()
        return terms, ratio, stats

    def _bc_loss(self, states: torch.Tensor) -> torch.Tensor:
        """-log p_theta of the base policy's own chains at these states, over its K fine-tuned steps (DPPO's BC)."""
        ctx, K = self.ctx, self.cfg.ft_denoising_steps
        with torch.no_grad():
            teacher = self.chain(states, self.generator, denoiser=self.base)
        S, n = ctx.schedule.num_steps, len(states)
        i = torch.arange(S - K, S).repeat(n)  # [n*K]
        b = torch.arange(n).repeat_interleave(K)  # [n*K]
        return -self._log_prob(states[b], teacher.latents[b, i], teacher.latents[b, i + 1], teacher.timesteps[b, i]).mean()

    # -------------------------------------------------------------------- export
    def export_policy(self):
        """The fine-tuned denoiser. With K < S the trained policy runs its first S - K steps with the base weights;
        the saved policy/ then holds only the fine-tuned ones, and export_extra saves the base beside it."""
        return self.ctx.model

    def export_extra(self, run_dir) -> None:
        if self.cfg.ft_denoising_steps < self.ctx.schedule.num_steps:
            base = copy.copy(self.ctx.model)
            base.denoiser = self.base
            base.save_pretrained(run_dir / "base_policy")
        super().export_extra(run_dir)

    # --------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {**super().state_dict(), "base": self.base.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.base.load_state_dict(state["base"])
