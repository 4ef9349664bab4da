"""The one rollout collector that every algorithm uses.

It runs the denoising chain for a batch of prompts in chunks of ``batch_size``
denoiser calls and records what the algorithms need: every x_t, its timestep and
the exact log-probability of each transition (drl.sampling.denoising_step, the
same function the update re-scores with), through drl.chain's one chain.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable

import torch

from drl.models.t2i import T2IModel
from drl.chain import gaussian_noise, run_chain
from drl.sampling import NoiseSchedule
from drl.sharding import is_sharded
from drl.types import Conditioning, Rollout


class RolloutCollector:
    def __init__(
        self,
        model: T2IModel,
        schedule: NoiseSchedule,
        *,
        eta: float,
        guidance_scale: float,
        batch_size: int,
        resolution: int,
        device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ):
        self.model = model
        self.schedule = schedule
        self.eta = eta
        self.guidance_scale = guidance_scale
        self.batch_size = batch_size
        self.device = device
        self.autocast = autocast
        self.latent_shape = model.latent_shape(resolution)  # (C, h, w), or (C, F, h, w) for video
        # Latents stay float32 under mixed precision, so that the stored x_{t-1} is the one the
        # log-prob was computed on (float64 models, in gradient checks, keep float64).
        self.dtype = torch.float64 if model.denoiser.dtype == torch.float64 else torch.float32
        self.on_chunk: Callable[[torch.Tensor, list, list], None] | None = None  # see chunk_callback

    @contextlib.contextmanager
    def chunk_callback(self, fn: Callable[[torch.Tensor, list, list], None]):
        """Within the block, collect() hands each finished chunk (samples [b, ...], prompts, metadata) to ``fn``
        before denoising the next one (drl.rewards.overlap scores it meanwhile)."""
        self.on_chunk = fn
        try:
            yield
        finally:
            self.on_chunk = None

    def uncond(self, n: int) -> Conditioning | None:
        """The empty prompt's conditioning (batch n) when guidance is on, else None."""
        if self.guidance_scale == 1.0:
            return None
        return self.model.negative_conditioning(n)

    @torch.no_grad()
    def collect(
        self, prompts: list[str], metadata: list[dict], generator: torch.Generator, initial_noise: torch.Tensor | None = None
    ) -> Rollout:
        """Sample one trajectory per prompt. Noise comes from ``generator`` only (reproducible),
        except x_T when ``initial_noise`` [B, C, h, w] is given (e.g. shared within a group)."""
        chunks = []
        for start in range(0, len(prompts), self.batch_size):
            x_T = None if initial_noise is None else initial_noise[start : start + self.batch_size]
            chunks.append(self._collect_chunk(prompts[start : start + self.batch_size], generator, x_T))
            if self.on_chunk is not None:
                self.on_chunk(chunks[-1]["samples"], prompts[start : start + self.batch_size], metadata[start : start + self.batch_size])
        cat = lambda key: torch.cat([c[key] for c in chunks])  # noqa: E731
        uncond = None if chunks[0]["uncond"] is None else Conditioning.cat([c["uncond"] for c in chunks])
        return Rollout(
            prompts=list(prompts),
            metadata=list(metadata),
            cond=Conditioning.cat([c["cond"] for c in chunks]),
            uncond=uncond,
            latents=cat("latents"),
            timesteps=cat("timesteps"),
            log_probs=cat("log_probs"),
            stochastic=chunks[0]["stochastic"],
            samples=cat("samples"),
        )

    def _collect_chunk(self, prompts: list[str], generator: torch.Generator, x_T: torch.Tensor | None = None) -> dict:
        n = len(prompts)
        cond = self.model.encode_prompts(prompts)  # batch n
        uncond = self.uncond(n)
        noise = gaussian_noise(generator, self.dtype, self.device, self.dtype)
        x = noise((n, *self.latent_shape)) if x_T is None else x_T.to(device=self.device, dtype=self.dtype)  # x_T: [n, C, h, w]
        chain = run_chain(self.schedule, x, self._denoiser(cond, uncond), noise, eta=self.eta)
        return {
            "cond": cond,
            "uncond": uncond,
            "latents": chain.latents,  # [n, S + 1, C, h, w]
            "timesteps": chain.timesteps,  # [n, S]
            "log_probs": chain.log_probs,  # [n, S]
            "stochastic": chain.stochastic,  # [S]
            "samples": self.model.decode(chain.sample),  # [n, 3, H, W], or clips [n, F, 3, H, W]
        }

    def _denoiser(self, cond: Conditioning, uncond: Conditioning | None):
        """(x_t, t, rows=None) -> the (guided) denoiser output under the run's autocast; ``rows`` [b]: x_t holds
        only those rows of the batch (drl.chain splits a step whose rows differ in gradient)."""

        def denoise(x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
            c, u = (cond, uncond) if rows is None else (cond[rows], None if uncond is None else uncond[rows])
            with self.autocast():
                return self.model.denoise(x, t, c, u, self.guidance_scale)

        return denoise

    def sample_with_grad(
        self,
        prompts: list[str],
        generator: torch.Generator,
        grad_steps: torch.Tensor,
        checkpoint_denoiser: bool = False,
        stop_step: int | None = None,
        decode_frames: torch.Tensor | None = None,
        with_latents: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, Conditioning]:
        """Run the chain with gradients through the steps where ``grad_steps`` [S] is True
        ([B, S]: each sample its own steps).

        Returns the decoded samples [B, 3, H, W] in [0, 1], differentiable w.r.t. the
        trainable weights through every step in ``grad_steps`` (AlignProp, DRaFT-K). The
        step noise is reparameterised (x_{t-1} = mu_theta + sigma * z with z fixed), so
        eta > 0 is allowed; eta = 0 is the deterministic DDIM chain. A step outside
        ``grad_steps`` runs without a graph, which cuts the gradient path there.

        ``stop_step`` (ReFL, Xu et al. 2023): stop at that step and decode its one-step
        prediction x̂_0 instead of finishing the chain.

        ``decode_frames`` [K] (video models): decode only these frames, [B, K, 3, H, W] (VADER).

        ``with_latents``: also return the clean latents that were decoded [B, *latent_shape] (detached)
        and the prompts' conditioning, for a KL-to-reference term at the samples' own points.
        """
        decode = self.model.decode if decode_frames is None else functools.partial(self.model.decode, frames=decode_frames)
        n = len(prompts)
        cond = self.model.encode_prompts(prompts)  # batch n
        uncond = self.uncond(n)
        noise = gaussian_noise(generator, self.dtype, self.device, self.dtype)
        x = noise((n, *self.latent_shape))  # x_T: [n, C, h, w]
        chain = run_chain(
            self.schedule, x, self._denoiser(cond, uncond), noise, eta=self.eta, record=False,
            grad_steps=grad_steps, checkpoint_steps=checkpoint_denoiser, stop_step=stop_step,
            reentrant=not is_sharded(self.model.denoiser),
        )  # fmt: skip
        return (decode(chain.sample), chain.sample.detach(), cond) if with_latents else decode(chain.sample)
