"""Wan2.1 and Wan2.2 text-to-video models: flow-matching video transformers (diffusers' WanPipeline layout).

    transformer/   WanTransformer3DModel   predicts the velocity v ≈ ε - x_0 of latent clips
    transformer_2/ WanTransformer3DModel   Wan2.2 A14B only: the low-noise expert, used where the timestep is below
                                           boundary_ratio x 1000 (model_index.json); ``transformer`` above it
    vae/           AutoencoderKLWan        a causal 3D VAE: 4x fewer latent frames, 8x (Wan2.2 TI2V-5B: 16x) smaller
    text_encoder/  UMT5EncoderModel        (any T5-style encoder)
    tokenizer/     its tokenizer           scheduler/  the flow schedule (FlowMatchEulerDiscreteScheduler,
                                                       or Wan's UniPC config, whose flow_shift is read as its shift)

Wan2.2's two experts are one denoiser to drl (WanExperts): LoRA goes on both, the reference is both with their
adapters off, and each sample of a call goes to the expert of its timestep. Wan2.2 TI2V-5B (one transformer,
``expand_timesteps`` in model_index.json) takes one timestep per latent token, as its pipeline passes it.

Sampling is the flow SDE of drl.sampling_flow (scheduler=flow), as for SD3, so every step has a
log-probability (the 2025-26 video RL work, DanceGRPO / Flow-GRPO on Wan, does the same) and
AlignProp backpropagates through the same chain.

Shape legend:
    B clips   C latent channels (vae z_dim)   f = (F - 1) / 4 + 1 latent frames   h, w = H / 8, W / 8
    latents [B, C, f, h, w];  conditioning encoder_hidden_states [B, L, D_text];  clips [B, F, 3, H, W] in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from diffusers.loaders import PeftAdapterMixin

from drl.errors import ConfigError
from drl.models.layout import VIDEO_PIPELINES, model_index
from drl.models.t2i import load_components
from drl.models.t2v import T2VModel
from drl.types import Conditioning

COMPONENTS = [
    ("denoiser", "transformer", "WanTransformer3DModel", True),
    ("transformer_2", "transformer_2", "WanTransformer3DModel", False),  # required where boundary_ratio is set
    ("text_encoder", "text_encoder", "UMT5EncoderModel", True),
    ("tokenizer", "tokenizer", "tokenizer", True),
    ("scheduler_config", "scheduler", "scheduler", True),
    ("vae", "vae", "AutoencoderKLWan", True),
]


class WanExperts(torch.nn.Module, PeftAdapterMixin):
    """Wan2.2 A14B's two experts as one denoiser: ``transformer`` (high noise) for timesteps >= ``boundary``
    (boundary_ratio x num_train_timesteps, as WanPipeline switches), ``transformer_2`` (low noise) below.

    A call may mix timesteps (drl's update batches several steps of a trajectory): each sample goes to its expert
    and the outputs are put back in order. peft's LoRA, added through diffusers' add_adapter on this module,
    lands on both experts' layers (names ``transformer.*`` and ``transformer_2.*``)."""

    _supports_gradient_checkpointing = True

    def __init__(self, transformer: torch.nn.Module, transformer_2: torch.nn.Module, boundary: float):
        super().__init__()
        self.transformer, self.transformer_2, self.boundary = transformer, transformer_2, boundary

    @property
    def config(self):
        return self.transformer.config

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()
        self.transformer_2.enable_gradient_checkpointing()

    def load_lora_adapter(self, directory: str, **kwargs) -> None:
        """An exported pair (WanModel.save_lora's layout: directory, directory/transformer_2) onto the experts (drl-eval)."""
        from pathlib import Path

        self.transformer.load_lora_adapter(directory, **kwargs)
        low = Path(directory) / "transformer_2"
        if low.is_dir():
            self.transformer_2.load_lora_adapter(str(low), **kwargs)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor, **kwargs):
        """hidden_states [B, C, f, h, w], timestep [B] (or [B, N] per token), encoder_hidden_states [B, L, D]."""
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        high = timestep.reshape(len(timestep), -1).amax(1) >= self.boundary  # [B]: the high-noise expert's samples
        if high.all() or not high.any():
            expert = self.transformer if high.all() else self.transformer_2
            return expert(hidden_states, timestep, encoder_hidden_states, **kwargs)
        out = None  # [B, out_channels, f, h, w]: an image-to-video expert takes more channels than it returns
        for expert, rows in ((self.transformer, high), (self.transformer_2, ~high)):
            sample = expert(hidden_states[rows], timestep[rows], encoder_hidden_states[rows], **kwargs).sample
            out = hidden_states.new_empty(len(hidden_states), *sample.shape[1:]) if out is None else out
            out[rows] = sample.to(out.dtype)
        return Transformer2DModelOutput(sample=out)


