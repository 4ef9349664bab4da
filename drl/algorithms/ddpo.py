"""DDPO: PPO over the denoising MDP (Black et al. 2023, "Training Diffusion Models with RL").

State (c, t, x_t), action x_{t-1}, policy p_θ(x_{t-1} | x_t, c), reward r(x_0, c) at the
end. Each epoch's trajectories are re-scored under the current weights with the same
step function that sampled them, giving the importance ratio of every transition.

Batching: the update flattens the epoch into (sample, step) pairs and runs the denoiser
on ``train.batch_size`` pairs at a time, mixing timesteps in one call (the UNet takes a
timestep per sample), so no call is wasted on a small batch.

Options of 2025 (each a config key, drl/algorithms/schemas/ddpo.py): an SDE window (Flow-GRPO-Fast,
MixGRPO; drl/sde_window.py): only a window's steps are sampled with noise, stored and trained, the rest
run the ODE (DPM-Solver++(2M) optionally, on a shorter schedule after the window); GRPO-Guard's ratio
normalisation and per-step reweighting (drl.losses.guard_log_ratio). Denoiser calls (sample-steps through
the denoiser, guided ones counted twice) are counted for the sampling and the update; the logged
train/denoiser_calls_* are the job's totals, summed over ranks (drl.distributed.SUMMED_METRICS).
"""

from __future__ import annotations

import torch

from drl import distributed
from drl.algorithms.base import Algorithm, TrainContext, chunks, collect_groups
from drl.algorithms.schemas.ddpo import DDPOConfig
from drl.losses import gaussian_kl_equal_std, guard_log_ratio, ppo_clip_loss
from drl.sampling import denoising_step
from drl.sampling_flow import flow_diffusion_coefficient
from drl.sde_window import SDEWindow, window_generator, window_start
from drl.stat_tracking import PerPromptStatTracker
from drl.types import Rollout


def select_train_steps(
    stochastic: torch.Tensor, batch_size: int, fraction: float, generator: torch.Generator, skip_last: int = 0
) -> torch.Tensor:
    """For each sample, a random subset (``fraction``) of its stochastic steps, leaving out the last
    ``skip_last`` of them. -> [B, K] step indices."""
    steps = stochastic.nonzero().squeeze(1)  # [S'] indices of steps with a density
    if skip_last > 0:
        steps = steps[: max(1, steps.numel() - skip_last)]
    keep = max(1, round(fraction * steps.numel()))
    order = torch.stack([torch.randperm(steps.numel(), generator=generator) for _ in range(batch_size)])
    return steps[order[:, :keep]]


def group_advantages(
    rewards: torch.Tensor, group_size: int, std_floor: float = 1e-6, std_over: str = "group", std_eps: float = 0.0
) -> torch.Tensor:
    """(r - mean_group) / (max(std, std_floor) + std_eps) over consecutive groups of group_size samples. [B]

    std_over="group" divides by each group's std (GRPO); "batch" by the std of all the rewards
    (Flow-GRPO's global_std), which keeps a group of near-ties from turning its reward noise into
    advantages of size 1. The floor does the same in group mode (exact ties get advantage 0).
    std_eps=1e-4 is Flow-GRPO's and DiffusionNFT's std + 1e-4 (population std, as numpy's).
    """
    groups = rewards.view(-1, group_size)
    mean = groups.mean(1, keepdim=True)
    std = groups.std(1, unbiased=False, keepdim=True) if std_over == "group" else rewards.std(unbiased=False)
    return ((groups - mean) / (std.clamp(min=std_floor) + std_eps)).view(-1)


def step_kl_to_reference(
    mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor, scale: float, form: str, schedule=None, t=None, eta: float = 0.0
) -> torch.Tensor:
    """Per-transition KL(p_θ || p_ref) of one reverse step, the two Gaussians sharing their std. [n]

    form="exact": ||μ_θ - μ_ref||² / 2 std², std the step's own (σ_t·sqrt(-Δ) for a flow), reduced over
    dims as the log-prob (``scale`` = 1 for a sum, 1/D for a mean). form="flow_grpo": Flow-GRPO's
    penalty (scripts/train_sd3.py), mean_d ||μ_θ - μ_ref||² / 2 g² with g the flow SDE's coefficient
    at t (its std_dev_t, no sqrt(-Δ)); the exact mean-reduced KL is 1/(-Δ) times it.
    """
    if form == "flow_grpo":
        g = flow_diffusion_coefficient(schedule, t, eta)  # [n] float64
        return gaussian_kl_equal_std(mean, ref_mean, g.float(), reduction="mean")
    return gaussian_kl_equal_std(mean, ref_mean, std) * scale


