"""Typed schemas of every config group, registered in Hydra's ConfigStore.

Each field has a type, a default and a one-line docstring under it. Hydra/OmegaConf
reject unknown keys and wrong types while composing; :func:`validate` then checks
ranges and cross-field rules and reports every fault at once, before any work starts.

Group yaml files pick their schema through their defaults list, e.g.
``conf/algorithm/ddpo.yaml`` starts with ``- /schema/algorithm/ddpo@_here_``.
"""

from __future__ import annotations

from collections.abc import Mapping
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from drl.algorithms import ALGORITHMS, domain_of, domain_problem


class ConfigError(ValueError):
    """A user's config is wrong; the message says what and how to fix it."""


# --------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    name: str = "toy_t2i"
    """Short name used in run names and logs."""
    path: str = "drl:toy_t2i"
    """Diffusers save_pretrained directory, a hub id, or drl:<name> for a model shipped with drl."""
    family: str = "auto"
    """Model layout: sd (1.x/2.x), sdxl, sd3 (flow matching; needs scheduler=flow) or auto (from the directory)."""
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
    """Recompute the denoiser's activations in the backward pass: less memory, ~30% more compute."""
    compile: bool = False
    """torch.compile the denoiser (after the reference copy is taken): the first epoch pays the compilation. On a CPU it did not pay (toy run: 0.92x epoch throughput, docs/results/2026-12-03-speed.md); try it on a GPU."""
    vae_decode_chunk: int = 8
    """Images per VAE decode call (bounds the decoder's peak memory; gradients flow through every chunk)."""
    kind: str = "t2i"
    """What `path` holds: t2i (images) or t2v (clips: a video denoiser, drl/models/t2v.py)."""
    num_frames: int = 8
    """Frames per generated clip (kind=t2v)."""


@dataclass
class PolicyModelConfig(ModelConfig):
    """A state-conditioned diffusion policy for control (Diffusion-QL's denoiser; drl/models/policy.py).

    Of the inherited keys, ``path`` names a saved policy directory (``drl-train`` writes one to
    ``<run dir>/policy``), ``from_scratch`` builds a fresh one, and ``finetune`` must stay full.
    """

    name: str = "diffusion_policy"
    path: str = ""
    from_scratch: bool = True
    hidden_dim: int = 256
    """Width of each hidden layer of the MLP denoiser."""
    num_layers: int = 3
    """Hidden layers (Mish activations), as in Diffusion-QL."""
    time_dim: int = 16
    """Size of the sinusoidal timestep embedding."""
    diffusion_steps: int = 5
    """T of the VP noise schedule (Diffusion-QL uses 5); scheduler.num_steps must not exceed it."""
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


# ----------------------------------------------------------------------- algorithm
@dataclass
class AlgorithmConfig:
    name: str = MISSING
    """Which algorithm module runs: pretrain | rwr | ddpo | alignprop | nft | dpo."""
    lr: float = 3e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW (beta1, beta2)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this value (0 disables clipping)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up over this many optimizer steps (0: none). Adam's first steps move every
    weight by about lr whatever the gradient's noise, which on a low-signal policy gradient is a random jump."""
    kl_coef: float = 0.0
    """Weight of a KL-to-reference penalty against reward hacking (the frozen base model; see drl/algorithms/regularization.py)."""
    ema_decay: float = 0.0
    """Decay of an EMA of the trained weights that the grids and the exported model sample from (0: no EMA)."""


@dataclass
class PretrainConfig(AlgorithmConfig):
    name: str = "pretrain"
    lr: float = 1e-3
    steps_per_epoch: int = 50
    """Optimizer steps per epoch, each on train.batch_size fresh procedural images."""
    caption_dropout: float = 0.1
    """Probability of training on the empty prompt, so classifier-free guidance works later."""
    caption_noise: Dict[str, float] = field(
        default_factory=lambda: {"colour": 0.2, "shape": 0.5, "position": 0.4, "size": 0.3, "motion": 0.8}
    )
    """Per-attribute probability of a wrong caption word (noisy web captions make the base model imperfect);
    each world uses its own attributes (images: colour, shape, position, size; clips: colour, shape, motion)."""
    train_text_encoder: bool = True
    """Also train the text encoder (only sensible when it was built from scratch)."""
    warmup_steps: int = 200
    ema_decay: float = 0.999
    """Pretraining exports an EMA of its weights by default."""


