"""Diffusion-DPO (Wallace et al. 2023), online on the model's own samples or offline from a pairs file.

Per pair (chosen x^w, rejected x^l), noised with the same t and noise, and per-dimension denoising errors e:

    logits = -β/2 [ (e_θ(x^w) - e_ref(x^w)) - (e_θ(x^l) - e_ref(x^l)) ],   loss = -log σ(logits)

(drl.losses.diffusion_dpo_loss; flow models use the flow-matching error, Flow-DPO). Online, the best and
worst sample of each prompt's group form a pair; offline, ``pairs_path`` names a JSONL/CSV file
(drl/preference_data.py). β's scale, the sign and the flow case: docs/guide/algorithms.md ("Diffusion-DPO").
"""

from __future__ import annotations

import torch

from drl.algorithms.base import Algorithm, TrainContext, chunks, collect_groups
from drl.algorithms.regularization import prediction_kl
from drl.algorithms.schemas.dpo import DPOConfig
from drl.losses import diffusion_dpo_loss
from drl.preference_data import load_image, load_pairs
from drl.sampling import add_noise, sample_training_timesteps, training_target
from drl.types import Conditioning, PreferenceBatch, Rollout


def best_worst_pairs(rewards: torch.Tensor, group_size: int, min_gap: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) sample indices [P]: the best and worst of each consecutive group, if their gap > min_gap."""
    groups = rewards.view(-1, group_size)
    offset = torch.arange(groups.shape[0]) * group_size
    best, worst = groups.argmax(1) + offset, groups.argmin(1) + offset
    keep = (groups.max(1).values - groups.min(1).values) > min_gap
    return best[keep], worst[keep]


class DPO(Algorithm):
    needs_reference = True

    def __init__(self, cfg: DPOConfig, ctx: TrainContext):
        super().__init__(cfg, ctx)
        self.cfg: DPOConfig = cfg
        self.pairs = load_pairs(cfg.pairs_path) if cfg.pairs_path else None

    # ---------------------------------------------------------------- sampling
    def collect(self, generator: torch.Generator) -> Rollout | PreferenceBatch:
        if self.pairs is None:
            return collect_groups(self.ctx, self.cfg.group_size, generator)
        n = max(1, self.ctx.cfg.train.samples_per_epoch // 2)
        chosen = torch.randint(len(self.pairs), (n,), generator=generator).tolist()
        pairs = [self.pairs[i] for i in chosen]
        resolution, model = self.ctx.cfg.model.resolution, self.ctx.model

        def latents(paths):
            images = torch.stack([load_image(p, resolution) for p in paths]).to(self.ctx.device)  # [P, 3, H, W]
            return model.encode(images)  # [P, C, h, w]

        return PreferenceBatch([p.prompt for p in pairs], latents([p.chosen for p in pairs]), latents([p.rejected for p in pairs]))

    # ------------------------------------------------------------------ update
    def update(self, batch: Rollout | PreferenceBatch, epoch: int) -> dict[str, float]:
        if isinstance(batch, Rollout):
            w, lose = best_worst_pairs(batch.rewards.detach().float().cpu(), self.cfg.group_size, self.cfg.min_reward_gap)
            if w.numel() == 0:
                return {"train/loss": 0.0, "train/pairs": 0, "train/optimizer_steps": 0, "train/lr": self.lr}
            chosen, rejected = batch.final_latents[w], batch.final_latents[lose]
            cond = batch.cond[w]
        else:
            chosen, rejected = batch.chosen, batch.rejected
            cond = self.ctx.model.encode_prompts(batch.prompts)
        return self._train_pairs(chosen, rejected, cond)

    def _train_pairs(self, chosen: torch.Tensor, rejected: torch.Tensor, cond: Conditioning) -> dict[str, float]:
        """chosen, rejected: [P, C, h, w]; cond: the prompts' conditioning (batch P)."""
        cfg, ctx = self.cfg, self.ctx
        k, device = cfg.timesteps_per_pair, ctx.device
        p = torch.arange(chosen.shape[0]).repeat_interleave(k)  # [N] pair of each (pair, timestep) item
        n = p.numel()
        t = sample_training_timesteps(ctx.schedule, n, self.generator).to(device)  # [N]
        noise = torch.randn((n, *chosen.shape[1:]), generator=self.generator, dtype=chosen.dtype).to(device)  # [N, C, h, w]
        x_w, x_l = add_noise(ctx.schedule, chosen[p], noise, t), add_noise(ctx.schedule, rejected[p], noise, t)
        target_w, target_l = training_target(ctx.schedule, chosen[p], noise, t), training_target(ctx.schedule, rejected[p], noise, t)
        e = cond[p]  # batch N

        ctx.model.denoiser.train()
        totals = {"loss": 0.0, "implicit_accuracy": 0.0, "logits": 0.0, "kl_to_base": 0.0, "grad_norm": 0.0}
        optimizer_steps = 0
        for _ in range(cfg.num_inner_epochs):
            order = torch.randperm(n, generator=self.generator)
            for minibatch in order.chunk(min(cfg.minibatches, n)):
                for c in chunks(minibatch, max(1, ctx.cfg.train.batch_size // 2)):  # two images per item
                    xs, ts, es = torch.cat([x_w[c], x_l[c]]), torch.cat([t[c], t[c]]), Conditioning.cat([e[c], e[c]])
                    with ctx.autocast():
                        prediction = ctx.model.denoise(xs, ts, es)
                        reference = self.reference(xs, ts, es)
                    pred_w, pred_l = prediction.chunk(2)
                    ref_w, ref_l = reference.chunk(2)
                    losses, logits = diffusion_dpo_loss(pred_w, pred_l, ref_w, ref_l, target_w[c], target_l[c], cfg.beta)
                    loss = losses.mean()
                    kl = prediction_kl(prediction, reference).mean() if cfg.kl_coef > 0 else torch.zeros((), device=device)
                    loss = loss + cfg.kl_coef * kl
                    (loss * (len(c) / len(minibatch))).backward()
                    weight = len(c) / n / cfg.num_inner_epochs
                    totals["loss"] += float(loss.detach()) * weight
                    totals["implicit_accuracy"] += float((logits > 0).float().mean()) * weight
                    totals["logits"] += float(logits.detach().mean()) * weight
                    totals["kl_to_base"] += float(kl.detach()) * weight
                grad_norm, stepped = self.optimizer_step()
                totals["grad_norm"] += grad_norm / (min(cfg.minibatches, n) * cfg.num_inner_epochs)
                optimizer_steps += stepped
        ctx.model.denoiser.eval()
        metrics = {f"train/{key}": v for key, v in totals.items()}
        metrics.update({"train/pairs": chosen.shape[0], "train/optimizer_steps": optimizer_steps, "train/lr": self.lr})
        return metrics
