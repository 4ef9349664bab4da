"""algorithm=reinflow: ReinFlow (Zhang et al. 2025), PPO on a flow policy whose steps carry a learned, bounded noise
(drl/algorithms/reinflow.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from drl.algorithms.schemas.control_ppo import PolicyPPOConfig
from drl.checks import all_positive


@dataclass
class ReinFlowConfig(PolicyPPOConfig):
    """ReinFlow (Zhang et al. 2025, "ReinFlow: Fine-tuning Flow Matching Policy with Online Reinforcement Learning"):
    a noise network adds a learned, bounded std to every Euler step of a flow policy, which makes the chain a Markov
    chain of Gaussians with exact log-probs; PPO with a value function fine-tunes the velocity and the noise together.
    lr is the actor's (velocity field and noise network)."""

    name: str = "reinflow"
    lr: float = 4.5e-5
    """Actor learning rate (the authors' Hopper actor_lr)."""
    critic_lr: float = 6.5e-4
    """Learning rate of the value function (the authors' Hopper critic_lr)."""
    min_std: float = 0.1
    """Lower bound of the noise network's std per action dimension (the authors' min_logprob_denoising_std); in (0, 1]."""
    max_std: float = 0.24
    """Upper bound of the noise network's std (the authors' max_logprob_denoising_std for Hopper); in [min_std, 1]."""
    step_conditioned: bool = True
    """The noise network reads the flow step's time features (the policy's time embedding, detached) beside the state;
    false: the state only (the authors' use_time_independent_noise)."""
    noise_hidden_dim: int = 64
    """Width of the noise network's 2 Tanh hidden layers (the authors' noise_hidden_dims [64, 64])."""
    ent_coef: float = 0.03
    """Weight of the entropy bonus: loss -= ent_coef * the chain's entropy rate per step and action dimension
    (the authors' ent_coef, Hopper 0.03)."""
    log_prob_min: float = -1.0
    """The chain's normalised log-prob (per step and action dimension) is clamped to [log_prob_min, log_prob_max]
    before the ratio, as the authors' logprob_min / logprob_max."""
    log_prob_max: float = 1.0
    """Upper clamp of the normalised log-prob (see log_prob_min)."""

    policy_kinds: ClassVar[tuple[str, ...]] = ("flow",)

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        for key in ("min_std", "max_std"):
            value = getattr(self, key)
            if not 0 < value <= 1:
                p.append(f"algorithm.{key}={value} is outside (0, 1]: ReinFlow's learned noise std is bounded within (0, 1].")
        if 0 < self.min_std <= 1 and 0 < self.max_std <= 1 and self.min_std > self.max_std:
            p.append(f"algorithm.min_std={self.min_std} exceeds algorithm.max_std={self.max_std}.")
        all_positive(p, self, "algorithm", ("noise_hidden_dim",))
        all_positive(p, self, "algorithm", ("ent_coef",), allow_zero=True)
        if self.log_prob_min >= self.log_prob_max:
            p.append(f"algorithm.log_prob_min={self.log_prob_min} must be below algorithm.log_prob_max={self.log_prob_max}.")
        if cfg.scheduler.eta != 0:
            p.append("algorithm=reinflow steps the flow ODE and adds its own learned noise: set scheduler.eta=0.")
        return p
