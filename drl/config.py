"""Typed schemas of every config group, registered in Hydra's ConfigStore.

Each field has a type, a default and a one-line docstring under it. Hydra/OmegaConf
reject unknown keys and wrong types while composing; :func:`validate` then checks
ranges and cross-field rules and reports every fault at once, before any work starts.

Group yaml files pick their schema through their defaults list, e.g.
``conf/algorithm/ddpo.yaml`` starts with ``- /schema/algorithm/ddpo@_here_``. Each algorithm's schema,
with its own checks, lives in drl/algorithms/schemas/ and is named in the registry
(drl/algorithms/__init__.py); this module holds what every run shares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from drl.algorithms import ALGORITHMS, algorithms_where, domain_of, domain_problem
from drl.algorithms.schemas.base import AlgorithmConfig
from drl.checks import choice as _choice, fraction as _fraction, positive as _positive, scheduler_noise_problems
from drl.errors import ConfigError
from drl.models.layout import FAMILIES, FLOW_FAMILIES, VIDEO_FAMILIES, model_directory_problems


# --------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    name: str = "toy_t2i"
    """Short name used in run names and logs."""
    path: str = "drl:toy_t2i"
    """Diffusers save_pretrained directory, a hub id (diffusers downloads it into its cache), or drl:<name> for a model shipped with drl."""
    family: str = "auto"
    """Model layout: sd (1.x/2.x), sdxl, or a flow-matching family that needs scheduler=flow (sd3, flux, flux_kontext,
    flux2, qwen_image, qwen_image_edit, z_image; video: wan, or wan_i2v, Wan2.2 image-to-video from each prompt's image), or auto (from the
    directory's model_index.json)."""
    from_scratch: bool = False
    """Build randomly initialised components with the toy architecture instead of loading `path` (pretraining)."""
    resolution: int = 32
    """Side of generated images in pixels (latents are resolution / vae scale factor)."""
    finetune: str = "full"
    """Which weights train: full (every denoiser weight) or lora (peft adapters on lora_targets)."""
    lora_rank: int = 8
    """LoRA rank r (finetune=lora)."""
    lora_alpha: float = 8.0
    """LoRA scale numerator: the update is (alpha / rank) * B @ A."""
    lora_targets: List[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    """Module names (peft target_modules) that receive LoRA adapters."""
    gradient_checkpointing: bool = False
    """Recompute the denoiser's activations in the backward pass: less memory, ~30% more compute (every family: diffusers' own switch, else each block under torch.utils.checkpoint; drl/models/checkpointing.py)."""
    text_encoder_offload: bool = False
    """Keep the text encoders on the CPU, encode each distinct prompt there once and cache its conditioning
    (drl/models/prompt_cache.py): their weights (T5-XXL: 4.8 B parameters) never take device memory."""
    compile: bool = False
    """torch.compile the denoiser (after the reference copy is taken): the first epoch pays the compilation. On a CPU it did not pay (toy run: 0.92x epoch throughput, docs/results/2026-12-03-speed.md); try it on a GPU."""
    vae_decode_chunk: int = 8
    """Images per VAE decode call (bounds the decoder's peak memory; gradients flow through every chunk)."""
    kind: str = "t2i"
    """What `path` holds: t2i (images) or t2v (clips: a video denoiser, drl/models/t2v.py)."""
    num_frames: int = 8
    """Frames per generated clip (kind=t2v)."""
    distilled_guidance: float = 3.5
    """The guidance value a guidance-distilled transformer embeds (FLUX.1-dev's guidance_scale); one call per step.
    Ignored by models without a guidance embedding; scheduler.guidance_scale is true classifier-free guidance."""


@dataclass
class PolicyModelConfig(ModelConfig):
    """A state-conditioned diffusion policy for control (Diffusion-QL's denoiser; drl/models/policy.py).

    Of the inherited keys, ``path`` names a saved policy directory (``drl-train`` writes one to
    ``<run dir>/policy``), ``from_scratch`` builds a fresh one, and ``finetune`` must stay full.
    """

    name: str = "diffusion_policy"
    path: str = ""
    """A policy/ directory written by a drl-train run (e.g. of algorithm=bc) to start from; empty with from_scratch=true."""
    from_scratch: bool = True
    policy_kind: str = "diffusion"
    """diffusion (epsilon prediction on Diffusion-QL's VP schedule; scheduler=ddpm or ddim) or flow (a rectified-flow
    velocity on the flow schedule, sampled by the flow ODE with scheduler=flow scheduler.eta=0: model=flow_policy)."""
    hidden_dim: int = 256
    """Width of each hidden layer of the MLP denoiser."""
    num_layers: int = 3
    """Hidden layers (Mish activations), as in Diffusion-QL."""
    time_dim: int = 16
    """Size of the sinusoidal timestep embedding."""
    diffusion_steps: int = 5
    """T of the VP noise schedule (Diffusion-QL uses 5); scheduler.num_steps must not exceed it. A flow policy's time is
    continuous: any scheduler.num_steps samples it."""
    beta_min: float = 0.1
    """VP schedule's beta_min (Diffusion-QL's vp_beta_schedule)."""
    beta_max: float = 10.0
    """VP schedule's beta_max."""
    obs_horizon: int = 1
    """To: the policy reads the last To observations [To, O] (padded with the first at an episode's start); 1: today's."""
    action_horizon: int = 1
    """Ta: the policy predicts a chunk of Ta actions [Ta, A], executed step by step before it acts again
    (drl/envs/chunking.py; the chunk's reward is the sum over its steps); 1: one action per step."""


# ----------------------------------------------------------------------- scheduler
@dataclass
class SchedulerConfig:
    kind: str = "ddim"
    """Reverse process: ddim (eta-controlled; eta=0 is deterministic), ddpm (ancestral) or flow (SD3: the flow SDE)."""
    num_steps: int = 10
    """Denoising steps per sample (the length of the MDP); Stable Diffusion users typically take 50."""
    eta: float = 1.0
    """DDIM's eta: 0 = deterministic ODE, 1 = DDPM-like noise; for flow the SDE noise level (flow_grpo's 0.7). Ignored by ddpm."""
    guidance_scale: float = 1.0
    """Classifier-free guidance weight; 1.0 disables guidance (one denoiser call per step instead of two)."""
    sde_type: str = "flow_grpo"
    """Noise form of a flow model's stochastic steps (kind=flow): flow_grpo (Flow-GRPO's marginal-preserving SDE, std
    eta·sqrt(σ/(1-σ))·sqrt(-dσ)) or cps (coefficients-preserving sampling, Wang & Yu 2025: std σ'·sin(eta·π/2), and the
    next sample keeps the forward process's coefficients (1-σ') x0 + σ' noise); both have exact log-probs (drl/sampling_flow.py)."""


# -------------------------------------------------------------------------- reward
@dataclass
class RewardConfig:
    terms: Dict[str, Any] = field(default_factory=dict)
    """Reward name -> weight, or -> {_target_: module.factory, weight, differentiable, video, groupwise, <kwargs>} for a
    reward from your own code (docs/guide/your-own-reward.md); the run's reward is the weighted sum. Weight 0 switches a term off."""
    monitor: List[str] = field(default_factory=list)
    """Rewards logged beside the terms (as reward/<name>) without entering the sum or its gradient."""
    jpeg_quality: int = 95
    """JPEG quality used by jpeg_compressibility / jpeg_incompressibility."""
    target_rgb: List[float] = field(default_factory=lambda: [0.0, 0.0, 1.0])
    """target_colour's colour, RGB in [0, 1] (blue: shared/tools/trl_anchor's default)."""
    classifier_path: str = "drl:toy_classifier"
    """Directory of the toy prompt-alignment classifier (toy_alignment, toy_object)."""
    aesthetic_clip_path: str = "~/.cache/drl/clip-vit-large-patch14"
    """Local copy of openai/clip-vit-large-patch14, the image encoder of the aesthetic reward."""
    aesthetic_head_path: str = "~/.cache/drl/sac+logos+ava1-l14-linearMSE.pth"
    """LAION's aesthetic MLP head (improved-aesthetic-predictor), .pth state dict or .safetensors."""
    clip_path: str = "~/.cache/drl/clip-vit-large-patch14"
    """Local copy of a transformers CLIP model for clip_score."""
    pickscore_path: str = "~/.cache/drl/PickScore_v1"
    """Local copy of yuvalkirstain/PickScore_v1."""
    pickscore_processor_path: Optional[str] = "~/.cache/drl/CLIP-ViT-H-14-laion2B-s32B-b79K"
    """Tokenizer + preprocessor_config.json for PickScore (laion/CLIP-ViT-H-14-laion2B-s32B-b79K); null: pickscore_path."""
    video_classifier_path: str = "drl:toy_video_classifier"
    """Directory of the toy (colour, shape, motion) video classifier (toy_motion)."""
    frame_subset: int = 2
    """K: frames of each clip that a frames_<image reward> term scores, drawn at random per call (0: all frames)."""
    eval_terms: Dict[str, Any] = field(default_factory=dict)
    """Rewards scored only on the fixed evaluation batch before and after training (a held-out or slow judge), each
    written to eval.json with its own paired gain; same forms as terms (the weight is ignored)."""
    overlap: bool = True
    """Score chunk k of the rollout in a worker thread while chunk k+1 is denoised (rewards without gradient whose
    per-sample scores do not depend on the batch); false: score the whole batch after sampling. Same results either way."""


def term_weight(spec: Any) -> float:
    """The weight of a reward.terms entry: the number itself, or a plug-in's ``weight`` (default 1)."""
    return float(spec.get("weight", 1.0)) if isinstance(spec, Mapping) else float(spec)


# ------------------------------------------------------------------------- prompts
@dataclass
class PromptsConfig:
    source: str = "toy"
    """toy (random scenes of the model's toy world: images, or clips for model.kind=t2v), list (the `prompts` below) or file (one prompt per line at `path`)."""
    prompts: List[str] = field(default_factory=list)
    """Prompts for source=list."""
    path: Optional[str] = None
    """Text file for source=file."""
    grid_prompts: List[str] = field(default_factory=list)
    """Fixed prompts of the before/after grids; empty: the first prompts the source yields for seed 0."""


# ----------------------------------------------------------------------------- env
@dataclass
class EnvConfig:
    """A gymnasium task for diffusion policies (drl/envs). Actions are rescaled to [-1, 1]."""

    name: str = "bandit"
    """Short name used in run names."""
    id: str = "drl/MultimodalBandit-v0"
    """gymnasium id (drl/MultimodalBandit-v0, Pendulum-v1, Hopper-v5, HalfCheetah-v5, ...)."""
    dataset: Optional[str] = None
    """Offline dataset: drl's .npz (scripts/make_dataset.py), a D4RL-style .hdf5/.h5 file, or a Minari dataset (local id under MINARI_DATASETS_PATH, or its directory); None: generate the behaviour data in memory (bandit only)."""
    dataset_size: int = 10_000
    """Transitions generated in memory when dataset is None."""
    gamma: float = 0.99
    """Discount of returns and TD targets."""
    eval_episodes: int = 10
    """Episodes per evaluation (mean return, normalised score)."""
    eval_every: int = 5
    """Evaluate every this many epochs (and after the last)."""
    ref_min_score: Optional[float] = None
    """Return of a random policy, for the D4RL-normalised score 100 * (R - min) / (max - min)."""
    ref_max_score: Optional[float] = None
    """Return of an expert policy, for the normalised score."""
    video: bool = False
    """Render one evaluation episode to <run dir>/rollout.gif after training (MuJoCo: MUJOCO_GL=egl)."""
    num_envs: int = 1
    """Environments stepped at once by online rollouts (DSRL, DDPO, DPPO) and evaluation, as a gymnasium vector env; 1: every episode in this process, all stepped together."""
    vector_mode: str = "async"
    """How num_envs > 1 environments run: async (a subprocess each) or sync (one after another in this process)."""


# -------------------------------------------------------------------- train / run
@dataclass
class TrainConfig:
    epochs: int = 40
    """Number of epochs (sample, score, update)."""
    samples_per_epoch: int = 64
    """Samples generated per epoch (per process)."""
    batch_size: int = 32
    """Training: DDPO, NFT and RWR (trajectory states) take this many (sample, step) pairs per denoiser call, timesteps mixed (memory and speed only: the gradient is the same, tests/test_update_batching.py); AlignProp samples per chain (its steps run in turn); DPO half as many image pairs; pretrain images per optimizer step. Sampling: samples per call unless sample_batch_size is set."""
    sample_batch_size: Optional[int] = None
    """Samples per denoiser call when sampling (rollouts, evaluation); null: train.batch_size. Sampling keeps no graph, so it fits a larger batch than training."""
    save_every: int = 10
    """Write a checkpoint every this many epochs (and always at the end)."""
    grid_size: int = 16
    """Images in each before/after sample grid."""
    eval_size: int = 64
    """Fixed prompts and noise scored before and after training (the grids are their first grid_size);
    the paired gain and its standard error go to eval.json. 0: the grid alone."""
    eval_eta: Optional[float] = None
    """The before/after evaluation's noise level (scheduler.eta's meaning: 0 = the deterministic ODE/DDIM chain);
    null: scheduler.eta, the run's own sampler. Flow-GRPO evaluates with the ODE (0) what it trains with the SDE."""
    max_nonfinite_batches: int = 3
    """Stop the run after this many consecutive epochs whose rewards or loss were NaN/inf (they are skipped)."""


@dataclass
class HardwareConfig:
    device: str = "auto"
    """auto (cuda if available), cpu or cuda."""
    mixed_precision: str = "no"
    """Autocast dtype for the denoiser: no | bf16 | fp16 (log-probs are always float32)."""
    num_threads: int = 0
    """Torch CPU threads (0: torch's default)."""
    num_processes: int = 1
    """Data-parallel processes per node; > 1 relaunches drl-train under torchrun unless torchrun, accelerate launch or srun started the ranks."""
    num_nodes: int = 1
    """Nodes of the job (multi-node ranks come from the launcher: srun, or torchrun on every node)."""
    backend: str = "auto"
    """torch.distributed backend: auto (nccl on CUDA, gloo on CPU), nccl or gloo."""
    sharding: str = "ddp"
    """Data parallelism of the trained denoiser: ddp (a whole copy per rank, gradients all-reduced) or fsdp (PyTorch FSDP2: weights, gradients and Adam moments sharded over ranks, for models too large for one device; drl/sharding.py)."""


@dataclass
class PreemptionConfig:
    requeue_signals: List[str] = field(default_factory=lambda: ["SIGUSR1", "SIGUSR2"])
    """Signals that checkpoint at the end of the epoch, stop, and requeue the job when inside SLURM (SLURM's pre-timeout signal)."""
    stop_signals: List[str] = field(default_factory=lambda: ["SIGTERM", "SIGINT"])
    """Signals that checkpoint at the end of the epoch and stop (rerun the same command to resume); a second SIGINT (Ctrl-C) stops at once."""


@dataclass
class LoggerConfig:
    backend: str = "wandb"
    """wandb or none (metrics.jsonl, plots and grids are always written)."""
    mode: str = "offline"
    """W&B mode: offline (no account, sync later with `wandb sync`), online, or disabled."""
    project: str = "drl"
    """W&B project."""
    entity: Optional[str] = None
    """W&B entity (team or user); None: your default."""
    tags: List[str] = field(default_factory=list)
    """W&B tags."""


@dataclass
class QualityConfig:
    """What the evaluation measures besides the reward (drl/evaluation): diversity, distance to the base model, FID/KID."""

    features: str = "auto"
    """Feature extractor: auto (toy models: the shipped classifiers; others: clip if clip_path is set, else pixels), toy, clip, inception, pixels, or none (no in-run probe)."""
    clip_path: Optional[str] = None
    """Local transformers CLIP directory: its image encoder as features (features=clip/auto) and, in drl-eval, CLIPScore."""
    inception_weights: Optional[str] = None
    """features=inception: torch-fidelity's pt_inception-2015-12-05-6726825d.pth on disk (nothing is downloaded)."""
    max_diversity_drop: float = 0.3
    """Warn once when the fixed-input samples' diversity fell by more than this fraction while the reward rose."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: Any = MISSING
    """One of the algorithm schemas of the registry (drl/algorithms/__init__.py), chosen with algorithm=<name>."""
    env: Optional[EnvConfig] = None
    """A control task (env=bandit, pendulum, hopper, ...); None: text-to-image."""
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    preemption: PreemptionConfig = field(default_factory=PreemptionConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    seed: int = 0
    """Seeds every random number generator; the same seed gives the same metrics."""
    resume: Optional[str] = None
    """A run directory (or checkpoint file) to continue from; by default a run resumes its own run dir's checkpoint."""
    resume_changes: str = "refuse"
    """Resuming under other settings than the checkpoint's (algorithm hyperparameters, seed, scheduler, reward, prompts):
    refuse, or allow (continue with the new values; each change is printed and kept in <run dir>/resume_changes.jsonl)."""
    run_name: str = "${model.name}-${algorithm.name}"
    """Shown in W&B and the run dir's name."""


@dataclass
class EvalConfig:
    """drl-eval (conf/eval.yaml): several models on the same prompts and noise, side by side (drl/evaluation/compare.py)."""

    models: List[str] = field(default_factory=list)
    """Models to compare, the first is the baseline: drl:<asset>, a diffusers directory, a drl-train run dir, a LoRA dir or a checkpoint; empty: model.path alone."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model: LoRA dirs and checkpoints outside a run dir go on model.path; kind, resolution and frames apply to all."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    num_prompts: int = 256
    """Distinct prompts: the prompt source's first num_prompts."""
    samples_per_prompt: int = 2
    """Samples of each prompt (each from its own noise); two or more give the within-prompt diversity."""
    batch_size: int = 64
    """Samples per denoiser call."""
    reference: Optional[str] = "auto"
    """Reference set of FID/KID: auto (toy models: renders of the same prompts; others: none), a folder of images, or null."""
    grid_rows: int = 8
    """Rows (prompt and noise) of comparison.png and the W&B table; a column per model."""
    seed: int = 0
    """Seeds the noise (the same for every model) and KID's subsets."""
    run_name: str = "eval-${model.name}"
    """Shown in W&B and the output dir's name."""


def eval_problems(cfg: EvalConfig) -> list[str]:
    """Range faults of a drl-eval config, as sentences."""
    p: list[str] = []
    for key in ("num_prompts", "samples_per_prompt", "batch_size", "grid_rows"):
        _positive(p, key, getattr(cfg, key))
    _choice(p, "model.kind", cfg.model.kind, ("t2i", "t2v"))
    _choice(p, "scheduler.kind", cfg.scheduler.kind, ("ddim", "ddpm", "flow"))
    _positive(p, "scheduler.num_steps", cfg.scheduler.num_steps)
    p += scheduler_noise_problems(cfg.scheduler)
    _choice(p, "quality.features", cfg.quality.features, QUALITY_FEATURES)
    _choice(p, "logger.mode", cfg.logger.mode, ("offline", "online", "disabled"))
    _choice(p, "prompts.source", cfg.prompts.source, ("toy", "list", "file"))
    if cfg.prompts.source == "file" and not cfg.prompts.path:
        p.append("prompts.source=file needs prompts.path (a text file with one prompt per line).")
    if not any(w != 0 for w in cfg.reward.terms.values()):
        p.append("reward.terms has no non-zero weight: name at least one reward, e.g. reward=toy_alignment.")
    return p


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="drl_schema", node=Config)
    cs.store(name="eval_schema", node=EvalConfig)
    for name, entry in ALGORITHMS.items():
        cs.store(group="schema/algorithm", name=name, node=entry.schema)
    cs.store(group="schema/model", name="diffusion_policy", node=PolicyModelConfig)
    cs.store(group="schema/env", name="env", node=EnvConfig)


# ------------------------------------------------------------------------ validate

QUALITY_FEATURES = ("auto", "toy", "clip", "inception", "pixels", "none")
PREEMPTION_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGHUP", "SIGCONT")


def find_problems(cfg: Config) -> list[str]:
    """Every range and consistency fault of a composed config, as sentences."""
    p: list[str] = []
    t, s, m, a = cfg.train, cfg.scheduler, cfg.model, cfg.algorithm
    for key in ("epochs", "samples_per_epoch", "batch_size", "save_every", "grid_size", "max_nonfinite_batches"):
        _positive(p, f"train.{key}", getattr(t, key))
    _positive(p, "train.eval_size", t.eval_size, allow_zero=True)
    if t.eval_eta is not None:
        _positive(p, "train.eval_eta", t.eval_eta, allow_zero=True)
        if s.kind == "ddpm":
            p.append("train.eval_eta sets the evaluation's eta, which scheduler=ddpm ignores: use scheduler=ddim or leave it unset.")
    if t.sample_batch_size is not None:
        _positive(p, "train.sample_batch_size", t.sample_batch_size)
    _choice(p, "scheduler.kind", s.kind, ("ddim", "ddpm", "flow"))
    _positive(p, "scheduler.num_steps", s.num_steps)
    _positive(p, "scheduler.eta", s.eta, allow_zero=True)
    _positive(p, "scheduler.guidance_scale", s.guidance_scale)
    p += scheduler_noise_problems(s)
    _choice(p, "model.finetune", m.finetune, ("full", "lora"))
    _choice(p, "model.family", m.family, ("auto", *FAMILIES, *VIDEO_FAMILIES))
    if m.family != "auto" and m.family in FAMILIES + VIDEO_FAMILIES and (m.family in VIDEO_FAMILIES) != (m.kind == "t2v"):
        p.append(f"model.family={m.family} does not fit model.kind={m.kind}: video families ({', '.join(VIDEO_FAMILIES)}) take kind=t2v, image families kind=t2i.")
    _positive(p, "model.vae_decode_chunk", m.vae_decode_chunk)
    if (m.family in FLOW_FAMILIES + VIDEO_FAMILIES) != (s.kind == "flow") and m.family != "auto":
        p.append(f"model.family={m.family} does not fit scheduler.kind={s.kind}: flow models ({', '.join(FLOW_FAMILIES)}) take scheduler=flow, the others ddim or ddpm.")
    if cfg.env is None and m.kind == "t2i":
        p.extend(model_directory_problems(m, s))
    _positive(p, "model.lora_rank", m.lora_rank)
    _positive(p, "model.resolution", m.resolution)
    _choice(p, "model.kind", m.kind, ("t2i", "t2v"))
    _positive(p, "model.num_frames", m.num_frames)
    if m.text_encoder_offload and getattr(a, "train_text_encoder", False):
        p.append("model.text_encoder_offload=true caches the prompts' conditioning, so the text encoder cannot train: "
                 "set algorithm.train_text_encoder=false.")
    _choice(p, "hardware.device", cfg.hardware.device, ("auto", "cpu", "cuda"))
    _choice(p, "hardware.mixed_precision", cfg.hardware.mixed_precision, ("no", "bf16", "fp16"))
    _positive(p, "hardware.num_threads", cfg.hardware.num_threads, allow_zero=True)
    _positive(p, "hardware.num_processes", cfg.hardware.num_processes)
    _positive(p, "hardware.num_nodes", cfg.hardware.num_nodes)
    _choice(p, "hardware.backend", cfg.hardware.backend, ("auto", "gloo", "nccl"))
    _choice(p, "hardware.sharding", cfg.hardware.sharding, ("ddp", "fsdp"))
    if cfg.hardware.sharding == "fsdp" and (cfg.env is not None or a.offline):
        p.append("hardware.sharding=fsdp shards a text-to-image denoiser being fine-tuned; pretraining and control policies use hardware.sharding=ddp.")
    if m.compile and cfg.env is not None:
        p.append("model.compile=true compiles a text-to-image or video denoiser; control policies (env=...) are small MLPs and run uncompiled.")
    for key in ("requeue_signals", "stop_signals"):
        for name in getattr(cfg.preemption, key):
            _choice(p, f"preemption.{key}", name, PREEMPTION_SIGNALS)
    _choice(p, "resume_changes", cfg.resume_changes, ("refuse", "allow"))
    _choice(p, "quality.features", cfg.quality.features, QUALITY_FEATURES)
    _fraction(p, "quality.max_diversity_drop", cfg.quality.max_diversity_drop)
    _choice(p, "logger.backend", cfg.logger.backend, ("wandb", "none"))
    _choice(p, "logger.mode", cfg.logger.mode, ("offline", "online", "disabled"))
    _choice(p, "prompts.source", cfg.prompts.source, ("toy", "list", "file"))
    if cfg.prompts.source == "list" and not cfg.prompts.prompts:
        p.append("prompts.source=list needs a non-empty prompts.prompts list.")
    if cfg.prompts.source == "file" and not cfg.prompts.path:
        p.append("prompts.source=file needs prompts.path (a text file with one prompt per line).")
    for key, spec in [*cfg.reward.terms.items(), *cfg.reward.eval_terms.items()]:
        if isinstance(spec, Mapping) and "_target_" not in spec:
            p.append(f"reward term {key!r} is a mapping without _target_: give a weight, or _target_: module.factory for your own reward.")
        elif not isinstance(spec, (Mapping, int, float)) or isinstance(spec, bool):
            p.append(f"reward term {key!r}={spec!r}: give a weight (a number) or a mapping with _target_.")
    image_run = cfg.env is None  # a control run has no reward model: its environment rewards it (control_problems)
    if image_run and not any(term_weight(w) != 0 for w in cfg.reward.terms.values() if isinstance(w, (Mapping, int, float))):
        p.append("reward.terms has no non-zero weight: name at least one reward, e.g. reward=toy_alignment.")
    _positive(p, "reward.jpeg_quality", cfg.reward.jpeg_quality)
    rgb = list(cfg.reward.target_rgb)
    if len(rgb) != 3 or not all(math.isfinite(c) and 0 <= c <= 1 for c in rgb):
        p.append(f"reward.target_rgb={rgb} must be three numbers in [0, 1] (red, green, blue).")
    _positive(p, "reward.frame_subset", cfg.reward.frame_subset, allow_zero=True)
    for key, spec in cfg.reward.terms.items():  # a term that compares the samples of a group needs groups
        kind = "pairwise" if isinstance(spec, Mapping) and spec.get("pairwise") else "groupwise" if isinstance(spec, Mapping) and spec.get("groupwise") else ""
        if kind and term_weight(spec) != 0 and cfg.env is None and a.samples_per_group == 1:
            p.append(
                f"reward term {key!r} is {kind}: it compares the samples of one prompt's group, and algorithm={a.name} samples one "
                "per prompt; use algorithm=ddpo, nft or dpo with algorithm.group_size > 1."
            )
    wrong_domain = domain_problem(a.name, domain_of(cfg))  # the registry (drl/algorithms/__init__.py) says where each runs
    if not wrong_domain:
        p += a.problems(cfg)  # the algorithm's own keys: drl/algorithms/schemas/<name>.py
    if a.kl_coef > 0 and not a.takes_kl_coef:
        p.append(f"algorithm.kl_coef is not supported by algorithm={a.name} (it is by {', '.join(algorithms_where('takes_kl_coef'))}).")
    if wrong_domain:
        p.append(wrong_domain)
    elif cfg.env is None and isinstance(m, PolicyModelConfig):
        p.append(f"model={m.name} acts on a control task: choose one, e.g. env=bandit (or use an experiment=bandit_* config).")
    if cfg.env is not None:
        p.extend(control_problems(cfg))
    return p


POLICY_SCHEDULERS = {"diffusion": ("ddpm", "ddim"), "flow": ("flow",)}
"""model.policy_kind -> the scheduler kinds that sample it."""
POLICY_MODELS = {"diffusion": "diffusion_policy", "flow": "flow_policy"}
"""model.policy_kind -> the model config (conf/model/) that builds one."""


def control_problems(cfg) -> list[str]:
    """Every fault of a control config, as sentences (no gymnasium import: this runs before any work)."""
    p: list[str] = []
    env, m, a, s = cfg.env, cfg.model, cfg.algorithm, cfg.scheduler
    if not isinstance(m, PolicyModelConfig):
        p.append(f"env={env.name} needs a diffusion policy: add model=diffusion_policy.")
        return p
    rewards = [*cfg.reward.terms, *cfg.reward.monitor, *cfg.reward.eval_terms]
    if rewards:
        p.append(f"Control runs are rewarded by the environment, not by a reward model: leave out the reward ({', '.join(rewards)}).")
    if m.policy_kind not in POLICY_SCHEDULERS:
        p.append(f"model.policy_kind={m.policy_kind!r} is not one of {', '.join(POLICY_SCHEDULERS)}.")
    elif s.kind not in POLICY_SCHEDULERS[m.policy_kind]:
        p.append(f"model.policy_kind={m.policy_kind} samples with scheduler={' or '.join(POLICY_SCHEDULERS[m.policy_kind])}, not scheduler.kind={s.kind}.")
    elif m.policy_kind not in a.policy_kinds:
        p.append(
            f"algorithm={a.name} takes a {' or '.join(a.policy_kinds)} policy, not the {m.policy_kind} policy of model={m.name} "
            f"(model.policy_kind; e.g. model={POLICY_MODELS[a.policy_kinds[0]]})."
        )
    if m.policy_kind == "diffusion" and s.num_steps > m.diffusion_steps:
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
    if a.offline and env.dataset is None and env.id != "drl/MultimodalBandit-v0":
        p.append(f"algorithm={a.name} learns offline: set env.dataset to a file made by scripts/make_dataset.py, a D4RL-style .hdf5 file or a Minari dataset.")
    if not a.offline and m.from_scratch:
        p.append(
            f"algorithm={a.name} fine-tunes or steers a pretrained policy: set model.from_scratch=false model.path=<run dir of algorithm=bc>."
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
    return p


def validate(cfg: DictConfig) -> Config:
    """Turn a composed DictConfig into typed objects, or raise one ConfigError listing every fault."""
    try:
        obj: Config = OmegaConf.to_object(cfg)  # resolves interpolations and checks types
    except Exception as e:  # OmegaConf's errors carry full context; keep only the first line
        raise ConfigError(str(e).splitlines()[0]) from None
    if not isinstance(obj.algorithm, AlgorithmConfig):
        raise ConfigError("algorithm is not set: choose one, e.g. algorithm=ddpo.")
    from drl.schema_checks import (
        schema_problems,  # generic over every schema: unknown keys, NaN/inf
    )

    problems = schema_problems(cfg, obj)
    problems += find_problems(obj)
    if problems:
        raise ConfigError(" ".join(problems) if len(problems) == 1 else "\n  - " + "\n  - ".join(problems))
    return obj
