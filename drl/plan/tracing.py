"""What one denoiser call holds, from a run on the meta device: every op runs for its shapes and dtypes only.

One call at batch 1 (activations grow linearly in the batch) is traced once per architecture and setting:

  saved          bytes autograd keeps for the backward: the unique storages its saved-tensor hooks see, weights
                 excluded (torch.autograd.graph.saved_tensors_hooks)
  block_inputs   bytes of the inputs of the denoiser's blocks (its top-level ModuleLists and mid block): what
                 activation checkpointing keeps instead of the blocks' saved tensors
  largest_block  the saved bytes of the largest block: what the backward recomputes at once when checkpointed
  working_set    the largest single op's inputs plus outputs
  no_grad_peak   the most bytes alive at once during a no-grad call (what sampling adds to its inputs): every
                 storage an op creates counts from its creation until Python frees it, so a UNet's skip
                 connections, held from its down blocks to its up blocks, are in it (the largest op alone is not)
  conv_workspace the largest convolution's output: the kernel's own buffer beyond the tensors (oneDNN writes its
                 output in a blocked layout, then reorders it; cuDNN takes a workspace on a GPU). Measured on
                 SD3.5-medium's VAE decoding 256 px on the CPU: tensors alive at once 192 MiB (the same on real
                 tensors as on meta), RSS growth 243 MiB; its largest convolution's output is 64 MiB

trace_training_peak runs the call's forward and backward and gives the most bytes alive at once (activations, the
backward's gradient buffers), the parameters' gradients excluded: what one update call adds; and how many storages
hold them (each is an allocator block, which costs more than its bytes: drl.plan.budget.BLOCK_OVERHEAD). The no-grad largest
op (working_set) alone was 1.5x short of the sampling peaks measured on the tiny SD 1.x pipeline, where the
UNet's skip connections are alive together (scripts/check_memory_plan.py). With checkpointing the call keeps saved - sum over blocks + block_inputs + largest_block. The meta device runs
PyTorch's own shape functions, so nothing is allocated: SD3.5-medium's 2.2 B parameters trace in seconds.
Attention is traced through SDPA's math path (meta has no fused kernel): its [L, L] scores are not what the
fused CPU and GPU kernels keep, so they are left out of ``saved`` (the fused kernels keep only a log-sum-exp).
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Callable, NamedTuple

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
    no_grad_peak: int
    conv_workspace: int = 0

    @property
    def no_grad_call(self) -> int:
        """Bytes per sample a no-grad call adds: the tensors alive at once and the largest convolution's buffer."""
        return self.no_grad_peak + self.conv_workspace

    def kept(self, checkpointing: bool) -> int:
        """Bytes kept for the backward of one sample, with or without activation checkpointing."""
        if not checkpointing:
            return self.saved
        return self.saved - self.saved_in_blocks + self.block_inputs + self.largest_block


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _nbytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


class Peak(NamedTuple):
    """The most bytes alive at once, and the number of storages (allocator blocks) alive then."""

    bytes: int
    storages: int


class _LiveBytes(TorchDispatchMode):
    """Bytes of the storages that ops create, alive from creation until freed (weakref.finalize on the storage), as
    a sequence of events; storages made before the mode (weights, inputs) and views of them are not counted."""

    def __init__(self, before: set[int]):
        super().__init__()
        self.before = before
        self.alive: dict[int, tuple[int, int]] = {}  # storage key -> (event id, bytes)
        self.events: list[tuple[int, int]] = []  # (event id, +bytes at creation / -bytes when freed)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and _key(t) not in self.before and _key(t) not in self.alive:
                storage, ident = t.untyped_storage(), len(self.events)
                self.alive[_key(t)] = (ident, storage.nbytes())
                self.events.append((ident, storage.nbytes()))
                weakref.finalize(storage, self._free, _key(t))
        return out

    def _free(self, key: int) -> None:
        ident, nbytes = self.alive.pop(key)
        self.events.append((ident, -nbytes))

    def peak(self, excluded: set[int] = frozenset()) -> int:
        """The most bytes alive at once, leaving out the storages alive now whose keys are ``excluded``."""
        return self.peak_and_storages(excluded).bytes

    def peak_and_storages(self, excluded: set[int] = frozenset()) -> Peak:
        """The most bytes alive at once and how many storages hold them (``excluded`` as in :meth:`peak`)."""
        skip = {self.alive[k][0] for k in excluded if k in self.alive}
        live = count = 0
        top = Peak(0, 0)
        for ident, delta in self.events:
            if ident not in skip:
                live, count = live + delta, count + (1 if delta > 0 else -1)
                if live > top.bytes:
                    top = Peak(live, count)
        return top