@dataclass
class BCConfig(AlgorithmConfig):
    """Behaviour cloning of a diffusion policy on a control task's dataset (L_simple on state-action pairs)."""

    name: str = "bc"
    lr: float = 1e-3
    steps_per_epoch: int = 50
    """Optimizer steps per epoch, each on train.batch_size transitions from the dataset."""
    warmup_steps: int = 200
    ema_decay: float = 0.999
    """The exported policy is an EMA of the weights by default."""


@dataclass
class RWRConfig(AlgorithmConfig):
    name: str = "rwr"
    lr: float = 3e-5
    beta: float = 1.0
    """Inverse temperature: w_i = exp(beta * r_i), self-normalised to mean 1 over the epoch's samples."""
    reward_normalization: str = "batch"
    """Standardise rewards before weighting: batch (r - mean) / std, or none (raw rewards)."""
    max_weight: float = 0.0
    """Clip normalised weights to this value (0: no clip); guards against one sample taking all the weight."""
    center_weights: bool = True
    """Train with w_i - 1 (their mean) instead of w_i: equally weighted regression on own samples cancels out."""
    regression_states: str = "trajectory"
    """Noisy inputs of the weighted L_simple: trajectory (the chain's own x_t, every step) or forward (q(x_t | x_0), random t)."""
    updates_per_epoch: int = 1
    """Passes over the epoch's regression items (forward: each sample gets a fresh random t and noise every pass)."""
    minibatches: int = 4
    """Optimizer steps per pass."""


@dataclass
class DDPOConfig(AlgorithmConfig):
    name: str = "ddpo"
    lr: float = 3e-4
    clip_range: float = 1e-3
    """PPO clip range epsilon of the importance ratio (tuned for logprob_reduction: ddpo-pytorch uses 1e-4 with mean)."""
    adv_clip_max: float = 5.0
    """Clip advantages to [-adv_clip_max, adv_clip_max]."""
    num_inner_epochs: int = 1
    """Passes over each epoch's samples."""
    minibatches: int = 2
    """Optimizer steps per inner epoch (the samples' (sample, step) pairs are split evenly)."""
    timestep_fraction: float = 1.0
    """Fraction of each trajectory's stochastic steps trained on (a random subset per sample)."""
    skip_last_steps: int = 0
    """Leave the last k stochastic steps out of training: their std is tiny, so their log-prob gradient (~1/std)
    dominates the update, while the reward hardly depends on them (on the toy world the last two carry ~10x
    the gradient norm of any other step)."""
    logprob_reduction: str = "mean"
    """How the per-step Gaussian log-prob is reduced over latent dims for the ratio: sum (exact) or mean (ddpo-pytorch)."""
    group_size: int = 1
    """Samples per prompt in an epoch; > 1 normalises advantages within each prompt's group (group-relative)."""
    share_group_noise: bool = False
    """With group_size > 1: the group's samples start from the same x_T (they differ only by the step noise)."""
    adv_std_floor: float = 1e-6
    """With group_size > 1: divide by max(std, this), so near-tied groups do not blow up their advantages."""
    adv_std_eps: float = 0.0
    """With group_size > 1: added to that std (Flow-GRPO divides by std + 1e-4: set 1e-4 to reproduce it)."""
    group_std: str = "group"
    """With group_size > 1, the std advantages are divided by: group (each group's own, GRPO) or batch (all the
    epoch's rewards: Flow-GRPO's global_std; a group of near-ties keeps small advantages)."""
    kl_form: str = "exact"
    """The per-step KL of kl_coef: exact (||mu - mu_ref||^2 / 2 std^2 with the step's std, reduced as the log-prob) or
    flow_grpo (flow models: Flow-GRPO's mean_d ||mu - mu_ref||^2 / 2 g^2, g the SDE coefficient without sqrt(-dt); exact
    with logprob_reduction=mean is 1/(-dt) times it, so a kl_coef copied from Flow-GRPO needs this form)."""
    per_prompt_stat_tracking: bool = True
    """With group_size=1: normalise rewards per prompt (running mean/std) instead of over the batch."""
    stat_buffer_size: int = 32
    """Rewards remembered per prompt by the stat tracker."""
    stat_min_count: int = 8
    """Below this many rewards for a prompt, fall back to batch statistics."""


