"""Text encoders off the accelerator (``model.text_encoder_offload=true``): each prompt encoded once, on the CPU.

A T5-XXL or a Qwen2.5-VL text path holds 5-16 GB of weights that a run needs only to turn prompts into
conditioning. With the offload, the encoders stay on the CPU; every prompt not seen before is encoded there
and its conditioning (one row of each tensor) is kept, on the CPU; each call returns the rows of its prompts,
moved to the denoiser's device. A fixed prompt set (prompts=file, list) is encoded in the first epoch and never
again; the empty prompt of classifier-free guidance is one entry. An editing model whose text encoder reads the source
image (Qwen-Image-Edit) keys its entries by prompt and image.

The model's own ``encode_prompts`` is what runs, so every family conditions exactly as without the cache
(tests/test_prompt_cache.py compares them); only where the encoders run changes.
"""

from __future__ import annotations

import contextlib
import hashlib

import torch

from drl.types import Conditioning


class PromptEmbeddingCache:
    """``model.encode_prompts`` with the encoders on the CPU and a per-prompt cache (no gradient)."""

    def __init__(self, model, encode, device: torch.device):
        self.model, self.encode, self.device = model, encode, torch.device(device)
        self.rows: dict[str, Conditioning] = {}
        self.encoded = 0  # prompts encoded so far (each once)

    @torch.no_grad()
    def __call__(self, prompts: list[str], images: torch.Tensor | None = None) -> Conditioning:
        """``images`` [B, 3, H, W] uint8: an editing model's source images (Qwen-Image-Edit), which key the cache too."""
        keys = list(prompts) if images is None else [(p, _digest(image)) for p, image in zip(prompts, images)]
        first = {key: i for i, key in reversed(list(enumerate(keys)))}  # each key's first row
        missing = [i for key, i in first.items() if key not in self.rows]
        if missing:
            with encoders_device(self.model):  # on the CPU: batch len(missing)
                picked = [prompts[i] for i in missing]
                cond = self.encode(picked) if images is None else self.encode(picked, images[missing].cpu())
            for row, i in enumerate(missing):
                self.rows[keys[i]] = cond[row : row + 1]
            self.encoded += len(missing)
        return Conditioning.cat([self.rows[key] for key in keys]).to(self.device)


def _digest(image: torch.Tensor) -> str:
    """A source image's content, as a cache key."""
    return hashlib.sha1(image.cpu().contiguous().numpy().tobytes()).hexdigest()


@contextlib.contextmanager
def encoders_device(model):
    """While encoding, ``model.device`` (where the adapters put the token ids) is the CPU, where the encoders are."""
    model.inputs_device = torch.device("cpu")
    try:
        yield
    finally:
        model.inputs_device = None


def offload_text_encoders(model, device: torch.device) -> PromptEmbeddingCache:
    """Move ``model``'s text encoders to the CPU and route its encode_prompts through a cache; returns the cache."""
    for encoder in model.text_encoders:
        encoder.to("cpu")
    model.text_encoders_offloaded = True  # T2IModel.to leaves them on the CPU
    cache = PromptEmbeddingCache(model, model.encode_prompts, device)
    model.encode_prompts = cache  # the instance's attribute: negative_conditioning and the collector use it
    return cache