class _WorkingSet(TorchDispatchMode):
    """The largest inputs + outputs of any one op, and of any one convolution, weights and buffers excluded."""

    def __init__(self, weights: set[int]):
        super().__init__()
        self.weights, self.largest, self.largest_conv = weights, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        unique = {_key(t): t for t in tensors if _key(t) not in self.weights}
        size = sum(_nbytes(t) for t in unique.values())
        self.largest = max(self.largest, size)
        if func is torch.ops.aten.convolution.default:
            self.largest_conv = max(self.largest_conv, _nbytes(out))
        return out


def blocks_of(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The denoiser's blocks: the members of its top-level ModuleLists, and its mid block."""
    blocks = [b for child in module.children() if isinstance(child, torch.nn.ModuleList) for b in child]
    if getattr(module, "mid_block", None) is not None:
        blocks.append(module.mid_block)
    return blocks


def trace_call(
    module: torch.nn.Module, make_inputs: Callable[[], tuple[tuple, dict]], output: Callable[[object], torch.Tensor] = lambda out: first_output(out)
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
    args, kwargs = _meta_inputs(make_inputs)
    working = _WorkingSet(weights)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), working, _math_attention():
            result = module(*args, **kwargs)
        del result
    finally:
        for h in handles:
            h.remove()
    live = _LiveBytes(weights | _storages((args, kwargs)))
    with torch.no_grad(), live, _math_attention():
        result = module(*args, **kwargs)
        del result
    return Trace(
        saved=sum(saved.values()),
        block_inputs=sum(inputs.values()),
        largest_block=max(per_block.values(), default=0),
        saved_in_blocks=sum(per_block.values()),
        working_set=working.largest,
        no_grad_peak=live.peak(),
        conv_workspace=working.largest_conv,
    )


def trace_training_peak(
    module: torch.nn.Module, make_inputs: Callable[[], tuple[tuple, dict]], output: Callable[[object], torch.Tensor] = lambda out: first_output(out),
    input_grad: bool = False,
) -> Peak:
    """The most bytes alive at once during ``module(...)``'s forward and a backward from its output (weights, inputs
    and the parameters' gradients left out), on the meta device. ``input_grad``: the first input carries gradient
    (a frozen VAE decoding a sample that AlignProp's reward differentiates)."""
    weights = {_key(t) for t in (*module.parameters(), *module.buffers())}
    args, kwargs = _meta_inputs(make_inputs)
    if input_grad:
        first = next(t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))
        first.requires_grad_(True)
    live = _LiveBytes(weights | _storages((args, kwargs)))
    with torch.enable_grad(), live, _math_attention():
        out = output(module(*args, **kwargs))
        out.backward(torch.ones_like(out))
        del out
    grads = {_key(p.grad) for p in module.parameters() if p.grad is not None}
    peak = live.peak_and_storages(excluded=grads)
    for p in module.parameters():
        p.grad = None
    return peak


def first_output(out) -> torch.Tensor:
    """A denoiser's prediction from its output tuple; Z-Image returns one tensor per sample, stacked here."""
    first = out[0]
    return torch.stack(list(first)) if isinstance(first, (list, tuple)) else first


def _meta_inputs(make_inputs: Callable[[], tuple[tuple, dict]]) -> tuple[tuple, dict]:
    args, kwargs = make_inputs()
    return torch.utils._pytree.tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, (args, kwargs))


def _storages(tree) -> set[int]:
    return {_key(t) for t in torch.utils._pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)}


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