@dataclass
class AlignPropConfig(AlgorithmConfig):
    name: str = "alignprop"
    lr: float = 1e-4
    truncation: str = "random"
    """Steps that carry gradient: all, last (the last truncation_steps: DRaFT-K) or random (last K ~ U{1..truncation_steps})."""
    truncation_steps: int = 2
    """K of truncation=last / the largest K of truncation=random."""
    checkpoint_denoiser: bool = True
    """Recompute each denoiser call's activations in the backward pass (memory for compute)."""
    gradient_accumulation: int = 1
    """Batches of train.batch_size samples per optimizer step."""
    batches_per_call: int = 1
    """Batches of train.batch_size samples whose chains run together as one batch of denoiser calls, each with its own truncation draw (the same gradient; speed for memory); divides gradient_accumulation."""
    refl: bool = False
    """ReFL instead of the full chain: stop at a random one of the last truncation_steps steps and score its x̂_0."""


@dataclass
class DiffusionQLConfig(AlgorithmConfig):
    name: str = "diffusion_ql"
    lr: float = 3e-4
    """Actor (diffusion policy) learning rate."""
    critic_lr: float = 3e-4
    """Learning rate of the twin Q networks."""
    q_weight: float = 1.0
    """Weight of the Q term (the paper's eta): actor loss = BC loss + q_weight * (-Q / mean|Q|) (Wang et al. 2023, eq. 3)."""
    eta: Optional[float] = None
    """Deprecated: the old name of q_weight (it clashed with scheduler.eta); still read for this release, with a notice."""
    steps_per_epoch: int = 100
    """Gradient steps per epoch, each on train.batch_size transitions from the dataset."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    ema_decay: float = 0.995
    """Decay of the EMA actor that computes the critic's target actions (the live actor acts at evaluation, as in the
    official code's sample_action)."""
    ema_start: int = 1000
    """Gradient steps before the EMA starts averaging (step_start_ema)."""
    ema_warmup: str = "copy"
    """The EMA actor before ema_start: copy (copies the live actor every ema_every steps) or initial (stays at the
    initial weights, as the official code does)."""
    ema_every: int = 5
    """Update the EMA actor every this many gradient steps."""
    candidates: int = 50
    """Actions sampled per state at evaluation; one is drawn with probability softmax(Q) (the paper's selection)."""
    critic_hidden_dim: int = 256
    """Width of the critics' 3 hidden layers."""


@dataclass
class DSRLConfig(AlgorithmConfig):
    name: str = "dsrl"
    lr: float = 3e-4
    """Learning rate of every network DSRL trains (actor over noise, critics, entropy temperature)."""
    variant: str = "sac"
    """sac: SAC whose action is the policy's initial noise (DSRL-SAC); na: noise-aliased (DSRL-NA, Q on executed actions, distilled to the noise)."""
    noise_bound: float = 2.5
    """The noise actor's output range: w = noise_bound * tanh(.)."""
    updates_per_epoch: int = 50
    """Gradient steps per epoch on train.batch_size transitions from the replay buffer."""
    random_epochs: int = 1
    """First epochs act with w ~ N(0, I), i.e. the frozen base policy itself (fills the buffer)."""
    buffer_size: int = 100_000
    """Replay buffer capacity (transitions)."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    init_temperature: float = 0.1
    """Initial SAC entropy temperature alpha (tuned towards target_entropy)."""
    target_entropy: float = 0.0
    """SAC's target entropy per noise dimension (the target is this times the action size)."""
    hidden_dim: int = 256
    """Width of the actor's and critics' 2 hidden layers."""
    distill_samples: int = 1
    """DSRL-NA: noise draws per state for distilling the action-space Q into the noise-space Q."""
    action_critic_input: str = "offset"
    """DSRL-NA: what Q^A(s, .) reads of an action a: offset, a - pi_W(s, 0) (the shift from the base policy's action
    for noise 0), or action, a itself (on Pendulum the raw action is mostly a function of s and Q^A ranked noises wrongly)."""


