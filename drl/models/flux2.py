"""FLUX.2 (dev): a Flux2Transformer2DModel over the VAE's 2x2-patchified, batch-normalised latents.

    transformer/   Flux2Transformer2DModel            predicts the velocity of the latent tokens; guidance-embedded
    vae/           AutoencoderKLFlux2                 32 channels, 8x smaller; its ``bn`` running statistics
                                                      normalise the 2x2-patchified latents (4 x 32 = 128 channels)
    text_encoder/  Mistral3ForConditionalGeneration   hidden states of layers 10, 20 and 30, stacked on the feature
                                                      axis (3 x 5120 = 15360 = joint_attention_dim)
    tokenizer/     PixtralProcessor (its tokenizer)   the prompt under a system turn in the chat template, padded to
                                                      max_sequence_length; the transformer attends every token
    scheduler/     FlowMatchEulerDiscreteScheduler    FLUX.1-dev's (use_dynamic_shifting)

What differs from FLUX.1 (drl.models.flux): the space drl's latents live in is the pipeline's own, the patchified
and normalised [B, 4C, h/2, w/2] (Flux2Pipeline draws its noise there, and a token is one pixel of it: packing is
a reshape); position ids have four axes (time, row, column, text position); there is one text encoder and no
pooled projection; and the shift μ depends on the number of steps as well as on the token count (diffusers'
``compute_empirical_mu``, from BFL's reference sampler).

Guidance: FLUX.2-dev is guidance-distilled: its transformer embeds ``guidance`` (Flux2Pipeline's guidance_scale,
4.0 by default; model.distilled_guidance) and runs once per step; scheduler.guidance_scale > 1 adds true
classifier-free guidance with the empty prompt on top, which Flux2Pipeline does not do.

Shape legend:
    B images   C = 32 latent channels   h, w = H / 8, W / 8   N = (h/2)(w/2) image tokens   L text tokens
    latents [B, 4C, h/2, w/2]; tokens [B, N, 4C]; img_ids [N, 4]; txt_ids [L, 4]; encoder_hidden_states [B, L, 3D]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from drl.models.flow_family import FlowTransformerModel
from drl.types import Conditioning

# What PixtralProcessor.save_pretrained writes beside the tokenizer (Mistral-Small-3.1's processor, as FLUX.2-dev
# ships it): written by hand, since transformers builds a PixtralProcessor only where torchvision is installed.
PIXTRAL_PROCESSOR = {"processor_class": "PixtralProcessor", "patch_size": 14, "spatial_merge_size": 2,
                     "image_token": "[IMG]", "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]"}  # fmt: skip
PIXTRAL_IMAGE_PROCESSOR = {
    "image_processor_type": "PixtralImageProcessor", "processor_class": "PixtralProcessor", "patch_size": {"height": 14, "width": 14},
    "size": {"longest_edge": 1540}, "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711], "do_convert_rgb": True,
    "resample": 3,
}  # fmt: skip


def position_ids(rows: int, cols: int, device=None) -> torch.Tensor:
    """(time 0, row, column, 0) of each token of a rows x cols grid, row-major. [rows * cols, 4]"""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    zeros = torch.zeros_like(r)
    return torch.stack([zeros, r, c, zeros], dim=-1).reshape(rows * cols, 4).to(device=device, dtype=torch.float32)


def text_position_ids(length: int, device=None) -> torch.Tensor:
    """(0, 0, 0, l) for text token l. [L, 4]"""
    ids = torch.zeros(length, 4, device=device, dtype=torch.float32)
    ids[:, 3] = torch.arange(length, device=device)
    return ids


@dataclass
class Flux2Model(FlowTransformerModel):
    max_sequence_length: int = 512  # text tokens, chat template included (Flux2Pipeline's default)
    guidance: float = 4.0  # the distilled guidance value (Flux2Pipeline's guidance_scale default)

    PIPELINE = "Flux2Pipeline"

    def text_tokenizer_length(self) -> int:
        return self.tokenizer.model_max_length

    def encode_prompts_with_grad(self, prompts: list[str]) -> Conditioning:
        hidden, _ = self.text_pipeline().encode_prompt(list(prompts), device=self.device, max_sequence_length=self.max_sequence_length)
        return Conditioning({"encoder_hidden_states": hidden})  # [B, L, 3D]: every position, padding included

    # ------------------------------------------------------------- latents
    def latent_shape(self, resolution: int) -> tuple[int, ...]:
        channels, h, w = super().latent_shape(resolution)  # the VAE's [C, h, w], checked to fit 2x2 patches
        return (channels * self.PATCH**2, h // self.PATCH, w // self.PATCH)

    def pack_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, 4C, h', w'] -> [B, h'w', 4C]: one token per pixel of the patchified latents (Flux2Pipeline._pack_latents)."""
        return latents.flatten(2).transpose(1, 2)

    def unpack_latents(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """pack_latents' inverse; ``h``, ``w``: the patchified grid's size."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

    def shift_mu(self, num_steps: int | None = None) -> float:
        """μ of Flux2Pipeline: from the image's token count and the number of steps (diffusers' compute_empirical_mu)."""
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

        if num_steps is None:
            raise ValueError("FLUX.2's shift depends on the number of sampling steps: call shift_mu(num_steps).")
        return compute_empirical_mu(self.image_tokens(), num_steps)

    def forward_denoiser(self, denoiser, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        b, _, h, w = latents.shape
        text = cond["encoder_hidden_states"]
        guidance = None
        if denoiser.config.guidance_embeds:
            guidance = torch.full((b,), self.guidance, device=latents.device, dtype=torch.float32)
        out = denoiser(
            hidden_states=self.pack_latents(latents).to(text.dtype),  # [B, N, 4C]
            encoder_hidden_states=text,
            timestep=t.to(text.dtype) / 1000,  # σ: the transformer multiplies by 1000 itself
            img_ids=position_ids(h, w, latents.device),
            txt_ids=text_position_ids(text.shape[1], latents.device),
            guidance=guidance,
            return_dict=False,
        )[0]
        return self.unpack_latents(out, h, w)

    # ----------------------------------------------------------------- VAE
    def _bn_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's batch-norm mean and std of the patchified latents, [1, 4C, 1, 1] each."""
        bn = self.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, torch.float32)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps).to(like.device, torch.float32)
        return mean, std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, 4C, h', w'] (normalised) -> images [B, 3, H, W] in [0, 1], decode_chunk_size at a time."""
        mean, std = self._bn_stats(latents)
        images = []
        for z in latents.split(self.decode_chunk_size):
            z = torch.nn.functional.pixel_shuffle(z.float() * std + mean, self.PATCH)  # [b, C, h, w] (_unpatchify_latents)
            images.append(self.vae.decode(z.to(self.vae.dtype)).sample)
        images = torch.cat(images)
        images = images if images.dtype == torch.float64 else images.float()
        return ((images + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> normalised latents [B, 4C, h', w'] (VAE mean); decode's inverse."""
        pixels = (images * 2 - 1).to(device=self.vae.device, dtype=self.vae.dtype)
        latents = torch.nn.functional.pixel_unshuffle(self.vae.encode(pixels).latent_dist.mode().float(), self.PATCH)
        mean, std = self._bn_stats(latents)
        return (latents - mean) / std

    # -------------------------------------------------------------- saving
    def save_pretrained(self, directory) -> None:
        """Flux2Pipeline's layout, tokenizer/ as a PixtralProcessor (its tokenizer plus the processor's two files)."""
        super().save_pretrained(directory)
        directory = Path(directory)
        (directory / "tokenizer" / "processor_config.json").write_text(json.dumps(PIXTRAL_PROCESSOR, indent=2))
        (directory / "tokenizer" / "preprocessor_config.json").write_text(json.dumps(PIXTRAL_IMAGE_PROCESSOR, indent=2))
        index = json.loads((directory / "model_index.json").read_text())
        index["tokenizer"] = ["transformers", "PixtralProcessor"]
        (directory / "model_index.json").write_text(json.dumps(index, indent=2))
