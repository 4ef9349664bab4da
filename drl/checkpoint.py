"""Checkpoint files (atomic saves, safe loads, the last two kept) and the exported LoRA; what a checkpoint holds is drl.resume's.

The last two checkpoints are kept (last.pt and previous.pt), so a damaged last one never ends a run;
both load with ``torch.load(weights_only=True)``: tensors and plain containers, never code.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

from drl import sharding
from drl.errors import CheckpointError, UnsafeCheckpointError

CHECKPOINT_NAME = "last.pt"
PREVIOUS_NAME = "previous.pt"  # the checkpoint before last.pt: the fallback when last.pt is damaged
TEMPORARY_GLOB = ".tmp-*.pt"  # a save in progress; left behind only by a killed process


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
            raise CheckpointError(
                f"The checkpoint does not match this run's trainable weights of {name} "
                f"(e.g. {missing[0]!r} is missing): was it made with another model.finetune or model?"
            )
        with torch.no_grad():
            for k, v in weights.items():
                params[k].copy_(sharding.shard_like(v, params[k]))  # FSDP: this rank's slice


def save_checkpoint(directory: Path, state: dict) -> Path:
    """Write ``state`` to directory/last.pt atomically (a crash mid-write never leaves a broken file);
    the last.pt it replaces becomes previous.pt."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CHECKPOINT_NAME
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            writer = _WriteErrors(f)
            try:
                torch.save(state, writer)
            except RuntimeError as e:  # torch's zip writer reports a failed write as "unexpected pos": the OSError says why
                if writer.error is not None:
                    raise OSError(writer.error.errno, writer.error.strerror, str(directory)) from e
                raise
            f.flush()
            os.fsync(f.fileno())
        if target.is_file():
            keep_previous(target, directory / PREVIOUS_NAME)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


class _WriteErrors:
    """A file's write() that remembers the OSError (ENOSPC, EFBIG, EIO) that torch.save would turn into a vague RuntimeError."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def keep_previous(last: Path, previous: Path) -> None:
    """previous <- last, with last.pt never absent (readers may poll it): a hard link, renamed into place."""
    staging = last.with_name(f".tmp-previous-{os.getpid()}.pt")
    try:
        staging.unlink(missing_ok=True)
        os.link(last, staging)
    except OSError:  # a file system without hard links: a moment without last.pt is harmless to drl itself
        os.replace(last, previous)
        return
    os.replace(staging, previous)


def remove_stale_temporaries(directory: Path) -> int:
    """Delete the half-written .tmp-*.pt files of killed runs (call it while holding the run lock)."""
    stale = list(directory.glob(TEMPORARY_GLOB)) if directory.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


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


def load_checkpoint(path: Path | str) -> dict:
    """A drl checkpoint's state, loaded without pickle's code execution; CheckpointError says why not."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():
            raise UnsafeCheckpointError(
                f"{path} holds Python objects that only pickle can load, and loading them could run code: "
                "drl refuses it (its own checkpoints hold tensors and plain containers only)."
            ) from None
        raise CheckpointError(f"{path} is damaged or not a checkpoint (it does not unpickle as one).") from None
    except OSError:
        raise  # unreadable file: the OS says why (errors.user_message)
    except Exception as e:  # truncated zip, garbage bytes, an empty file: torch raises many kinds
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is damaged or not a checkpoint ({reason}).") from None
    if not isinstance(state, dict) or not {"epoch", "weights"} <= state.keys():
        raise CheckpointError(f"{path} is not a drl checkpoint (no epoch and weights in it).")
    return state


def export_lora(denoiser: torch.nn.Module, directory: Path, pipeline_cls=None, layers_arg: str = "unet_lora_layers", prefix: str = "") -> None:
    """Save LoRA adapters in diffusers' format: a plain diffusers user calls pipe.load_lora_weights(directory).

    ``pipeline_cls.save_lora_weights(directory, **{layers_arg: ...})`` writes the file: StableDiffusionPipeline
    (the default) and StableDiffusionXLPipeline take ``unet_lora_layers``, StableDiffusion3Pipeline
    ``transformer_lora_layers``. ``prefix``: export only the adapters of that submodule, named as in it (one of
    Wan2.2's experts, ``transformer_2.``).
    """
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = {k[len(prefix) :]: v for k, v in get_peft_model_state_dict(denoiser).items() if k.startswith(prefix)}
    converted = convert_state_dict_to_diffusers(layers)
    # diffusers' loaders turn the old names back into peft's only when the first key has them: a dict converted in
    # part (layers the old format has no name for, e.g. FLUX.2's to_qkv_mlp_proj) would lose the rest. Keep peft's.
    if not any(".lora_A." in key or ".lora_B." in key for key in converted):
        layers = converted
    (pipeline_cls or StableDiffusionPipeline).save_lora_weights(directory, **{layers_arg: layers}, safe_serialization=True)