@dataclass
class DPPOConfig(AlgorithmConfig):
    """DPPO (Ren et al. 2024): PPO over the two-layer MDP (environment decisions x denoising steps), with a value
    function on the environment state (drl/algorithms/dppo.py). lr is the actor's."""

    name: str = "dppo"
    lr: float = 1e-4
    critic_lr: float = 1e-3
    """Learning rate of the value function V(s) (DPPO's critic_lr)."""
    critic_hidden_dim: int = 256
    """Width of the value function's 3 hidden layers (Mish MLP on the flattened observation history)."""
    ft_denoising_steps: int = 5
    """K: only the last K denoising steps are fine-tuned (and are the MDP's actions); the earlier ones run the frozen
    base policy. At most scheduler.num_steps."""
    min_std: float = 0.1
    """Floor of the std of the K fine-tuned steps, in sampling and in the log-prob (DPPO's min_sampling_denoising_std
    and min_logprob_denoising_std): exploration noise even at the near-deterministic last steps."""
    clip_range: float = 0.01
    """PPO clip range of the per-denoising-step ratio (DPPO's clip_ploss_coef for Gym tasks)."""
    gae_lambda: float = 0.95
    """GAE's lambda over environment decisions (env.gamma is the discount per decision)."""
    gamma_denoising: float = 0.99
    """A chunk's advantage is multiplied by gamma_denoising^(K - 1 - k) at fine-tuned step k (k = K - 1 the last)."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this before the value function and GAE see them (DPPO's reward_scale_const)."""
    vf_coef: float = 0.5
    """Weight of the value loss 0.5 (V - return)^2."""
    value_clip: float = 0.0
    """Clip V's change from its value at collection to +-this in the loss (DPPO's clip_vloss_coef); 0: no clipping."""
    bc_coef: float = 0.0
    """Weight of the BC regulariser: -log-likelihood under the fine-tuned policy of chains sampled by the frozen base
    policy at the batch's states (DPPO's use_bc_loss); 0: off."""
    update_epochs: int = 5
    """Passes over each epoch's (decision, denoising step) pairs, in minibatches of train.batch_size."""
    critic_warmup_epochs: int = 0
    """First epochs train only the value function (DPPO's n_critic_warmup_itr)."""


@dataclass
class NFTConfig(AlgorithmConfig):
    name: str = "nft"
    lr: float = 1e-4
    beta: float = 1.0
    """Step size of the implicit policies v± = v_old ± beta (v_theta - v_old) (DiffusionNFT's beta; 0.1-1)."""
    group_size: int = 4
    """Samples per prompt in an epoch; > 1 normalises rewards within each prompt's group, 1 over the batch."""
    adv_clip_max: float = 2.0
    """Normalised rewards A are clipped to [-c, c] and mapped to the optimality probability r = A / (2c) + 1/2."""
    adv_std_floor: float = 1e-6
    """Divide rewards by max(std, this) when normalising."""
    adv_std_eps: float = 0.0
    """Added to that std (NVlabs' DiffusionNFT divides by std + 1e-4: set 1e-4 to reproduce it)."""
    group_std: str = "batch"
    """With group_size > 1, the std rewards are divided by: batch (all the epoch's rewards: NVlabs' DiffusionNFT
    default, sample.global_std=True) or group (each prompt's group); the mean is the group's either way. Measured
    on the toy world: docs/results/2026-12-03-nft-normalisation.md."""
    timestep_fraction: float = 0.5
    """Fraction of the sampling schedule's timesteps each sample is trained at (a random subset, fresh noise)."""
    adaptive_weighting: bool = True
    """Weight each sample's x̂_0-space error by 1 / its mean absolute error (DiffusionNFT); false: plain squared error."""
    num_inner_epochs: int = 1
    """Passes over each epoch's (sample, timestep) pairs."""
    minibatches: int = 2
    """Optimizer steps per inner epoch."""


