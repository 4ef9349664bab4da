"""Text-to-image diffusion models built from diffusers components.

The toy model and Stable Diffusion load through the same code: a directory in
diffusers' ``save_pretrained`` layout with ``unet/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/`` and, for latent models, ``vae/``. The toy model is
pixel-space (no ``vae/``): its "latents" are the images themselves in [-1, 1].
SDXL (drl.models.sdxl) adds a second text encoder; SD3 (drl.models.sd3) is a flow
model with a transformer denoiser. All three build a :class:`Conditioning` from
prompts and consume it in ``denoise``, so nothing else needs to know the family.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler
from transformers import AutoTokenizer

from drl.checkpoint import export_lora
from drl.errors import ConfigError
from drl.models.base import DenoiserModel
from drl.models.layout import ASSETS_DIR, absent_components, resolve_path  # noqa: F401  (ASSETS_DIR: an older import path)
from drl.types import Conditioning

def missing_model_message(path: str, what: str = "model") -> str:
    if _looks_like_hub_id(path):  # a hub id that is neither cached nor reachable (this machine has no network)
        local = f"~/models/{path.split('/')[-1]}"
        return (
            f"No {what} found at {path!r} (not in the local Hugging Face cache, and the hub is unreachable): download it "
            f"first with `huggingface-cli download {path} --local-dir {local}` and set model.path={local}."
        )
    return (
        f"No {what} found at {path!r}: point model.path at a diffusers save_pretrained directory, "
        f"or download one first, e.g. `huggingface-cli download <repo id> --local-dir {path}`."
    )


@dataclass
class T2IModel(DenoiserModel):
    """The parts of a text-to-image pipeline that RL fine-tuning touches (Stable Diffusion 1.x/2.x layout).

    Subclasses for other families (drl.models.sdxl, drl.models.sd3) change only how prompts
    become a :class:`Conditioning` and how it is passed to the denoiser; the collector, the
    step math and the algorithms are the same for all. ``denoiser`` is the trained network whatever
    its architecture (SD3's is an SD3Transformer2DModel).
    """

    tokenizer: object
    text_encoder: torch.nn.Module
    denoiser: torch.nn.Module
    scheduler_config: dict
    vae: AutoencoderKL | None = None
    decode_chunk_size: int = 8  # images per VAE decode call: bounds the decoder's activation memory
    resolution: int | None = None  # image side in pixels being generated (None: the denoiser's native size)

    SCHEDULER_KINDS = ("ddim", "ddpm")
    PIPELINE = "StableDiffusionPipeline"  # the diffusers pipeline that loads this layout (and its LoRA)
    LORA_LAYERS_ARG = "unet_lora_layers"  # that pipeline's save_lora_weights argument for the denoiser

    # ---------------------------------------------------------------- text
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """prompts -> the denoiser's conditioning (batch B); here encoder_hidden_states [B, L, D]."""
        return self.encode_prompts_with_grad(prompts)

    def encode_prompts_with_grad(self, prompts: list[str]) -> Conditioning:
        return Conditioning({"encoder_hidden_states": self.text_encoder(_token_ids(self.tokenizer, prompts, self.device))[0]})

    def condition(self, prompts: list[str], metadata: list[dict] | None = None) -> Conditioning:
        """What the collector conditions each sample on: the prompts' encoding; an image-conditioned model
        (drl.models.layout.IMAGE_CONDITIONED) adds each prompt's metadata["source_image"]."""
        return self.encode_prompts(prompts)

    def with_condition_frames(self, latents: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """x_0 [B, *D] as the VAE decodes it: an image-to-video model whose chain leaves out the frame it is given
        (drl.models.wan_i2v, TI2V-5B) puts it back; every other model returns ``latents``."""
        return latents

    def negative_conditioning(self, n: int, like: Conditioning | None = None) -> Conditioning:
        """The unconditional branch of classifier-free guidance: the empty prompt, batch n. ``like``: the
        conditional branch, whose source image an image-conditioned model keeps."""
        return self.encode_prompts([""]).expand(n)

    def denoiser_kwargs(self, cond: Conditioning) -> dict:
        """The keyword arguments the denoiser's forward takes besides the latents and timestep."""
        return {"encoder_hidden_states": cond["encoder_hidden_states"]}

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        return [self.text_encoder]

    @property
    def device(self) -> torch.device:
        """Where inputs go: the denoiser's device, or the CPU while offloaded text encoders encode (drl.models.prompt_cache)."""
        return getattr(self, "inputs_device", None) or self.denoiser.device

    # ------------------------------------------------------------ denoiser
    def denoise(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        cond: Conditioning,
        uncond: Conditioning | None = None,
        guidance_scale: float = 1.0,
        denoiser: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """The denoiser's output with classifier-free guidance (``denoiser`` overrides self.denoiser, e.g. a reference copy).

        latents: [B, C, h, w]; t: [B]; cond, uncond: batch B.
        With guidance the conditional and unconditional passes run as one batch of 2B.
        """
        denoiser = self.denoiser if denoiser is None else denoiser
        if guidance_scale == 1.0 or uncond is None:
            return self.forward_denoiser(denoiser, latents, t, cond)
        both = self.forward_denoiser(denoiser, torch.cat([latents, latents]), torch.cat([t, t]), Conditioning.cat([uncond, cond]))
        uncond_out, cond_out = both.chunk(2)
        return uncond_out + guidance_scale * (cond_out - uncond_out)

    def forward_denoiser(self, denoiser: torch.nn.Module, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One unguided call of ``denoiser`` on latents [B, *D] at t [B] -> its output [B, *D]. Families whose
        transformer takes another layout (FLUX's packed 2x2 patches, Z-Image's list of clips) convert here, so
        the latents everyone else sees keep the VAE's own shape."""
        return denoiser(latents, timestep=t, **self.denoiser_kwargs(cond)).sample

    # ------------------------------------------------------------- decoder
    @property
    def latent_channels(self) -> int:
        return self.denoiser.config.in_channels

    @property
    def image_size(self) -> int:
        """The image side being generated: ``resolution`` or the denoiser's native size."""
        return self.resolution or self.denoiser.config.sample_size * self.vae_scale_factor

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel (1 for pixel-space models)."""
        return 1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_shape(self, resolution: int) -> tuple[int, ...]:
        """Shape of one sample's latent, (C, h, w); a video model adds its frame axis (drl.models.t2v)."""
        size = self.latent_size(resolution)
        return (self.latent_channels, size, size)

    def latent_size(self, resolution: int) -> int:
        return resolution // self.vae_scale_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, C, h, w] -> images [B, 3, H, W] float in [0, 1] (differentiable), decode_chunk_size at a time."""
        if self.vae is None:
            images = latents
        else:
            scale = self.vae.config.scaling_factor
            shift = getattr(self.vae.config, "shift_factor", None) or 0.0  # SD3's VAE is shifted, SD's is not
            images = torch.cat(
                [self.vae.decode(z.to(self.vae.dtype) / scale + shift).sample for z in latents.split(self.decode_chunk_size)]
            )
        images = images if images.dtype == torch.float64 else images.float()  # float64 stays (gradient checks)
        return ((images + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> latents [B, C, h, w]; the inverse of :meth:`decode` (VAE mean)."""
        pixels = images * 2 - 1
        dtype = torch.float64 if self.denoiser.dtype == torch.float64 else torch.float32  # as the collector's latents
        if self.vae is None:
            return pixels.to(dtype)
        scale = self.vae.config.scaling_factor
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        latents = self.vae.encode(pixels.to(device=self.vae.device, dtype=self.vae.dtype)).latent_dist.mean
        return ((latents - shift) * scale).to(dtype)

    def shift_mu(self, num_steps: int | None = None) -> float | None:
        """The resolution-dependent shift μ of the flow transformers whose pipelines pass their own levels (FLUX,
        Qwen-Image, Z-Image: drl.models.flow_family computes it; FLUX.2's also depends on ``num_steps``, the sampling
        steps); None for the others (the scheduler's own spacing)."""
        return None

    def make_scheduler(self, kind: str):
        """A fresh scheduler of ``kind`` with the model's own noise schedule."""
        self.check_scheduler_kind(kind)
        cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
        return cls.from_config(self.scheduler_config)

    def check_scheduler_kind(self, kind: str) -> None:
        if kind not in self.SCHEDULER_KINDS:
            raise ConfigError(
                f"scheduler={kind} does not fit a {type(self).__name__}: use scheduler={' or scheduler='.join(self.SCHEDULER_KINDS)}."
            )

    # ------------------------------------------------------------ placement
    def to(self, device: torch.device | str) -> "T2IModel":
        """Move every network; text encoders offloaded to the CPU (drl.models.prompt_cache) stay there."""
        encoders = [] if getattr(self, "text_encoders_offloaded", False) else self.text_encoders
        for part in (*encoders, self.denoiser, self.vae):
            if part is not None:
                part.to(device)
        return self

    def cast_frozen(self, dtype: torch.dtype) -> None:
        """Mixed precision: store the frozen parts (text encoders, VAE, LoRA's base weights) in ``dtype``.

        Trained weights stay float32 (the optimizer's master copy); autocast runs the matmuls.
        """
        for part in (*self.text_encoders, self.vae):
            if part is not None:
                part.to(dtype)
        for p in self.denoiser.parameters():
            if not p.requires_grad:
                p.data = p.data.to(dtype)

    # -------------------------------------------------------------- saving
    def pipeline_components(self) -> dict:
        return {"vae": self.vae, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer, "unet": self.denoiser,
                "scheduler": self.make_scheduler(self.SCHEDULER_KINDS[0]),
                "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

    def to_pipeline(self):
        """This model as the plain diffusers pipeline of its family (sharing the modules)."""
        import diffusers

        return getattr(diffusers, self.PIPELINE)(**self.pipeline_components())

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        if self.vae is None:  # the pixel-space toy model: no diffusers pipeline fits it
            self.denoiser.save_pretrained(directory / "unet")
            self.text_encoder.save_pretrained(directory / "text_encoder")
            self.tokenizer.save_pretrained(directory / "tokenizer")
            DDIMScheduler.from_config(self.scheduler_config).save_pretrained(directory / "scheduler")
        else:
            self.to_pipeline().save_pretrained(directory)

    def save_lora(self, directory: str | os.PathLike) -> None:
        """The denoiser's LoRA adapter in diffusers' format: ``pipe.load_lora_weights(directory)`` loads it."""
        import diffusers

        export_lora(self.denoiser, Path(directory), getattr(diffusers, self.PIPELINE), self.LORA_LAYERS_ARG)


def _token_ids(tokenizer, prompts: list[str], device: torch.device, max_length: int | None = None) -> torch.Tensor:
    """prompts -> input ids [B, L], padded to the tokenizer's max length as the diffusers pipelines do."""
    return tokenizer(
        list(prompts),
        padding="max_length",
        max_length=max_length or tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)


def load_components(location: str, is_local: bool, spec: list[tuple[str, str, str | type, bool]]) -> dict:
    """from_pretrained every component of ``spec`` from ``location`` (subfolders), with one clear error if absent.

    Components the directory's model_index.json declares absent are left out of the result (the model's default).
    """
    import diffusers
    import transformers

    if is_local:  # what the pipeline's model_index.json declares absent ([null, null]) is neither loaded nor required
        absent = absent_components(location)
        spec = [entry for entry in spec if entry[1] not in absent]
        missing = [sub for _, sub, _, required in spec if required and not (Path(location) / sub).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"{location!r} is not a complete diffusers directory for this model: missing {', '.join(m + '/' for m in missing)}."
            )
    parts = {}
    try:
        for field_name, sub, loader, required in spec:
            if is_local and not (Path(location) / sub).is_dir():
                continue  # optional and absent
            if loader == "tokenizer":
                parts[field_name] = AutoTokenizer.from_pretrained(location, subfolder=sub)
            elif loader == "scheduler":
                parts[field_name] = dict(DDPMScheduler.load_config(location, subfolder=sub))
            elif callable(loader) and not isinstance(loader, type):  # a family's own loader (Qwen-Image-Edit's processor)
                parts[field_name] = loader(location, sub)
            else:
                cls = loader if isinstance(loader, type) else getattr(diffusers, loader, None) or getattr(transformers, loader)
                parts[field_name] = cls.from_pretrained(location, subfolder=sub)
    except OSError as e:  # hub id not cached and no network, or a broken directory
        if not is_local:
            raise FileNotFoundError(missing_model_message(location)) from None
        raise FileNotFoundError(f"{location!r} is a broken diffusers directory ({str(e).splitlines()[0].rstrip('.')}).") from None
    return parts


def _looks_like_hub_id(location: str) -> bool:
    """'org/name' with no local meaning (hub ids are tried, and fail clearly offline)."""
    parts = location.split("/")
    return len(parts) == 2 and all(parts) and not location.startswith((".", "~")) and not Path(parts[0]).exists()
