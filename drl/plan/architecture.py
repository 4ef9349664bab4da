"""The model a config names, at its real size on the meta device: no weight is read, none is allocated.

Where the components' configs come from:
- a local diffusers directory (``model.path``): model_index.json names each component's library and class,
  and each component folder's config.json its size, as diffusers itself reads them;
- a hub id that drl ships the published configs of (drl/models/real_configs/*.json: FLUX.1-dev, FLUX.2-dev,
  Qwen-Image, Wan2.2-T2V-A14B and -I2V-A14B, SD3.5-medium), so that a plan needs neither the weights nor a network.

Classes are looked up by name in diffusers and transformers only, and must be torch modules: a config
never names code to run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from drl.errors import PlanError
from drl.models.layout import model_index, resolve_path

REAL_CONFIGS_DIR = Path(__file__).resolve().parent.parent / "models" / "real_configs"
LIBRARIES = ("diffusers", "transformers")


@dataclass
class Component:
    """One network of a pipeline: its folder name, library, class and config (the config.json values)."""

    name: str
    library: str
    class_name: str
    config: dict

    @property
    def role(self) -> str:
        """denoiser (unet, transformer, transformer_2), text_encoder (text_encoder*), vae, or other."""
        if self.name in ("unet", "transformer") or self.name.startswith("transformer_"):
            return "denoiser"
        if self.name.startswith("text_encoder"):
            return "text_encoder"
        return "vae" if self.name == "vae" else "other"


@dataclass
class Architecture:
    """A pipeline's networks (``components`` by folder name) and what sizes its inputs."""

    name: str
    source: str
    components: dict[str, Component]
    text_tokens: int | None = None  # tokens of one prompt's conditioning; None: from the text encoder's config
    extra: dict = field(default_factory=dict)

    def of_role(self, role: str) -> list[Component]:
        return [c for c in self.components.values() if c.role == role]


def shipped_configs() -> dict[str, Path]:
    """hub id (lower case) -> the shipped JSON of its published component configs."""
    found = {}
    for path in sorted(REAL_CONFIGS_DIR.glob("*.json")):
        found[json.loads(path.read_text())["hub_id"].lower()] = path
    return found


def architecture_for(path: str) -> Architecture:
    """The architecture at ``model.path``: a local diffusers directory, or a hub id drl ships configs for."""
    local = Path(resolve_path(path)).expanduser()
    if local.is_dir():
        return from_directory(local)
    shipped = shipped_configs().get(path.lower())
    if shipped is None:
        known = ", ".join(json.loads(p.read_text())["hub_id"] for p in shipped_configs().values())
        raise PlanError(
            f"the memory plan cannot size model.path={path!r}: it is not a local diffusers directory, and drl ships "
            f"real-size configs only for {known}."
        )
    return from_shipped(shipped)


def from_shipped(path: Path) -> Architecture:
    data = json.loads(path.read_text())
    components = {
        name: Component(name, spec["library"], spec["class"], dict(spec["config"])) for name, spec in data["components"].items()
    }
    extra = {k: v for k, v in data.items() if k not in ("components", "name", "text_tokens")}
    return Architecture(data["name"], f"{path.name} (published config.json values of {data['hub_id']})", components, data.get("text_tokens"), extra)


def from_directory(directory: Path) -> Architecture:
    """Every torch-module component of a save_pretrained directory (tokenizers and schedulers are skipped)."""
    entries = {
        name: entry
        for name, entry in model_index(directory).items()
        if not name.startswith("_") and isinstance(entry, list) and len(entry) == 2 and entry[0] in LIBRARIES
    }
    if not entries:  # no model_index.json (drl's pixel-space toy_t2i): read each folder's config.json
        for sub in sorted(p for p in directory.iterdir() if (p / "config.json").is_file()):
            config = json.loads((sub / "config.json").read_text())
            if "_class_name" in config:
                entries[sub.name] = ["diffusers", config["_class_name"]]
            elif config.get("architectures"):
                entries[sub.name] = ["transformers", config["architectures"][0]]
    components = {}
    for name, (library, class_name) in entries.items():
        config_file = directory / name / "config.json"
        if not config_file.is_file() or not issubclass_module(library, class_name):
            continue
        components[name] = Component(name, library, class_name, json.loads(config_file.read_text()))
    if not any(c.role == "denoiser" for c in components.values()):
        raise PlanError(f"the memory plan found no denoiser (unet/ or transformer/ with a config.json) in {directory}.")
    return Architecture(directory.name, str(directory), components, extra=dict(model_index(directory)))


def model_class(library: str, class_name: str) -> type | None:
    """The class ``class_name`` of diffusers or transformers, or None."""
    if library not in LIBRARIES:
        return None
    import importlib

    return getattr(importlib.import_module(library), class_name, None)


def issubclass_module(library: str, class_name: str) -> bool:
    cls = model_class(library, class_name)
    return isinstance(cls, type) and issubclass(cls, torch.nn.Module)


def build_on_meta(component: Component) -> torch.nn.Module:
    """The component at its real size on the meta device (shapes and dtypes, no storage)."""
    cls = model_class(component.library, component.class_name)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise PlanError(f"the memory plan does not know {component.library}.{component.class_name} (component {component.name}/).")
    config = {k: v for k, v in component.config.items() if not k.startswith("_")}
    with torch.device("meta"):
        if component.library == "diffusers":
            return cls.from_config(config)
        return cls._from_config(cls.config_class.from_dict(config))


def architecture_of(model, name: str) -> Architecture:
    """The architecture of a model already built in memory (each network's own config): what
    scripts/check_memory_plan.py plans for the random-weight models it measures."""
    denoiser = model.denoiser
    networks = {"transformer" if "Transformer" in type(denoiser).__name__ else "unet": denoiser}
    for i, encoder in enumerate(model.text_encoders):
        networks["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = encoder
    if getattr(model, "vae", None) is not None:
        networks["vae"] = model.vae
    components = {}
    for folder, module in networks.items():
        library = "diffusers" if type(module).__module__.startswith("diffusers") else "transformers"
        config = dict(module.config) if library == "diffusers" else module.config.to_dict()
        components[folder] = Component(folder, library, type(module).__name__, config)
    return Architecture(name, f"the {name} model built in memory", components)
