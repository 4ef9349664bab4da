"""FLUX.1 (dev, schnell) and FLUX.1-Kontext: a FluxTransformer2DModel over 2x2-packed latents.

    transformer/   FluxTransformer2DModel   predicts the velocity of packed latent tokens
    vae/           AutoencoderKL            16 channels, 8x smaller, scaled and shifted (as SD3's)
    text_encoder/  CLIPTextModel            its pooled output -> pooled_projections [B, P]
    text_encoder_2/ T5EncoderModel          its last hidden states -> encoder_hidden_states [B, L, D]
    tokenizer/, tokenizer_2/, scheduler/    FlowMatchEulerDiscreteScheduler with use_dynamic_shifting

Positions: every text token has id (0, 0, 0); the latent token at patch row i, column j has (0, i, j). Kontext
appends the source image's packed latents after the generated ones, with ids (1, i, j), and reads back the
velocity of the generated tokens only.

Guidance: FLUX.1-dev is guidance-distilled: its transformer embeds a guidance value (``guidance``, the
pipeline's guidance_scale, 3.5 by default) and runs once per step; scheduler.guidance_scale > 1 adds true
classifier-free guidance with the empty prompt on top (two calls per step), as FluxPipeline's true_cfg_scale.

Shape legend:
    B images   C = 16 latent channels   h, w = H / 8, W / 8   N = (h/2)(w/2) image tokens   L text tokens
    latents [B, C, h, w]; packed [B, N, 4C]; img_ids [N, 3]; txt_ids [L, 3]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drl.models.flow_family import FlowTransformerModel, pack_2x2, source_images, unpack_2x2
from drl.types import Conditioning


def image_ids(h: int, w: int, index: int = 0, device=None) -> torch.Tensor:
    """Position ids of an [h, w] grid of tokens: (index, row, column) each, row-major. [h * w, 3]"""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ids = torch.stack([torch.full_like(rows, index), rows, cols], dim=-1).reshape(h * w, 3)
    return ids.to(device=device, dtype=torch.float32)


@dataclass
class FluxModel(FlowTransformerModel):
    text_encoder_2: torch.nn.Module | None = None  # T5
    tokenizer_2: object = None
    max_sequence_length: int = 512  # T5 tokens (FluxPipeline's default)
    guidance: float = 3.5  # the distilled guidance value of a guidance-embedded transformer (FLUX.1-dev)

    PIPELINE = "FluxPipeline"

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        return [self.text_encoder, self.text_encoder_2]

    def text_tokenizer_length(self) -> int:
        return self.tokenizer_2.model_max_length

    def encode_prompts_with_grad(self, prompts: list[str]) -> Conditioning:
        hidden, pooled, _ = self.text_pipeline().encode_prompt(
            list(prompts), device=self.device, max_sequence_length=self.max_sequence_length
        )
        return Conditioning({"encoder_hidden_states": hidden, "pooled_projections": pooled})  # [B, L, D], [B, P]

    def forward_denoiser(self, denoiser, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        b, _, h, w = latents.shape
        tokens, ids = pack_2x2(latents), image_ids(h // 2, w // 2, device=latents.device)  # [B, N, 4C], [N, 3]
        source = cond.tensors.get("source_latents")  # Kontext: [B, C, h', w'] of the image being edited
        if source is not None:
            tokens = torch.cat([tokens, pack_2x2(source.to(tokens.dtype))], dim=1)
            ids = torch.cat([ids, image_ids(source.shape[-2] // 2, source.shape[-1] // 2, index=1, device=latents.device)])
        text = cond["encoder_hidden_states"]
        guidance = None
        if denoiser.config.guidance_embeds:
            guidance = torch.full((b,), self.guidance, device=latents.device, dtype=torch.float32)
        out = denoiser(
            hidden_states=tokens.to(text.dtype),
            timestep=t.to(text.dtype) / 1000,  # σ: the transformer multiplies by 1000 itself
            guidance=guidance,
            pooled_projections=cond["pooled_projections"],
            encoder_hidden_states=text,
            txt_ids=text.new_zeros(text.shape[1], 3),
            img_ids=ids.to(text.dtype),
            return_dict=False,
        )[0]
        return unpack_2x2(out[:, : (h // 2) * (w // 2)], h, w)  # the generated tokens' velocity [B, C, h, w]

    def pipeline_components(self) -> dict:
        return {**super().pipeline_components(), "text_encoder_2": self.text_encoder_2, "tokenizer_2": self.tokenizer_2}


@dataclass
class FluxKontextModel(FluxModel):
    """FLUX.1-Kontext: FLUX.1 that edits a source image. The prompt is the instruction; the source image, resized
    to the generated size and encoded by the VAE (its mean, scaled and shifted), rides in the conditioning as
    ``source_latents`` [B, C, h, w] and joins the transformer's tokens with position index 1."""

    PIPELINE = "FluxKontextPipeline"

    def condition(self, prompts: list[str], metadata: list[dict] | None = None) -> Conditioning:
        cond = self.encode_prompts(prompts)
        return Conditioning({**cond.tensors, "source_latents": self.source_latents(metadata, len(prompts))})

    def negative_conditioning(self, n: int, like: Conditioning | None = None) -> Conditioning:
        uncond = super().negative_conditioning(n)
        if like is None:
            return uncond
        return Conditioning({**uncond.tensors, "source_latents": like["source_latents"]})

    def source_latents(self, metadata: list[dict] | None, n: int) -> torch.Tensor:
        return self.encode(source_images(metadata, n, self.image_size, type(self).__name__).to(self.device))

