"""The keys DPPO and ReinFlow share: PPO with a value function over a policy's chains (drl/algorithms/control_ppo.py)."""

from __future__ import annotations

from dataclasses import dataclass

from drl.algorithms.schemas.base import AlgorithmConfig
from drl.checks import all_positive, fraction


@dataclass
class PolicyPPOConfig(AlgorithmConfig):
    """PPO on a control task with a value function on the environment state and GAE over decisions. lr is the actor's."""

    critic_lr: float = 1e-3
    """Learning rate of the value function V(s) (DPPO's critic_lr)."""
    critic_hidden_dim: int = 256
    """Width of the value function's 3 hidden layers (Mish MLP on the flattened observation history)."""
    clip_range: float = 0.01
    """PPO clip range of the ratio (DPPO's and ReinFlow's clip_ploss_coef for Gym tasks)."""
    gae_lambda: float = 0.95
    """GAE's lambda over environment decisions (env.gamma is the discount per decision)."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this before the value function and GAE see them (DPPO's reward_scale_const)."""
    vf_coef: float = 0.5
    """Weight of the value loss 0.5 (V - return)^2."""
    value_clip: float = 0.0
    """Clip V's change from its value at collection to +-this in the loss (DPPO's clip_vloss_coef); 0: no clipping."""
    update_epochs: int = 5
    """Passes over each epoch's PPO units (DPPO: (decision, denoising step) pairs; ReinFlow: decisions), in minibatches of
    train.batch_size."""
    critic_warmup_epochs: int = 0
    """First epochs train only the value function (DPPO's n_critic_warmup_itr)."""

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        all_positive(p, self, "algorithm", ("critic_lr", "critic_hidden_dim", "clip_range", "reward_scale", "update_epochs"))
        all_positive(p, self, "algorithm", ("vf_coef", "value_clip", "critic_warmup_epochs"), allow_zero=True)
        fraction(p, "algorithm.gae_lambda", self.gae_lambda, closed_low=True)
        return p
