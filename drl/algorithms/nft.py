"""DiffusionNFT: online RL on the forward process (Zheng et al. 2025, "DiffusionNFT: Online
Diffusion Reinforcement with Forward Process"; NVlabs/DiffusionNFT).

Each epoch:

1. SAMPLE with the current weights, by any sampler: no likelihoods are needed, so DDIM with
   η = 0 (or the flow ODE) works as well as a stochastic sampler, and no classifier-free
   guidance is needed (the update trains the conditional prediction only). Only the clean
   samples x_0 are kept for training.
2. SCORE, and map each reward to the paper's optimality probability
       r = 1/2 + 1/2 clip((R - E[R | c]) / Z_c, -1, 1)   ∈ [0, 1],
   with E[R | c] the mean of the prompt's group (``group_size`` > 1; else of the batch), s the
   std of the whole batch (``group_std=batch``, NVlabs' global_std) or of the group, and
   Z_c = c s, c = ``adv_clip_max``: r = 1/2 + clip(A, -c, c) / 2c with A the normalised reward,
   exactly as NVlabs' code maps its advantages.
3. TRAIN on the forward process: noise each x_0 afresh at some of the sampling schedule's
   timesteps (``timestep_fraction``) and minimise drl.losses.nft_loss,
       L = c/β E[ r ||v+ - v*||² + (1 - r) ||v- - v*||² ]   (errors measured in x̂_0, below),
   which pulls the implicit positive policy v+ = (1-β) v_old + β v_θ towards the data where r is
   high and the implicit negative policy v- = (1+β) v_old - β v_θ towards it where r is low, so
   v_θ moves towards the high-reward and away from the low-reward samples. The factor c/β (as in
   NVlabs' code) makes the on-policy gradient proportional to clip(A, -c, c) (v_old - v*) with a
   factor that depends on neither β nor c.
   v_old is the policy that sampled the epoch, evaluated once, before the first optimizer step,
   on the same noised inputs (so no second copy of the model is kept). NVlabs' code keeps v_old
   as a second LoRA, soft-updated after each epoch as v_old <- d v_old + (1 - d) θ with d rising
   from 0 during training, and samples from it; here d = 0 throughout.

Epsilon-, v- and flow-parameterised models
------------------------------------------
The paper writes the method for a rectified flow, x_σ = (1-σ) x_0 + σ ε, whose network outputs
the velocity v ≈ ε - x_0. The toy world and SD1.x predict the noise ε of the VP process
x_t = sqrt(ᾱ) x_0 + sqrt(1-ᾱ) ε, SD2-768 diffusers' v = sqrt(ᾱ) ε - sqrt(1-ᾱ) x_0, SD3 the flow
velocity. One code path serves all of them, and it is the paper's method for each:

* Forward process and target: x_t and the regression target come from the model's own
  parameterisation (drl.sampling.add_noise and training_target: ε, v, or ε - x_0 for a flow);
  flow timesteps are σ·T_train. (The VP x_t / (sqrt(ᾱ) + sqrt(1-ᾱ)) is a flow point with
  σ = sqrt(1-ᾱ) / (sqrt(ᾱ) + sqrt(1-ᾱ)), so both are the same family of noised inputs.)
* Implicit policies in the output space: at fixed (x_t, t), x̂_0 is an affine function of the
  output: x̂_0 = (x_t - sqrt(1-ᾱ) ε̂) / sqrt(ᾱ) (epsilon), sqrt(ᾱ) x_t - sqrt(1-ᾱ) v̂
  (v_prediction), the output itself (sample), x_t - σ v̂ (flow). An affine map sends a
  combination whose weights sum to 1 to the same combination, and (1-β, β) and (1+β, -β) both
  sum to 1, so v± formed from ε-outputs are the same two policies as v± formed from velocities
  or from x̂_0. The code forms them in the model's own output space.
* Errors in x̂_0 space, as NVlabs' code does for flows: an output error δ is an x̂_0 error c_t δ,
  with c_t = sqrt((1-ᾱ)/ᾱ) (epsilon), sqrt(1-ᾱ) (v_prediction), 1 (sample), σ (flow)
  (drl.sampling.x0_error_scale), so each implicit policy is scored by ||x̂_0(v±) - x_0||² whatever
  the parameterisation; for a flow model this is NVlabs' loss term for term. With
  ``adaptive_weighting`` (the paper's default) each sample's squared error is divided by its
  detached mean absolute x̂_0 error; without it the loss is the plain x̂_0-space MSE.

On-policy check: before the first update the trained prediction equals v_old;
``train/old_dev_first`` logs the largest |v_θ - v_old| of the first chunk (it must be ~0).
KL to the reference (``algorithm.kl_coef``): mean (out_θ - out_ref)² at the same noised points,
in the output space (for a flow, NVlabs' KL term).
"""

from __future__ import annotations

import torch

from drl.algorithms.base import Algorithm, TrainContext, chunks, collect_groups
from drl.algorithms.ddpo import group_advantages, select_train_steps
from drl.algorithms.regularization import prediction_kl
from drl.config import NFTConfig
from drl.losses import nft_loss
from drl.sampling import add_noise, training_target, x0_error_scale
from drl.types import Conditioning, Rollout


