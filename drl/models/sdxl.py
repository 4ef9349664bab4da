"""Stable Diffusion XL: two CLIP text encoders, pooled text embeddings and "added time ids".

What differs from SD 1.x (Podell et al. 2023, sec. 2.2; diffusers' StableDiffusionXLPipeline):
    encoder_hidden_states [B, L, D1 + D2]  penultimate hidden states of both encoders, concatenated
    text_embeds           [B, P]           the second encoder's projected pooled output
    time_ids              [B, 6]           (original h, w, crop top, crop left, target h, w) in pixels
The empty prompt's conditioning is all zeros when the pipeline says so (force_zeros_for_empty_prompt).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drl.models.t2i import T2IModel, _token_ids
from drl.types import Conditioning


@dataclass
class SDXLModel(T2IModel):
    text_encoder_2: torch.nn.Module | None = None
    tokenizer_2: object = None
    force_zeros_for_empty_prompt: bool = True

    PIPELINE = "StableDiffusionXLPipeline"

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        return [self.text_encoder, self.text_encoder_2]

    def encode_prompts_with_grad(self, prompts: list[str]) -> Conditioning:
        hidden, pooled = [], None
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            out = encoder(_token_ids(tokenizer, prompts, self.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])  # [B, L, D_k], the penultimate layer as SDXL uses
            pooled = out[0]  # the last encoder's projected pooled output [B, P]
        n = len(prompts)
        size = float(self.image_size)
        time_ids = torch.tensor([[size, size, 0.0, 0.0, size, size]], device=self.device).expand(n, 6)  # [B, 6]
        return Conditioning(
            {"encoder_hidden_states": torch.cat(hidden, dim=-1), "text_embeds": pooled, "time_ids": time_ids.to(pooled.dtype)}
        )

    def negative_conditioning(self, n: int, like: Conditioning | None = None) -> Conditioning:
        cond = self.encode_prompts([""])
        if self.force_zeros_for_empty_prompt:
            cond = Conditioning({k: (v if k == "time_ids" else torch.zeros_like(v)) for k, v in cond.tensors.items()})
        return cond.expand(n)

    def denoiser_kwargs(self, cond: Conditioning) -> dict:
        return {
            "encoder_hidden_states": cond["encoder_hidden_states"],
            "added_cond_kwargs": {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]},
        }

    def pipeline_components(self) -> dict:
        return {
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "text_encoder_2": self.text_encoder_2,
            "tokenizer": self.tokenizer,
            "tokenizer_2": self.tokenizer_2,
            "unet": self.denoiser,
            "scheduler": self.make_scheduler(self.SCHEDULER_KINDS[0]),
            "force_zeros_for_empty_prompt": self.force_zeros_for_empty_prompt,
        }