@dataclass
class WanModel(T2VModel):
    max_sequence_length: int = 512  # text tokens (WanPipeline's default)
    boundary_ratio: float | None = None  # Wan2.2 A14B: the experts' switch, a fraction of num_train_timesteps
    expand_timesteps: bool = False  # Wan2.2 TI2V-5B: one timestep per latent token

    SCHEDULER_KINDS = ("flow",)
    PIPELINE = "WanPipeline"
    LORA_LAYERS_ARG = "transformer_lora_layers"

    # ---------------------------------------------------------------- text
    def encode_prompts_with_grad(self, prompts: list[str]) -> Conditioning:
        """As WanPipeline: the encoder's last hidden states, zeroed past each prompt's own tokens. [B, L, D]"""
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            return_tensors="pt",
        )
        mask = tokens.attention_mask.to(self.device)  # [B, L]
        hidden = self.text_encoder(tokens.input_ids.to(self.device), mask).last_hidden_state  # [B, L, D]
        return Conditioning({"encoder_hidden_states": hidden * mask.unsqueeze(-1).to(hidden.dtype)})

    def forward_denoiser(self, denoiser, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        timestep = t
        if self.expand_timesteps:  # as WanPipeline with expand_timesteps: t for each of the f (h/2)(w/2) tokens [B, N]
            _, p_h, p_w = self.denoiser.config.patch_size
            f, h, w = latents.shape[-3:]
            timestep = t[:, None].expand(len(t), f * (h // p_h) * (w // p_w))
        return denoiser(latents, timestep=timestep, **self.denoiser_kwargs(cond)).sample

    @property
    def experts(self) -> list[torch.nn.Module]:
        """The transformers as the pipeline names them: [transformer] or [transformer, transformer_2]."""
        d = self.denoiser
        return [d.transformer, d.transformer_2] if isinstance(d, WanExperts) else [d]

    # ------------------------------------------------------------- latents
    @property
    def vae_scale_factor(self) -> int:
        return int(self.vae.config.scale_factor_spatial or 2 ** (len(self.vae.config.dim_mult) - 1))

    @property
    def temporal_scale_factor(self) -> int:
        return int(self.vae.config.scale_factor_temporal or 2 ** sum(self.vae.config.temperal_downsample))

    def latent_shape(self, resolution: int) -> tuple[int, ...]:
        """(C, f, h, w): the VAE's first latent frame holds one frame, every later one the next 4."""
        size = self.latent_size(resolution)
        return (self.latent_channels, (self.num_frames - 1) // self.temporal_scale_factor + 1, size, size)

    def decode(self, latents: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """latents [B, C, f, h, w] -> clips [B, F', 3, H, W] in [0, 1] (differentiable).

        The causal 3D VAE decodes a frame from the latent frames before it too, so a frame subset
        (``frames`` [F']) is taken after decoding the whole clip: it still saves the reward's memory.
        """
        config = self.vae.config
        mean = torch.tensor(config.latents_mean, device=latents.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(config.latents_std, device=latents.device).view(1, -1, 1, 1, 1)
        z = (latents.float() * std + mean).to(self.vae.dtype)  # WanPipeline: latents / (1 / std) + mean
        video = self.vae.decode(z).sample  # [B, 3, F, H, W] in [-1, 1]
        clips = video.permute(0, 2, 1, 3, 4)  # [B, F, 3, H, W]
        if frames is not None:
            clips = clips[:, frames.to(clips.device)]
        clips = clips if clips.dtype == torch.float64 else clips.float()
        return ((clips + 1) / 2).clamp(0, 1)

    def clips_to_latents(self, clips: torch.Tensor) -> torch.Tensor:
        raise ValueError("Pretraining from clips is only implemented for the pixel-space toy model, not for Wan.")

    # ---------------------------------------------------------- scheduler
    def make_scheduler(self, kind: str) -> FlowMatchEulerDiscreteScheduler:
        """The flow schedule; Wan's own releases ship a UniPC config whose ``flow_shift`` is the shift."""
        self.check_scheduler_kind(kind)
        config = dict(self.scheduler_config)
        if "flow_shift" in config and "shift" not in config:
            config["shift"] = config["flow_shift"]
        return FlowMatchEulerDiscreteScheduler.from_config(config)

    def pipeline_components(self) -> dict:
        experts = self.experts
        return {
            "tokenizer": self.tokenizer,
            "text_encoder": self.text_encoder,
            "transformer": experts[0],
            "transformer_2": experts[1] if len(experts) > 1 else None,
            "vae": self.vae,
            "scheduler": self.make_scheduler("flow"),
            "boundary_ratio": self.boundary_ratio,
            "expand_timesteps": self.expand_timesteps,
        }

    def save_lora(self, directory) -> None:
        """Each expert's adapter in diffusers' format: ``directory`` holds transformer's (the high-noise expert's, or
        Wan2.1's only one); Wan2.2 A14B's low-noise expert's goes to ``directory/transformer_2``, loaded with
        ``pipe.load_lora_weights(directory / "transformer_2", load_into_transformer_2=True)``."""
        import diffusers
        from pathlib import Path

        from drl.checkpoint import export_lora

        if not isinstance(self.denoiser, WanExperts):
            return super().save_lora(directory)
        for name in ("transformer", "transformer_2"):
            target = Path(directory) / ("" if name == "transformer" else name)
            export_lora(self.denoiser, target, getattr(diffusers, self.PIPELINE), self.LORA_LAYERS_ARG, prefix=f"{name}.")


def is_wan_layout(location) -> bool:
    """A local directory of a WanPipeline: its model_index.json's pipeline class, or without one its layout (a
    transformer/ denoiser and a vae/). A directory of another pipeline (FLUX, Qwen-Image) is refused in one sentence."""
    from pathlib import Path

    local = Path(location).expanduser()
    name = model_index(local).get("_class_name")
    if name is not None and name not in VIDEO_PIPELINES:
        raise ConfigError(f"{location} holds a {name}, which is not a text-to-video pipeline: use model.kind=t2i with its model config.")
    if name is not None:
        return VIDEO_PIPELINES[name] == "wan"
    return (local / "transformer").is_dir() and (local / "vae").is_dir()


def load_wan(location: str, num_frames: int, cls: type[WanModel] = WanModel) -> WanModel:
    """Load a WanPipeline directory (Wan2.1, Wan2.2 A14B's two experts, TI2V-5B) as ``cls`` (drl.models.wan_i2v's
    WanI2VModel for image-to-video, which drl.models.loading picks); the text encoder and VAE are frozen."""

    if (num_frames - 1) % 4:
        raise ConfigError(
            f"model.num_frames={num_frames} does not fit Wan's VAE: use 4k + 1 frames (e.g. 5, 9, 17, 81)."
        )
    index = model_index(location)
    boundary_ratio = index.get("boundary_ratio")
    spec = [(f, sub, loader, required or (boundary_ratio is not None and sub == "transformer_2")) for f, sub, loader, required in COMPONENTS]
    parts = load_components(location, True, spec)
    transformer_2 = parts.pop("transformer_2", None)
    if (transformer_2 is None) != (boundary_ratio is None):
        raise ConfigError(
            f"{location} is not a complete Wan2.2 two-expert directory: its model_index.json needs both a transformer_2 "
            f"(the low-noise expert) and the boundary_ratio where it takes over, or neither."
        )
    model = cls(**parts, num_frames=num_frames, boundary_ratio=boundary_ratio, expand_timesteps=bool(index.get("expand_timesteps")))
    if transformer_2 is not None:
        boundary = boundary_ratio * model.scheduler_config.get("num_train_timesteps", 1000)  # as WanPipeline
        model.denoiser = WanExperts(model.denoiser, transformer_2, boundary)
    model.max_sequence_length = min(model.max_sequence_length, model.tokenizer.model_max_length)
    model.text_encoder.requires_grad_(False)
    model.vae.requires_grad_(False)
    return model
