"""The memory plan: what one GPU holds at the peak of a run, line by line, before anything is loaded.

The networks are built on the meta device at their real size (drl.plan.architecture), made trainable as the run
would make them (peft LoRA, or every weight), and each phase's transient memory is traced on fake tensors
(drl.plan.tracing). What the plan mirrors of a run (drl/images.py, drl/algorithms/base.py):

  weights        fp32; with hardware.mixed_precision=bf16|fp16 the frozen parts (text encoders, VAE, the
                 denoiser's base weights under LoRA) are stored in that dtype; trained weights stay fp32
  trainable      LoRA adapters or every denoiser weight, fp32: gradients 4 B and AdamW's two moments 8 B each
  reference      KL or DPO: LoRA runs its base with the adapters disabled (0 B); full fine-tuning keeps a copy
  EMA            algorithm.ema_decay > 0: a fp32 copy of the trained weights
  FSDP           hardware.sharding=fsdp: the denoiser's weights, gradients, moments (and its reference copy) are
                 1/W per GPU, plus the largest block gathered whole (FSDP2 gathers a block before it runs)
  rollout        one epoch's trajectories on the device: latents [N, S + 1, ...] fp32, the prompts'
                 conditioning, the decoded samples
  update         the denoiser's forward + backward on train.batch_size pairs (x 2 with guidance), traced whole
                 (its live peak) with model.gradient_checkpointing as set; AlignProp adds the chain's other
                 calls (their activations, or their inputs when checkpoint_denoiser) and the backward of the VAE
                 decode and the reward (pure-function rewards traced; a reward network's activations not yet)
  sampling       the larger of: a no-grad denoiser call on the sampling batch (x 2 with guidance), a VAE
                 decode of model.vae_decode_chunk images (each traced for its live peak)

Checked against measured peaks (scripts/check_memory_plan.py, docs/results/2026-12-07-memory-plan.md).
  reward         the reward model's weights (published parameter counts, drl.plan.rewards)

The peak is the larger of (everything resident + sampling) and (everything resident + gradients + update).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from drl.models.sd3 import _quiet_diffusers
from drl.plan.architecture import Architecture, Component, PlanError, architecture_for, build_on_meta
from drl.plan.inputs import CallShape, denoiser_inputs
from drl.plan.rewards import differentiable_scores, reward_bytes
from drl.plan.tracing import Peak, Trace, trace_call, trace_training_peak

GiB = 2**30
CARDS_GB = (24, 48, 80)
DEVICE_RESERVE = 1.0 * GiB  # the CUDA context and the allocator's slack: outside max_memory_allocated, inside the card
# What an allocator block costs beyond its tensor's bytes, per storage alive at an update's peak. CUDA's caching
# allocator rounds each block up to 512 B. On the CPU, glibc serves blocks of 64 KiB or more with mmap (as
# scripts/check_memory_plan.py sets it): the block's header pushes it onto one more 4 KiB page (measured: 2,000
# tensors of 64, 128, 256 and 1024 KiB grew the RSS by 4.0-4.4 KiB each beyond their bytes). It matters where an
# update keeps thousands of small tensors: the tiny pipeline's AlignProp decode, 32 chunks' graphs (~2,600 storages).
BLOCK_OVERHEAD = {"cpu": 4096, "cuda": 512}
TOY_PATHS = {"sd3": "drl:toy_flow"}  # model.from_scratch builds the shipped toy's architecture


@dataclass
class Line:
    what: str
    bytes: int
    note: str = ""


@dataclass
class MemoryPlan:
    """Bytes per GPU, by line; ``peak`` is the larger phase. ``options`` holds what the run turns on."""

    model: str
    source: str
    resident: list[Line]
    sampling: list[Line]
    update: list[Line]
    activations_without_checkpointing: int
    activations_with_checkpointing: int
    world_size: int
    options: dict = field(default_factory=dict)
    denoiser_params: int = 0
    trainable_params: int = 0

    @property
    def resident_bytes(self) -> int:
        return sum(line.bytes for line in self.resident)

    @property
    def sampling_peak(self) -> int:
        return self.resident_bytes + max((line.bytes for line in self.sampling), default=0)

    @property
    def update_peak(self) -> int:
        return self.resident_bytes + sum(line.bytes for line in self.update)

    @property
    def peak(self) -> int:
        return max(self.sampling_peak, self.update_peak)

    def fits(self, card_gb: int) -> bool:
        return self.peak + DEVICE_RESERVE <= card_gb * 1e9


# ----------------------------------------------------------------------------- sizes
def _numel(params) -> int:
    return sum(p.numel() for p in params)


def _half_dtype(mixed_precision: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)


@dataclass
class DenoiserSizes:
    params: int  # every weight, adapters included
    trainable: int
    frozen: int
    largest_block: int  # parameters of the largest block of a ModuleList (one FSDP unit)
    buffer_bytes: int = 0  # buffers, as built (fp32: cast_frozen casts parameters only)


def buffer_bytes(module: torch.nn.Module, float_bytes: int | None = None) -> int:
    """Bytes of the module's buffers; ``float_bytes``: the size its floating-point buffers are cast to (None: as built).
    Buffers hold memory as weights do; the plan missed them until a measurement showed it: SD3.5-medium's fixed
    positional embedding ([1, 384^2, 1536] fp32, 864 MiB) was the 856 MiB its planned weights fell short of the
    RSS its random-weight build measured (scripts/check_memory_plan.py)."""
    return sum(b.numel() * (float_bytes if float_bytes and b.is_floating_point() else b.element_size()) for b in module.buffers())


def denoiser_sizes(module: torch.nn.Module) -> DenoiserSizes:
    blocks = [b for child in module.children() if isinstance(child, torch.nn.ModuleList) for b in child]
    trainable = _numel(p for p in module.parameters() if p.requires_grad)
    total = _numel(module.parameters())
    return DenoiserSizes(total, trainable, total - trainable, max((_numel(b.parameters()) for b in blocks), default=total),
                         buffer_bytes(module))


def make_trainable_on_meta(module: torch.nn.Module, model_cfg) -> None:
    """Freeze or adapt the meta module as drl.models.finetune.setup_trainable does the real one."""
    from drl.models.finetune import setup_trainable

    try:
        setup_trainable(module, model_cfg.finetune, model_cfg.lora_rank, model_cfg.lora_alpha, model_cfg.lora_targets)
    except ValueError as e:
        raise PlanError(str(e)) from None


# ------------------------------------------------------------------------- the plan
def memory_plan(cfg) -> MemoryPlan:
    """The per-GPU memory plan of a checked Config (drl.config.Config) of a text-to-image or video run."""
    if cfg.env is not None:
        raise PlanError("the memory plan sizes image and video runs; a control policy (env=...) is a small MLP.")
    path = TOY_PATHS.get(cfg.model.family, "drl:toy_t2i") if cfg.model.from_scratch else cfg.model.path
    arch = architecture_for(path)
    return plan_for(arch, cfg)


def plan_for(arch: Architecture, cfg) -> MemoryPlan:
    m, hw, a, t, s = cfg.model, cfg.hardware, cfg.algorithm, cfg.train, cfg.scheduler
    half = _half_dtype(hw.mixed_precision)
    world = hw.num_processes * hw.num_nodes
    shards = world if hw.sharding == "fsdp" else 1
    frozen_bytes = torch.finfo(half).bits // 8 if half is not None else 4

    denoisers = arch.of_role("denoiser")
    if not denoisers:
        raise PlanError(f"the memory plan found no denoiser in {arch.source}.")
    main = denoisers[0]
    module, sizes = trainable_denoiser(arch, main, m)
    n = len(denoisers)  # Wan2.2's two experts: both resident, both adapted
    lora = m.finetune == "lora"
    cfg_calls = 2 if s.guidance_scale != 1.0 else 1

    # ------------------------------------------------------------- resident
    resident = [
        Line(f"denoiser weights ({main.class_name}{' x2 experts' if n == 2 else ''})",
             n * (sizes.frozen * (frozen_bytes if lora else 4) + sizes.trainable * 4 + sizes.buffer_bytes) // shards,
             f"{count(n * sizes.params)} parameters; {'frozen base ' + _dtype_name(half) + ', adapters fp32' if lora else 'fp32 (trained)'}"
             + (f"; 1/{shards} per GPU (FSDP)" if shards > 1 else "")),
        Line("optimizer state (AdamW, 2 moments)", n * sizes.trainable * 8 // shards,
             f"{count(n * sizes.trainable)} trainable ({'LoRA r' + str(m.lora_rank) if lora else 'full'}), fp32"),
    ]
    if shards > 1:
        resident.append(Line("FSDP: one block gathered whole", 2 * sizes.largest_block * (frozen_bytes if lora else 4),
                             "the running block and the next one prefetched"))
    needs_reference = a.kl_coef > 0 or _needs_reference(a.name)
    if needs_reference:
        resident.append(Line("reference model", 0 if lora else n * sizes.params * 4 // shards,
                             "LoRA with its adapters disabled: no copy" if lora else "a frozen fp32 copy of the denoiser"))
    if a.ema_decay > 0:
        resident.append(Line("EMA of the trained weights", n * sizes.trainable * 4 // shards, "fp32"))
    encoders = arch.of_role("text_encoder")
    offload = getattr(m, "text_encoder_offload", False)
    encoder_params = sum(parameters_of(arch, c) for c in encoders)
    encoder_bytes = encoder_params * frozen_bytes + sum(buffer_bytes(_built(arch, c), frozen_bytes) for c in encoders)
    resident.append(Line(
        "text encoders (" + ", ".join(c.class_name for c in encoders) + ")", 0 if offload else encoder_bytes,
        f"{count(encoder_params)} parameters, " + ("on the CPU (model.text_encoder_offload=true: prompts encoded once, cached)" if offload else _dtype_name(half)),
    ))
    vae = next(iter(arch.of_role("vae")), None)
    vae_module = _built(arch, vae) if vae is not None else None
    if vae_module is not None:
        resident.append(Line(f"VAE ({vae.class_name})", parameters_of(arch, vae) * frozen_bytes + buffer_bytes(vae_module, frozen_bytes),
                             _dtype_name(half)))
    reward_total, reward_note = reward_bytes(cfg.reward)
    resident.append(Line("reward model(s)", reward_total, reward_note))

    # -------------------------------------------------------------- shapes
    scale = vae_spatial_factor(vae)
    latent = m.resolution // scale
    frames = latent_frames(vae, m.num_frames) if m.kind == "t2v" else 1
    source = edits_a_source(arch)
    tokens = text_tokens(arch, m) + (vision_tokens(arch, m.resolution) if source else 0)
    dtype = torch.float32
    shape = lambda batch: CallShape(batch, latent, frames, tokens, dtype, source)  # noqa: E731
    channels = latent_channels(main, vae)
    latent_numel = channels * latent * latent * frames
    cond_width = conditioning_width(main)
    steps = s.num_steps
    rollout = t.samples_per_epoch * (
        (steps + 1) * latent_numel * 4  # latents, fp32
        + steps * 8  # log-probs, timesteps
        + tokens * cond_width * (frozen_bytes if half is not None else 4)  # the prompts' conditioning
        + 3 * m.resolution * m.resolution * (m.num_frames if m.kind == "t2v" else 1) * 4  # decoded samples
        + (latent_numel * 4 + 3 * m.resolution * m.resolution if source else 0)  # an edit's source: latents fp32, pixels uint8
        + image_condition_channels(main, channels) * latent * latent * frames * 4  # Wan2.2 I2V: mask + image latents
    )
    resident.append(Line("one epoch's rollout", rollout, f"{t.samples_per_epoch} samples x {steps} steps"))

    # ------------------------------------------------------------ sampling
    trace = denoiser_trace(arch, main, module, m, half, shape(1))
    sample_batch = (t.sample_batch_size or t.batch_size) * cfg_calls
    sampling = [Line("denoiser call, no grad", sample_batch * trace.no_grad_call,
                     f"batch {sample_batch}: the most bytes alive at once + the largest convolution's output")]
    if vae_module is not None:
        chunk = min(m.vae_decode_chunk, t.sample_batch_size or t.batch_size)
        sampling.append(Line("VAE decode, no grad", chunk * vae_trace(arch, vae, vae_module, latent, frames, half).no_grad_call,
                             f"{chunk} images (model.vae_decode_chunk)"))

    # -------------------------------------------------------------- update
    # One call's forward + backward is traced whole (drl.plan.tracing.trace_training_peak): the activations and the
    # backward's gradient buffers at their joint peak, as the allocator sees them (within 5% of the measured update
    # on the tiny, small and SD3.5-medium-size runs, scripts/check_memory_plan.py).
    train_batch = t.batch_size * cfg_calls
    without, with_ckpt = train_batch * trace.kept(False), train_batch * trace.kept(True)
    overhead = BLOCK_OVERHEAD["cpu" if hw.device == "cpu" else "cuda"]
    one_call = denoiser_training_peak(arch, main, m, half, shape(1))
    call_peak = train_batch * one_call.bytes + one_call.storages * overhead
    chain = chain_steps(a, steps)
    if a.name != "alignprop":
        update_lines = [Line("forward + backward of one call", call_peak,
                             f"batch {train_batch}{', checkpointed' if m.gradient_checkpointing else ''}: activations and gradient buffers at their peak")]
    else:  # gradient through `chain` denoiser calls and the VAE decode; each call's activations kept or recomputed
        per_call = with_ckpt if m.gradient_checkpointing else without
        # checkpointed steps keep x_T, and each step's output x_{t-1} and noise z (bound to the step to be recomputed),
        # at the chain's batch: guidance doubles the batch inside the call, not the chain's latents
        earlier = t.batch_size * latent_numel * 4 * (2 * chain + 1) if a.checkpoint_denoiser else per_call * (chain - 1)
        scores, untraced = differentiable_scores(cfg.reward) if m.kind == "t2i" else ((), ["video rewards"])
        tail = decode_and_score_peak(arch, vae, vae_module, latent, frames, half, scores)
        decode = t.batch_size * tail.bytes + -(-t.batch_size // m.vae_decode_chunk) * tail.storages * overhead  # a graph per chunk
        update_lines = [
            Line("the chain's other calls", earlier,
                 f"{chain} chained steps, batch {t.batch_size}: " + ("x_T, each step's output and noise (algorithm.checkpoint_denoiser)"
                                                                    if a.checkpoint_denoiser else f"their activations (batch {train_batch})")),
            Line("backward of one call, or of the decode and reward", max(call_peak, decode + (0 if a.checkpoint_denoiser else per_call)),
                 "the larger: a denoiser call's forward + backward, or the VAE decode, its post-processing and the reward's "
                 "forward + backward with gradient into the latents" + (f" (not traced: {', '.join(untraced)})" if untraced else "")),
        ]
    update = [Line("gradients", n * sizes.trainable * 4 // shards, "fp32, alive until the optimizer step"), *update_lines]
    return MemoryPlan(
        model=arch.name, source=arch.source, resident=resident, sampling=sampling, update=update,
        activations_without_checkpointing=without, activations_with_checkpointing=with_ckpt, world_size=shards,
        options=_options(cfg), denoiser_params=n * sizes.params, trainable_params=n * sizes.trainable,
    )


_BUILT: dict[tuple, object] = {}  # meta modules and sizes, per architecture and setting: replans (the advice) reuse them


def _built(arch: Architecture, component: Component) -> torch.nn.Module:
    key = (arch.source, component.name)
    if key not in _BUILT:
        _BUILT[key] = build_on_meta(component)
    return _BUILT[key]


def parameters_of(arch: Architecture, component: Component) -> int:
    return _numel(_built(arch, component).parameters())


def trainable_denoiser(arch: Architecture, main: Component, m) -> tuple[torch.nn.Module, DenoiserSizes]:
    """The denoiser on the meta device, made trainable as model.finetune says, and its sizes."""
    key = (arch.source, main.name, m.finetune, m.lora_rank, m.lora_alpha, tuple(m.lora_targets))
    if key not in _BUILT:
        module = build_on_meta(main)
        make_trainable_on_meta(module, m)
        _BUILT[key] = (module, denoiser_sizes(module))
    return _BUILT[key]


_TRACES: dict[tuple, Trace | Peak] = {}  # one trace per architecture and setting: replans (the advice) reuse it


def denoiser_trace(arch: Architecture, main: Component, module: torch.nn.Module, m, half, shape: CallShape) -> Trace:
    key = (arch.source, main.name, m.finetune, m.lora_rank, tuple(m.lora_targets), half, shape)
    if key not in _TRACES:
        dtype = half or torch.float32  # autocast on the meta device is not available: trace the call in the half dtype
        with _quiet_diffusers():  # its warning on casting with to()
            module.to(dtype)
        _TRACES[key] = trace_call(module, denoiser_inputs(main, dataclasses.replace(shape, dtype=dtype)))
    return _TRACES[key]


def denoiser_training_peak(arch: Architecture, main: Component, m, half, shape: CallShape) -> Peak:
    """One denoiser call's forward + backward at its peak, with model.gradient_checkpointing as set: bytes per sample,
    and the storages alive then."""
    key = ("training", arch.source, main.name, m.finetune, m.lora_rank, tuple(m.lora_targets), half, shape, m.gradient_checkpointing)
    if key not in _TRACES:
        module = build_on_meta(main)  # a fresh copy: checkpointing changes the blocks' forward
        make_trainable_on_meta(module, m)
        dtype = half or torch.float32
        with _quiet_diffusers():
            module.to(dtype)
        if m.gradient_checkpointing:
            from drl.models.checkpointing import enable_activation_checkpointing

            enable_activation_checkpointing(module)
        module.train()
        _TRACES[key] = trace_training_peak(module, denoiser_inputs(main, dataclasses.replace(shape, dtype=dtype)))
    return _TRACES[key]


def decode_and_score_peak(arch: Architecture, vae: Component | None, module: torch.nn.Module | None, latent: int, frames: int,
                          half, scores: tuple = ()) -> Peak:
    """Bytes per image (and storages per decode call) of AlignProp's tail, forward + backward with gradient into the latents: the frozen VAE's decode
    (drl.models.t2i.decode: unscale, decode, to [0, 1]) and the differentiable ``scores`` ((name, fn) pairs) on the
    images. The reward's part was left out until the check measured the tiny pipeline's checkpointed AlignProp 28%
    above the plan; with it, and the chain's inputs as the chain keeps them, the tensors alive at that update's
    peak (counted on the real run) are within 9% of the plan (scripts/check_memory_plan.py)."""
    if module is None and not scores:
        return Peak(0, 0)
    key = ("tail", arch.source, vae.name if vae is not None else None, latent, frames, half, tuple(name for name, _ in scores))
    if key not in _TRACES:
        if module is not None:
            module.requires_grad_(False)
        _TRACES[key] = trace_training_peak(_DecodeAndScore(module, [fn for _, fn in scores]), _vae_input(vae, latent, frames, half),
                                           output=lambda out: out, input_grad=True)
    return _TRACES[key]


def _vae_input(vae: Component | None, latent: int, frames: int, half):
    config = vae.config if vae is not None else {}
    channels = config.get("latent_channels") or config.get("z_dim", 3 if vae is None else 4)
    size = (1, channels, frames, latent, latent) if "temperal_downsample" in config else (1, channels, latent, latent)
    dtype = half or torch.float32
    return lambda: ((torch.randn(*size, dtype=dtype),), {})


def vae_trace(arch: Architecture, vae: Component, module: torch.nn.Module, latent: int, frames: int, half) -> Trace:
    """One image's (or clip's) no-grad decode: the decoder alone (a rollout never encodes)."""
    key = (arch.source, vae.name, latent, frames, half)
    if key not in _TRACES:
        with _quiet_diffusers():
            module.to(half or torch.float32)
        _TRACES[key] = trace_call(_Decoder(module), _vae_input(vae, latent, frames, half))
    return _TRACES[key]


def _needs_reference(name: str) -> bool:
    from drl.algorithms import IMAGES, algorithm_class

    return bool(getattr(algorithm_class(name, IMAGES), "needs_reference", False))


def chain_steps(a, steps: int) -> int:
    """Denoiser calls that carry gradient in one AlignProp chain (its largest truncation)."""
    if a.name != "alignprop":
        return 1
    return steps if a.truncation == "all" else min(a.truncation_steps, steps)


def _dtype_name(half: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(half, "fp32")


def _options(cfg) -> dict:
    m, hw = cfg.model, cfg.hardware
    return {
        "model.gradient_checkpointing": m.gradient_checkpointing,
        "model.text_encoder_offload": getattr(m, "text_encoder_offload", False),
        "model.finetune": m.finetune,
        "model.lora_rank": m.lora_rank,
        "train.batch_size": cfg.train.batch_size,
        "hardware.mixed_precision": hw.mixed_precision,
        "hardware.sharding": hw.sharding,
        "hardware.num_processes": hw.num_processes * hw.num_nodes,
    }


# ------------------------------------------------------------- geometry of a pipeline
def vae_spatial_factor(vae: Component | None) -> int:
    if vae is None:
        return 1  # pixel-space (drl's toy models)
    c = vae.config
    if "temperal_downsample" in c:  # Wan / Qwen-Image VAEs: 2x per stage
        return 2 ** len(c["temperal_downsample"])
    return 2 ** (len(c.get("block_out_channels", (1,))) - 1)


def latent_frames(vae: Component | None, num_frames: int) -> int:
    if vae is not None and "temperal_downsample" in vae.config:
        factor = 2 ** sum(bool(x) for x in vae.config["temperal_downsample"])
        return (num_frames - 1) // factor + 1
    return num_frames


def latent_channels(denoiser: Component, vae: Component | None) -> int:
    c = denoiser.config
    if denoiser.class_name in ("FluxTransformer2DModel", "Flux2Transformer2DModel", "QwenImageTransformer2DModel"):
        return c["in_channels"] // 4  # 2 x 2 packed patches
    if denoiser.class_name == "WanTransformer3DModel":  # image-to-video: in_channels add the frame mask and image latents
        return c.get("out_channels") or c.get("in_channels", 16)
    return c.get("in_channels", 4)


def image_condition_channels(denoiser: Component, latent: int) -> int:
    """Channels a Wan2.2 image-to-video transformer takes beside the latents (frame mask + image latents), which each
    sample's conditioning stores once (drl.models.wan_i2v); 0 for the others."""
    if denoiser.class_name != "WanTransformer3DModel":
        return 0
    return denoiser.config.get("in_channels", latent) - latent


