"""A state-conditioned diffusion policy: Diffusion-QL's MLP denoiser on a short VP schedule.

Shape legend:
    B  states in the batch       O  observation size       A  action size
    S  denoising steps            E  timestep-embedding size
    To, Ta  observation / action horizons: with chunks a state is [To, O] and an action [Ta, A]
            (drl/envs/chunking.py); the MLP reads both flattened. Without, they are [O] and [A].

The policy is a diffusion model over actions a in [-1, 1]^A conditioned on the state s
(Wang et al. 2023, "Diffusion Policies as an Expressive Policy Class for Offline RL",
sec. 3): eps_theta(a_t, t, s). Its reverse chain is the one drl.sampling implements for
images, with the action vector as the "latent" and the state as the "prompt embedding";
``denoise`` has the signature of T2IModel.denoise, so DDPO trains it unchanged.

A flow policy (:class:`FlowPolicy`, ``model=flow_policy``) is the same MLP read as a velocity v_theta(a_sigma, t, s)
on the rectified-flow path a_sigma = (1 - sigma) a + sigma eps (t = sigma * 1000): the image side's flow schedule
(drl/sampling_flow.py, a FlowMatchEulerDiscreteScheduler's levels) and the same chain, whose steps with
scheduler.eta = 0 are the flow ODE's Euler steps (1-10 of them; Lipman et al. 2023, Liu et al. 2023).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file, save_file
from torch import nn

from drl.models.base import DenoiserModel
from drl.chain import gaussian_noise, run_chain
from drl.sampling import NoiseSchedule
from drl.types import Conditioning

WEIGHTS_NAME, CONFIG_NAME = "policy.safetensors", "policy.json"
FLOW_TRAIN_TIMESTEPS = 1000  # a flow policy's denoiser reads t = sigma * 1000 (SD3's scale), sigma in [0, 1]


def vp_betas(num_steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> np.ndarray:
    """The discretised VP-SDE betas of Diffusion-QL (their ``vp_beta_schedule``; Song et al. 2021, eq. 11).

    alpha_t = exp(-beta_min / T - (beta_max - beta_min) (2t - 1) / (2 T^2)),  beta_t = 1 - alpha_t,  t = 1..T.
    """
    t = np.arange(1, num_steps + 1)
    alpha = np.exp(-beta_min / num_steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / num_steps**2)
    return 1 - alpha


class SinusoidalEmbedding(nn.Module):
    """t [B] -> [B, E]: sin/cos features of geometric frequencies (Vaswani et al. 2017)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / max(1, half - 1))
        angles = t.float().unsqueeze(1) * freqs.unsqueeze(0)  # [B, E/2]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


