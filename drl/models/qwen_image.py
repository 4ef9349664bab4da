"""Qwen-Image: a QwenImageTransformer2DModel (MMDiT) over 2x2-packed latents of a video-style VAE.

    transformer/   QwenImageTransformer2DModel          predicts the velocity of packed latent tokens
    vae/           AutoencoderKLQwenImage               16 channels, 8x smaller, one frame, per-channel mean/std
    text_encoder/  Qwen2_5_VLForConditionalGeneration   its last hidden states past the chat template's system turn
    tokenizer/     Qwen2Tokenizer                       scheduler/  flow, shifted by resolution

The text path is QwenImagePipeline's own encode_prompt: the prompt in the chat template, the template's first
tokens dropped, each prompt as long as itself; encoder_hidden_states_mask marks the real tokens (the transformer
masks the rest out of attention, so padding to a longer batch changes nothing).

Shape legend:
    B images   C = 16 latent channels   h, w = H / 8, W / 8   N = (h/2)(w/2) image tokens   L text tokens
    latents [B, C, h, w] (the VAE's [B, C, 1, h, w] without its frame axis); packed [B, N, 4C]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drl.models.flow_family import FlowTransformerModel, pack_2x2, unpack_2x2
from drl.types import Conditioning


@dataclass
class QwenImageModel(FlowTransformerModel):
    max_sequence_length: int = 1024  # text tokens past the template (QwenImagePipeline's default)

    PIPELINE = "QwenImagePipeline"

    def text_tokenizer_length(self) -> int:
        return self.max_sequence_length

    def encode_prompts_with_grad(self, prompts: list[str], **inputs) -> Conditioning:
        """``inputs``: more of encode_prompt's arguments (Qwen-Image-Edit: the source images)."""
        hidden, mask = self.text_pipeline().encode_prompt(
            list(prompts), device=self.device, max_sequence_length=self.max_sequence_length, **inputs
        )
        if mask is None:  # the pipeline drops an all-ones mask; drl keeps it, for batches of other lengths
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        return Conditioning({"encoder_hidden_states": hidden, "encoder_hidden_states_mask": mask})  # [B, L, D], [B, L]

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** len(self.vae.config.temperal_downsample)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.z_dim

    def forward_denoiser(self, denoiser, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        b, _, h, w = latents.shape
        tokens, shapes = pack_2x2(latents), [(1, h // 2, w // 2)]  # [B, N, 4C]
        source = cond.tensors.get("source_latents")  # Qwen-Image-Edit: [B, C, h', w'] of the image being edited
        if source is not None:
            tokens = torch.cat([tokens, pack_2x2(source.to(tokens.dtype))], dim=1)  # its tokens after the generated ones
            shapes.append((1, source.shape[-2] // 2, source.shape[-1] // 2))
        text = cond["encoder_hidden_states"]
        out = denoiser(
            hidden_states=tokens.to(text.dtype),
            timestep=t.to(text.dtype) / 1000,  # σ
            encoder_hidden_states=text,
            encoder_hidden_states_mask=cond["encoder_hidden_states_mask"],
            img_shapes=[shapes] * b,
            return_dict=False,
        )[0]
        return unpack_2x2(out[:, : (h // 2) * (w // 2)], h, w)  # the generated tokens' velocity [B, C, h, w]

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.vae.config
        mean = torch.tensor(config.latents_mean, device=like.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(config.latents_std, device=like.device).view(1, -1, 1, 1, 1)
        return mean, std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, C, h, w] (normalised) -> images [B, 3, H, W] in [0, 1], decode_chunk_size at a time."""
        mean, std = self._latent_stats(latents)
        images = []
        for z in latents.split(self.decode_chunk_size):
            z = (z.float().unsqueeze(2) * std + mean).to(self.vae.dtype)  # the pipeline's latents / (1 / std) + mean
            images.append(self.vae.decode(z).sample[:, :, 0])  # [b, 3, H, W] in [-1, 1]
        images = torch.cat(images)
        images = images if images.dtype == torch.float64 else images.float()
        return ((images + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> normalised latents [B, C, h, w] (VAE mean); decode's inverse."""
        pixels = (images * 2 - 1).unsqueeze(2).to(device=self.vae.device, dtype=self.vae.dtype)  # [B, 3, 1, H, W]
        latents = self.vae.encode(pixels).latent_dist.mean.float()
        mean, std = self._latent_stats(latents)
        return ((latents - mean) / std)[:, :, 0]
