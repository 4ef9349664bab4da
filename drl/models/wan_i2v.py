"""Wan2.2 image-to-video: the clip starts from an input image given with each prompt (metadata["source_image"]).

Two releases, conditioned the two ways diffusers' WanImageToVideoPipeline conditions them:

    I2V-A14B   WanImageToVideoPipeline: transformer/ and transformer_2/ (the two experts of drl.models.wan, switched at
    (channels)  boundary_ratio 0.9), each taking in_channels = C + 4 + C: the noisy latents, a 4-channel frame mask
               (1 on the image's frame) and the VAE latents of [image, F - 1 black frames], concatenated on the
               channel axis. Every latent frame is generated, the first one too (the image guides it). No CLIP
               image encoder (Wan2.1-I2V's) in 2.2.
    TI2V-5B    WanPipeline with expand_timesteps (the same weights do text-to-video): the first latent frame *is* the
    (frame)    image's VAE latent, its tokens get timestep 0, and the pipeline puts it back after the last step. drl
               leaves that frame out of the chain: the sampled latents are the f - 1 generated frames, the denoiser
               sees [image latent, x_t] and only the generated frames' velocity is read back, so the conditioned
               frame never enters a transition, its log-prob or a loss; decoding puts it back in front.

The image's conditioning is computed once per prompt (Conditioning "image_condition") and stored with the
rollout, so the update and the reference model re-score with exactly what sampling saw.

Shape legend:
    B clips   C latent channels (vae z_dim)   f latent frames of the clip   h, w latent height, width   T = 4
    image_condition  A14B: [B, T + C, f, h, w] (mask, image latents);  5B: [B, C, 1, h, w] (the first frame's latent)
    latents (the chain's)  A14B: [B, C, f, h, w];  5B: [B, C, f - 1, h, w]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drl.errors import ConfigError
from drl.models.flow_family import source_images
from drl.models.layout import model_index
from drl.models.wan import WanModel
from drl.types import Conditioning

I2V_PIPELINE = "WanImageToVideoPipeline"


@dataclass
class WanI2VModel(WanModel):
    PIPELINE = I2V_PIPELINE

    # --------------------------------------------------------- conditioning
    def condition(self, prompts: list[str], metadata: list[dict] | None = None) -> Conditioning:
        cond = self.encode_prompts(prompts)
        return Conditioning({**cond.tensors, "image_condition": self.image_condition(metadata, len(prompts))})

    def negative_conditioning(self, n: int, like: Conditioning | None = None) -> Conditioning:
        """The empty prompt with the same image (the pipeline guides on the text only)."""
        uncond = super().negative_conditioning(n)
        if like is None:
            return uncond
        return Conditioning({**uncond.tensors, "image_condition": like["image_condition"]})

    @torch.no_grad()
    def image_condition(self, metadata: list[dict] | None, n: int) -> torch.Tensor:
        """Each prompt's source image as the transformer takes it (see the module docstring). [B, T + C, f, h, w] or [B, C, 1, h, w]"""
        size = self.image_size
        pixels = source_images(metadata, n, size, type(self).__name__, needs="starts each clip from an image").to(self.vae.device) * 2 - 1  # [B, 3, H, W] in [-1, 1]
        video = pixels.unsqueeze(2)  # [B, 3, 1, H, W]
        if not self.expand_timesteps:  # the image, then black frames: the VAE encodes the whole clip
            video = torch.cat([video, video.new_zeros(n, 3, self.num_frames - 1, size, size)], dim=2)
        z = self.vae.encode(video.to(self.vae.dtype)).latent_dist.mode().float()  # the pipeline's sample_mode="argmax"
        config = self.vae.config
        mean = torch.tensor(config.latents_mean, device=z.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(config.latents_std, device=z.device).view(1, -1, 1, 1, 1)
        z = (z - mean) / std  # [B, C, f or 1, h, w], as the chain's latents are normalised
        if self.expand_timesteps:
            return z.to(self.latent_dtype)
        mask = torch.zeros(n, self.temporal_scale_factor, *z.shape[2:], device=z.device)  # [B, T, f, h, w]
        mask[:, :, 0] = 1  # the image's frame: all T frames the first latent frame stands for
        return torch.cat([mask, z], dim=1).to(self.latent_dtype)

    @property
    def latent_dtype(self) -> torch.dtype:
        return torch.float64 if self.denoiser.dtype == torch.float64 else torch.float32  # as the collector's latents

    # ------------------------------------------------------------- denoiser
    def forward_denoiser(self, denoiser, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        image = cond["image_condition"].to(latents.dtype)
        if not self.expand_timesteps:  # A14B: the condition rides on the channel axis
            return super().forward_denoiser(denoiser, torch.cat([latents, image], dim=1), t, cond)
        clip = torch.cat([image, latents], dim=2)  # [B, C, f, h, w]: the image's latent as the first frame
        _, p_h, p_w = denoiser.config.patch_size
        f, h, w = clip.shape[-3:]
        per_frame = (h // p_h) * (w // p_w)
        timestep = t[:, None].expand(len(t), f * per_frame).clone()  # [B, N]: one per token, frame-major
        timestep[:, :per_frame] = 0  # the image's tokens are clean, as WanPipeline's first_frame_mask says
        out = denoiser(clip, timestep=timestep, **self.denoiser_kwargs(cond)).sample
        return out[:, :, 1:]  # the generated frames' velocity [B, C, f - 1, h, w]

    # ------------------------------------------------------------- latents
    @property
    def latent_channels(self) -> int:
        return self.vae.config.z_dim  # the transformer's in_channels add the mask and the image's

    def latent_shape(self, resolution: int) -> tuple[int, ...]:
        """(C, f, h, w); TI2V-5B's chain leaves out the image's frame: (C, f - 1, h, w)."""
        c, f, h, w = super().latent_shape(resolution)
        return (c, f - 1, h, w) if self.expand_timesteps else (c, f, h, w)

    def with_condition_frames(self, latents: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """TI2V-5B: the image's latent put back in front of the generated frames, as WanPipeline does after its last step."""
        if not self.expand_timesteps:
            return latents
        return torch.cat([cond["image_condition"][: len(latents)].to(latents), latents], dim=2)

    def pipeline_components(self) -> dict:
        """WanImageToVideoPipeline's: WanPipeline's, without a CLIP image encoder (Wan2.2 has none)."""
        return {**super().pipeline_components(), "image_encoder": None, "image_processor": None}


def check_i2v_layout(location: str, index: dict) -> None:
    """A directory that model.family=wan_i2v (or its WanImageToVideoPipeline) loads must condition on the image the way
    Wan2.2 does; anything else is refused in one sentence naming the directory (read from its config.json files)."""
    transformer_config, vae_config = (_config(location, sub) for sub in ("transformer", "vae"))
    if not transformer_config or not vae_config:
        return  # the loader names the missing component
    if transformer_config.get("image_dim") is not None:
        raise ConfigError(
            f"{location} is a Wan2.1 image-to-video model (its transformer takes CLIP image embeddings from an image_encoder/): "
            f"drl trains Wan2.2's image-to-video (Wan2.2-I2V-A14B, or Wan2.2-TI2V-5B with model.family=wan_i2v)."
        )
    if index.get("expand_timesteps"):
        return  # TI2V-5B: the image replaces the first latent frame
    z, frames = vae_config.get("z_dim", 16), vae_config.get("scale_factor_temporal") or 4
    want = 2 * z + frames
    channels = transformer_config.get("in_channels")
    if index.get("_class_name") == I2V_PIPELINE and channels != want:
        raise ConfigError(
            f"{location}'s transformer/config.json has in_channels={channels}, but a Wan2.2 image-to-video transformer "
            f"takes {want} (the latents, the {frames}-channel frame mask and the image latents, z_dim {z} each)."
        )
    if index.get("_class_name") != I2V_PIPELINE:
        raise ConfigError(
            f"{location} holds a text-to-video Wan (transformer in_channels={channels}, no "
            f"expand_timesteps), which cannot start from an image: use Wan2.2-I2V-A14B (in_channels {want}: latents, "
            f"frame mask and image latents) or Wan2.2-TI2V-5B, or model=wan22 for text-to-video."
        )


def wants_image(location: str, family: str) -> bool:
    """Whether the Wan directory at ``location`` loads as image-to-video: its model_index.json names a
    WanImageToVideoPipeline, or model.family=wan_i2v asks for it (TI2V-5B's WanPipeline). model.family=wan on an
    image-to-video directory is refused."""
    i2v_directory = model_index(location).get("_class_name") == I2V_PIPELINE
    if family == "wan" and i2v_directory:
        raise ConfigError(
            f"{location} holds a {I2V_PIPELINE}, which needs an input image with each prompt: use model=wan22_i2v "
            f"(model.family=wan_i2v) with a prompts file of {{\"prompt\": ..., \"image\": ...}} lines."
        )
    return i2v_directory or family == "wan_i2v"


def _config(location: str, sub: str) -> dict:
    """``location/sub/config.json`` ({} where there is none: the loader then names the missing component)."""
    import json
    from pathlib import Path

    path = Path(location) / sub / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}
