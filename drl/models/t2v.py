"""Text-to-video diffusion models built from diffusers components.

A T2VModel is a T2IModel whose denoiser is a video denoiser (UNet3DConditionModel, or CogVideoX's transformer
in the same layout): its latents carry a frame axis and it decodes clips. Everything else (text encoding, classifier-free
guidance, schedulers, save_pretrained layout, the collector and the step math) is shared
with the image models. Two layouts load through the same code:

    pixel-space toy model     unet/ text_encoder/ tokenizer/ scheduler/        (latents are the clip in [-1, 1];
                              its unet/ is a CogVideoXTransformer3DModel, see build_toy_t2v)
    ModelScope (TextToVideoSDPipeline)   unet/ (UNet3DConditionModel) and the same plus vae/ (each frame decoded
                                         by the image VAE)
A third, Wan2.1's flow-matching video transformer (WanPipeline layout), is drl.models.wan's subclass.

Shape legend:
    B  clips      C  latent channels      F  frames      h, w  latent height, width
    H, W  decoded frame height, width
    latents [B, C, F, h, w] (UNet3DConditionModel's layout); decoded clips [B, F, 3, H, W] in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import diffusers
import torch
from diffusers import DDIMScheduler
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from drl.models.t2i import T2IModel


class UNet3DConditionModel(diffusers.UNet3DConditionModel, PeftAdapterMixin):
    """diffusers' UNet3DConditionModel with the PEFT adapter methods (add_adapter, disable_adapters, ...)
    that its other UNets have, so model.finetune=lora works on video as on images. Same class name,
    so the saved config.json stays loadable by diffusers' own pipelines."""


class CogVideoXTransformer3DModel(diffusers.CogVideoXTransformer3DModel):
    """diffusers' CogVideoX transformer called as a UNet3DConditionModel is: ``(sample [B, C, F, h, w], timestep,
    encoder_hidden_states [B, L, D]) -> .sample [B, C, F, h, w]``, so the collector, the step math and every
    algorithm treat it as any video denoiser. Same class name, so the saved config stays loadable by diffusers.

    The toy base uses it for its absolute 3D positional embedding: the prompted direction of motion sets where
    the object is in each frame, which a denoiser can only learn if it knows the frame and the position. The
    UNets (translation-equivariant convolutions) and Wan's transformer (relative RoPE positions) never learned
    it from correctly captioned clips; this one does (docs/results/2026-11-26-video.md)."""

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor, **kwargs):
        frames_first = sample.transpose(1, 2)  # CogVideoX's layout: [B, F, C, h, w]
        out = super().forward(frames_first, encoder_hidden_states, timestep, return_dict=False, **kwargs)[0]
        return Transformer2DModelOutput(sample=out.transpose(1, 2))


DENOISER_CLASSES = {cls.__name__: cls for cls in (UNet3DConditionModel, CogVideoXTransformer3DModel)}


@dataclass
class T2VModel(T2IModel):
    PIPELINE = "TextToVideoSDPipeline"  # ModelScope's layout: model_index.json names it, and family detection reads it
    num_frames: int = 8

    def pipeline_components(self) -> dict:
        """TextToVideoSDPipeline's components: the image pipeline's without the safety checker."""
        components = super().pipeline_components()
        for image_only in ("safety_checker", "feature_extractor", "requires_safety_checker"):
            components.pop(image_only)
        return components

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


def build_toy_t2v(resolution: int = 16, num_frames: int = 4, seed: int = 0) -> T2VModel:
    """Randomly initialised toy text-to-video components (seeded): a ~0.42M-parameter pixel-space
    CogVideoX transformer (4 layers, width 64, 2x2 patches, text and clip tokens in one attention, absolute 3D
    sin-cos positions), the toy CLIP text encoder over the video world's words, and a v-prediction DDIM
    schedule with zero terminal SNR (the schedule CogVideoX uses)."""
    from drl.models.toy import MAX_TOKENS, TEXT_DIM, TOY_VIDEO_SCHEDULER_CONFIG, build_toy_text_encoder, build_toy_tokenizer
    from drl.toyworld.video import video_vocabulary

    tokenizer = build_toy_tokenizer(video_vocabulary())
    # Word embeddings of std 1 instead of CLIP's 0.02 init: the frozen random encoder then keeps every word apart
    # (at 0.02 its two layers mix in the shared context and "moving left" / "moving right" come out at cosine 0.97).
    text_encoder = build_toy_text_encoder(tokenizer, seed, token_embedding_std=1.0)
    torch.manual_seed(seed + 1)
    denoiser = CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=16,
        in_channels=3,
        out_channels=3,
        time_embed_dim=TEXT_DIM,
        text_embed_dim=TEXT_DIM,
        num_layers=4,
        sample_width=resolution,
        sample_height=resolution,
        sample_frames=num_frames,
        patch_size=2,
        temporal_compression_ratio=1,  # pixel space: one position per frame
        max_text_seq_length=MAX_TOKENS,
    )
    scheduler_config = dict(DDIMScheduler(**TOY_VIDEO_SCHEDULER_CONFIG).config)
    return T2VModel(tokenizer, text_encoder, denoiser, scheduler_config, vae=None, num_frames=num_frames)
