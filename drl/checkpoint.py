"""Atomic checkpoints, resume, and the exported final model."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from drl import sharding

CHECKPOINT_NAME = "last.pt"


def trainable_state(modules: dict[str, torch.nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """Only the weights that train (full weights or LoRA adapters), keyed by module then name.

    Whole tensors: an FSDP-sharded module's shards are all-gathered (every rank calls this).
    """
    return {
        name: {k: sharding.full(p.detach()).cpu().clone() for k, p in module.named_parameters() if p.requires_grad}
        for name, module in modules.items()
    }


def load_trainable_state(modules: dict[str, torch.nn.Module], state: dict) -> None:
    for name, module in modules.items():
        weights = state.get(name, {})
        params = dict(module.named_parameters())
        missing = [k for k, p in params.items() if p.requires_grad and k not in weights]
        if missing:
            raise ValueError(
                f"The checkpoint does not match this run's trainable weights of {name} "
                f"(e.g. {missing[0]!r} is missing): was it made with another model.finetune or model?"
            )
        with torch.no_grad():
            for k, v in weights.items():
                params[k].copy_(sharding.shard_like(v, params[k]))  # FSDP: this rank's slice


def save_checkpoint(directory: Path, state: dict) -> Path:
    """Write ``state`` to directory/last.pt atomically: a crash mid-write never leaves a broken file."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CHECKPOINT_NAME
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def find_checkpoint(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to continue from: ``resume`` (a run dir or a file) or this run dir's own."""
    if resume:
        path = Path(resume).expanduser()
        candidates = [path, path / "checkpoints" / CHECKPOINT_NAME, path / CHECKPOINT_NAME]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"resume={resume!r}: no checkpoint there (looked for checkpoints/{CHECKPOINT_NAME}).")
    own = run_dir / "checkpoints" / CHECKPOINT_NAME
    return own if own.is_file() else None


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def export_lora(unet: torch.nn.Module, directory: Path, pipeline_cls=None, layers_arg: str = "unet_lora_layers") -> None:
    """Save LoRA adapters in diffusers' format: a plain diffusers user calls pipe.load_lora_weights(directory).

    ``pipeline_cls.save_lora_weights(directory, **{layers_arg: ...})`` writes the file: StableDiffusionPipeline
    (the default) and StableDiffusionXLPipeline take ``unet_lora_layers``, StableDiffusion3Pipeline
    ``transformer_lora_layers``.
    """
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    (pipeline_cls or StableDiffusionPipeline).save_lora_weights(directory, **{layers_arg: layers}, safe_serialization=True)