def conditioning_width(denoiser: Component) -> int:
    c = denoiser.config
    return c.get("joint_attention_dim") or c.get("cross_attention_dim") or c.get("text_dim") or 768


def text_tokens(arch: Architecture, m) -> int:
    if arch.text_tokens is not None:
        return arch.text_tokens
    encoders = arch.of_role("text_encoder")
    lengths = [c.config.get("max_position_embeddings", 77) for c in encoders if "max_position_embeddings" in c.config]
    clip = max(lengths, default=77)
    main = arch.of_role("denoiser")[0]
    if main.class_name == "Flux2Transformer2DModel":
        return 512  # Flux2Model.max_sequence_length: every prompt is padded to it
    if main.class_name == "SD3Transformer2DModel" and len(encoders) > 1:
        return clip + 256  # the T5 slot (drl's t5_max_length), zeros when the T5 is absent
    return clip


def edits_a_source(arch: Architecture) -> bool:
    """Whether the pipeline edits a source image given with each prompt (drl.models.layout.IMAGE_CONDITIONED)."""
    from drl.models.layout import IMAGE_CONDITIONED, PIPELINE_FAMILIES

    return PIPELINE_FAMILIES.get(arch.extra.get("pipeline") or arch.extra.get("_class_name")) in IMAGE_CONDITIONED


