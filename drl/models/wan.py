"""Wan2.1-class text-to-video models: a flow-matching video transformer (diffusers' WanPipeline layout).

    transformer/   WanTransformer3DModel   predicts the velocity v ≈ ε - x_0 of latent clips
    vae/           AutoencoderKLWan        a causal 3D VAE: 4x fewer latent frames, 8x smaller frames
    text_encoder/  UMT5EncoderModel        (any T5-style encoder)
    tokenizer/     its tokenizer           scheduler/  the flow schedule (FlowMatchEulerDiscreteScheduler,
                                                       or Wan's UniPC config, whose flow_shift is read as its shift)

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

from drl.errors import ConfigError
from drl.models.t2i import load_components
from drl.models.t2v import T2VModel
from drl.types import Conditioning

COMPONENTS = [
    ("denoiser", "transformer", "WanTransformer3DModel", True),
    ("text_encoder", "text_encoder", "UMT5EncoderModel", True),
    ("tokenizer", "tokenizer", "tokenizer", True),
    ("scheduler_config", "scheduler", "scheduler", True),
    ("vae", "vae", "AutoencoderKLWan", True),
]


@dataclass
class WanModel(T2VModel):
    max_sequence_length: int = 512  # text tokens (WanPipeline's default)

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
        return {
            "tokenizer": self.tokenizer,
            "text_encoder": self.text_encoder,
            "transformer": self.denoiser,
            "vae": self.vae,
            "scheduler": self.make_scheduler("flow"),
        }


def is_wan_layout(location) -> bool:
    """A local directory in WanPipeline's layout (a transformer/ denoiser and a vae/)."""
    from pathlib import Path

    local = Path(location).expanduser()
    return (local / "transformer").is_dir() and (local / "vae").is_dir()


def load_wan(location: str, num_frames: int) -> WanModel:
    """Load a WanPipeline directory; the text encoder and VAE are frozen."""
    if (num_frames - 1) % 4:
        raise ConfigError(
            f"model.num_frames={num_frames} does not fit Wan's VAE: use 4k + 1 frames (e.g. 5, 9, 17, 81)."
        )
    parts = load_components(location, True, COMPONENTS)
    model = WanModel(**parts, num_frames=num_frames)
    model.max_sequence_length = min(model.max_sequence_length, model.tokenizer.model_max_length)
    model.text_encoder.requires_grad_(False)
    model.vae.requires_grad_(False)
    return model
