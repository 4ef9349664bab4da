"""What the 2025-26 flow transformers (FLUX.1, FLUX.2, Qwen-Image, Z-Image) share behind the DenoiserModel interface.

Each family's adapter (drl.models.flux, flux2, qwen_image, z_image) says three things:
    how prompts become a Conditioning   through the family's own diffusers pipeline (``encode_prompt``), built
                                        from the text components alone, so the text path is diffusers' own;
    how latents meet the transformer    ``forward_denoiser`` packs the VAE's latents [B, C, h, w] into the
                                        transformer's layout and unpacks its velocity back; the collector, the
                                        step math and every algorithm keep seeing [B, C, h, w];
    what the timestep means to it       drl's flow timestep is σ·1000; FLUX and Qwen-Image take σ, Z-Image 1 - σ.
Their pipelines pass the levels linspace(1, 1/S) and a μ linear in the image's token count (``shift_mu``); a
scheduler with ``use_dynamic_shifting`` shifts by μ, a static one by its ``shift`` (drl.sampling_flow.make_flow_schedule).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from drl.errors import ConfigError
from drl.models.sd3 import _quiet_diffusers
from drl.models.t2i import T2IModel


def resolution_shift(image_seq_len: int, config) -> float:
    """μ for a scheduler with use_dynamic_shifting: linear in the token count between (base_image_seq_len,
    base_shift) and (max_image_seq_len, max_shift), with FLUX's defaults where the config leaves them out."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base, top = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (top - base) / (max_len - base_len)
    return base + slope * (image_seq_len - base_len)


@dataclass
class FlowTransformerModel(T2IModel):
    """A flow-matching text-to-image transformer whose latents the transformer sees as 2x2 patches."""

    _text_pipe: object = field(default=None, init=False, repr=False, compare=False)

    SCHEDULER_KINDS = ("flow",)
    LORA_LAYERS_ARG = "transformer_lora_layers"
    PATCH = 2  # latent pixels per token side
    TEXT_COMPONENTS = ("text_encoder", "tokenizer")  # what the text path's pipeline holds (Qwen-Image-Edit adds its processor)

    # ---------------------------------------------------------------- text
    def text_pipeline(self):
        """The family's diffusers pipeline holding only the text components (for its encode_prompt)."""
        if self._text_pipe is None:
            import diffusers

            parts = {k: v if k.startswith(self.TEXT_COMPONENTS) else None for k, v in self.pipeline_components().items()}
            with _quiet_diffusers():
                self._text_pipe = getattr(diffusers, self.PIPELINE)(**parts)
        return self._text_pipe

    # ------------------------------------------------------------- latents
    def latent_shape(self, resolution: int) -> tuple[int, ...]:
        size = self.latent_size(resolution)
        if size % self.PATCH:
            raise ConfigError(
                f"model.resolution={resolution} does not fit {type(self).__name__}: its latents (resolution / "
                f"{self.vae_scale_factor}) are cut into {self.PATCH}x{self.PATCH} patches; use a multiple of "
                f"{self.vae_scale_factor * self.PATCH}."
            )
        return (self.latent_channels, size, size)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def image_size(self) -> int:
        return self.resolution or 1024

    def pack_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, C, h, w] -> the transformer's tokens [B, N, 4C] (what the family's pipeline holds)."""
        return pack_2x2(latents)

    def unpack_latents(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return unpack_2x2(tokens, h, w)

    def image_tokens(self) -> int:
        """Tokens of one generated image: (h / 2) * (w / 2)."""
        return (self.latent_size(self.image_size) // self.PATCH) ** 2

    # ---------------------------------------------------------- scheduler
    def shift_mu(self, num_steps: int | None = None) -> float:
        """μ for the image's token count, computed as these pipelines always do; it also tells make_flow_schedule
        to take their levels (linspace(1, 1/S)), which a static-shift scheduler (Z-Image-Turbo) shifts by its shift.
        ``num_steps``: the sampling steps, which FLUX.2's μ also depends on (drl.models.flux2)."""
        return resolution_shift(self.image_tokens(), self.scheduler_config)

    def make_scheduler(self, kind: str) -> FlowMatchEulerDiscreteScheduler:
        self.check_scheduler_kind(kind)
        return FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)

    # -------------------------------------------------------------- saving
    def pipeline_components(self) -> dict:
        """One text encoder (Qwen-Image, Z-Image); FLUX adds its second."""
        return {
            "scheduler": self.make_scheduler("flow"),
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "tokenizer": self.tokenizer,
            "transformer": self.denoiser,
        }

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        with _quiet_diffusers():
            self.to_pipeline().save_pretrained(directory)


def pack_2x2(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)(w/2), 4C]: each 2x2 patch one token, row-major, channels then the patch's rows."""
    b, c, h, w = latents.shape
    patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)  # [B, h/2, w/2, C, 2, 2]
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_2x2(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """pack_2x2's inverse: [B, (h/2)(w/2), 4C] -> [B, C, h, w]."""
    b, _, d = tokens.shape
    patches = tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)  # [B, C, h/2, 2, w/2, 2]
    return patches.reshape(b, d // 4, h, w)


def source_images(metadata: list[dict] | None, n: int, size: int, model: str, needs: str = "edits a source image") -> torch.Tensor:
    """Each prompt's metadata["source_image"] [3, H, W] in [0, 1], resized to size x size. [n, 3, size, size]"""
    if metadata is None or len(metadata) != n or any("source_image" not in m for m in metadata):
        raise ValueError(
            f"A {model} {needs} given with each prompt: use a prompts file of "
            '{"prompt": ..., "image": ...} lines (prompts=file prompts.path=edits.jsonl).'
        )
    images = []
    for m in metadata:
        image = m["source_image"].float().unsqueeze(0)  # [1, 3, H, W]
        if image.shape[-2:] != (size, size):
            image = torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images.append(image)
    return torch.cat(images)
