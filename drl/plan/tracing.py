"""What one denoiser call holds, from a run on the meta device: every op runs for its shapes and dtypes only.

One call at batch 1 (activations grow linearly in the batch) is traced once per architecture and setting:

  saved          bytes autograd keeps for the backward: the unique storages its saved-tensor hooks see, weights
                 excluded (torch.autograd.graph.saved_tensors_hooks)
  block_inputs   bytes of the inputs of the denoiser's blocks (its top-level ModuleLists and mid block): what
                 activation checkpointing keeps instead of the blocks' saved tensors
  largest_block  the saved bytes of the largest block: what the backward recomputes at once when checkpointed
  working_set    the largest single op's inputs plus outputs: the no-grad call's transient, beyond its inputs

With checkpointing the call keeps saved - sum over blocks + block_inputs + largest_block. The meta device runs
PyTorch's own shape functions, so nothing is allocated: SD3.5-medium's 2.2 B parameters trace in seconds.
Attention is traced through SDPA's math path (meta has no fused kernel): its [L, L] scores are not what the
fused CPU and GPU kernels keep, so they are left out of ``saved`` (the fused kernels keep only a log-sum-exp).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode


@dataclass(frozen=True)
class Trace:
    """Bytes per sample (batch 1) of one denoiser call with gradient (see the module docstring)."""

    saved: int
    block_inputs: int
    largest_block: int
    saved_in_blocks: int
    working_set: int

    def kept(self, checkpointing: bool) -> int:
        """Bytes kept for the backward of one sample, with or without activation checkpointing."""
        if not checkpointing:
            return self.saved
        return self.saved - self.saved_in_blocks + self.block_inputs + self.largest_block


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _nbytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


class _WorkingSet(TorchDispatchMode):
    """The largest inputs + outputs of any one op, weights and buffers excluded."""

    def __init__(self, weights: set[int]):
        super().__init__()
        self.weights, self.largest = weights, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        unique = {_key(t): t for t in tensors if _key(t) not in self.weights}
        self.largest = max(self.largest, sum(_nbytes(t) for t in unique.values()))
        return out


def blocks_of(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The denoiser's blocks: the members of its top-level ModuleLists, and its mid block."""
    blocks = [b for child in module.children() if isinstance(child, torch.nn.ModuleList) for b in child]
    if getattr(module, "mid_block", None) is not None:
        blocks.append(module.mid_block)
    return blocks


def trace_call(
    module: torch.nn.Module, make_inputs: Callable[[], tuple[tuple, dict]], output: Callable[[object], torch.Tensor] = lambda out: out[0]
) -> Trace:
    """Trace ``module(*args, **kwargs)`` (on the meta device, with gradient) for the inputs ``make_inputs`` builds."""
    weights = {_key(t) for t in (*module.parameters(), *module.buffers())}
    saved: dict[int, int] = {}
    per_block: dict[int, int] = {}
    inputs: dict[int, int] = {}
    current: list[int] = []

    def pack(t):
        key = _key(t)
        if key not in weights and key not in saved:
            saved[key] = _nbytes(t)
            if current:
                per_block[current[-1]] = per_block.get(current[-1], 0) + saved[key]
        return t

    def enter(index):
        def hook(_module, args, kwargs):
            for t in torch.utils._pytree.tree_leaves((args, kwargs)):
                if isinstance(t, torch.Tensor) and _key(t) not in weights:
                    inputs.setdefault(_key(t), _nbytes(t))
            current.append(index)

        return hook

    def leave(_module, _args, _kwargs, _out):
        current.pop()

    handles = []
    for i, block in enumerate(blocks_of(module)):
        handles.append(block.register_forward_pre_hook(enter(i), with_kwargs=True))
        handles.append(block.register_forward_hook(leave, with_kwargs=True))
    args, kwargs = make_inputs()
    args, kwargs = torch.utils._pytree.tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, (args, kwargs))
    working = _WorkingSet(weights)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), working, _math_attention():
            result = module(*args, **kwargs)
        del result
    finally:
        for h in handles:
            h.remove()
    return Trace(
        saved=sum(saved.values()),
        block_inputs=sum(inputs.values()),
        largest_block=max(per_block.values(), default=0),
        saved_in_blocks=sum(per_block.values()),
        working_set=working.largest,
    )


@contextlib.contextmanager
def _math_attention():
    """SDPA's math path on meta tensors saves the [L, L] softmax; the fused kernels do not. Trace through a stand-in
    that keeps what the fused kernels keep: the output and a log-sum-exp per query."""
    original = torch.nn.functional.scaled_dot_product_attention

    def fused_like(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        return _FusedAttention.apply(query, key, value, (*query.shape[:-1], value.shape[-1]))

    torch.nn.functional.scaled_dot_product_attention = fused_like
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = original


class _FusedAttention(torch.autograd.Function):
    """Shapes of a fused attention: saves q, k, v, the output and a log-sum-exp [.., L_q] (what flash attention keeps)."""

    @staticmethod
    def forward(ctx, query, key, value, shape):
        out = query.new_empty(shape)
        lse = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        query, key, value, _, _ = ctx.saved_tensors
        return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value), None
