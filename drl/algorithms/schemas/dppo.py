"""algorithm=dppo: DPPO (Ren et al. 2024), PPO over the two-layer MDP of environment decisions x denoising steps
(drl/algorithms/dppo.py)."""

from __future__ import annotations

from dataclasses import dataclass

from drl.algorithms.schemas.control_ppo import PolicyPPOConfig
from drl.checks import all_positive, fraction


@dataclass
class DPPOConfig(PolicyPPOConfig):
    """DPPO (Ren et al. 2024): PPO over the two-layer MDP (environment decisions x denoising steps), with a value
    function on the environment state (drl/algorithms/dppo.py). lr is the actor's."""

    name: str = "dppo"
    lr: float = 1e-4
    ft_denoising_steps: int = 5
    """K: only the last K denoising steps are fine-tuned (and are the MDP's actions); the earlier ones run the frozen
    base policy. At most scheduler.num_steps."""
    min_std: float = 0.1
    """Floor of the std of the K fine-tuned steps, in sampling and in the log-prob (DPPO's min_sampling_denoising_std
    and min_logprob_denoising_std): exploration noise even at the near-deterministic last steps."""
    gamma_denoising: float = 0.99
    """A chunk's advantage is multiplied by gamma_denoising^(K - 1 - k) at fine-tuned step k (k = K - 1 the last)."""
    bc_coef: float = 0.0
    """Weight of the BC regulariser: -log-likelihood under the fine-tuned policy of chains sampled by the frozen base
    policy at the batch's states (DPPO's use_bc_loss); 0: off."""

    def problems(self, cfg) -> list[str]:
        p = super().problems(cfg)
        s = cfg.scheduler
        if not 1 <= self.ft_denoising_steps <= s.num_steps:
            p.append(f"algorithm.ft_denoising_steps={self.ft_denoising_steps} must be between 1 and scheduler.num_steps={s.num_steps}.")
        all_positive(p, self, "algorithm", ("min_std", "bc_coef"), allow_zero=True)
        fraction(p, "algorithm.gamma_denoising", self.gamma_denoising, closed_low=True)
        if self.min_std == 0 and s.kind == "ddim" and s.eta == 0:
            p.append("algorithm=dppo needs stochastic steps: set algorithm.min_std > 0, scheduler.eta > 0 or scheduler=ddpm.")
        return p
