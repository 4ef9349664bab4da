"""What DPPO and ReinFlow share: PPO over a policy's chains in the environment, with a value function.

    rollout:   whole episodes from side-by-side envs (drl/envs/episodes.py), each decision's chain recorded
               (a decision = one action, or one chunk of Ta actions on a ChunkedEnv)
    critic:    V(s) on the environment state (the observation history), learnt on GAE's returns (value_clip optional)
    advantage: GAE(gamma = env.gamma per decision, lambda) over the decisions of each episode, normalised over the batch
    update:    update_epochs passes over the epoch's PPO units in shuffled minibatches of train.batch_size; each
               minibatch steps the critic (vf_coef * value loss) and, after critic_warmup_epochs, the actor

A subclass says what a unit is and what its policy loss is: DPPO's units are (decision, denoising step) pairs with
one step's log-prob ratio (drl/algorithms/dppo.py); ReinFlow's are decisions with the whole chain's
(drl/algorithms/reinflow.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from drl.algorithms.base import Algorithm, TrainContext
from drl.algorithms.control_base import with_evaluation
from drl.algorithms.control_losses import generalized_advantages
from drl.envs.episodes import Episode
from drl.models.critic import ValueFunction


@dataclass
class DecisionBatch:
    """One epoch of decisions, N of them, with their chains (S denoising steps).

    states [N, *obs_shape]; latents [N, S + 1, *action_shape] (x_T ... x_0); timesteps, log_probs [N, S];
    advantages, returns, values [N] (GAE, V at collection); episode_returns: one per episode (undiscounted);
    env_steps: the env steps the N decisions ran (a chunk's Ta, fewer where its episode ended).
    """

    states: torch.Tensor
    latents: torch.Tensor
    timesteps: torch.Tensor
    log_probs: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    values: torch.Tensor
    episode_returns: list[float]
    env_steps: int

    def __len__(self) -> int:
        return len(self.advantages)


class PolicyPPO(Algorithm):
    """PPO on a control task; subclasses give ``chain``, ``units`` and ``policy_loss``."""

    def __init__(self, cfg, ctx: TrainContext, params: list[torch.nn.Parameter] | None = None):
        super().__init__(cfg, ctx, params)  # self.optimizer trains the actor (the policy's denoiser, and what ``params`` adds)
        policy = ctx.model
        torch.manual_seed(ctx.cfg.seed)
        self.value = ValueFunction(policy.obs_dim, cfg.critic_hidden_dim).to(ctx.device)
        self.critic_optimizer = torch.optim.Adam(self.value.parameters(), lr=cfg.critic_lr)
        self.dims = int(np.prod(policy.action_shape))  # log-probs are averaged over them: sum / dims

    # ------------------------------------------------------------ what differs
    def chain(self, states: torch.Tensor, generator: torch.Generator, explore: bool):
        """The policy's chain at states (a drl.models.policy.ChainOutput); ``explore``: with the rollout's noise."""
        raise NotImplementedError

    def units(self, batch: DecisionBatch, adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The PPO units of the epoch: (decision index b [M], denoising step i [M] or None, advantage [M])."""
        raise NotImplementedError

    def policy_loss(
        self, batch: DecisionBatch, b: torch.Tensor, i: torch.Tensor | None, adv: torch.Tensor, train_actor: bool
    ) -> tuple[list[torch.Tensor], torch.Tensor, dict]:
        """(the actor's loss terms, the PPO ratios [n], stats) of the units (b, i) with advantages ``adv``: the clipped
        surrogate first, then regularisers, which are computed when ``train_actor``."""
        raise NotImplementedError

    # ---------------------------------------------------------------- sampling
    def actor(self, generator: torch.Generator, record: bool, explore: bool = True):
        """obs [n, *obs_shape] -> (actions [n, *action_shape], the chain's tensors when ``record``)."""

        @torch.no_grad()
        def act(obs: np.ndarray):
            chain = self.chain(torch.as_tensor(obs, device=self.ctx.device), generator, explore)
            extras = {"latents": chain.latents.cpu(), "log_probs": chain.log_probs.cpu(), "timesteps": chain.timesteps.cpu()} if record else {}
            return chain.actions.cpu().numpy(), extras

        return act

    def evaluation_actor(self, generator: torch.Generator):
        return self.actor(generator, record=False, explore=False)

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
            env_steps=sum(e.env_steps for e in episodes),
        )

    # ------------------------------------------------------------------ update
    def update(self, batch: DecisionBatch, epoch: int) -> dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)  # [N], DPPO's norm_adv
        b_all, i_all, adv_all = self.units(batch, adv)
        train_actor = epoch >= cfg.critic_warmup_epochs  # the first critic_warmup_epochs epochs train the critic alone
        totals: dict[str, list[float]] = {}
        first_ratio_dev = None
        ctx.model.denoiser.train()
        for _ in range(cfg.update_epochs):
            order = torch.randperm(len(b_all), generator=self.generator)
            for index in order.split(ctx.cfg.train.batch_size):
                i = None if i_all is None else i_all[index]
                stats = self._loss(batch, b_all[index], i, adv_all[index], train_actor)
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
                "train/env_steps": batch.env_steps,
                "train/value_mean": float(batch.values.mean()),
                "reward_mean": float(np.mean(returns)),
                "reward_std": float(np.std(returns)),
                "samples": len(returns),
            }
        )
        return with_evaluation(ctx, metrics, epoch, self.evaluation_actor, as_reward=False)

    def _loss(self, batch: DecisionBatch, b: torch.Tensor, i: torch.Tensor | None, adv: torch.Tensor, train_actor: bool) -> dict:
        """Value loss (+ the subclass's policy loss when ``train_actor``) of the units (b, i)."""
        cfg = self.cfg
        values = self.value(batch.states[b])  # [n]
        if cfg.value_clip > 0:
            clipped = batch.values[b] + (values - batch.values[b]).clamp(-cfg.value_clip, cfg.value_clip)
            value_loss = 0.5 * torch.maximum((values - batch.returns[b]) ** 2, (clipped - batch.returns[b]) ** 2).mean()
        else:
            value_loss = 0.5 * ((values - batch.returns[b]) ** 2).mean()
        loss = cfg.vf_coef * value_loss
        stats = {"train/value_loss": value_loss.detach()}
        with torch.set_grad_enabled(train_actor):
            policy_terms, ratio, policy_stats = self.policy_loss(batch, b, i, adv, train_actor)
        stats.update(policy_stats)
        stats.update({"train/approx_kl": ((ratio - 1) - ratio.log()).mean().detach(), "ratio_dev": float((ratio.detach() - 1).abs().max())})
        if train_actor:
            for term in policy_terms:
                loss = loss + term
        stats["loss"] = loss
        stats["train/loss"] = loss.detach()
        return stats

    # -------------------------------------------------------------------- export
    def export_extra(self, run_dir) -> None:
        torch.save(self.value.state_dict(), run_dir / "value_function.pt")

    # --------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {**super().state_dict(), "value": self.value.state_dict(), "critic_optimizer": self.critic_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.value.load_state_dict(state["value"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
