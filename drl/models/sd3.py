"""SD3/3.5-class flow-matching models: an SD3Transformer2DModel denoiser that predicts a velocity.

Conditioning, as diffusers' StableDiffusion3Pipeline builds it:
    encoder_hidden_states [B, 77 + L3, J]  the two CLIP encoders' penultimate hidden states, concatenated
                                           on the feature axis and zero-padded to the joint width J, then
                                           the T5 encoder's states appended on the token axis (zeros of
                                           length ``t5_max_length`` when the model has no T5, as in diffusers)
    pooled_projections    [B, P1 + P2]     both CLIP encoders' projected pooled outputs
A model with one CLIP encoder (drl's toy_flow: its model_index.json declares text_encoder_2 and the T5
absent) is conditioned the same way on that encoder alone: [B, L, J] penultimate states and [B, P1] pooled,
with no T5 slot (the zeros diffusers appends stand for a T5 that SD3 was trained with; a one-encoder
model never had one). Pixel-space models (no vae/) denoise the images themselves, as drl's toy models do.
Sampling is the flow SDE of drl.sampling_flow (scheduler=flow), so every step has a log-probability.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.utils import logging as diffusers_logging

from drl.models.t2i import T2IModel, _token_ids
from drl.types import Conditioning


@dataclass
class SD3Model(T2IModel):
    text_encoder_2: torch.nn.Module | None = None
    tokenizer_2: object = None
    text_encoder_3: torch.nn.Module | None = None  # T5; optional (diffusers lets users drop it to save memory)
    tokenizer_3: object = None
    t5_max_length: int = 256  # diffusers' max_sequence_length default

    SCHEDULER_KINDS = ("flow",)
    PIPELINE = "StableDiffusion3Pipeline"
    LORA_LAYERS_ARG = "transformer_lora_layers"

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        return [e for e in (self.text_encoder, self.text_encoder_2, self.text_encoder_3) if e is not None]

    @property
    def clip_encoders(self) -> list[tuple[object, torch.nn.Module]]:
        """(tokenizer, CLIP encoder) pairs: SD3's two, or the one of a one-encoder model (toy_flow)."""
        pairs = [(self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)]
        return [(tokenizer, encoder) for tokenizer, encoder in pairs if encoder is not None]

    def encode_prompts_with_grad(self, prompts: list[str]) -> Conditioning:
        hidden, pooled = [], []
        for tokenizer, encoder in self.clip_encoders:
            out = encoder(_token_ids(tokenizer, prompts, self.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])  # [B, 77, D_k]
            pooled.append(out[0])  # [B, P_k]
        clip = torch.cat(hidden, dim=-1)  # [B, 77, D1 + D2]
        width = self.denoiser.config.joint_attention_dim
        clip = torch.nn.functional.pad(clip, (0, width - clip.shape[-1]))  # [B, 77, J]
        tokens = [clip]
        if self.text_encoder_3 is not None:
            t5 = self.text_encoder_3(_token_ids(self.tokenizer_3, prompts, self.device, self.t5_max_length))[0]
            tokens.append(t5.to(clip.dtype))  # [B, L3, J]
        elif self.text_encoder_2 is not None:  # SD3 without its T5: diffusers' zeros in its place
            tokens.append(clip.new_zeros(len(prompts), self.t5_max_length, width))
        return Conditioning(
            {
                "encoder_hidden_states": torch.cat(tokens, dim=-2),
                "pooled_projections": torch.cat(pooled, dim=-1),
            }
        )

    def denoiser_kwargs(self, cond: Conditioning) -> dict:
        return {"encoder_hidden_states": cond["encoder_hidden_states"], "pooled_projections": cond["pooled_projections"]}

    def make_scheduler(self, kind: str) -> FlowMatchEulerDiscreteScheduler:
        self.check_scheduler_kind(kind)
        return FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """StableDiffusion3Pipeline's layout, pixel-space and one-encoder models too: model_index.json declares what
        they lack ([null, null]), so diffusers loads them with those components passed as None."""
        with _quiet_diffusers():  # it logs one warning per absent component ("None ... cannot be saved")
            self.to_pipeline().save_pretrained(directory)

    def pipeline_components(self) -> dict:
        return {
            "transformer": self.denoiser,
            "scheduler": self.make_scheduler("flow"),
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "tokenizer": self.tokenizer,
            "text_encoder_2": self.text_encoder_2,
            "tokenizer_2": self.tokenizer_2,
            "text_encoder_3": self.text_encoder_3,
            "tokenizer_3": self.tokenizer_3,
        }


@contextlib.contextmanager
def _quiet_diffusers():
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)
