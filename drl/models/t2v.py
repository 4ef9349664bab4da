"""Text-to-video diffusion models built from diffusers components.

A T2VModel is a T2IModel whose denoiser is a UNet3DConditionModel: its latents carry a
frame axis and it decodes clips. Everything else (text encoding, classifier-free
guidance, schedulers, save_pretrained layout, the collector and the step math) is shared
with the image models. Two layouts load through the same code:

    pixel-space toy model     unet/ text_encoder/ tokenizer/ scheduler/        (latents are the clip in [-1, 1])
    ModelScope (TextToVideoSDPipeline)   the same plus vae/ (each frame decoded by the image VAE)
A third, Wan2.1's flow-matching video transformer (WanPipeline layout), is drl.models.wan's subclass.

Shape legend:
    B  clips      C  latent channels      F  frames      h, w  latent height, width
    H, W  decoded frame height, width
    latents [B, C, F, h, w] (UNet3DConditionModel's layout); decoded clips [B, F, 3, H, W] in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import diffusers
import torch
from diffusers import DDIMScheduler
from diffusers.loaders import PeftAdapterMixin

from drl.models.t2i import T2IModel, load_t2i, resolve_path


class UNet3DConditionModel(diffusers.UNet3DConditionModel, PeftAdapterMixin):
    """diffusers' UNet3DConditionModel with the PEFT adapter methods (add_adapter, disable_adapters, ...)
    that its other UNets have, so model.finetune=lora works on video as on images. Same class name,
    so the saved config.json stays loadable by diffusers' own pipelines."""


@dataclass
class T2VModel(T2IModel):
    num_frames: int = 8

    def latent_shape(self, resolution: int) -> tuple[int, ...]:
        """(C, F, h, w): the collector and the step math reduce over all of it, frames included."""
        size = self.latent_size(resolution)
        return (self.latent_channels, self.num_frames, size, size)

    def decode(self, latents: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """latents [B, C, F, h, w] -> clips [B, F', 3, H, W] in [0, 1] (differentiable).

        ``frames`` [F'] long: decode only these frames (VADER's memory saving with a VAE); default all.
        """
        if frames is not None:
            latents = latents[:, :, frames]
        b, c, f, h, w = latents.shape
        per_frame = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # [B*F', C, h, w]
        images = super().decode(per_frame)  # [B*F', 3, H, W]
        return images.view(b, f, *images.shape[1:])

    def clips_to_latents(self, clips: torch.Tensor) -> torch.Tensor:
        """Training clips [B, F, 3, H, W] in [-1, 1] -> latents [B, C, F, h, w] (pixel-space models only)."""
        if self.vae is not None:
            raise ValueError("Pretraining from clips is only implemented for the pixel-space toy model (no vae/).")
        return clips.permute(0, 2, 1, 3, 4).contiguous()


def load_t2v(path: str, num_frames: int) -> T2VModel:
    """Load a text-to-video model from a save_pretrained directory: UNet3DConditionModel + CLIP text encoder
    [+ VAE] (toy, ModelScope), or WanPipeline's layout (drl.models.wan); missing weights raise
    FileNotFoundError with one sentence naming the path."""
    from drl.models.wan import is_wan_layout, load_wan

    if is_wan_layout(resolve_path(path)):
        return load_wan(resolve_path(path), num_frames)
    parts = load_t2i(path, unet_class=UNet3DConditionModel)
    return T2VModel(**{f.name: getattr(parts, f.name) for f in fields(parts)}, num_frames=num_frames)


def build_toy_t2v(resolution: int = 16, num_frames: int = 4, seed: int = 0) -> T2VModel:
    """Randomly initialised toy text-to-video components (seeded): a ~0.45M-parameter pixel-space
    UNet3DConditionModel (temporal convolutions and attention at every level, cross-attention at 8x8)
    and the toy CLIP text encoder over the video world's words."""
    from drl.models.toy import TEXT_DIM, TOY_SCHEDULER_CONFIG, build_toy_text_encoder, build_toy_tokenizer
    from drl.toyworld.video import video_vocabulary

    tokenizer = build_toy_tokenizer(video_vocabulary())
    text_encoder = build_toy_text_encoder(tokenizer, seed)
    torch.manual_seed(seed + 1)
    unet = UNet3DConditionModel(
        sample_size=resolution,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock3D", "CrossAttnDownBlock3D"),
        up_block_types=("CrossAttnUpBlock3D", "UpBlock3D"),
        layers_per_block=1,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,  # heads; 4 instead of 8 makes the input temporal transformer half as wide (~25% faster)
        norm_num_groups=8,
    )
    scheduler_config = dict(DDIMScheduler(**TOY_SCHEDULER_CONFIG).config)
    return T2VModel(tokenizer, text_encoder, unet, scheduler_config, vae=None, num_frames=num_frames)
