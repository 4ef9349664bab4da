"""The one rollout collector that every algorithm uses.

It runs the denoising chain for a batch of prompts in chunks of ``batch_size``
denoiser calls and records what the algorithms need: every x_t, its timestep and
the exact log-probability of each transition (drl.sampling.denoising_step, the
same function the update re-scores with), through drl.chain's one chain.

With an SDE window (drl.sde_window) only the window's steps are stochastic and stored; the
deterministic prefix runs once per group of samples that share x_T, and the steps after the window
may take a higher-order solver on a shorter schedule. ``denoiser_rows`` counts every sample-step
the denoiser evaluates (a guided step counts two), so that callers can report denoiser calls.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable

import torch

from drl.models.t2i import T2IModel
from drl.chain import gaussian_noise, run_chain
from drl.sampling import NoiseSchedule
from drl.sde_window import SDEWindow, compress_tail, step_etas
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
        self.on_chunk: Callable[[torch.Tensor | None, list, list, torch.Tensor], None] | None = None  # see chunk_callback
        self.decode_samples = True  # see decoding
        self.denoiser_rows = 0  # sample-steps evaluated by the denoiser so far (guided: 2 per step)

    @contextlib.contextmanager
    def chunk_callback(self, fn: Callable[[torch.Tensor | None, list, list, torch.Tensor], None]):
        """Within the block, collect() hands each finished chunk (samples [b, ...] or None, prompts, metadata,
        x_0 latents [b, *latent_shape]) to ``fn`` before denoising the next one (drl.rewards.overlap scores it meanwhile)."""
        self.on_chunk = fn
        try:
            yield
        finally:
            self.on_chunk = None

    @contextlib.contextmanager
    def decoding(self, needed: bool):
        """Within the block, collect() decodes x_0 only if ``needed``; otherwise (every reward reads latents)
        Rollout.samples is None and the VAE is not run."""
        before, self.decode_samples = self.decode_samples, needed
        try:
            yield
        finally:
            self.decode_samples = before

    def uncond(self, n: int, cond: Conditioning | None = None) -> Conditioning | None:
        """The empty prompt's conditioning (batch n) when guidance is on, else None; an image-conditioned
        model keeps ``cond``'s source image in it."""
        if self.guidance_scale == 1.0:
            return None
        return self.model.negative_conditioning(n, like=cond)

    @torch.no_grad()
    def collect(
        self,
        prompts: list[str],
        metadata: list[dict],
        generator: torch.Generator,
        initial_noise: torch.Tensor | None = None,
        window: SDEWindow | None = None,
        shared: int = 1,
        record_means: bool = False,
    ) -> Rollout:
        """Sample one trajectory per prompt. Noise comes from ``generator`` only (reproducible),
        except x_T when ``initial_noise`` [B, C, h, w] is given (e.g. shared within a group).

        ``window``: only its steps are stochastic and stored (drl.sde_window). ``shared``: consecutive runs of
        this many samples share their prompt and x_T, so a window's deterministic prefix runs once per run.
        ``record_means``: also store each stored step's μ_θ (Rollout.means).
        """
        chunks = []
        for start in range(0, len(prompts), self.batch_size):
            x_T = None if initial_noise is None else initial_noise[start : start + self.batch_size]
            rows = torch.arange(start, min(start + self.batch_size, len(prompts)))
            chunks.append(
                self._collect_chunk(
                    prompts[start : start + self.batch_size], generator, x_T, window, rows // shared, record_means,
                    metadata[start : start + self.batch_size],
                )  # fmt: skip
            )
            if self.on_chunk is not None:
                chunk = chunks[-1]
                self.on_chunk(chunk["samples"], prompts[start : start + self.batch_size], metadata[start : start + self.batch_size], chunk["clean_latents"])
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
            samples=cat("samples") if self.decode_samples else None,
            means=cat("means") if record_means else None,
            clean_latents=cat("clean_latents") if window is not None else None,
        )

    def _collect_chunk(
        self,
        prompts: list[str],
        generator: torch.Generator,
        x_T: torch.Tensor | None = None,
        window: SDEWindow | None = None,
        groups: torch.Tensor | None = None,
        record_means: bool = False,
        metadata: list[dict] | None = None,
    ) -> dict:
        n = len(prompts)
        cond = self.model.condition(prompts, metadata)  # batch n (an editing model: the source images' latents too)
        uncond = self.uncond(n, cond)
        noise = gaussian_noise(generator, self.dtype, self.device, self.dtype)
        x = noise((n, *self.latent_shape)) if x_T is None else x_T.to(device=self.device, dtype=self.dtype)  # x_T: [n, C, h, w]
        denoise = self._denoiser(cond, uncond)
        if window is None:
            chain = run_chain(self.schedule, x, denoise, noise, eta=self.eta, record_means=record_means)
            final, stored = chain.sample, chain
        else:
            final, stored = self._windowed_chain(x, cond, uncond, noise, window, groups, record_means)
        return {
            "cond": cond,
            "uncond": uncond,
            "latents": stored.latents,  # [n, S + 1, C, h, w] (a window: its K steps, [n, K + 1, ...])
            "timesteps": stored.timesteps,  # [n, S]
            "log_probs": stored.log_probs,  # [n, S]
            "stochastic": stored.stochastic,  # [S]
            "means": stored.means,  # [n, S, C, h, w] or None
            "clean_latents": final,  # [n, C, h, w] x_0
            "samples": self.model.decode(self.model.with_condition_frames(final, cond)) if self.decode_samples else None,  # [n, 3, H, W], or clips [n, F, 3, H, W]
        }

    def _windowed_chain(self, x, cond, uncond, noise, window: SDEWindow, groups: torch.Tensor | None, record_means: bool):
        """The chain of an SDE window in three parts: the deterministic prefix (once per group of rows that share
        prompt and x_T: ``groups`` [n], consecutive ids), the window (recorded), the deterministic rest (its own,
        possibly shorter, schedule). -> (x_0 [n, *D], the window's Chain)."""
        schedule = self.schedule
        if window.tail_steps > 0 and window.stop < schedule.num_steps:
            schedule = compress_tail(schedule, window.stop, window.tail_steps)
        etas = step_etas(schedule.num_steps, window, self.eta)
        run = functools.partial(run_chain, schedule, noise=noise, eta=etas, ode_solver=window.ode_solver)
        prev_x0 = None
        if window.start > 0:
            firsts, inverse = _first_of_runs(groups if groups is not None else torch.arange(x.shape[0]))
            c, u = cond[firsts], None if uncond is None else uncond[firsts]
            prefix = run(x[firsts], self._denoiser(c, u), record=False, steps=(0, window.start))
            x = prefix.sample[inverse]  # each row its group's x at the window's first step
            prev_x0 = None if prefix.last_x0 is None else prefix.last_x0[inverse]
        denoise = self._denoiser(cond, uncond)
        stored = run(x, denoise, steps=(window.start, window.stop), prev_x0=prev_x0, record_means=record_means)
        tail = run(stored.sample, denoise, record=False, steps=(window.stop, schedule.num_steps), prev_x0=stored.last_x0)
        return tail.sample, stored

    def _denoiser(self, cond: Conditioning, uncond: Conditioning | None):
        """(x_t, t, rows=None) -> the (guided) denoiser output under the run's autocast; ``rows`` [b]: x_t holds
        only those rows of the batch (drl.chain splits a step whose rows differ in gradient)."""

        def denoise(x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
            c, u = (cond, uncond) if rows is None else (cond[rows], None if uncond is None else uncond[rows])
            self.denoiser_rows += x.shape[0] * (1 if u is None or self.guidance_scale == 1.0 else 2)
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
        decode_samples: bool = True,
        metadata: list[dict] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor | None, torch.Tensor, Conditioning]:
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

        ``with_latents``: also return the clean latents that were decoded [B, *latent_shape] (with their
        gradient, for rewards that read latents; detach them for a KL-to-reference term at the samples' own
        points) and the prompts' conditioning.

        ``decode_samples=False`` (every reward reads latents): skip the VAE; the samples returned are None.

        ``metadata``: the prompts' (an image-conditioned model reads each one's source image).
        """
        decode = self.model.decode if decode_frames is None else functools.partial(self.model.decode, frames=decode_frames)
        n = len(prompts)
        cond = self.model.condition(prompts, metadata)  # batch n
        uncond = self.uncond(n, cond)
        noise = gaussian_noise(generator, self.dtype, self.device, self.dtype)
        x = noise((n, *self.latent_shape))  # x_T: [n, C, h, w]
        chain = run_chain(
            self.schedule, x, self._denoiser(cond, uncond), noise, eta=self.eta, record=False,
            grad_steps=grad_steps, checkpoint_steps=checkpoint_denoiser, stop_step=stop_step,
            reentrant=not is_sharded(self.model.denoiser),
        )  # fmt: skip
        samples = decode(self.model.with_condition_frames(chain.sample, cond)) if decode_samples else None
        return (samples, chain.sample, cond) if with_latents else samples


def _first_of_runs(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``ids`` [n] in consecutive runs: (the first row of each run [r], the run of each row [n])."""
    _, inverse = torch.unique_consecutive(ids, return_inverse=True)
    is_first = torch.ones_like(ids, dtype=torch.bool)
    is_first[1:] = ids[1:] != ids[:-1]
    return is_first.nonzero().flatten(), inverse
