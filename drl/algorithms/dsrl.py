"""DSRL: diffusion steering by RL in the policy's noise space (Wagenmaker et al. 2025).

The diffusion policy pi_W(s, w) is frozen; its deterministic chain (DDIM, eta = 0) maps an
initial noise w to an action. DSRL learns an actor over the noise, pi^w(w | s), online:

    DSRL-SAC (variant=sac): SAC on the MDP whose action is w (the env executes pi_W(s, w)):
        Q^W(s, w) <- r + gamma (1 - d) (min Q^W'(s', w') - alpha log pi^w(w' | s')),  w' ~ pi^w(s')
        pi^w      <- max E[min Q^W(s, w) - alpha log pi^w(w | s)]
    DSRL-NA (variant=na, noise-aliased): a Q on executed actions learned by TD, distilled to the noise:
        Q^A(s, a) <- r + gamma (1 - d) min Q^A'(s', pi_W(s', w')),  w' ~ pi^w(s')
                     (with action_critic_input=offset the network reads a - pi_W(s, 0), not a)
        Q^W(s, w) <- Q^A(s, pi_W(s, w)) for w ~ N(0, I)     (every noise aliasing to a also learns)
        pi^w      <- as in DSRL-SAC, against Q^W

Only the noise actor and critics train; the policy's weights never change.

With action chunks (model.action_horizon > 1) w has the chunk's shape [Ta, A]; the actor, critics and replay
buffer read states, noises and actions flattened (To * O, Ta * A).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from drl.algorithms.base import Algorithm, TrainContext
from drl.algorithms.control_base import with_evaluation
from drl.algorithms.control_losses import sac_critic_target, td_target
from drl.config import DSRLConfig
from drl.envs.chunking import Horizons
from drl.envs.collector import episodes_to_transitions, horizon
from drl.envs.episodes import run_episodes, vector_options
from drl.models.critic import TanhGaussianActor, TwinQ, soft_update
from drl.types import TransitionBatch


class ReplayBuffer:
    """A ring buffer of transitions (s, a, r, s', d); for DSRL-SAC ``a`` is the noise w."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device):
        self.data = TransitionBatch(
            torch.zeros(capacity, obs_dim, device=device),
            torch.zeros(capacity, act_dim, device=device),
            torch.zeros(capacity, device=device),
            torch.zeros(capacity, obs_dim, device=device),
            torch.zeros(capacity, device=device),
        )
        self.capacity, self.size, self.next = capacity, 0, 0

    def add(self, batch: TransitionBatch) -> None:
        """Write the batch's rows at the ring's head; past capacity the oldest rows are overwritten."""
        n = len(batch)
        rows = (self.next + torch.arange(n, device=self.data.rewards.device)) % self.capacity  # [n]
        keep = slice(max(0, n - self.capacity), n)  # a batch larger than the ring keeps its newest rows
        for name in ("observations", "actions", "rewards", "next_observations", "terminations"):
            getattr(self.data, name)[rows[keep]] = getattr(batch, name)[keep].to(getattr(self.data, name))
        self.next = (self.next + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, generator: torch.Generator) -> TransitionBatch:
        return self.data.minibatch(torch.randint(self.size, (n,), generator=generator).to(self.data.rewards.device))

    def state_dict(self) -> dict:
        return {"data": vars(self.data), "size": self.size, "next": self.next}

    def load_state_dict(self, state: dict) -> None:
        self.data = TransitionBatch(**state["data"])
        self.size, self.next = state["size"], state["next"]


class DSRL(Algorithm):
    def __init__(self, cfg: DSRLConfig, ctx: TrainContext):
        policy, device = ctx.model, ctx.device
        obs_dim, noise_dim = policy.obs_dim, policy.act_dim  # the noise w has the action's shape (flattened here)
        torch.manual_seed(ctx.cfg.seed)
        self.actor = TanhGaussianActor(obs_dim, noise_dim, cfg.noise_bound, cfg.hidden_dim).to(device)
        super().__init__(cfg, ctx, params=list(self.actor.parameters()))  # the base optimizer trains the noise actor
        self.cfg: DSRLConfig = cfg
        self.noise_critic = TwinQ(obs_dim, noise_dim, cfg.hidden_dim, 2).to(device)  # Q^W(s, w)
        self.noise_critic_target = copy.deepcopy(self.noise_critic).requires_grad_(False)
        critic_params = list(self.noise_critic.parameters())
        if cfg.variant == "na":
            self.action_critic = TwinQ(obs_dim, policy.act_dim, cfg.hidden_dim, 2).to(device)  # Q^A(s, a)
            self.action_critic_target = copy.deepcopy(self.action_critic).requires_grad_(False)
            critic_params += list(self.action_critic.parameters())
        self.critic_optimizer = torch.optim.Adam(critic_params, lr=cfg.lr)
        self.log_alpha = torch.tensor(float(np.log(cfg.init_temperature)), device=device, requires_grad=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.lr)
        self.target_entropy = cfg.target_entropy * noise_dim
        # The buffer stores the noise w for DSRL-SAC and the executed action for DSRL-NA.
        self.buffer = ReplayBuffer(cfg.buffer_size, obs_dim, noise_dim, device)
        self.epochs_collected = 0

    def action_critic_input(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """What Q^A reads of an action. [B, A]

        offset: a - pi_W(s, 0). The executed action is mostly a function of the state (R^2 0.84-0.92 on
        Pendulum), so a critic on raw a learnt the state from it and ranked the noises within a state wrongly;
        the offset from the base policy's action carries only what the noise changed.
        """
        if self.cfg.action_critic_input == "action":
            return actions
        return actions - self.steer(states, torch.zeros_like(actions))

    def action_value(self, critic: TwinQ, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """min(Q1, Q2) of an action critic (Q^A or its target) at executed actions. [B]"""
        return critic.q_min(states, self.action_critic_input(states, actions))

    # ------------------------------------------------------------------ acting
    def steer(self, states: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """pi_W(s, w): the frozen policy's deterministic chain from initial noise w [B, Ta * A]. [B, Ta * A]"""
        policy, schedule = self.ctx.model, self.ctx.schedule
        noise = noise.view(len(noise), *policy.action_shape)
        return policy.sample(schedule, states, eta=0.0, initial_noise=noise).actions.flatten(1)

    def _actor(self, generator: torch.Generator, explore: str):
        """obs -> (actions, {"noise": w}); explore: base (w ~ N(0, I)), sample (w ~ pi^w) or mode."""

        @torch.no_grad()
        def act(obs: np.ndarray):
            states = torch.as_tensor(obs, device=self.ctx.device).flatten(1)  # [n, O] (a history [n, To, O] flattened)
            if explore == "base":
                noise = torch.randn(states.shape[0], self.ctx.model.act_dim, generator=generator).to(states)
            else:
                noise, _ = self.actor(states, generator, deterministic=explore == "mode")
            actions = self.steer(states, noise).view(len(states), *self.ctx.model.action_shape)
            return actions.cpu().numpy(), {"noise": noise.cpu()}

        return act

    def evaluation_actor(self, generator: torch.Generator):
        # Before any update the mode of a fresh actor is not the base policy; evaluate pi^w's mode after.
        return self._actor(generator, "mode" if self.epochs_collected > 0 else "base")

    # ---------------------------------------------------------------- sampling
    def collect(self, generator: torch.Generator) -> TransitionBatch:
        """Whole episodes with the current noise actor (the base policy in the first random_epochs)."""
        ctx = self.ctx
        explore = "base" if self.epochs_collected < self.cfg.random_epochs else "sample"
        horizons = Horizons.of(ctx.cfg.model)
        episodes = run_episodes(
            ctx.cfg.env.id,
            self._actor(generator, explore),
            -(-ctx.cfg.train.samples_per_epoch // horizon(ctx.cfg.env.id, horizons)),
            seed=int(torch.randint(2**31 - 1, (1,), generator=generator)),
            horizons=horizons,
            **vector_options(ctx.cfg.env),
        )
        self.epochs_collected += 1
        batch = episodes_to_transitions(episodes, ctx.device)
        for name in ("observations", "actions", "next_observations"):  # histories and chunks, flattened
            setattr(batch, name, getattr(batch, name).flatten(1))
        noise = torch.cat([e.extras["noise"] for e in episodes]).to(ctx.device)
        if self.cfg.variant == "sac":
            batch.actions = noise  # [N, A]: SAC's action is the noise
        return batch

    # ------------------------------------------------------------------ update
    def update(self, batch: TransitionBatch, epoch: int) -> dict[str, float]:
        self.buffer.add(batch)
        totals: dict[str, list[float]] = {}
        for _ in range(self.cfg.updates_per_epoch):
            for key, value in self.gradient_step(self.buffer.sample(self.ctx.cfg.train.batch_size, self.generator)).items():
                totals.setdefault(key, []).append(value)
        metrics = {key: float(np.mean(values)) for key, values in totals.items()}
        metrics.update(
            reward_mean=float(np.mean(batch.episode_returns)),
            reward_std=float(np.std(batch.episode_returns)),
            samples=len(batch.episode_returns),
        )
        metrics["train/lr"] = self.lr
        return with_evaluation(self.ctx, metrics, epoch, self.evaluation_actor, as_reward=False)

    def gradient_step(self, mb: TransitionBatch) -> dict[str, float]:
        cfg, gamma = self.cfg, self.ctx.cfg.env.gamma
        alpha = float(self.log_alpha.exp())
        with torch.no_grad():
            next_noise, next_log_prob = self.actor(mb.next_observations, self.generator)
        if cfg.variant == "sac":
            with torch.no_grad():
                y = sac_critic_target(
                    mb.rewards,
                    mb.terminations,
                    self.noise_critic_target.q_min(mb.next_observations, next_noise),
                    next_log_prob,
                    alpha,
                    gamma,
                )
            q1, q2 = self.noise_critic(mb.observations, mb.actions)
            critic_loss = (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()
        else:
            with torch.no_grad():
                next_actions = self.steer(mb.next_observations, next_noise)
                y = td_target(mb.rewards, mb.terminations, self.action_value(self.action_critic_target, mb.next_observations, next_actions), gamma)
                # Distillation: random noise, the action it aliases to, and Q^A there.
                states = mb.observations.repeat(cfg.distill_samples, 1)
                noise = torch.randn(states.shape[0], self.ctx.model.act_dim, generator=self.generator).to(states)
                distill_target = self.action_value(self.action_critic, states, self.steer(states, noise))
                taken = self.action_critic_input(mb.observations, mb.actions)
            q1, q2 = self.action_critic(mb.observations, taken)
            w1, w2 = self.noise_critic(states, noise)
            critic_loss = (
                (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean() + (w1 - distill_target).pow(2).mean() + (w2 - distill_target).pow(2).mean()
            )
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # Actor over the noise and the temperature (SAC, Haarnoja et al. 2018, eq. 7 and 18).
        noise, log_prob = self.actor(mb.observations, self.generator)
        actor_loss = (alpha * log_prob - self.noise_critic.q_min(mb.observations, noise)).mean()
        actor_loss.backward()
        self.noise_critic.zero_grad(set_to_none=True)
        grad_norm, _ = self.optimizer_step()
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()

        soft_update(self.noise_critic_target, self.noise_critic, cfg.tau)
        if cfg.variant == "na":
            soft_update(self.action_critic_target, self.action_critic, cfg.tau)
        return {
            "train/loss": float(actor_loss.detach()),
            "train/critic_loss": float(critic_loss.detach()),
            "train/q_mean": float(q1.detach().mean()),
            "train/alpha": alpha,
            "train/entropy": float(-log_prob.detach().mean()),
            "train/grad_norm": grad_norm,
        }

    def export_policy(self):
        """The frozen base policy, unchanged (the noise actor is exported by export_extra)."""
        return self.ctx.model

    def export_extra(self, run_dir) -> None:
        torch.save(self.actor.state_dict(), run_dir / "noise_actor.pt")

    # ------------------------------------------------------------------- state
    def _networks(self) -> dict:
        nets = {"actor": self.actor, "noise_critic": self.noise_critic, "noise_critic_target": self.noise_critic_target}
        if self.cfg.variant == "na":
            nets.update(action_critic=self.action_critic, action_critic_target=self.action_critic_target)
        return nets

    def state_dict(self) -> dict:
        state = {**super().state_dict(), **{k: v.state_dict() for k, v in self._networks().items()}}
        state.update(
            critic_optimizer=self.critic_optimizer.state_dict(),
            alpha_optimizer=self.alpha_optimizer.state_dict(),
            log_alpha=self.log_alpha.detach().clone(),
            buffer=self.buffer.state_dict(),
            epochs_collected=self.epochs_collected,
        )
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for k, v in self._networks().items():
            v.load_state_dict(state[k])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.buffer.load_state_dict(state["buffer"])
        self.epochs_collected = state["epochs_collected"]
