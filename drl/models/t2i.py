"""Text-to-image diffusion models built from diffusers components.

The toy model and Stable Diffusion load through the same code: a directory in
diffusers' ``save_pretrained`` layout with ``unet/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/`` and, for latent models, ``vae/``. The toy model is
pixel-space (no ``vae/``): its "latents" are the images themselves in [-1, 1].
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import AutoTokenizer, CLIPTextModel

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


def resolve_path(path: str) -> str:
    """``drl:<name>`` -> the asset shipped inside the package; anything else unchanged."""
    if path.startswith("drl:"):
        return str(ASSETS_DIR / path[len("drl:") :])
    return path


def missing_model_message(path: str, what: str = "model") -> str:
    return (
        f"No {what} found at {path!r}: point model.path at a diffusers save_pretrained directory, "
        f"or download one first, e.g. `huggingface-cli download <repo id> --local-dir {path}`."
    )


@dataclass
class T2IModel:
    """The parts of a text-to-image pipeline that RL fine-tuning touches."""

    tokenizer: object
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel
    scheduler_config: dict
    vae: AutoencoderKL | None = None

    # ---------------------------------------------------------------- text
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """prompts -> hidden states [B, L, D] (padded to the tokenizer's max length)."""
        return self.encode_prompts_with_grad(prompts)

    def encode_prompts_with_grad(self, prompts: list[str]) -> torch.Tensor:
        device = self.text_encoder.device
        ids = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        return self.text_encoder(ids)[0]

    # ------------------------------------------------------------ denoiser
    def denoise(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        embeds: torch.Tensor,
        uncond_embeds: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        unet: UNet2DConditionModel | None = None,
    ) -> torch.Tensor:
        """The denoiser's output with classifier-free guidance (``unet`` overrides self.unet, e.g. a reference copy).

        latents: [B, C, h, w]; t: [B] long; embeds, uncond_embeds: [B, L, D].
        With guidance the conditional and unconditional passes run as one batch of 2B.
        """
        unet = self.unet if unet is None else unet
        if guidance_scale == 1.0 or uncond_embeds is None:
            return unet(latents, t, encoder_hidden_states=embeds).sample
        both = unet(
            torch.cat([latents, latents]), torch.cat([t, t]), encoder_hidden_states=torch.cat([uncond_embeds, embeds])
        ).sample
        uncond, cond = both.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    # ------------------------------------------------------------- decoder
    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels

    def latent_shape(self, resolution: int) -> tuple[int, ...]:
        """Shape of one sample's latent, (C, h, w); a video model adds its frame axis (drl.models.t2v)."""
        size = self.latent_size(resolution)
        return (self.latent_channels, size, size)

    def latent_size(self, resolution: int) -> int:
        if self.vae is None:
            return resolution
        return resolution // (2 ** (len(self.vae.config.block_out_channels) - 1))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, C, h, w] -> images [B, 3, H, W] float in [0, 1] (differentiable)."""
        if self.vae is None:
            images = latents
        else:
            images = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        images = images if images.dtype == torch.float64 else images.float()  # float64 stays (gradient checks)
        return ((images + 1) / 2).clamp(0, 1)

    def make_scheduler(self, kind: str) -> DDIMScheduler | DDPMScheduler:
        """A fresh DDIM or DDPM scheduler with the model's own noise schedule."""
        cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
        return cls.from_config(self.scheduler_config)

    def to(self, device: torch.device | str) -> "T2IModel":
        for part in (self.text_encoder, self.unet, self.vae):
            if part is not None:
                part.to(device)
        return self

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        self.unet.save_pretrained(directory / "unet")
        self.text_encoder.save_pretrained(directory / "text_encoder")
        self.tokenizer.save_pretrained(directory / "tokenizer")
        DDIMScheduler.from_config(self.scheduler_config).save_pretrained(directory / "scheduler")
        if self.vae is not None:
            self.vae.save_pretrained(directory / "vae")


def load_t2i(path: str, unet_class: type = UNet2DConditionModel) -> T2IModel:
    """Load a text-to-image model from a save_pretrained directory (local) or a hub id.

    ``unet_class`` lets the video models (drl.models.t2v) share this loader.

    Missing weights raise FileNotFoundError with one sentence naming the path.
    """
    location = resolve_path(path)
    local = Path(location).expanduser()
    if local.is_dir():
        location = str(local)
        needed = [d for d in ("unet", "text_encoder", "tokenizer", "scheduler") if not (local / d).is_dir()]
        if needed:
            raise FileNotFoundError(
                f"{location!r} is not a complete diffusers text-to-image directory: missing {', '.join(needed)}/."
            )
    elif not _looks_like_hub_id(location):
        raise FileNotFoundError(missing_model_message(location))
    try:
        unet = unet_class.from_pretrained(location, subfolder="unet")
        text_encoder = CLIPTextModel.from_pretrained(location, subfolder="text_encoder")
        tokenizer = AutoTokenizer.from_pretrained(location, subfolder="tokenizer")
        scheduler_config = dict(DDPMScheduler.load_config(location, subfolder="scheduler"))
        vae = None
        if not local.is_dir() or (local / "vae").is_dir():
            vae = AutoencoderKL.from_pretrained(location, subfolder="vae")
    except OSError as e:  # hub id not cached and no network, or a broken directory
        raise FileNotFoundError(missing_model_message(location) + f" ({str(e).splitlines()[0]})") from None
    text_encoder.requires_grad_(False)
    if vae is not None:
        vae.requires_grad_(False)
    return T2IModel(tokenizer, text_encoder, unet, scheduler_config, vae)


def _looks_like_hub_id(location: str) -> bool:
    """'org/name' with no local meaning (hub ids are tried, and fail clearly offline)."""
    parts = location.split("/")
    return len(parts) == 2 and all(parts) and not location.startswith((".", "~")) and not Path(parts[0]).exists()