@dataclass
class DPOConfig(AlgorithmConfig):
    name: str = "dpo"
    lr: float = 3e-4
    """Tuned on the toy world (toy_alignment: 1e-4 gained +0.9 ± 1.0 in 40 epochs, 3e-4 gained +7.0 ± 1.0)."""
    beta: float = 5000.0
    """Diffusion-DPO's beta·T on per-dimension mean denoising errors, logits = -beta/2 (error differences); its official launchers use 5000 (SD1.5 and SDXL)."""
    group_size: int = 4
    """Online: samples per prompt; each group gives one pair, its best vs its worst sample by reward (4: a clearer
    preference than a random pair of 2, for half the pairs)."""
    min_reward_gap: float = 0.0
    """Online: drop pairs whose rewards differ by no more than this (ties carry no preference)."""
    pairs_path: Optional[str] = None
    """Offline: a JSONL or CSV file of (prompt, chosen, rejected) image paths; set, it replaces online sampling."""
    timesteps_per_pair: int = 4
    """Random training timesteps (each with its own noise, shared by the two images) per pair and pass."""
    num_inner_epochs: int = 1
    """Passes over each epoch's pairs."""
    minibatches: int = 4
    """Optimizer steps per inner epoch (the loss is cheap next to sampling, so several steps per epoch pay)."""


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
    """Environments stepped at once by online rollouts (DSRL, ddpo) and evaluation, as a gymnasium vector env; 1: every episode in this process, all stepped together."""
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
    """One of the algorithm schemas (PretrainConfig, RWRConfig, DDPOConfig, AlignPropConfig, NFTConfig, DPOConfig, DiffusionQLConfig, DSRLConfig, DPPOConfig)."""
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
    _choice(p, "quality.features", cfg.quality.features, QUALITY_FEATURES)
    _choice(p, "logger.mode", cfg.logger.mode, ("offline", "online", "disabled"))
    _choice(p, "prompts.source", cfg.prompts.source, ("toy", "list", "file"))
    if cfg.prompts.source == "file" and not cfg.prompts.path:
        p.append("prompts.source=file needs prompts.path (a text file with one prompt per line).")
    if not any(w != 0 for w in cfg.reward.terms.values()):
        p.append("reward.terms has no non-zero weight: name at least one reward, e.g. reward=toy_alignment.")
    return p


ALGORITHM_SCHEMAS = {
    "pretrain": PretrainConfig,
    "bc": BCConfig,
    "rwr": RWRConfig,
    "ddpo": DDPOConfig,
    "alignprop": AlignPropConfig,
    "diffusion_ql": DiffusionQLConfig,
    "dsrl": DSRLConfig,
    "dppo": DPPOConfig,
    "nft": NFTConfig,
    "dpo": DPOConfig,
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="drl_schema", node=Config)
    cs.store(name="eval_schema", node=EvalConfig)
    for name, schema in ALGORITHM_SCHEMAS.items():
        cs.store(group="schema/algorithm", name=name, node=schema)
    cs.store(group="schema/model", name="diffusion_policy", node=PolicyModelConfig)
    cs.store(group="schema/env", name="env", node=EnvConfig)


