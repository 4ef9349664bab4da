"""ReinFlow (Zhang et al. 2025, "ReinFlow: Fine-tuning Flow Matching Policy with Online Reinforcement Learning").

A flow policy's Euler steps are deterministic; ReinFlow adds a noise network sigma_theta'(s[, t]) whose std is
bounded in [min_std, max_std], which turns the chain into a Markov chain of Gaussians with exact log-probs, however
few its steps (1-4). Following the paper (sec. 4, eq. 9) and ReinFlow/ReinFlow (model/flow/ft_ppo/ppoflow.py,
model/flow/mlp_flow.py, agent/finetune/reinflow/train_ppo_flow_agent.py):

    step:      x_{k-1} ~ N(mu_k, diag(sigma_theta'(s, t_k)^2)),  mu_k = x_k + v_theta(x_k, t_k, s) (sigma_{k-1} - sigma_k):
               the flow ODE's Euler step (drl.sampling_flow.flow_mean_std at eta = 0, through drl.sampling.denoising_step
               with the learned std), every step of the chain
    log-prob:  the whole chain's, (log N(x_T; 0, I) + sum_k log p_k) / ((S + 1) D), clamped to [log_prob_min, log_prob_max]
               (drl.algorithms.control_losses.chain_log_prob_rate)
    PPO:       one clipped ratio per decision (not per step, as DPPO), advantages from V(s) and GAE over decisions
               (drl/algorithms/control_ppo.py, shared with DPPO), action chunks as DPPO
    entropy:   loss -= ent_coef * the chain's entropy rate (control_losses.chain_entropy_rate), which only the noise moves
    acting:    evaluation runs the plain flow ODE (no injected noise), as the authors' eval_mode

Differences from the authors' code: intermediate actions are not clamped to [-1, 1] (the step mean is the image side's
Euler step; only the executed action is clamped, and the log-prob is of the unclamped x_0); the noise z is not truncated at
3 std; the noise bound max_std is constant (their learn_decay lowers it over training); a constant reward_scale instead
of the running return std; fixed learning rates.
"""

from __future__ import annotations

import torch

from drl.algorithms.base import TrainContext
from drl.algorithms.control_losses import chain_entropy_rate, chain_log_prob_rate
from drl.algorithms.control_ppo import DecisionBatch, PolicyPPO
from drl.algorithms.schemas.reinflow import ReinFlowConfig
from drl.losses import ppo_clip_loss
from drl.models.critic import BoundedStdNetwork
from drl.sampling import denoising_step


class ReinFlow(PolicyPPO):
    def __init__(self, cfg: ReinFlowConfig, ctx: TrainContext):
        policy = ctx.model
        torch.manual_seed(ctx.cfg.seed)
        time_dim = policy.denoiser.config["time_dim"] if cfg.step_conditioned else 0
        self.noise = BoundedStdNetwork(policy.obs_dim, policy.act_dim, cfg.min_std, cfg.max_std, cfg.noise_hidden_dim, time_dim=time_dim)
        self.noise.to(ctx.device)
        super().__init__(cfg, ctx, params=[*ctx.params, *self.noise.parameters()])  # one actor optimizer, as the authors'
        self.cfg: ReinFlowConfig = cfg

    def step_std(self, states: torch.Tensor):
        """(x_t [B, *A], t [B]) -> the learned std [B, *A] at ``states`` [B, *obs_shape] (drl.chain.run_chain's step_std)."""

        def std(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            features = self.ctx.model.denoiser.time_embedding(t).detach() if self.cfg.step_conditioned else None
            return self.noise(states, features).view(x_t.shape)

        return std

    # ---------------------------------------------------------------- sampling
    def chain(self, states: torch.Tensor, generator: torch.Generator, explore: bool):
        """The flow ODE's chain at states; ``explore``: each step adds the noise network's Gaussian noise."""
        ctx = self.ctx
        return ctx.model.sample(ctx.schedule, states, eta=0.0, generator=generator, step_std=self.step_std(states) if explore else None)

    # ------------------------------------------------------------------ update
    def units(self, batch: DecisionBatch, adv: torch.Tensor):
        """Every decision, with its whole chain."""
        return torch.arange(len(batch)), None, adv

    def chain_log_prob(self, batch: DecisionBatch, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised log-prob [n] of the stored chains of decisions b under the current policy, and the stds [n, S, D].
        All S steps of the n chains in one denoiser call."""
        ctx, n, S = self.ctx, len(b), self.ctx.schedule.num_steps
        states = batch.states[b].repeat_interleave(S, dim=0)  # [n*S, *obs_shape]
        x_t = batch.latents[b, :-1].flatten(0, 1)  # [n*S, *A]
        x_prev = batch.latents[b, 1:].flatten(0, 1)
        t = batch.timesteps[b].flatten()  # [n*S]
        std = self.step_std(states)(x_t, t)
        step = denoising_step(ctx.schedule, ctx.model.denoise(x_t, t, states), t, x_t, eta=0.0, prev_sample=x_prev, std=std)
        return chain_log_prob_rate(step.log_prob.view(n, S), batch.latents[b, 0]), std.view(n, S, -1)

    def policy_loss(self, batch: DecisionBatch, b: torch.Tensor, i, adv: torch.Tensor, train_actor: bool):
        cfg = self.cfg
        log_prob, stds = self.chain_log_prob(batch, b)
        old = chain_log_prob_rate(batch.log_probs[b], batch.latents[b, 0])
        ratio = torch.exp(log_prob.clamp(cfg.log_prob_min, cfg.log_prob_max) - old.clamp(cfg.log_prob_min, cfg.log_prob_max))
        loss, clipfrac = ppo_clip_loss(adv, ratio, cfg.clip_range)
        entropy = chain_entropy_rate(stds)  # [n]
        stats = {"train/policy_loss": loss.detach(), "train/clipfrac": clipfrac, "train/entropy": entropy.mean().detach(),
                 "train/noise_std": stds.mean().detach()}
        return [loss, -cfg.ent_coef * entropy.mean()], ratio, stats

    # -------------------------------------------------------------------- export
    def export_policy(self):
        """The fine-tuned flow policy; it acts by its ODE (the noise network only explores: export_extra saves it)."""
        return self.ctx.model

    def export_extra(self, run_dir) -> None:
        torch.save(self.noise.state_dict(), run_dir / "noise_network.pt")
        super().export_extra(run_dir)

    # --------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {**super().state_dict(), "noise": self.noise.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.noise.load_state_dict(state["noise"])
