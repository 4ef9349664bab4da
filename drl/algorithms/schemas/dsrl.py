"""algorithm=dsrl: steering a frozen diffusion policy through its input noise (Wagenmaker et al. 2025;
drl/algorithms/dsrl.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from drl.algorithms.schemas.base import AlgorithmConfig
from drl.checks import all_positive, choice, fraction


@dataclass
class DSRLConfig(AlgorithmConfig):
    name: str = "dsrl"
    lr: float = 3e-4
    """Learning rate of every network DSRL trains (actor over noise, critics, entropy temperature)."""
    variant: str = "sac"
    """sac: SAC whose action is the policy's initial noise (DSRL-SAC); na: noise-aliased (DSRL-NA, Q on executed actions, distilled to the noise)."""
    noise_bound: float = 2.5
    """The noise actor's output range: w = noise_bound * tanh(.)."""
    updates_per_epoch: int = 50
    """Gradient steps per epoch on train.batch_size transitions from the replay buffer."""
    random_epochs: int = 1
    """First epochs act with w ~ N(0, I), i.e. the frozen base policy itself (fills the buffer)."""
    buffer_size: int = 100_000
    """Replay buffer capacity (transitions)."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    init_temperature: float = 0.1
    """Initial SAC entropy temperature alpha (tuned towards target_entropy)."""
    target_entropy: float = 0.0
    """SAC's target entropy per noise dimension (the target is this times the action size)."""
    hidden_dim: int = 256
    """Width of the actor's and critics' 2 hidden layers."""
    distill_samples: int = 1
    """DSRL-NA: noise draws per state for distilling the action-space Q into the noise-space Q."""
    action_critic_input: str = "offset"
    """DSRL-NA: what Q^A(s, .) reads of an action a: offset, a - pi_W(s, 0) (the shift from the base policy's action
    for noise 0), or action, a itself (on Pendulum the raw action is mostly a function of s and Q^A ranked noises wrongly)."""

    trains_denoiser: ClassVar[bool] = False
    policy_kinds: ClassVar[tuple[str, ...]] = ("diffusion", "flow")

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        choice(p, "algorithm.variant", self.variant, ("sac", "na"))
        choice(p, "algorithm.action_critic_input", self.action_critic_input, ("offset", "action"))
        all_positive(p, self, "algorithm", ("noise_bound", "updates_per_epoch", "buffer_size", "init_temperature", "hidden_dim", "distill_samples"))
        fraction(p, "algorithm.tau", self.tau)
        if cfg.scheduler.kind not in ("ddim", "flow") or cfg.scheduler.eta != 0:
            p.append(
                "algorithm=dsrl needs the deterministic chain (noise -> action): set scheduler=ddim scheduler.eta=0 "
                "(a flow policy: scheduler=flow scheduler.eta=0, the flow ODE)."
            )
        return p
