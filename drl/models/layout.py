"""What a model directory holds, read without torch: where ``drl:<name>`` points, the family, absent components.

Config validation (drl/config.py) asks these questions before any work starts, so this module imports
nothing heavy; the loaders (drl/models/loading.py) ask them again when they load.
"""

from __future__ import annotations

import json
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"

# diffusers pipeline class (model_index.json's _class_name) -> drl's model family.
PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
    "FluxKontextPipeline": "flux_kontext",
    "Flux2Pipeline": "flux2",
    "QwenImagePipeline": "qwen_image",
    "QwenImageEditPipeline": "qwen_image_edit",
    "ZImagePipeline": "z_image",
}
# Video pipelines (model.kind=t2v): Wan2.1 and Wan2.2 (two experts: transformer_2 below boundary_ratio).
VIDEO_PIPELINES = {"WanPipeline": "wan", "WanImageToVideoPipeline": "wan", "TextToVideoSDPipeline": "modelscope"}
VIDEO_FAMILIES = ("wan", "wan_i2v")  # model.family of a kind=t2v model; wan_i2v: Wan2.2 image-to-video (drl.models.wan_i2v)
# families sampled by the flow SDE (scheduler=flow); the others take ddim or ddpm
FLOW_FAMILIES = ("sd3", "flux", "flux_kontext", "flux2", "qwen_image", "qwen_image_edit", "z_image")
IMAGE_CONDITIONED = ("flux_kontext", "qwen_image_edit", "wan_i2v")  # families conditioned on a source image given with each prompt
FAMILIES = ("sd", "sdxl", *FLOW_FAMILIES)


def resolve_path(path: str) -> str:
    """``drl:<name>`` -> the asset shipped inside the package; anything else unchanged."""
    if path.startswith("drl:"):
        return str(ASSETS_DIR / path[len("drl:") :])
    return path


def model_index(location: str | Path) -> dict:
    """A local directory's model_index.json ({} when it has none or it is not a JSON object)."""
    index = Path(location) / "model_index.json"
    if not index.is_file():
        return {}
    try:
        content = json.loads(index.read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def detect_family(location: str | Path, video: bool = False) -> str:
    """The family of a local directory: its model_index.json's pipeline class; without one, its layout
    (transformer/ -> sd3, text_encoder_2/ -> sdxl, otherwise sd: older saves and drl's toy models).

    A pipeline class drl does not train is refused in one sentence naming the directory (it used to read as
    whatever its folders resembled: any transformer/ as SD3). ``video``: the video loader asks, for which ModelScope's
    TextToVideoSDPipeline is the sd family with a 3D UNet."""
    name = model_index(location).get("_class_name")
    if video and VIDEO_PIPELINES.get(name) == "modelscope":
        return "sd"
    if name in PIPELINE_FAMILIES:
        return PIPELINE_FAMILIES[name]
    if name is not None:
        from drl.errors import ConfigError

        video = " (a video pipeline: use model.kind=t2v, e.g. model=wan22)" if name in VIDEO_PIPELINES else ""
        raise ConfigError(
            f"{location} holds a {name}{video}, which is not a text-to-image family drl trains: "
            f"use a directory of one of {', '.join(sorted(PIPELINE_FAMILIES))}."
        )
    local = Path(location)
    if (local / "transformer").is_dir():
        return "sd3"
    if (local / "text_encoder_2").is_dir():
        return "sdxl"
    return "sd"


def absent_components(location: str | Path) -> set[str]:
    """Components that the directory's model_index.json declares absent ([null, null]), as diffusers reads them:
    a pipeline saved without them (e.g. drl's pixel-space toy_flow: no vae, one text encoder)."""
    return {
        name
        for name, entry in model_index(location).items()
        if not name.startswith("_") and isinstance(entry, list) and len(entry) == 2 and entry == [None, None]
    }


def local_family(path: str) -> str | None:
    """The family of ``path`` (a drl: asset or a local directory) when it is a local directory, else None (a hub id)."""
    location = Path(resolve_path(path)).expanduser()
    return detect_family(location) if location.is_dir() else None


def model_directory_problems(m, s) -> list[str]:
    """A text-to-image model's family against its directory and the scheduler, read from the directory before
    anything loads (drl.models.layout); a hub id is checked when it loads."""
    if m.from_scratch:
        if m.family not in ("auto", "sd", "sd3"):
            return [f"model.from_scratch=true builds a toy architecture: model.family=sd3 (toy_flow's transformer) or sd (toy_t2i's UNet); there is no toy {m.family}."]
        return []
    from drl.errors import ConfigError

    try:
        found = local_family(m.path)
    except ConfigError as refusal:  # a pipeline class drl does not train
        return [str(refusal)]
    if found is None or m.family not in ("auto", found):
        return [] if found is None else [f"model.family={m.family} but model.path={m.path} holds a {found} model: use model.family=auto (or {found})."]
    if m.family == "auto" and (found in FLOW_FAMILIES) != (s.kind == "flow"):  # an explicit family: find_problems says it
        fix = "scheduler=flow" if found in FLOW_FAMILIES else "scheduler=ddim or scheduler=ddpm"
        what = "a flow-matching" if found in FLOW_FAMILIES else f"an ε/v-prediction ({found})"
        return [f"model.path={m.path} holds {what} model, which scheduler={s.kind} cannot sample: use {fix}."]
    return []