def mish_mlp(in_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    """in -> (Linear, Mish) x layers -> Linear out."""
    parts: list[nn.Module] = []
    for k in range(layers):
        parts += [nn.Linear(in_dim if k == 0 else hidden, hidden), nn.Mish()]
    return nn.Sequential(*parts, nn.Linear(hidden, out_dim))


class MLPDenoiser(nn.Module):
    """eps_theta(a_t, t, s): Diffusion-QL's 3x256 Mish MLP on [a_t, time embedding, s]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 256, num_layers: int = 3, time_dim: int = 16):
        super().__init__()
        self.config = dict(obs_dim=obs_dim, act_dim=act_dim, hidden_dim=hidden_dim, num_layers=num_layers, time_dim=time_dim)
        self.time_embedding = nn.Sequential(
            SinusoidalEmbedding(time_dim), nn.Linear(time_dim, 2 * time_dim), nn.Mish(), nn.Linear(2 * time_dim, time_dim)
        )
        self.net = mish_mlp(act_dim + time_dim + obs_dim, hidden_dim, num_layers, act_dim)

    def forward(self, actions: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """actions [B, A] or [B, Ta, A] (a_t), t [B] long, states [B, O] or [B, To, O] -> predicted noise, actions' shape."""
        out = self.net(torch.cat([actions.flatten(1), self.time_embedding(t), states.flatten(1)], dim=1))
        return out.view(actions.shape)


@dataclass
class ChainOutput:
    """One run of the reverse chain for a batch of states.

    actions:   [B, A]         a_0, the executed actions ([B, Ta, A] with chunks, and so below)
    latents:   [B, S + 1, A]  a_T ... a_0
    timesteps: [B, S] long
    log_probs: [B, S] float32 exact log p(a_{t-1} | a_t, s)
    stochastic: [S] bool
    """

    actions: torch.Tensor
    latents: torch.Tensor
    timesteps: torch.Tensor
    log_probs: torch.Tensor
    stochastic: torch.Tensor


class DiffusionPolicy(DenoiserModel):
    """The denoiser plus its noise schedule; the action-space twin of drl.models.t2i.T2IModel."""

    kind = "diffusion"
    """What the denoiser predicts and which schedule it runs (model.policy_kind; algorithms say which they take)."""

    def __init__(self, denoiser: MLPDenoiser, scheduler_config: dict, shapes: dict | None = None):
        self.denoiser = denoiser  # the trainable network; named as in T2IModel so algorithms share code
        self.scheduler_config = scheduler_config
        shapes = shapes or {"obs": [denoiser.config["obs_dim"]], "action": [denoiser.config["act_dim"]]}
        self.obs_shape: tuple[int, ...] = tuple(shapes["obs"])  # (O,) or (To, O)
        self.action_shape: tuple[int, ...] = tuple(shapes["action"])  # (A,) or (Ta, A)

    @classmethod
    def build(cls, obs_dim: int, act_dim: int, cfg, seed: int = 0, obs_shape=None, action_shape=None) -> "DiffusionPolicy":
        """A freshly initialised policy from a PolicyModelConfig; ``obs_dim``/``act_dim`` are the flattened
        sizes of ``obs_shape``/``action_shape`` (a chunked env's [To, O] / [Ta, A]; default (O,) / (A,))."""
        torch.manual_seed(seed)
        denoiser = MLPDenoiser(obs_dim, act_dim, cfg.hidden_dim, cfg.num_layers, cfg.time_dim)
        shapes = {"obs": list(obs_shape or [obs_dim]), "action": list(action_shape or [act_dim])}
        return cls(denoiser, cls.default_scheduler_config(cfg), shapes)

    @staticmethod
    def default_scheduler_config(cfg) -> dict:
        """Diffusion-QL's VP schedule of cfg.diffusion_steps steps, epsilon prediction."""
        return dict(
            num_train_timesteps=cfg.diffusion_steps,
            trained_betas=vp_betas(cfg.diffusion_steps, cfg.beta_min, cfg.beta_max).tolist(),
            prediction_type="epsilon",
            clip_sample=True,  # x̂_0 clipped to the action box, as Diffusion-QL does
            clip_sample_range=1.0,
            variance_type="fixed_small",
        )

    @property
    def act_dim(self) -> int:
        """The action's flattened size (Ta * A with chunks)."""
        return self.denoiser.config["act_dim"]

    @property
    def obs_dim(self) -> int:
        return self.denoiser.config["obs_dim"]

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def denoise(self, latents, t, cond, uncond=None, guidance_scale: float = 1.0, denoiser=None) -> torch.Tensor:
        """T2IModel.denoise's signature: latents = noisy actions [B, A], cond = states [B, O]
        (a tensor, or a Conditioning holding "states" as rollouts store it); no guidance."""
        states = cond["states"] if isinstance(cond, Conditioning) else cond
        return (self.denoiser if denoiser is None else denoiser)(latents, t, states)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The chain's output already is the action [B, A]."""
        return latents

    def make_scheduler(self, kind: str) -> DDIMScheduler | DDPMScheduler:
        cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
        return cls.from_config(self.scheduler_config)

    def to(self, device) -> "DiffusionPolicy":
        self.denoiser.to(device)
        return self

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        schedule: NoiseSchedule,
        states: torch.Tensor,
        *,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        initial_noise: torch.Tensor | None = None,
        denoiser: nn.Module | None = None,
        fine_tuned_steps: int | None = None,
        frozen_denoiser: nn.Module | None = None,
        min_std: float = 0.0,
        step_std=None,
    ) -> ChainOutput:
        """Run the reverse chain from a_T ~ N(0, I) (or ``initial_noise``, actions' shape) for states [B, *obs_shape].

        Each step is drl.sampling.denoising_step, so the log-probs are those DDPO re-scores.
        Gradients flow to the weights when the caller enables them (Diffusion-QL's Q term).
        DPPO: with ``fine_tuned_steps`` = K only the last K steps run ``denoiser`` (default self.denoiser), the earlier
        ones ``frozen_denoiser``; ``min_std`` floors every step's std (its exploration noise).
        ReinFlow: ``step_std(a_t, t)`` [B, *action_shape] is every step's std instead of the schedule's (drl.chain.run_chain).
        """
        n = states.shape[0]
        noise = gaussian_noise(generator, torch.float32, states.device, states.dtype)
        x = noise((n, *self.action_shape)) if initial_noise is None else initial_noise.to(states.device, states.dtype)  # a_T: [B, *action_shape]
        timesteps = schedule.timesteps
        # DPPO: the last K steps (timesteps <= the K-th from the end; they descend) run the fine-tuned network.
        first_tuned = timesteps[0 if fine_tuned_steps is None else len(timesteps) - fine_tuned_steps]

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.denoise(x_t, t, states, denoiser=denoiser if bool(t[0] <= first_tuned) else frozen_denoiser)

        chain = run_chain(schedule, x, denoise, noise, eta=eta, min_std=min_std, step_std=step_std)
        return ChainOutput(
            actions=chain.sample.clamp(-1, 1),
            latents=chain.latents,
            timesteps=chain.timesteps,
            log_probs=chain.log_probs,
            stochastic=chain.stochastic,
        )

    # ---------------------------------------------------------------- save/load
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.denoiser.state_dict().items()}, directory / WEIGHTS_NAME)
        shapes = {"obs": list(self.obs_shape), "action": list(self.action_shape)}
        config = {"denoiser": self.denoiser.config, "scheduler": self.scheduler_config, "shapes": shapes, "kind": self.kind}
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=1))