# ------------------------------------------------------------------------ validate
def _choice(problems: list[str], key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        problems.append(f"{key}={value!r} is not one of {', '.join(map(str, allowed))}.")


def _positive(problems: list[str], key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        problems.append(f"{key}={value} must be {'>= 0' if allow_zero else '> 0'}.")


def _fraction(problems: list[str], key: str, value: float, closed_low: bool = False) -> None:
    if not ((0 <= value if closed_low else 0 < value) and value <= 1):
        problems.append(f"{key}={value} must be in {'[0' if closed_low else '(0'}, 1].")


QUALITY_FEATURES = ("auto", "toy", "clip", "inception", "pixels", "none")
PREEMPTION_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGHUP", "SIGCONT")


def find_problems(cfg: Config) -> list[str]:
    """Every range and consistency fault of a composed config, as sentences."""
    p: list[str] = []
    t, s, m, a = cfg.train, cfg.scheduler, cfg.model, cfg.algorithm
    for key in ("epochs", "samples_per_epoch", "batch_size", "save_every", "grid_size", "max_nonfinite_batches"):
        _positive(p, f"train.{key}", getattr(t, key))
    _positive(p, "train.eval_size", t.eval_size, allow_zero=True)
    if t.sample_batch_size is not None:
        _positive(p, "train.sample_batch_size", t.sample_batch_size)
    _choice(p, "scheduler.kind", s.kind, ("ddim", "ddpm", "flow"))
    _positive(p, "scheduler.num_steps", s.num_steps)
    _positive(p, "scheduler.eta", s.eta, allow_zero=True)
    _positive(p, "scheduler.guidance_scale", s.guidance_scale)
    _choice(p, "model.finetune", m.finetune, ("full", "lora"))
    _choice(p, "model.family", m.family, ("auto", "sd", "sdxl", "sd3"))
    _positive(p, "model.vae_decode_chunk", m.vae_decode_chunk)
    if (m.family == "sd3") != (s.kind == "flow") and m.family != "auto":
        p.append(f"model.family={m.family} does not fit scheduler.kind={s.kind}: flow models (sd3) take scheduler=flow, the others ddim or ddpm.")
    if cfg.env is None and m.kind == "t2i":
        p.extend(_model_directory_problems(m, s))
    _positive(p, "model.lora_rank", m.lora_rank)
    _positive(p, "model.resolution", m.resolution)
    _choice(p, "model.kind", m.kind, ("t2i", "t2v"))
    _positive(p, "model.num_frames", m.num_frames)
    if m.kind == "t2v" and m.gradient_checkpointing:
        p.append("model.gradient_checkpointing=true is not available for UNet3DConditionModel (diffusers has none); "
                 "AlignProp's algorithm.checkpoint_denoiser=true checkpoints every denoiser call instead.")
    _choice(p, "hardware.device", cfg.hardware.device, ("auto", "cpu", "cuda"))
    _choice(p, "hardware.mixed_precision", cfg.hardware.mixed_precision, ("no", "bf16", "fp16"))
    _positive(p, "hardware.num_threads", cfg.hardware.num_threads, allow_zero=True)
    _positive(p, "hardware.num_processes", cfg.hardware.num_processes)
    _positive(p, "hardware.num_nodes", cfg.hardware.num_nodes)
    _choice(p, "hardware.backend", cfg.hardware.backend, ("auto", "gloo", "nccl"))
    _choice(p, "hardware.sharding", cfg.hardware.sharding, ("ddp", "fsdp"))
    if cfg.hardware.sharding == "fsdp" and (cfg.env is not None or isinstance(a, PretrainConfig)):
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
    if not any(term_weight(w) != 0 for w in cfg.reward.terms.values() if isinstance(w, (Mapping, int, float))):
        p.append("reward.terms has no non-zero weight: name at least one reward, e.g. reward=toy_alignment.")
    _positive(p, "reward.jpeg_quality", cfg.reward.jpeg_quality)
    _positive(p, "reward.frame_subset", cfg.reward.frame_subset, allow_zero=True)
    _positive(p, "algorithm.lr", a.lr)
    _positive(p, "algorithm.max_grad_norm", a.max_grad_norm, allow_zero=True)
    _positive(p, "algorithm.warmup_steps", a.warmup_steps, allow_zero=True)
    _positive(p, "algorithm.kl_coef", a.kl_coef, allow_zero=True)
    _fraction(p, "algorithm.ema_decay", a.ema_decay, closed_low=True)
    if a.kl_coef > 0 and isinstance(a, (PretrainConfig, BCConfig, DiffusionQLConfig, DSRLConfig, DPPOConfig)):
        p.append(f"algorithm.kl_coef is not supported by algorithm={a.name} (it is by ddpo, rwr, alignprop, nft and dpo).")
    if isinstance(a, (DDPOConfig, NFTConfig, DPOConfig)):
        _positive(p, "algorithm.group_size", a.group_size)
        if a.group_size > 0 and t.samples_per_epoch % a.group_size:
            p.append(f"train.samples_per_epoch={t.samples_per_epoch} is not a multiple of algorithm.group_size={a.group_size}.")
    if isinstance(a, DDPOConfig):
        _positive(p, "algorithm.clip_range", a.clip_range)
        _positive(p, "algorithm.adv_clip_max", a.adv_clip_max)
        _positive(p, "algorithm.num_inner_epochs", a.num_inner_epochs)
        _positive(p, "algorithm.minibatches", a.minibatches)
        _fraction(p, "algorithm.timestep_fraction", a.timestep_fraction)
        _choice(p, "algorithm.logprob_reduction", a.logprob_reduction, ("sum", "mean"))
        _choice(p, "algorithm.group_std", a.group_std, ("group", "batch"))
        _choice(p, "algorithm.kl_form", a.kl_form, ("exact", "flow_grpo"))
        if a.kl_form == "flow_grpo" and s.kind != "flow":
            p.append(f"algorithm.kl_form=flow_grpo is Flow-GRPO's KL for flow models (scheduler=flow); got scheduler.kind={s.kind}.")
        _positive(p, "algorithm.skip_last_steps", a.skip_last_steps, allow_zero=True)
        _positive(p, "algorithm.stat_buffer_size", a.stat_buffer_size)
        _positive(p, "algorithm.adv_std_floor", a.adv_std_floor)
        _positive(p, "algorithm.adv_std_eps", a.adv_std_eps, allow_zero=True)
        if s.kind in ("ddim", "flow") and s.eta == 0:
            p.append("algorithm=ddpo needs a stochastic sampler: set scheduler.eta > 0 or use scheduler=ddpm.")
    if isinstance(a, RWRConfig):
        _choice(p, "algorithm.reward_normalization", a.reward_normalization, ("batch", "none"))
        _choice(p, "algorithm.regression_states", a.regression_states, ("trajectory", "forward"))
        _positive(p, "algorithm.max_weight", a.max_weight, allow_zero=True)
        _positive(p, "algorithm.updates_per_epoch", a.updates_per_epoch)
        _positive(p, "algorithm.minibatches", a.minibatches)
    if isinstance(a, AlignPropConfig):
        _choice(p, "algorithm.truncation", a.truncation, ("all", "last", "random"))
        _positive(p, "algorithm.truncation_steps", a.truncation_steps)
        _positive(p, "algorithm.gradient_accumulation", a.gradient_accumulation)
        _positive(p, "algorithm.batches_per_call", a.batches_per_call)
        if a.batches_per_call > 0 and a.gradient_accumulation > 0 and a.gradient_accumulation % a.batches_per_call:
            p.append(f"algorithm.batches_per_call ({a.batches_per_call}) must divide algorithm.gradient_accumulation "
                     f"({a.gradient_accumulation}): the batches sharing a call belong to one optimizer step.")
        if a.refl and a.batches_per_call > 1:
            p.append("algorithm.refl=true stops each batch at its own step, so it takes algorithm.batches_per_call=1.")
    if isinstance(a, (PretrainConfig, BCConfig)):
        _positive(p, "algorithm.steps_per_epoch", a.steps_per_epoch)
    if isinstance(a, PretrainConfig):
        _fraction(p, "algorithm.caption_dropout", a.caption_dropout, closed_low=True)
        for attr, rate in a.caption_noise.items():
            _fraction(p, f"algorithm.caption_noise.{attr}", rate, closed_low=True)
            if attr not in ("colour", "shape", "position", "size", "motion"):
                p.append(f"algorithm.caption_noise.{attr} is not a toy-world attribute (colour, shape, position, size, motion).")
    if isinstance(a, NFTConfig):
        _positive(p, "algorithm.beta", a.beta)
        _positive(p, "algorithm.adv_clip_max", a.adv_clip_max)
        _positive(p, "algorithm.adv_std_floor", a.adv_std_floor)
        _positive(p, "algorithm.adv_std_eps", a.adv_std_eps, allow_zero=True)
        _choice(p, "algorithm.group_std", a.group_std, ("group", "batch"))
        _fraction(p, "algorithm.timestep_fraction", a.timestep_fraction)
        _positive(p, "algorithm.num_inner_epochs", a.num_inner_epochs)
        _positive(p, "algorithm.minibatches", a.minibatches)
    if isinstance(a, DPOConfig):
        _positive(p, "algorithm.beta", a.beta)
        _positive(p, "algorithm.min_reward_gap", a.min_reward_gap, allow_zero=True)
        _positive(p, "algorithm.timesteps_per_pair", a.timesteps_per_pair)
        _positive(p, "algorithm.num_inner_epochs", a.num_inner_epochs)
        _positive(p, "algorithm.minibatches", a.minibatches)
        if a.pairs_path is None and a.group_size < 2:
            p.append(f"algorithm=dpo online needs algorithm.group_size >= 2 (got {a.group_size}) to form pairs, or a pairs file (algorithm.pairs_path).")
    wrong_domain = domain_problem(a.name, domain_of(cfg))  # the registry (drl/algorithms/__init__.py) says where each runs
    if wrong_domain:
        p.append(wrong_domain)
    elif cfg.env is None and isinstance(m, PolicyModelConfig):
        p.append(f"model={m.name} acts on a control task: choose one, e.g. env=bandit (or use an experiment=bandit_* config).")
    if cfg.env is not None:
        p.extend(control_problems(cfg))
    if isinstance(a, (RWRConfig, DDPOConfig)) and min(t.samples_per_epoch, t.batch_size) > 0:
        minibatches = a.minibatches
        if t.samples_per_epoch < minibatches:
            p.append(f"train.samples_per_epoch={t.samples_per_epoch} is smaller than algorithm.minibatches={minibatches}.")
    return p


def _model_directory_problems(m: ModelConfig, s: SchedulerConfig) -> list[str]:
    """A text-to-image model's family against its directory and the scheduler, read from the directory before
    anything loads (drl.models.layout); a hub id is checked when it loads."""
    from drl.models.layout import FLOW_FAMILIES, local_family

    if m.from_scratch:
        if m.family not in ("auto", "sd", "sd3"):
            return [f"model.from_scratch=true builds a toy architecture: model.family=sd3 (toy_flow's transformer) or sd (toy_t2i's UNet); there is no toy {m.family}."]
        return []
    found = local_family(m.path)
    if found is None or m.family not in ("auto", found):
        return [] if found is None else [f"model.family={m.family} but model.path={m.path} holds a {found} model: use model.family=auto (or {found})."]
    if m.family == "auto" and (found in FLOW_FAMILIES) != (s.kind == "flow"):  # an explicit family: find_problems says it
        fix = "scheduler=flow" if found in FLOW_FAMILIES else "scheduler=ddim or scheduler=ddpm"
        what = "a flow-matching" if found in FLOW_FAMILIES else f"an ε/v-prediction ({found})"
        return [f"model.path={m.path} holds {what} model, which scheduler={s.kind} cannot sample: use {fix}."]
    return []


def control_problems(cfg) -> list[str]:
    """Every fault of a control config, as sentences (no gymnasium import: this runs before any work)."""
    p: list[str] = []
    env, m, a, s = cfg.env, cfg.model, cfg.algorithm, cfg.scheduler
    if not isinstance(m, PolicyModelConfig):
        p.append(f"env={env.name} needs a diffusion policy: add model=diffusion_policy.")
        return p
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
    entry = ALGORITHMS.get(a.name)
    if entry is not None and entry.offline and env.dataset is None and env.id != "drl/MultimodalBandit-v0":
        p.append(f"algorithm={a.name} learns offline: set env.dataset to a file made by scripts/make_dataset.py, a D4RL-style .hdf5 file or a Minari dataset.")
    if entry is not None and not entry.offline and m.from_scratch:
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
    if isinstance(a, DiffusionQLConfig):
        for key in ("critic_lr", "steps_per_epoch", "ema_every", "candidates", "critic_hidden_dim"):
            if getattr(a, key) <= 0:
                p.append(f"algorithm.{key}={getattr(a, key)} must be > 0.")
        if a.q_weight < 0:
            p.append(f"algorithm.q_weight={a.q_weight} must be >= 0.")
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


def apply_renames(cfg: Config) -> list[str]:
    """Old option names still work for one release: move them to the new ones, and say so (one line each)."""
    notices = []
    a = cfg.algorithm
    if isinstance(a, DiffusionQLConfig) and a.eta is not None:
        a.q_weight, a.eta = a.eta, None
        notices.append("algorithm.eta is now algorithm.q_weight (it clashed with scheduler.eta); the old name goes in the next release.")
    if isinstance(a, PretrainConfig) and cfg.env is not None:
        shared = {f.name for f in fields(BCConfig)} - {"name"}
        cfg.algorithm = BCConfig(**{k: getattr(a, k) for k in shared})
        notices.append("algorithm=pretrain on a control task is now algorithm=bc; the old name goes in the next release.")
    return notices


def validate(cfg: DictConfig) -> Config:
    """Turn a composed DictConfig into typed objects, or raise one ConfigError listing every fault."""
    try:
        obj: Config = OmegaConf.to_object(cfg)  # resolves interpolations and checks types
    except Exception as e:  # OmegaConf's errors carry full context; keep only the first line
        raise ConfigError(str(e).splitlines()[0]) from None
    if not isinstance(obj.algorithm, AlgorithmConfig):
        raise ConfigError("algorithm is not set: choose one, e.g. algorithm=ddpo.")
    from drl.schema_checks import schema_problems  # generic over every schema: unknown keys, NaN/inf

    problems = schema_problems(cfg, obj)
    for notice in apply_renames(obj):
        print(f"drl-train: note: {notice}", file=sys.stderr)
    problems += find_problems(obj)
    if problems:
        raise ConfigError(" ".join(problems) if len(problems) == 1 else "\n  - " + "\n  - ".join(problems))
    return obj
