"""Z-Image: a ZImageTransformer2DModel (single-stream DiT) over the VAE's latents, one clip per sample.

    transformer/   ZImageTransformer2DModel   takes a list of latents [C, 1, h, w] and of caption features [L_i, D];
                                              patchifies 2x2 itself; predicts -v (the pipeline negates it)
    vae/           AutoencoderKL              16 channels, 8x smaller, scaled and shifted (FLUX.1's)
    text_encoder/  Qwen3Model                 hidden_states[-2] of the prompt in the chat template, own tokens only
    tokenizer/     Qwen2Tokenizer             scheduler/  FlowMatchEulerDiscreteScheduler (static shift 3 in Turbo)

The text path is ZImagePipeline's own encode_prompt; drl keeps its per-prompt features as one padded tensor with a
token mask (so batches concatenate) and hands the transformer each prompt's own tokens back. Timestep: the
transformer's t is 1 - σ (time runs from noise at 0 to data at 1). Guidance: ZImagePipeline's guidance_scale g
is ``cond + g (cond - uncond)``, drl's scheduler.guidance_scale is ``uncond + w (cond - uncond)``: w = 1 + g.

Shape legend:
    B images   C = 16 latent channels   h, w = H / 8, W / 8   L text tokens (the batch's longest prompt)   D text width
    latents [B, C, h, w]; encoder_hidden_states [B, L, D]; encoder_hidden_states_mask [B, L]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drl.models.flow_family import FlowTransformerModel
from drl.types import Conditioning


@dataclass
class ZImageModel(FlowTransformerModel):
    max_sequence_length: int = 512  # text tokens with the chat template (ZImagePipeline's default)

    PIPELINE = "ZImagePipeline"

    def text_tokenizer_length(self) -> int:
        return self.tokenizer.model_max_length

    @property
    def latent_channels(self) -> int:
        return self.denoiser.config.in_channels

    def pack_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """ZImagePipeline holds latents as the VAE makes them, [B, C, h, w] (the transformer patchifies itself)."""
        return latents

    def unpack_latents(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return tokens

    def encode_prompts_with_grad(self, prompts: list[str]) -> Conditioning:
        features, _ = self.text_pipeline().encode_prompt(
            list(prompts), device=self.device, do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length
        )  # one [L_i, D] per prompt (the pipeline edits the list it is given: a copy)
        hidden = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)  # [B, L, D]
        lengths = torch.tensor([len(f) for f in features], device=hidden.device)
        mask = (torch.arange(hidden.shape[1], device=hidden.device) < lengths[:, None]).long()  # [B, L]
        return Conditioning({"encoder_hidden_states": hidden, "encoder_hidden_states_mask": mask})

    def forward_denoiser(self, denoiser, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        text, mask = cond["encoder_hidden_states"], cond["encoder_hidden_states_mask"].bool()
        clips = list(latents.to(text.dtype).unsqueeze(2).unbind(0))  # B x [C, 1, h, w]
        captions = [text[i][mask[i]] for i in range(len(clips))]  # B x [L_i, D]
        out = denoiser(clips, 1 - t.to(text.dtype) / 1000, captions, return_dict=False)[0]  # t' = 1 - σ
        return -torch.stack(out)[:, :, 0]  # the velocity [B, C, h, w]