def vision_tokens(arch: Architecture, resolution: int) -> int:
    """The source image's tokens in a vision-language text encoder's conditioning (Qwen-Image-Edit's Qwen2.5-VL: one
    per merged 2 x 2 group of 14 px patches of the source, which drl sizes to the generated image; 0 without a vision
    tower)."""
    vision = next((c.config.get("vision_config") for c in arch.of_role("text_encoder") if c.config.get("vision_config")), None)
    if vision is None:
        return 0
    side = vision.get("patch_size", 14) * vision.get("spatial_merge_size", 2)
    return max(1, round(resolution / side)) ** 2  # the image processor rounds each side to a multiple of `side`


class _Decoder(torch.nn.Module):
    """The VAE's decode as a module call (what the tracer runs)."""

    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z).sample


class _DecodeAndScore(torch.nn.Module):
    """latents -> the summed scores of the decoded images, as drl's decode and a differentiable reward compute them
    (drl.models.t2i.T2IModel.decode); without a VAE (pixel-space models) the latents are the images."""

    def __init__(self, vae: torch.nn.Module | None, scores: list):
        super().__init__()
        self.vae, self.scores = vae, scores

    def forward(self, z):
        if self.vae is not None:
            z = self.vae.decode(z / getattr(self.vae.config, "scaling_factor", 1.0)).sample
        images = ((z.float() + 1) / 2).clamp(0, 1)
        if not self.scores:  # a reward not traced: the decode's backward alone, from a gradient on every pixel
            return images.sum()
        return sum(fn(images).sum() for fn in self.scores)


def with_overrides(cfg, **changes):
    """``cfg`` with some keys of its groups replaced: with_overrides(cfg, model={'finetune': 'lora'})."""
    groups = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in changes.items()}
    return dataclasses.replace(cfg, **groups)


def count(n: int) -> str:
    """A parameter count as people write it: 2.24 B, 3.6 M, 950 k."""
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"
