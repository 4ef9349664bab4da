"""DPPO: PPO over the two-layer MDP of a diffusion policy (Ren et al. 2024, "Diffusion Policy Policy Optimization").

The outer MDP is the environment's (a decision = one action, or one chunk of Ta actions on a ChunkedEnv); inside
each decision the reverse chain is an inner MDP whose actions are the denoising steps. Following the paper and
irom-princeton/dppo (model/diffusion/diffusion_ppo.py, agent/finetune/train_ppo_diffusion_agent.py):

    rollout:   only the last K = ft_denoising_steps steps run the fine-tuned denoiser (the earlier ones the frozen
               base policy); every step's std is floored at min_std (exploration); the K transitions' log-probs kept
    critic:    V(s) on the environment state (the observation history), learnt on GAE's returns (value_clip optional)
    advantage: GAE(gamma = env.gamma per decision, lambda) over the decisions of each episode, normalised over the
               batch; denoising step k of a decision gets A_t * gamma_denoising^(K - 1 - k) (k = K - 1 the last)
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
from dataclasses import dataclass

import numpy as np
import torch

from drl.algorithms.base import Algorithm, TrainContext
from drl.algorithms.control_base import with_evaluation
from drl.algorithms.control_losses import generalized_advantages
from drl.algorithms.schemas.dppo import DPPOConfig
from drl.envs.episodes import Episode
from drl.losses import ppo_clip_loss
from drl.models.critic import ValueFunction
from drl.sampling import denoising_step


@dataclass
class DecisionBatch:
    """One epoch of decisions, N of them, with their chains (S denoising steps, the last K fine-tuned).

    states [N, *obs_shape]; latents [N, S + 1, *action_shape] (x_T ... x_0); timesteps, log_probs [N, S];
    advantages, returns, values [N] (GAE, V at collection); episode_returns: one per episode (undiscounted).
    """

    states: torch.Tensor
    latents: torch.Tensor
    timesteps: torch.Tensor
    log_probs: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    values: torch.Tensor
    episode_returns: list[float]

    def __len__(self) -> int:
        return len(self.advantages)


class DPPO(Algorithm):
    def __init__(self, cfg: DPPOConfig, ctx: TrainContext):
        super().__init__(cfg, ctx)  # self.optimizer trains the policy's denoiser (ctx.params)
        self.cfg: DPPOConfig = cfg
        policy = ctx.model
        self.base = copy.deepcopy(policy.denoiser).requires_grad_(False).eval()  # the first S - K steps, and BC's teacher
        torch.manual_seed(ctx.cfg.seed)
        self.value = ValueFunction(policy.obs_dim, cfg.critic_hidden_dim).to(ctx.device)
        self.critic_optimizer = torch.optim.Adam(self.value.parameters(), lr=cfg.critic_lr)
        self.dims = int(np.prod(policy.action_shape))  # the log-prob is the mean over them: sum / dims

    # ---------------------------------------------------------------- sampling
    def chain(self, states: torch.Tensor, generator: torch.Generator, denoiser=None, min_std: float | None = None):
        """The two-layer policy's chain at states: base denoiser, then the last K steps with ``denoiser`` (the fine-tuned)."""
        ctx = self.ctx
        return ctx.model.sample(
            ctx.schedule,
            states,
            eta=ctx.cfg.scheduler.eta,
            generator=generator,
            denoiser=denoiser,
            fine_tuned_steps=self.cfg.ft_denoising_steps,
            frozen_denoiser=self.base,
            min_std=self.cfg.min_std if min_std is None else min_std,
        )

    def actor(self, generator: torch.Generator, record: bool, min_std: float | None = None):
        """obs [n, *obs_shape] -> (actions [n, *action_shape], the chain's tensors when ``record``)."""

        @torch.no_grad()
        def act(obs: np.ndarray):
            chain = self.chain(torch.as_tensor(obs, device=self.ctx.device), generator, min_std=min_std)
            extras = {"latents": chain.latents.cpu(), "log_probs": chain.log_probs.cpu(), "timesteps": chain.timesteps.cpu()} if record else {}
            return chain.actions.cpu().numpy(), extras

        return act

    def evaluation_actor(self, generator: torch.Generator):
        # The paper evaluates without the exploration floor: the scheduler's own std at every step.
        return self.actor(generator, record=False, min_std=0.0)

    def collect(self, generator: torch.Generator) -> DecisionBatch:
        """Whole episodes from side-by-side envs until train.samples_per_epoch decisions; GAE on each."""
        episodes = self.ctx.collector.episodes(self.ctx.cfg.train.samples_per_epoch, self.actor(generator, record=True), generator)
        return self.decisions(episodes)

    @torch.no_grad()
    def decisions(self, episodes: list[Episode]) -> DecisionBatch:
        cfg, device, gamma = self.cfg, self.ctx.device, self.ctx.cfg.env.gamma
        advantages, returns, values = [], [], []
        for e in episodes:
            v = self.value(torch.as_tensor(e.observations, device=device)).cpu().numpy()  # [T]
            bootstrap = 0.0 if e.terminations[-1] else float(self.value(torch.as_tensor(e.next_observations[-1:], device=device)))
            a, g = generalized_advantages(e.rewards * cfg.reward_scale, v, bootstrap, gamma, cfg.gae_lambda)
            advantages.append(a)
            returns.append(g)
            values.append(v)
        cat = lambda name: torch.cat([e.extras[name] for e in episodes]).to(device)  # noqa: E731
        tensor = lambda arrays: torch.as_tensor(np.concatenate(arrays), dtype=torch.float32, device=device)  # noqa: E731
        return DecisionBatch(
            states=tensor([e.observations for e in episodes]),  # [N, *obs_shape]
            latents=cat("latents"),  # [N, S + 1, *action_shape]
            timesteps=cat("timesteps"),  # [N, S]
            log_probs=cat("log_probs"),  # [N, S]
            advantages=tensor(advantages),
            returns=tensor(returns),
            values=tensor(values),
            episode_returns=[e.total_reward for e in episodes],
        )

    # ------------------------------------------------------------------ update
    def update(self, batch: DecisionBatch, epoch: int) -> dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        K, S = cfg.ft_denoising_steps, ctx.schedule.num_steps
        adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)  # [N], DPPO's norm_adv
        denoising_discount = cfg.gamma_denoising ** torch.arange(K - 1, -1, -1, dtype=torch.float32, device=adv.device)  # [K]
        decision = torch.arange(len(batch)).repeat_interleave(K)  # [N*K]
        k = torch.arange(K).repeat(len(batch))  # [N*K] fine-tuned step index 0..K-1
        train_actor = epoch >= cfg.critic_warmup_epochs  # the first critic_warmup_epochs epochs train the critic alone
        totals: dict[str, list[float]] = {}
        first_ratio_dev = None
        ctx.model.denoiser.train()
        for _ in range(cfg.update_epochs):
            order = torch.randperm(len(decision), generator=self.generator)
            for index in order.split(ctx.cfg.train.batch_size):
                b, kk = decision[index], k[index]
                stats = self._loss(batch, b, S - K + kk, adv[b] * denoising_discount[kk], train_actor)
                stats.pop("loss").backward()
                critic_grad = float(torch.nn.utils.clip_grad_norm_(self.value.parameters(), cfg.max_grad_norm or float("inf")))
                self.critic_optimizer.step()
                self.critic_optimizer.zero_grad(set_to_none=True)
                if train_actor:
                    stats["train/grad_norm"], _ = self.optimizer_step()
                else:
                    self.optimizer.zero_grad(set_to_none=True)
                ratio_dev = stats.pop("ratio_dev")
                first_ratio_dev = ratio_dev if first_ratio_dev is None else first_ratio_dev  # before any update: ~0
                stats["train/critic_grad_norm"] = critic_grad
                for key, value in stats.items():
                    totals.setdefault(key, []).append(float(value))
        ctx.model.denoiser.eval()
        metrics = {key: float(np.mean(values)) for key, values in totals.items()}
        returns = batch.episode_returns
        metrics.update(
            {
                "train/ratio_dev_first": first_ratio_dev,
                "train/lr": self.lr,
                "train/decisions": len(batch),
                "train/value_mean": float(batch.values.mean()),
                "reward_mean": float(np.mean(returns)),
                "reward_std": float(np.std(returns)),
                "samples": len(returns),
            }
        )
        return with_evaluation(ctx, metrics, epoch, self.evaluation_actor, as_reward=False)

    def _log_prob(self, states, x_t, x_prev, t) -> torch.Tensor:
        """log p_theta(x_prev | x_t, s) of the fine-tuned denoiser, std floored at min_std, mean over dims. [n]"""
        ctx = self.ctx
        out = ctx.model.denoise(x_t, t, states)
        step = denoising_step(ctx.schedule, out, t, x_t, eta=ctx.cfg.scheduler.eta, prev_sample=x_prev, min_std=self.cfg.min_std)
        return step.log_prob / self.dims

    def _loss(self, batch: DecisionBatch, b: torch.Tensor, i: torch.Tensor, adv: torch.Tensor, train_actor: bool) -> dict:
        """PPO + value (+ BC) loss of the pairs (decision b[j], denoising step i[j])."""
        cfg = self.cfg
        states = batch.states[b]
        values = self.value(states)  # [n]
        if cfg.value_clip > 0:
            clipped = batch.values[b] + (values - batch.values[b]).clamp(-cfg.value_clip, cfg.value_clip)
            value_loss = 0.5 * torch.maximum((values - batch.returns[b]) ** 2, (clipped - batch.returns[b]) ** 2).mean()
        else:
            value_loss = 0.5 * ((values - batch.returns[b]) ** 2).mean()
        loss = cfg.vf_coef * value_loss
        stats = {"train/value_loss": value_loss.detach()}
        with torch.set_grad_enabled(train_actor):
            log_prob = self._log_prob(states, batch.latents[b, i], batch.latents[b, i + 1], batch.timesteps[b, i])
            ratio = torch.exp(log_prob - batch.log_probs[b, i] / self.dims)
            policy_loss, clipfrac = ppo_clip_loss(adv, ratio, cfg.clip_range)
        stats.update(
            {
                "train/policy_loss": policy_loss.detach(),
                "train/clipfrac": clipfrac,
                "train/approx_kl": ((ratio - 1) - ratio.log()).mean().detach(),
                "ratio_dev": float((ratio.detach() - 1).abs().max()),
            }
        )
        if train_actor:
            loss = loss + policy_loss
            if cfg.bc_coef > 0:
                bc_loss = self._bc_loss(states)
                loss = loss + cfg.bc_coef * bc_loss
                stats["train/bc_loss"] = bc_loss.detach()
        stats["loss"] = loss
        stats["train/loss"] = loss.detach()
        return stats

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
        torch.save(self.value.state_dict(), run_dir / "value_function.pt")

    # --------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "value": self.value.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "base": self.base.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.value.load_state_dict(state["value"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.base.load_state_dict(state["base"])
