"""The inputs of one denoiser call, as drl's model adapters pass them, built from the component configs.

    B   samples in the call (a CFG call is 2 x the pairs or samples it serves)
    h,w latent height and width (resolution / the VAE's spatial factor)
    F   latent frames of a video model ((num_frames - 1) / 4 + 1 for Wan's VAE)
    L   text tokens of one prompt's conditioning; D its width

One builder per denoiser class; a class without one cannot be planned (PlanError, one sentence).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from drl.plan.architecture import Component, PlanError


@dataclass(frozen=True)
class CallShape:
    batch: int  # B
    latent_size: int  # h = w
    frames: int  # F (1 for images)
    text_tokens: int  # L
    dtype: torch.dtype  # the latents' and conditioning's dtype
    source_image: bool = False  # an editing model's call: the source image's h x w latents join the generated ones


Inputs = tuple[tuple, dict]


def _unet(c: dict, s: CallShape) -> Inputs:
    kwargs = {"encoder_hidden_states": torch.randn(s.batch, s.text_tokens, c["cross_attention_dim"], dtype=s.dtype)}
    if c.get("addition_embed_type") == "text_time":  # SDXL: pooled text + 6 time ids
        time_dim = c["addition_time_embed_dim"]
        pooled = c["projection_class_embeddings_input_dim"] - 6 * time_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(s.batch, pooled, dtype=s.dtype), "time_ids": torch.zeros(s.batch, 6, dtype=s.dtype)}
    size = [s.latent_size, s.latent_size] if s.frames == 1 else [s.frames, s.latent_size, s.latent_size]
    sample = torch.randn(s.batch, c.get("in_channels", 4), *size, dtype=s.dtype)
    return (sample,), {"timestep": torch.ones(s.batch), **kwargs}


def _sd3(c: dict, s: CallShape) -> Inputs:
    return (), {
        "hidden_states": torch.randn(s.batch, c["in_channels"], s.latent_size, s.latent_size, dtype=s.dtype),
        "timestep": torch.ones(s.batch),
        "encoder_hidden_states": torch.randn(s.batch, s.text_tokens, c["joint_attention_dim"], dtype=s.dtype),
        "pooled_projections": torch.randn(s.batch, c["pooled_projection_dim"], dtype=s.dtype),
    }


def _packed_tokens(c: dict, s: CallShape) -> int:
    """FLUX and Qwen-Image pack 2 x 2 latent patches into one token of 4 x 16 channels."""
    return (s.latent_size // 2) ** 2


def _flux(c: dict, s: CallShape, id_axes: int = 3) -> Inputs:
    """FLUX.1 (ids of 3 axes, a pooled projection) and FLUX.2 (4 axes, none; its tokens are the pixels of the
    2x2-patchified latents: the same count)."""
    n = _packed_tokens(c, s)
    kwargs = {
        "hidden_states": torch.randn(s.batch, n, c["in_channels"], dtype=s.dtype),
        "timestep": torch.ones(s.batch),
        "encoder_hidden_states": torch.randn(s.batch, s.text_tokens, c["joint_attention_dim"], dtype=s.dtype),
        "img_ids": torch.zeros(n, id_axes),
        "txt_ids": torch.zeros(s.text_tokens, id_axes),
    }
    if "pooled_projection_dim" in c:
        kwargs["pooled_projections"] = torch.randn(s.batch, c["pooled_projection_dim"], dtype=s.dtype)
    if c.get("guidance_embeds"):
        kwargs["guidance"] = torch.ones(s.batch)
    return (), kwargs


def _qwen_image(c: dict, s: CallShape) -> Inputs:
    """Qwen-Image-Edit appends the source image's tokens (as many, at the generated size) with an img_shapes entry."""
    half, images = s.latent_size // 2, 2 if s.source_image else 1
    return (), {
        "hidden_states": torch.randn(s.batch, images * half * half, c["in_channels"], dtype=s.dtype),
        "timestep": torch.ones(s.batch),
        "encoder_hidden_states": torch.randn(s.batch, s.text_tokens, c["joint_attention_dim"], dtype=s.dtype),
        "encoder_hidden_states_mask": torch.ones(s.batch, s.text_tokens, dtype=torch.long),
        "img_shapes": [[(1, half, half)] * images] * s.batch,
    }


def _z_image(c: dict, s: CallShape) -> Inputs:
    """Z-Image takes lists: a [C, 1, h, w] latent and an [L, D] caption per sample."""
    latents = [torch.randn(c["in_channels"], 1, s.latent_size, s.latent_size, dtype=s.dtype) for _ in range(s.batch)]
    captions = [torch.randn(s.text_tokens, c["cap_feat_dim"], dtype=s.dtype) for _ in range(s.batch)]
    return (latents, torch.ones(s.batch), captions), {}


def _wan(c: dict, s: CallShape) -> Inputs:
    return (), {
        "hidden_states": torch.randn(s.batch, c["in_channels"], s.frames, s.latent_size, s.latent_size, dtype=s.dtype),
        "timestep": torch.ones(s.batch),
        "encoder_hidden_states": torch.randn(s.batch, s.text_tokens, c["text_dim"], dtype=s.dtype),
    }


DENOISER_INPUTS: dict[str, Callable[[dict, CallShape], Inputs]] = {
    "UNet2DConditionModel": _unet,
    "UNet3DConditionModel": _unet,
    "SD3Transformer2DModel": _sd3,
    "FluxTransformer2DModel": _flux,
    "Flux2Transformer2DModel": functools.partial(_flux, id_axes=4),
    "QwenImageTransformer2DModel": _qwen_image,
    "WanTransformer3DModel": _wan,
    "ZImageTransformer2DModel": _z_image,
}


def denoiser_inputs(component: Component, shape: CallShape) -> Callable[[], Inputs]:
    """A function that builds one call's inputs (inside the fake mode)."""
    build = DENOISER_INPUTS.get(component.class_name)
    if build is None:
        raise PlanError(
            f"the memory plan does not know the inputs of a {component.class_name} denoiser; it knows {', '.join(DENOISER_INPUTS)}."
        )
    return lambda: build(component.config, shape)
