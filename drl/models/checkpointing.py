"""Activation checkpointing of any denoiser (``model.gradient_checkpointing``): recompute in the backward.

diffusers' own switch (``enable_gradient_checkpointing``) where the class has one; otherwise every block of the
denoiser's top-level ModuleLists and its mid block (a UNet3DConditionModel's down/mid/up blocks) runs under
torch.utils.checkpoint. The blocks' forward is replaced on the instance, so parameter names, state dicts,
LoRA export and FSDP units stay as they were. Without gradient (sampling) the blocks run plainly.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import checkpoint


def enable_activation_checkpointing(denoiser: torch.nn.Module) -> None:
    if getattr(denoiser, "_supports_gradient_checkpointing", False):
        denoiser.enable_gradient_checkpointing()
        return
    blocks = [block for child in denoiser.children() if isinstance(child, torch.nn.ModuleList) for block in child]
    if getattr(denoiser, "mid_block", None) is not None:
        blocks.append(denoiser.mid_block)
    if not blocks:
        raise ValueError(f"model.gradient_checkpointing=true: a {type(denoiser).__name__} has no blocks to checkpoint.")
    for block in blocks:
        if not getattr(block, "_drl_checkpointed", False):
            block.forward = functools.partial(_checkpointed_forward, block.forward)
            block._drl_checkpointed = True


def _checkpointed_forward(forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)