def optimality_probability(
    rewards: torch.Tensor, group_size: int, clip: float, std_floor: float = 1e-6, std_over: str = "group", std_eps: float = 0.0
) -> torch.Tensor:
    """r = clip(A, -c, c) / 2c + 1/2 with A the rewards normalised per group (or over the batch). [B]

    std_over="batch" divides the group-centred rewards by the std of the whole batch (NVlabs' global_std);
    std_eps=1e-4 is NVlabs' std + 1e-4.
    """
    size = group_size if group_size > 1 else rewards.numel()
    advantages = group_advantages(rewards.float(), size, std_floor, std_over, std_eps)
    return advantages.clamp(-clip, clip) / (2 * clip) + 0.5


class NFT(Algorithm):
    def __init__(self, cfg: NFTConfig, ctx: TrainContext):
        super().__init__(cfg, ctx)
        self.cfg: NFTConfig = cfg

    def collect(self, generator: torch.Generator) -> Rollout:
        return collect_groups(self.ctx, self.cfg.group_size, generator)

    def update(self, batch: Rollout) -> dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        r = optimality_probability(
            batch.rewards.detach().cpu(), cfg.group_size, cfg.adv_clip_max, cfg.adv_std_floor, cfg.group_std, cfg.adv_std_eps
        )
        r = r.to(ctx.device)  # [B]

        # (sample, timestep) pairs on the forward process, fixed for the epoch.
        all_steps = torch.ones(ctx.schedule.num_steps, dtype=torch.bool)
        steps = select_train_steps(all_steps, batch.batch_size, cfg.timestep_fraction, self.generator)  # [B, K]
        b = torch.arange(batch.batch_size).unsqueeze(1).expand_as(steps).reshape(-1)  # [N]
        t = ctx.schedule.timesteps[steps.reshape(-1)].to(ctx.device)  # [N]
        x0 = batch.final_latents[b]  # [N, C, h, w]
        noise = torch.randn(x0.shape, generator=self.generator, dtype=x0.dtype).to(ctx.device)  # [N, C, h, w]
        x_t = add_noise(ctx.schedule, x0, noise, t)  # [N, C, h, w]
        target = training_target(ctx.schedule, x0, noise, t)  # [N, C, h, w]
        scale = x0_error_scale(ctx.schedule, t)  # [N]
        cond = batch.cond[b]  # batch N
        num_pairs = b.numel()

        ctx.model.denoiser.train()
        old = torch.cat(
            [self._predict(x_t[c], t[c], cond[c], grad=False) for c in chunks(torch.arange(num_pairs), ctx.cfg.train.batch_size)]
        )

        totals = {"loss": 0.0, "kl_to_base": 0.0, "old_deviation": 0.0, "grad_norm": 0.0}
        first_dev, optimizer_steps = None, 0
        for _ in range(cfg.num_inner_epochs):
            order = torch.randperm(num_pairs, generator=self.generator)
            for minibatch in order.chunk(cfg.minibatches):
                for c in chunks(minibatch, ctx.cfg.train.batch_size):
                    prediction = self._predict(x_t[c], t[c], cond[c], grad=True)
                    loss = nft_loss(
                        prediction, old[c], target[c], r[b[c]], cfg.beta, scale[c], cfg.adaptive_weighting, cfg.adv_clip_max
                    ).mean()
                    kl = torch.zeros((), device=ctx.device)
                    if cfg.kl_coef > 0:
                        with ctx.autocast():
                            kl = prediction_kl(prediction, self.reference(x_t[c], t[c], cond[c])).mean()
                        loss = loss + cfg.kl_coef * kl
                    (loss * (len(c) / len(minibatch))).backward()
                    deviation = (prediction.detach().float() - old[c]).abs()
                    if first_dev is None:
                        first_dev = float(deviation.max())  # before any update: v_θ = v_old
                    weight = len(c) / num_pairs / cfg.num_inner_epochs
                    totals["loss"] += float(loss.detach()) * weight
                    totals["kl_to_base"] += float(kl.detach()) * weight
                    totals["old_deviation"] += float(deviation.pow(2).mean()) * weight
                grad_norm, stepped = self.optimizer_step()
                totals["grad_norm"] += grad_norm / (cfg.minibatches * cfg.num_inner_epochs)
                optimizer_steps += stepped
        ctx.model.denoiser.eval()
        metrics = {f"train/{k}": v for k, v in totals.items()}
        metrics.update(
            {
                "train/old_dev_first": first_dev,
                "train/optimality_mean": float(r.mean()),
                "train/optimizer_steps": optimizer_steps,
                "train/pairs": num_pairs,
                "train/lr": self.lr,
            }
        )
        return metrics

    def _predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, grad: bool) -> torch.Tensor:
        """The conditional prediction (no guidance); float32 without gradient for v_old."""
        with torch.set_grad_enabled(grad), self.ctx.autocast():
            out = self.ctx.model.denoise(x_t, t, cond)
        return out if grad else out.detach().float()
