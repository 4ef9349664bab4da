"""AlignProp: backpropagate a differentiable reward through the sampling chain
(Prabhudesai et al. 2023, "Aligning Text-to-Image Diffusion Models with Reward Backpropagation").

The DDIM chain is a recurrent network: loss = -r(decode(x_0), c), with the gradient through the
decoder and the denoiser calls that ``truncation`` keeps (all, the last K, a random last K' ~ U{1..K}),
or ReFL's one-step prediction (``refl``). Each denoiser call can be checkpointed (``checkpoint_denoiser``).
The KL to the base model is the shared surrogate of drl/algorithms/regularization.py at a forward-noised,
detached copy of each sample. Why that KL and not one along the chain: docs/guide/algorithms.md ("AlignProp").
"""

from __future__ import annotations

import torch

from drl import distributed
from drl.algorithms.base import Algorithm, TrainContext
from drl.algorithms.regularization import denoising_kl
from drl.algorithms.schemas.alignprop import AlignPropConfig
from drl.errors import ConfigError
from drl.types import PromptBatch


def truncation_mask(num_steps: int, mode: str, k: int, generator: torch.Generator) -> torch.Tensor:
    """Which of the S sampling steps (in sampling order) carry gradient. -> [S] bool"""
    if mode == "all":
        return torch.ones(num_steps, dtype=torch.bool)
    if mode == "random":
        k = int(torch.randint(1, k + 1, (1,), generator=generator))
    k = min(k, num_steps)
    mask = torch.zeros(num_steps, dtype=torch.bool)
    mask[num_steps - k :] = True
    return mask


class AlignProp(Algorithm):
    def __init__(self, cfg: AlignPropConfig, ctx: TrainContext):
        not_differentiable = [r.name for r in ctx.reward.rewards if not r.differentiable]
        if not_differentiable:
            raise ConfigError(
                f"algorithm=alignprop needs a differentiable reward, and {', '.join(not_differentiable)} is not: "
                "use algorithm=ddpo or algorithm=rwr for black-box rewards (or, for your own reward whose scores carry "
                "gradients, set differentiable: true on its term)."
            )
        super().__init__(cfg, ctx)
        self.cfg: AlignPropConfig = cfg

    def collect(self, generator: torch.Generator) -> PromptBatch:
        """Only prompts: the samples are generated inside update(), with gradients."""
        prompts, metadata = self.ctx.prompts.sample(self.ctx.cfg.train.samples_per_epoch, generator)
        return PromptBatch(prompts, metadata)

    def _grad_steps(self) -> tuple[torch.Tensor, int | None]:
        """(steps with gradient [S] bool, ReFL's stop step or None)."""
        num_steps, k = self.ctx.schedule.num_steps, self.cfg.truncation_steps
        if not self.cfg.refl:
            mask, stop = truncation_mask(num_steps, self.cfg.truncation, k, self.generator), None
        else:
            stop = num_steps - int(torch.randint(1, min(k, num_steps) + 1, (1,), generator=self.generator))
            mask = torch.zeros(num_steps, dtype=torch.bool)
            mask[stop] = True
        # FSDP: every denoiser call, and its backward, is a collective, so all ranks need the same
        # steps with gradient: rank 0's draw (with ddp each rank keeps its own).
        return distributed.broadcast_object((mask, stop)) if self.sharded else (mask, stop)

    def _decode_frames(self) -> torch.Tensor | None:
        """Video with rewards that read only K frames: K random frames [K] to decode (VADER); else None (all)."""
        k, num_frames = self.ctx.reward.frames_needed, getattr(self.ctx.model, "num_frames", 0)
        if k == 0 or num_frames == 0 or k >= num_frames:
            return None
        return torch.randperm(num_frames, generator=self.generator)[:k].sort().values

    def update(self, batch: PromptBatch, epoch: int) -> dict[str, float]:
        """Batches of train.batch_size samples, each with its own truncation draw and gradient_accumulation to an
        optimizer step; batches_per_call of them share the chain's denoiser calls (and, on video, the frames decoded)."""
        ctx, cfg = self.ctx, self.cfg
        size = ctx.cfg.train.batch_size
        rewards, grad_norms, steps_with_grad, kls, terms = [], [], [], [], {}
        ctx.model.denoiser.train()
        num_batches, batches_done = -(-len(batch.prompts) // size), 0
        rows_before, kl_calls = ctx.collector.denoiser_rows, 0  # the chain with gradients is this epoch's sampling and update
        for start in range(0, len(batch.prompts), size * cfg.batches_per_call):
            prompts = batch.prompts[start : start + size * cfg.batches_per_call]
            metadata = batch.metadata[start : start + size * cfg.batches_per_call]
            sizes = [len(prompts[i : i + size]) for i in range(0, len(prompts), size)]  # the batches in this call
            draws = [self._grad_steps() for _ in sizes]  # (mask [S], ReFL stop) per batch; ReFL: one batch per call
            masks, stop = [mask for mask, _ in draws], draws[0][1]
            mask = masks[0] if len(masks) == 1 else torch.cat([m.expand(b, -1) for m, b in zip(masks, sizes)])  # [S] or [n, S]
            frames = self._decode_frames()
            samples, latents, cond = ctx.collector.sample_with_grad(
                prompts, self.generator, mask, cfg.checkpoint_denoiser, stop, frames, with_latents=True,
                decode_samples=ctx.reward.needs_pixels, metadata=metadata,
            )  # samples [n, ...] in [0, 1] (None: every reward reads latents, the VAE is skipped); latents [n, *latent_shape]
            scores, call_terms = ctx.reward(samples, prompts, metadata, latents=latents)  # [n], name -> [n]
            x0 = latents.detach()
            for name, values in call_terms.items():
                terms.setdefault(name, []).append(values.detach())
            loss = -sum(batch_scores.mean() for batch_scores in scores.split(sizes))  # each batch's mean, as in turn
            if cfg.kl_coef > 0:  # shared KL-to-reference at the samples' own latents (see the module docstring)
                kl = denoising_kl(ctx, self.reference, x0, cond, self.generator)  # [n]
                loss = loss + cfg.kl_coef * sum(batch_kl.mean() for batch_kl in kl.split(sizes))
                kls.append(kl.detach())
                kl_calls += 2 * len(x0)  # the trained denoiser and the reference, once per sample
            (loss / cfg.gradient_accumulation).backward()
            rewards.append(scores.detach())
            steps_with_grad.extend(int(m.sum()) for m in masks)
            batches_done += len(sizes)  # batches_per_call divides gradient_accumulation: steps fall between calls
            if batches_done % cfg.gradient_accumulation == 0 or batches_done == num_batches:
                grad_norm, _ = self.optimizer_step()
                grad_norms.append(grad_norm)
        ctx.model.denoiser.eval()
        r = torch.cat(rewards)
        return {
            "reward_mean": float(r.mean()),
            "reward_std": float(r.std(unbiased=False)),
            "samples": r.numel(),
            "train/loss": float(-r.mean()),
            "train/grad_norm": sum(grad_norms) / len(grad_norms),
            "train/steps_with_grad": sum(steps_with_grad) / len(steps_with_grad),
            "train/optimizer_steps": len(grad_norms),
            "train/denoiser_calls_update": ctx.collector.denoiser_rows - rows_before + kl_calls,  # sample-steps, guided ones twice
            "train/lr": self.lr,
            **({"train/kl_to_base": float(torch.cat(kls).mean())} if kls else {}),
            **{f"reward/{name}": float(torch.cat(values).float().mean()) for name, values in terms.items()},
        }
