"""What drl-eval compares: a model spec (a path) -> a loaded model, with one sentence for each bad input.

A spec is one of:
    drl:<asset> or a diffusers save_pretrained directory     the model itself
    a run directory of drl-train                              its exported model/ or lora/, else checkpoints/last.pt
    a LoRA directory (pytorch_lora_weights.safetensors)       the adapter on top of the base (model.path)
    a checkpoint file (.pt)                                   its trained weights on top of the base

LoRA and checkpoints of a run directory are applied to that run's own base model (its .hydra/config.yaml),
anything else to the base model ``model.path``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from drl.checkpoint import CHECKPOINT_NAME, load_trainable_state
from drl.config import ModelConfig
from drl.errors import ConfigError
from drl.models.finetune import ADAPTER_NAME, setup_trainable
from drl.models.t2i import T2IModel, resolve_path

LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' save_lora_weights file


@dataclass
class LoadedModel:
    label: str
    """Short name in the table and the grid: the spec's last path parts."""
    spec: str
    """What the user gave."""
    model: T2IModel


def load_base(cfg: ModelConfig) -> T2IModel:
    """The model at cfg.path (images or clips by cfg.kind), as drl-train loads it."""
    if cfg.kind == "t2v":
        from drl.models.loading import load_t2v

        return load_t2v(cfg.path, cfg.num_frames, cfg.family, cfg.resolution)
    from drl.models.loading import configure_t2i, load_t2i

    return configure_t2i(load_t2i(cfg.path, cfg.family), cfg)


def label_of(spec: str) -> str:
    parts = Path(spec.rstrip("/")).parts
    return spec if spec.startswith("drl:") else "/".join(parts[-2:]) if len(parts) > 1 else spec


def load_spec(spec: str, base: ModelConfig) -> LoadedModel:
    """Resolve and load one spec (see the module docstring); FileNotFoundError/ConfigError name what is wrong."""
    path = Path(resolve_path(spec)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model {spec!r} does not exist: give a drl: asset, a diffusers model, a drl-train run directory, a LoRA directory or a checkpoint.")
    return LoadedModel(label_of(spec), spec, _load_path(path, spec, base))


def _run_base(run_dir: Path, base: ModelConfig) -> ModelConfig:
    """The base model a run fine-tuned (its .hydra/config.yaml), else ``base``."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        return base
    model = OmegaConf.load(saved).get("model", {})
    keys = ("path", "family", "kind", "num_frames", "lora_rank", "lora_alpha", "lora_targets", "finetune", "distilled_guidance")
    return ModelConfig(**{**vars(base), **{k: model[k] for k in keys if k in model}, "resolution": base.resolution})


def _load_path(path: Path, spec: str, base: ModelConfig) -> T2IModel:
    if path.is_file():
        return _with_checkpoint(path, spec, _run_base(path.parent.parent, base))
    if (path / LORA_FILE).is_file():
        return _with_lora(path, spec, _run_base(path.parent, base))
    if (path / "unet").is_dir() or (path / "transformer").is_dir() or (path / "model_index.json").is_file():
        return load_base(ModelConfig(**{**vars(base), "path": str(path)}))
    for exported in ("model", "lora"):  # a drl-train run directory
        if (path / exported).is_dir():
            return _load_path(path / exported, spec, base)
    if (path / "checkpoints" / CHECKPOINT_NAME).is_file():
        return _with_checkpoint(path / "checkpoints" / CHECKPOINT_NAME, spec, _run_base(path, base))
    raise ConfigError(f"model {spec!r} is neither a diffusers model, a drl-train run directory, a LoRA directory nor a checkpoint.")


def _with_lora(directory: Path, spec: str, base: ModelConfig) -> T2IModel:
    """The base model with the diffusers-format LoRA in ``directory``."""
    from safetensors.torch import load_file

    model = load_base(base)
    keys = list(load_file(str(directory / LORA_FILE)))
    prefix = keys[0].split(".")[0] if keys else "unet"  # unet. (SD, SDXL) or transformer. (SD3, video)
    try:
        model.denoiser.load_lora_adapter(str(directory), prefix=prefix, adapter_name=ADAPTER_NAME, weight_name=LORA_FILE)
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__
        raise ConfigError(f"the LoRA {spec!r} does not fit the base model {base.path!r} ({first.rstrip('.')}).") from None
    if not any("lora_" in name for name, _ in model.denoiser.named_parameters()):
        raise ConfigError(f"the LoRA {spec!r} does not fit the base model {base.path!r} (none of its layers exist there).")
    return model


def load_lora_into(denoiser: torch.nn.Module, directory: Path) -> None:
    """Copy the diffusers-format LoRA in ``directory`` (another trainer's, e.g. trl's DDPOTrainer) into the adapter
    drl set up on ``denoiser`` (model.finetune=lora): the same target modules and rank, or one sentence."""
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft import set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = directory / LORA_FILE
    try:
        saved = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise ConfigError(f"{str(path)!r} is not a readable safetensors LoRA ({str(e).splitlines()[0]}).") from None
    # diffusers names each tensor after its component (unet.<module>); a file saved without the prefix is read as it is
    unprefixed = {key.removeprefix("unet.").removeprefix("transformer."): value for key, value in saved.items()}
    state = convert_unet_state_dict_to_peft(unprefixed)
    try:
        result = set_peft_model_state_dict(denoiser, state, adapter_name=ADAPTER_NAME)
    except RuntimeError as e:  # a shape mismatch: another rank
        raise ConfigError(f"the LoRA in {str(directory)!r} does not fit the run's adapter ({str(e).splitlines()[0]}).") from None
    expected = {name for name, _ in denoiser.named_parameters() if "lora_" in name}
    missing = [name for name in result.missing_keys if name in expected]
    if result.unexpected_keys or missing or not expected:
        raise ConfigError(
            f"the LoRA in {str(directory)!r} does not fit the run's adapter ({len(result.unexpected_keys)} of its tensors have no "
            f"place there, {len(missing)} of the adapter's are not in it): give model.lora_targets and model.lora_rank as it was trained."
        )


def _with_checkpoint(path: Path, spec: str, base: ModelConfig) -> T2IModel:
    """The base model with a drl-train checkpoint's trained weights (full or LoRA, as the run trained)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain containers: no code runs
    except Exception as e:  # noqa: BLE001 - torch raises many types for a file that is not a checkpoint
        raise ConfigError(f"model {spec!r} is not a readable drl-train checkpoint ({type(e).__name__}).") from None
    if not isinstance(state, dict) or "weights" not in state:
        raise ConfigError(f"model {spec!r} is not a drl-train checkpoint (it has no trained weights).")
    model = load_base(base)
    setup_trainable(model.denoiser, base.finetune, base.lora_rank, base.lora_alpha, base.lora_targets)
    try:
        load_trainable_state({"unet": model.denoiser}, state["weights"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise ConfigError(f"the checkpoint {spec!r} does not fit the base model {base.path!r} ({str(e).splitlines()[0]}).") from None
    model.denoiser.requires_grad_(False)
    return model
