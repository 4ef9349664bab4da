"""Qwen-Image-Edit: Qwen-Image (drl.models.qwen_image) that edits a source image given with each prompt.

    processor/     Qwen2VLProcessor (Qwen2-VL's image processor + Qwen2Tokenizer): the source image -> vision tokens
    transformer/, vae/, text_encoder/, tokenizer/, scheduler/   as Qwen-Image

The source image enters twice, as QwenImageEditPipeline's ``encode_prompt`` and ``prepare_latents`` put it:
    through the text encoder   the edit template's user turn holds the image (the processor expands <|image_pad|> into
                               one token per merged patch); Qwen2.5-VL's last hidden states past the template's first
                               64 tokens, image tokens included, are the conditioning;
    as latents                 the VAE's mean of it, normalised, 2x2-packed and appended after the generated tokens
                               (``source_latents``, drl.models.qwen_image.forward_denoiser); only the generated tokens'
                               velocity is read back.
Classifier-free guidance's unconditional branch is the empty instruction with the same image (the pipeline's negative
prompt is encoded with it too).

Where drl differs from the pipeline: the source is resized to the generated size (the pipeline resizes it to about
1024 x 1024 pixels whatever it generates; for a square source at model.resolution=1024 they agree), and the processor's
image processor is transformers' PIL backend (Qwen2VLImageProcessorPil: no torchvision), whose bicubic resize can differ
from torchvision's by a grey level where the source is not a multiple of 28 pixels.

Shape legend (Qwen-Image's, plus):
    source_images [B, 3, H, W] uint8 (what the text encoder saw)   source_latents [B, C, h, w] (normalised VAE mean)
    encoder_hidden_states [B, L, D], L: the longest prompt of the batch, its image tokens included
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from drl.models.flow_family import source_images
from drl.models.qwen_image import QwenImageModel
from drl.models.sd3 import _quiet_diffusers
from drl.types import Conditioning


@dataclass
class QwenImageEditModel(QwenImageModel):
    processor: object = None  # Qwen2VLProcessor: the source image -> the text encoder's vision inputs

    PIPELINE = "QwenImageEditPipeline"
    TEXT_COMPONENTS = ("text_encoder", "tokenizer", "processor")

    # ---------------------------------------------------------------- text
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], images: torch.Tensor | None = None) -> Conditioning:
        """Instructions with their source images [B, 3, H, W] uint8 -> the text encoder's conditioning (no gradient).
        With model.text_encoder_offload this is drl.models.prompt_cache's cache, keyed by prompt and image."""
        return self.encode_prompts_with_grad(prompts, images)

    def encode_prompts_with_grad(self, prompts: list[str], images: torch.Tensor | None = None) -> Conditioning:
        if images is None or len(images) != len(prompts):
            raise ValueError(f"A {type(self).__name__} encodes each instruction with its source image: give one image per prompt.")
        return super().encode_prompts_with_grad(prompts, image=[_pil(image) for image in images])

    def condition(self, prompts: list[str], metadata: list[dict] | None = None) -> Conditioning:
        images = self.source_pixels(metadata, len(prompts))  # [n, 3, H, W] uint8, on the CPU
        text = self.encode_prompts(list(prompts), images)
        return Conditioning({**text.tensors, "source_latents": self.encode(images.float() / 255), "source_images": images.to(self.device)})

    def negative_conditioning(self, n: int, like: Conditioning | None = None) -> Conditioning:
        """The empty instruction with each of ``like``'s source images (batch n = len(like))."""
        if like is None:
            raise ValueError(f"A {type(self).__name__}'s unconditional branch reads the source images: pass the conditional branch (like=).")
        images = like["source_images"]
        text = self.encode_prompts([""] * len(images), images.cpu())
        return Conditioning({**text.tensors, "source_latents": like["source_latents"], "source_images": images})

    def source_pixels(self, metadata: list[dict] | None, n: int) -> torch.Tensor:
        """Each prompt's metadata["source_image"] at the generated size, in 8 bits as the pipeline's PIL image. [n, 3, H, W]"""
        images = source_images(metadata, n, self.image_size, type(self).__name__)  # [n, 3, H, W] in [0, 1]
        return (images * 255).round().clamp(0, 255).to(torch.uint8)

    # -------------------------------------------------------------- saving
    def pipeline_components(self) -> dict:
        return {**super().pipeline_components(), "processor": self.processor}

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """QwenImageEditPipeline's layout. processor/ is written from its parts: Qwen2VLProcessor's own save also
        wants the video processor that drl leaves out (drl.models.qwen_image_edit.image_text_processor)."""
        import diffusers

        directory = Path(directory)
        with _quiet_diffusers():
            getattr(diffusers, self.PIPELINE)(**{**self.pipeline_components(), "processor": None}).save_pretrained(directory)
        self.processor.image_processor.save_pretrained(directory / "processor")
        self.processor.tokenizer.save_pretrained(directory / "processor")
        index = json.loads((directory / "model_index.json").read_text())
        index["processor"] = ["transformers", "Qwen2VLProcessor"]
        (directory / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def image_text_processor(image_processor, tokenizer):
    """transformers' Qwen2VLProcessor over an image processor and a tokenizer alone.

    Its constructor also demands a video processor, whose class needs torchvision; the edit pipeline passes images
    only, and the processor's __call__ skips a part it lacks. So the instance gets the attributes its constructor
    would set (the image and video placeholder tokens and their ids), with no video processor (None)."""
    from transformers import Qwen2VLProcessor

    processor = Qwen2VLProcessor.__new__(Qwen2VLProcessor)
    processor.chat_template = None
    processor.image_processor, processor.tokenizer, processor.video_processor = image_processor, tokenizer, None
    processor.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
    processor.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
    processor.image_token_id, processor.video_token_id = tokenizer.convert_tokens_to_ids([processor.image_token, processor.video_token])
    return processor


def load_processor(location: str, subfolder: str):
    """processor/ of a Qwen-Image-Edit directory: its preprocessor_config.json read by the PIL image processor, and its
    tokenizer."""
    from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil.from_pretrained(location, subfolder=subfolder)
    return image_text_processor(image_processor, AutoTokenizer.from_pretrained(location, subfolder=subfolder))


def _pil(image: torch.Tensor):
    """[3, H, W] uint8 -> a PIL image (what the pipeline hands its processor)."""
    from PIL import Image

    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
