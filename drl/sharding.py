"""FSDP (``hardware.sharding=fsdp``): the trained denoiser sharded over ranks, checkpoints kept whole.

With ``ddp`` (the default) every rank holds the whole denoiser and drl all-reduces the gradients
itself (drl/distributed.py). With ``fsdp`` each rank holds 1/W of every weight, gradient and Adam
moment of the denoiser, PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``) all-gathers a
block's weights just before it runs and reduce-scatters (averages) its gradients in the backward.
FSDP2 rather than accelerate's FSDP plugin: drl owns its loop, optimizer step and checkpoints, and
FSDP2 only swaps the module's parameters for sharded DTensors, so the same optimizer, EMA, clipping
and state code serve both paths; the plugin would want accelerate's prepare/save_state around them.

What this module guarantees:
- the gradients are averaged once, by FSDP (Algorithm.optimizer_step skips drl's own all-reduce);
- ``clip_grad_norm_`` on DTensor gradients reduces the norm over ranks: the global norm, as with ddp;
- checkpoints hold whole (unsharded) tensors in exactly the ddp / single-process layout
  (:func:`full`), and whole tensors load back into sharded ones (:func:`shard_like`), so a
  checkpoint moves freely between ``ddp`` and ``fsdp`` and its weights load in a lone process;
- every block reshards after its forward, the root included, so between forward passes the module
  holds only its shards: the EMA can swap their values and the next forward all-gathers the swap.

Every function that gathers is a collective: all ranks call it, in the same order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor


def shard_denoiser(module: torch.nn.Module) -> None:
    """Shard ``module`` in place: one FSDP unit per block of its ModuleLists (a UNet's down/up
    blocks, a transformer's blocks), one for the rest. A whole-model unit would all-gather every
    weight at once; per-block units bound the peak to one block's full weights."""
    # The mesh on the module's own device type: FSDP's default mesh is CUDA's whenever CUDA is
    # present, which a CPU (gloo) run on a GPU machine must not get.
    device = next(module.parameters()).device
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for child in module.children():
        if isinstance(child, torch.nn.ModuleList):
            for block in child:
                fully_shard(block, mesh=mesh, reshard_after_forward=True)
    # True on the root as well: FSDP's default keeps the root's weights gathered after a forward,
    # and then an EMA swap of the shards would not reach the next forward.
    fully_shard(module, mesh=mesh, reshard_after_forward=True)


def is_sharded(module: torch.nn.Module) -> bool:
    return isinstance(module, FSDPModule)


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a shard (all-gathered: collective), or ``tensor`` itself."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state(obj: Any) -> Any:
    """``obj`` (nested dicts, lists, tuples) with every sharded tensor replaced by its whole tensor."""
    if isinstance(obj, DTensor):
        return obj.full_tensor()
    if isinstance(obj, dict):
        return {k: full_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(full_state(v) for v in obj)
    return obj


def shard_like(whole: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``whole`` sharded as ``like`` is (this rank keeps its own slice, no communication); a plain
    ``like`` or a tensor of another shape (Adam's step count) comes back unchanged."""
    if not isinstance(like, DTensor) or not torch.is_tensor(whole) or whole.shape != like.shape:
        return whole
    local = whole.to(device=like.device, dtype=like.dtype)
    return distribute_tensor(local, like.device_mesh, like.placements, src_data_rank=None)


def shard_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """A whole-tensor optimizer state dict with each parameter's moments sharded as that parameter.

    The saved state numbers parameters in param-group order, as ``Optimizer.load_state_dict`` reads it.
    """
    saved_ids = [i for group in state["param_groups"] for i in group["params"]]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    by_id = dict(zip(saved_ids, params, strict=True))
    moments = {i: {k: shard_like(v, by_id[i]) for k, v in s.items()} for i, s in state["state"].items()}
    return {**state, "state": moments}
