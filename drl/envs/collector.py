"""The collectors of control runs: a dataset reader (offline) and environment rollouts (online).

Both return the batches the one loop in drl/train.py hands to ``algorithm.update``:
TransitionBatch for the actor-critic methods, Rollout (the image side's type) for DDPO, where
every environment step is one denoising chain, its action the chain's final sample, and its
reward the environment's return: no reward model scores a control run.
"""

from __future__ import annotations

import math
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from drl.envs.chunking import Horizons, chunk_windows
from drl.envs.dataset import OfflineDataset
from drl.envs.episodes import Episode, discounted_returns_to_go, run_episodes
from drl.envs.make import make_env
from drl.models.policy import DiffusionPolicy
from drl.sampling import NoiseSchedule
from drl.types import Conditioning, Rollout, TransitionBatch


def episodes_to_transitions(episodes: list[Episode], device: torch.device) -> TransitionBatch:
    """Flatten episodes into one TransitionBatch (episode_returns: one per episode)."""
    t = lambda name, dtype=torch.float32: torch.as_tensor(np.concatenate([getattr(e, name) for e in episodes]), dtype=dtype, device=device)  # noqa: E731
    return TransitionBatch(
        t("observations"), t("actions"), t("rewards"), t("next_observations"), t("terminations"), [e.total_reward for e in episodes]
    )


class DatasetReader:
    """Uniform minibatches of an offline dataset, held on the device; with chunks, of its ChunkedEnv decisions
    (observations [N, To, O], actions [N, Ta, A], rewards summed over the chunk: drl.envs.chunking.chunk_windows)."""

    def __init__(self, dataset: OfflineDataset, device: torch.device, horizons: Horizons = Horizons()):
        self.dataset = dataset
        fields = ("observations", "actions", "rewards", "next_observations", "terminations")
        arrays = chunk_windows(dataset, horizons) if horizons.chunked else {k: getattr(dataset, k) for k in fields}
        self.data = TransitionBatch(*(torch.as_tensor(arrays[k], dtype=torch.float32, device=device) for k in fields))

    def sample(self, n: int, generator: torch.Generator) -> TransitionBatch:
        return self.data.minibatch(torch.randint(len(self.data), (n,), generator=generator).to(self.data.rewards.device))


def horizon(env_id: str, horizons: Horizons = Horizons()) -> int:
    """Decisions per episode under the env's time limit (1 if it has none, e.g. the bandit); a chunk is one."""
    make_env(env_id).close()  # registers drl's own envs
    return math.ceil((gym.spec(env_id).max_episode_steps or 1) / horizons.action)


def policy_actor(
    policy: DiffusionPolicy, schedule: NoiseSchedule, eta: float, generator: torch.Generator, record: bool = False
) -> Callable:
    """obs [n, *obs_shape] -> (actions [n, *action_shape], extras): one chain per state; with ``record`` the chain's tensors."""

    @torch.no_grad()
    def act(obs: np.ndarray):
        chain = policy.sample(schedule, torch.as_tensor(obs, device=policy.device), eta=eta, generator=generator)
        extras = {"latents": chain.latents.cpu(), "log_probs": chain.log_probs.cpu(), "timesteps": chain.timesteps.cpu()} if record else {}
        return chain.actions.cpu().numpy(), extras

    return act


class PolicyCollector:
    """Runs the diffusion policy in the environment; for DDPO it records every step's chain."""

    guidance_scale = 1.0  # read by DDPO; a policy has no classifier-free guidance

    def __init__(
        self,
        policy: DiffusionPolicy,
        schedule: NoiseSchedule,
        env_id: str,
        eta: float,
        gamma: float,
        device: torch.device,
        horizons: Horizons = Horizons(),
        **vector,
    ):
        self.policy, self.schedule, self.env_id = policy, schedule, env_id
        self.eta, self.gamma, self.device, self.horizons = eta, gamma, device, horizons
        self.vector = vector  # run_episodes' num_envs, vector_mode

    def episodes(self, num_steps: int, actor: Callable, generator: torch.Generator) -> list[Episode]:
        """Whole episodes, run side by side, until at least ``num_steps`` decisions (env steps, or chunks)."""
        episodes_needed = math.ceil(num_steps / horizon(self.env_id, self.horizons))
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        return run_episodes(self.env_id, actor, episodes_needed, seed, horizons=self.horizons, **self.vector)

    def collect(self, num_steps: int, generator: torch.Generator) -> Rollout:
        """Whole episodes until at least ``num_steps`` decisions; decision k's reward is its return-to-go.

        The Rollout's "prompt embeddings" are the states, its samples the executed actions (chunks), its
        rewards each decision's discounted return-to-go G_t, filled in here (logged as reward/env_return).
        """
        episodes = self.episodes(num_steps, policy_actor(self.policy, self.schedule, self.eta, generator, record=True), generator)
        cat = lambda name: torch.cat([e.extras[name] for e in episodes]).to(self.device)  # noqa: E731
        states = torch.as_tensor(np.concatenate([e.observations for e in episodes]), device=self.device)  # [B, O] / [B, To, O]
        returns = np.concatenate([discounted_returns_to_go(e.rewards, self.gamma) for e in episodes])  # [B] float64
        rewards = torch.as_tensor(returns, dtype=torch.float32, device=self.device)  # [B]
        actions = torch.as_tensor(np.concatenate([e.actions for e in episodes]), device=self.device)  # [B, A] / [B, Ta, A]
        stochastic = self.policy.sample(
            self.schedule, states[:1], eta=self.eta, generator=torch.Generator().manual_seed(0)
        ).stochastic  # [S]
        return Rollout(
            prompts=[""] * len(states),
            metadata=[{} for _ in range(len(states))],
            cond=Conditioning({"states": states}),  # [B, O]: what the policy is conditioned on
            uncond=None,
            latents=cat("latents"),  # [B, S + 1, A]
            timesteps=cat("timesteps"),  # [B, S]
            log_probs=cat("log_probs"),  # [B, S]
            stochastic=stochastic,
            samples=actions,
            rewards=rewards,
            reward_terms={"env_return": rewards},
        )
