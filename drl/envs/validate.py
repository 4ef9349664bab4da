"""Config rules of control runs (env=..., model=diffusion_policy, diffusion_ql, dsrl); called by drl.config.validate."""

from __future__ import annotations

CONTROL_ALGORITHMS = ("pretrain", "diffusion_ql", "dsrl", "ddpo", "dppo")


def control_problems(cfg) -> list[str]:
    """Every fault of a control config, as sentences (no gymnasium import: this runs before any work)."""
    from drl.config import DDPOConfig, DiffusionQLConfig, DPPOConfig, DSRLConfig, PolicyModelConfig

    p: list[str] = []
    env, m, a, s = cfg.env, cfg.model, cfg.algorithm, cfg.scheduler
    if env is None:
        p.append(
            f"algorithm={a.name} with model={m.name} needs a control task: choose one, e.g. env=bandit (or use an experiment=bandit_* config)."
        )
        return p
    if not isinstance(m, PolicyModelConfig):
        p.append(f"env={env.name} needs a diffusion policy: add model=diffusion_policy.")
        return p
    if a.name not in CONTROL_ALGORITHMS:
        p.append(f"algorithm={a.name} does not run on a control task; use one of {', '.join(CONTROL_ALGORITHMS)}.")
    if set(cfg.reward.terms) != {"env_return"}:
        p.append("Control runs are rewarded by the environment: add reward=env_return.")
    if s.num_steps > m.diffusion_steps:
        p.append(
            f"scheduler.num_steps={s.num_steps} exceeds model.diffusion_steps={m.diffusion_steps}: set scheduler.num_steps={m.diffusion_steps}."
        )
    if m.finetune != "full":
        p.append("model.finetune must be full for a diffusion policy (no LoRA on the MLP denoiser).")
    for key in ("hidden_dim", "num_layers", "time_dim", "diffusion_steps", "beta_min", "beta_max", "obs_horizon", "action_horizon"):
        if getattr(m, key) <= 0:
            p.append(f"model.{key}={getattr(m, key)} must be > 0.")
    if not m.from_scratch and not m.path:
        p.append("model.from_scratch=false needs model.path: the policy/ directory of a behaviour-cloning run.")
    if a.name in ("pretrain", "diffusion_ql") and env.dataset is None and env.id != "drl/MultimodalBandit-v0":
        p.append(f"algorithm={a.name} learns offline: set env.dataset to a file made by scripts/make_dataset.py, a D4RL-style .hdf5 file or a Minari dataset.")
    if a.name in ("dsrl", "ddpo", "dppo") and m.from_scratch:
        p.append(
            f"algorithm={a.name} fine-tunes or steers a pretrained policy: set model.from_scratch=false model.path=<run dir of algorithm=pretrain>."
        )
    for key in ("dataset_size", "eval_episodes", "eval_every", "num_envs"):
        if getattr(env, key) <= 0:
            p.append(f"env.{key}={getattr(env, key)} must be > 0.")
    if env.vector_mode not in ("async", "sync"):
        p.append(f"env.vector_mode={env.vector_mode!r} is not one of async, sync.")
    if not 0 < env.gamma <= 1:
        p.append(f"env.gamma={env.gamma} must be in (0, 1].")
    if (env.ref_min_score is None) != (env.ref_max_score is None):
        p.append("env.ref_min_score and env.ref_max_score go together: set both or neither.")
    if isinstance(a, DiffusionQLConfig):
        for key in ("critic_lr", "steps_per_epoch", "ema_every", "candidates", "critic_hidden_dim"):
            if getattr(a, key) <= 0:
                p.append(f"algorithm.{key}={getattr(a, key)} must be > 0.")
        if a.eta < 0:
            p.append(f"algorithm.eta={a.eta} must be >= 0.")
        if a.ema_warmup not in ("copy", "initial"):
            p.append(f"algorithm.ema_warmup={a.ema_warmup!r} is not one of copy, initial.")
        for key in ("tau", "ema_decay"):
            if not 0 < getattr(a, key) <= 1:
                p.append(f"algorithm.{key}={getattr(a, key)} must be in (0, 1].")
    if isinstance(a, DSRLConfig):
        if a.variant not in ("sac", "na"):
            p.append(f"algorithm.variant={a.variant!r} is not one of sac, na.")
        if a.action_critic_input not in ("offset", "action"):
            p.append(f"algorithm.action_critic_input={a.action_critic_input!r} is not one of offset, action.")
        for key in ("noise_bound", "updates_per_epoch", "buffer_size", "init_temperature", "hidden_dim", "distill_samples"):
            if getattr(a, key) <= 0:
                p.append(f"algorithm.{key}={getattr(a, key)} must be > 0.")
        if not 0 < a.tau <= 1:
            p.append(f"algorithm.tau={a.tau} must be in (0, 1].")
        if s.kind != "ddim" or s.eta != 0:
            p.append("algorithm=dsrl needs the deterministic chain (noise -> action): set scheduler=ddim scheduler.eta=0.")
    if isinstance(a, DPPOConfig):
        p.extend(_dppo_problems(a, s))
    if isinstance(a, DDPOConfig) and a.per_prompt_stat_tracking and a.group_size == 1:
        p.append("algorithm=ddpo on a control task has no prompts to track: set algorithm.per_prompt_stat_tracking=false.")
    return p


def _dppo_problems(a, s) -> list[str]:
    p = []
    if not 1 <= a.ft_denoising_steps <= s.num_steps:
        p.append(f"algorithm.ft_denoising_steps={a.ft_denoising_steps} must be between 1 and scheduler.num_steps={s.num_steps}.")
    for key in ("critic_lr", "critic_hidden_dim", "clip_range", "reward_scale", "update_epochs"):
        if getattr(a, key) <= 0:
            p.append(f"algorithm.{key}={getattr(a, key)} must be > 0.")
    for key in ("min_std", "vf_coef", "value_clip", "bc_coef", "critic_warmup_epochs"):
        if getattr(a, key) < 0:
            p.append(f"algorithm.{key}={getattr(a, key)} must be >= 0.")
    for key in ("gae_lambda", "gamma_denoising"):
        if not 0 <= getattr(a, key) <= 1:
            p.append(f"algorithm.{key}={getattr(a, key)} must be in [0, 1].")
    if a.min_std == 0 and s.kind == "ddim" and s.eta == 0:
        p.append("algorithm=dppo needs stochastic steps: set algorithm.min_std > 0, scheduler.eta > 0 or scheduler=ddpm.")
    return p