class DDPO(Algorithm):
    def __init__(self, cfg: DDPOConfig, ctx: TrainContext):
        super().__init__(cfg, ctx)
        self.cfg: DDPOConfig = cfg
        self.tracker = PerPromptStatTracker(cfg.stat_buffer_size, cfg.stat_min_count)
        self.epochs_done = 0  # updates so far: a sliding SDE window's clock (checkpointed)
        self.window: SDEWindow | None = None  # this epoch's SDE window (None: every step stochastic)
        self.window_generator = window_generator(ctx.cfg.seed)  # random windows: one stream, the same on every rank

    # ---------------------------------------------------------------- sampling
    def collect(self, generator: torch.Generator) -> Rollout:
        """group_size samples of each prompt (consecutive); share_group_noise gives a group one x_T.
        With an SDE window, only its steps are stochastic and stored (and a shared x_T's ODE prefix runs once)."""
        cfg, ctx = self.cfg, self.ctx
        self.window = self.next_window()
        options = {"window": self.window} if self.window is not None else {}
        if cfg.ratio_norm:
            options["record_means"] = True
        before = ctx.collector.denoiser_rows
        batch = collect_groups(ctx, cfg.group_size, generator, cfg.share_group_noise, **options)
        self.sample_calls = ctx.collector.denoiser_rows - before
        return batch

    def next_window(self) -> SDEWindow | None:
        """This epoch's SDE window (drl.sde_window): fixed, drawn (the same on every rank) or sliding with the epoch."""
        cfg = self.cfg
        if cfg.sde_window <= 0:
            return None
        max_start = cfg.window_max_start(self.ctx.schedule.num_steps)
        start = window_start(
            cfg.sde_window_position, self.epochs_done, self.window_generator, cfg.sde_window_start, max_start,
            cfg.sde_window_every, cfg.sde_window_stride,
        )  # fmt: skip
        return SDEWindow(start, cfg.sde_window, cfg.ode_solver, cfg.ode_steps_after_window)

    # -------------------------------------------------------------- advantages
    def advantages(self, batch: Rollout) -> torch.Tensor:
        # Normalise over every rank's samples (the tracker sees them all, so it is the same on every
        # rank and in the checkpoint), then keep this rank's share.
        all_rewards, all_prompts, mine = distributed.gather_rewards(batch.rewards.detach().float().cpu(), batch.prompts)
        rewards = all_rewards.numpy()
        if self.cfg.group_size > 1:
            adv = group_advantages(
                all_rewards, self.cfg.group_size, self.cfg.adv_std_floor, self.cfg.group_std, self.cfg.adv_std_eps
            ).numpy()
        elif self.cfg.per_prompt_stat_tracking:
            adv = self.tracker.update(all_prompts, rewards)
        else:
            adv = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
        adv = torch.as_tensor(adv[mine], dtype=torch.float32, device=batch.latents.device)
        return adv.clamp(-self.cfg.adv_clip_max, self.cfg.adv_clip_max)

    # ------------------------------------------------------------------ update
    def update(self, batch: Rollout, epoch: int) -> dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        advantages = self.advantages(batch)  # [B]
        dims = batch.latents[0, 0].numel()
        scale = 1.0 if cfg.logprob_reduction == "sum" else 1.0 / dims  # mean = sum / D, the same op both sides
        skip_last = 0 if self.window is not None else cfg.skip_last_steps  # a window keeps clear of the last steps itself
        steps = select_train_steps(batch.stochastic, batch.batch_size, cfg.timestep_fraction, self.generator, skip_last)  # [B, K]
        sample_index = torch.arange(batch.batch_size).unsqueeze(1).expand_as(steps).reshape(-1)  # [B*K]
        step_index = steps.reshape(-1)  # [B*K]
        num_pairs = sample_index.numel()

        totals = {"loss": 0.0, "approx_kl": 0.0, "clipfrac": 0.0, "kl_to_base": 0.0, "grad_norm": 0.0}
        first_ratio_dev, optimizer_steps, skipped = None, 0, 0
        self.update_calls = 0
        ctx.model.denoiser.train()
        for inner in range(cfg.num_inner_epochs):
            order = torch.randperm(num_pairs, generator=self.generator)
            for minibatch in order.chunk(cfg.minibatches):
                for chunk in chunks(minibatch, ctx.cfg.train.batch_size):
                    b, i = sample_index[chunk], step_index[chunk]
                    stats = self._pair_loss(batch, b, i, advantages[b], scale)
                    (stats["loss"] * (len(chunk) / len(minibatch))).backward()
                    if first_ratio_dev is None:
                        first_ratio_dev = stats["ratio_dev"]  # before any update: must be ~0 on-policy
                    weight = len(chunk) / num_pairs / cfg.num_inner_epochs
                    for key in ("loss", "approx_kl", "clipfrac", "kl_to_base"):
                        totals[key] += float(stats[key].detach()) * weight
                grad_norm, stepped = self.optimizer_step()
                totals["grad_norm"] += grad_norm / (cfg.minibatches * cfg.num_inner_epochs)
                optimizer_steps += stepped
                skipped += not stepped
        ctx.model.denoiser.eval()
        metrics = self.pair_update_metrics(
            totals,
            ratio_dev_first=first_ratio_dev,
            optimizer_steps=optimizer_steps,
            skipped_steps=skipped,
            advantage_abs_mean=float(advantages.abs().mean()),
            pairs=num_pairs,
        )
        if self.window is not None:
            metrics["train/sde_window_start"] = self.window.start
        self.epochs_done += 1
        return metrics

    def _pair_loss(self, batch: Rollout, b: torch.Tensor, i: torch.Tensor, adv: torch.Tensor, scale: float) -> dict:
        """PPO loss of the transitions (sample b[k], step i[k]) under the current weights."""
        ctx = self.ctx
        x_t = batch.latents[b, i]  # [n, C, h, w]
        x_prev = batch.latents[b, i + 1]  # [n, C, h, w]
        t = batch.timesteps[b, i]  # [n]
        cond = batch.cond[b]  # batch n
        uncond = None if batch.uncond is None else batch.uncond[b]
        guidance = ctx.collector.guidance_scale
        calls = len(b) * (2 if uncond is not None and guidance != 1.0 else 1)
        with ctx.autocast():
            out = ctx.model.denoise(x_t, t, cond, uncond, guidance)
        self.update_calls += calls
        step = denoising_step(ctx.schedule, out, t, x_t, eta=ctx.collector.eta, prev_sample=x_prev)
        log_prob = step.log_prob * scale
        old_log_prob = batch.log_probs[b, i] * scale
        log_ratio = log_prob - old_log_prob
        if self.cfg.ratio_norm:  # GRPO-Guard: <z, mu - mu_old> instead of the biased, step-scaled log-ratio
            log_ratio = guard_log_ratio(log_prob, old_log_prob, step.mean, batch.means[b, i], step.std, scale)
        ratio = torch.exp(log_ratio)
        weights = None
        if self.cfg.step_reweight:  # GRPO-Guard: each step's loss / (-dσ)
            weights = (1 / (ctx.schedule.sigma(t) - ctx.schedule.next_sigma(t))).float()
        loss, clipfrac = ppo_clip_loss(adv, ratio, self.cfg.clip_range, weights)
        kl = torch.zeros(())
        if self.cfg.kl_coef > 0:
            self.update_calls += calls
            with ctx.autocast():
                ref_out = self.reference(x_t, t, cond, uncond, guidance)
            ref_mean = denoising_step(ctx.schedule, ref_out, t, x_t, eta=ctx.collector.eta, prev_sample=x_prev).mean
            kl = step_kl_to_reference(
                step.mean, ref_mean, step.std, scale, self.cfg.kl_form, ctx.schedule, t, ctx.collector.eta
            ).mean()
            loss = loss + self.cfg.kl_coef * kl
        return {
            "loss": loss,
            "approx_kl": 0.5 * ((log_prob - old_log_prob) ** 2).mean().detach(),
            "clipfrac": clipfrac.detach(),
            "ratio_dev": float((ratio.detach() - 1).abs().max()),
            "kl_to_base": kl.detach(),
        }

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            **super().state_dict(), "tracker": self.tracker.state_dict(), "epochs_done": self.epochs_done,
            "window_generator": self.window_generator.get_state(),
        }  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.tracker.load_state_dict(state["tracker"])
        self.epochs_done = state.get("epochs_done", 0)  # checkpoints before the SDE window had no clock
        if "window_generator" in state:  # checkpoints before it drew windows from the update's generator
            self.window_generator.set_state(state["window_generator"])