class FlowPolicy(DiffusionPolicy):
    """The same MLP as a rectified-flow velocity field, on a FlowMatchEulerDiscreteScheduler's levels (shift 1)."""

    kind = "flow"

    @staticmethod
    def default_scheduler_config(cfg) -> dict:
        return dict(num_train_timesteps=FLOW_TRAIN_TIMESTEPS, shift=1.0)

    def make_scheduler(self, kind: str) -> FlowMatchEulerDiscreteScheduler:
        """The flow scheduler whatever ``kind`` (the config check has asked for scheduler.kind=flow)."""
        return FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)


POLICY_CLASSES: dict[str, type[DiffusionPolicy]] = {"diffusion": DiffusionPolicy, "flow": FlowPolicy}
"""model.policy_kind -> the class that builds and samples it."""


def load_policy(path: str | Path) -> DiffusionPolicy:
    """Load a policy saved by DiffusionPolicy.save_pretrained (a run's ``policy/`` directory)."""
    directory = Path(path).expanduser()
    if directory.is_dir() and (directory / "policy").is_dir():  # a run dir was given
        directory = directory / "policy"
    if not (directory / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"No diffusion policy at {str(path)!r}: point model.path at the policy/ directory of a "
            "behaviour-cloning run (drl-train experiment=bandit_bc writes <run dir>/policy)."
        )
    config = json.loads((directory / CONFIG_NAME).read_text())
    denoiser = MLPDenoiser(**config["denoiser"])
    denoiser.load_state_dict(load_file(directory / WEIGHTS_NAME))
    cls = POLICY_CLASSES[config.get("kind", "diffusion")]  # no "kind": saved before flow policies, a diffusion one
    return cls(denoiser, config["scheduler"], config.get("shapes"))  # no "shapes": saved before chunks, (O,), (A,)
