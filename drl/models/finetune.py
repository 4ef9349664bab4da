"""Which denoiser weights train: all of them, or peft LoRA adapters."""

from __future__ import annotations

import torch
from peft import LoraConfig

ADAPTER_NAME = "default"


def setup_trainable(denoiser: torch.nn.Module, finetune: str, rank: int, alpha: float, targets: list[str]) -> list[torch.nn.Parameter]:
    """Freeze or adapt ``denoiser`` in place and return the parameters to optimise.

    finetune="lora" adds a peft adapter through diffusers' own ``add_adapter`` so the
    result exports with ``get_peft_model_state_dict`` and loads with ``load_lora_weights``.
    """
    if finetune == "full":
        denoiser.requires_grad_(True)
    elif finetune == "lora":
        denoiser.requires_grad_(False)
        config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(targets))
        try:
            denoiser.add_adapter(config, adapter_name=ADAPTER_NAME)
        except ValueError as e:  # peft: "Target modules ... not found in the base model"
            raise ValueError(f"model.lora_targets={list(targets)} match no module of the denoiser ({e}).") from None
    else:
        raise ValueError(f"model.finetune={finetune!r} is not one of full, lora.")
    return [p for p in denoiser.parameters() if p.requires_grad]


def has_lora(denoiser: torch.nn.Module) -> bool:
    return bool(getattr(denoiser, "_hf_peft_config_loaded", False))


class base_weights:
    """Context manager: run the denoiser as the base model (LoRA adapters disabled).

    Only meaningful with LoRA; full fine-tuning keeps a frozen copy instead (see reference_denoiser).
    """

    def __init__(self, denoiser: torch.nn.Module):
        self.denoiser = denoiser

    def __enter__(self):
        self.denoiser.disable_adapters()
        return self.denoiser

    def __exit__(self, *exc):
        self.denoiser.enable_adapters()
        return False
