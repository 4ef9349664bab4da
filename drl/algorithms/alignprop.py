"""AlignProp: backpropagate a differentiable reward through the sampling chain
(Prabhudesai et al. 2023, "Aligning Text-to-Image Diffusion Models with Reward Backpropagation").

The DDIM chain is treated as a recurrent network: loss = -r(decode(x_0), c), and the
gradient flows back through the decoder and the denoiser calls of the chosen steps:

    truncation=all     every step (full backprop through time)
    truncation=last    the last K steps only (DRaFT-K, Clark et al. 2023)
    truncation=random  the last K' steps, K' ~ U{1..K} drawn per update (AlignProp's randomised truncation)
    refl=true          ReFL (Xu et al. 2023): stop at a random one of the last K steps and score the
                       one-step prediction x̂_0, with gradient through that single denoiser call

Memory is tamed by truncation and by checkpointing each denoiser call
(``checkpoint_denoiser``: activations are recomputed in the backward pass).

KL to the base model (``algorithm.kl_coef``, against reward hacking): the shared surrogate of
drl/algorithms/regularization.py, loss = -r + kl_coef * mean_d (out_θ - out_ref)², evaluated at a
forward-noised copy (t ~ U) of each sample's own clean latent, detached, with its prompt's
conditioning. Why there rather than along the chain's own x_t:
- the reward's gradient changes the shared weights, so it moves every step of the chain, also the
  early ones that truncation never backpropagates through; a KL at uniformly random t holds all of
  them to the base, while one on the chain's x_t would see only the K truncated steps;
- it costs two extra denoiser calls (trained + reference) per sample, not two per chain step, and
  leaves the checkpointed chain as it is;
- the latent is detached, so the KL acts on the weights only and opens no second path by which
  the samples themselves could move; it is the same estimator as rwr's, nft's and dpo's, so
  ``train/kl_to_base`` is comparable across algorithms.
The cost: it is a surrogate of the path KL, measured where the fine-tuned model now puts its
samples rather than at the exact chain states.
"""

from __future__ import annotations

import torch

from drl import distributed
from drl.algorithms.base import Algorithm, TrainContext
from drl.algorithms.regularization import denoising_kl
from drl.config import AlignPropConfig, ConfigError
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

    def update(self, batch: PromptBatch) -> dict[str, float]:
        ctx, cfg = self.ctx, self.cfg
        size = ctx.cfg.train.batch_size
        rewards, grad_norms, steps_with_grad, kls, terms = [], [], [], [], {}
        ctx.model.denoiser.train()
        starts = list(range(0, len(batch.prompts), size))
        for k, start in enumerate(starts):
            prompts = batch.prompts[start : start + size]
            metadata = batch.metadata[start : start + size]
            mask, stop = self._grad_steps()
            frames = self._decode_frames()
            samples, x0, cond = ctx.collector.sample_with_grad(
                prompts, self.generator, mask, cfg.checkpoint_denoiser, stop, frames, with_latents=True
            )  # samples [b, ...] in [0, 1]; x0 [b, *latent_shape] detached
            scores, batch_terms = ctx.reward(samples, prompts, metadata)  # [b], name -> [b]
            for name, values in batch_terms.items():
                terms.setdefault(name, []).append(values.detach())
            loss = -scores.mean()
            if cfg.kl_coef > 0:  # shared KL-to-reference at the samples' own latents (see the module docstring)
                kl = denoising_kl(ctx, self.reference, x0, cond, self.generator)  # [b]
                loss = loss + cfg.kl_coef * kl.mean()
                kls.append(kl.detach())
            (loss / cfg.gradient_accumulation).backward()
            rewards.append(scores.detach())
            steps_with_grad.append(int(mask.sum()))
            if (k + 1) % cfg.gradient_accumulation == 0 or k + 1 == len(starts):
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
            "train/lr": self.lr,
            **({"train/kl_to_base": float(torch.cat(kls).mean())} if kls else {}),
            **{f"reward/{name}": float(torch.cat(values).float().mean()) for name, values in terms.items()},
        }
