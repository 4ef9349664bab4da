"""Loading a model from a directory or hub id: which family class and which components.

The registry of model families lives here, apart from the family modules (t2i, sdxl, sd3,
t2v, wan), so that they never import each other back.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from drl.errors import ConfigError
from drl.models.flux import FluxKontextModel, FluxModel
from drl.models.flux2 import Flux2Model
from drl.models.qwen_image import QwenImageModel
from drl.models.qwen_image_edit import QwenImageEditModel, load_processor
from drl.models.layout import detect_family, model_index
from drl.models.sd3 import SD3Model
from drl.models.sdxl import SDXLModel
from drl.models.t2i import T2IModel, _looks_like_hub_id, load_components, missing_model_message, resolve_path
from drl.models.t2v import DENOISER_CLASSES, T2VModel, UNet3DConditionModel
from drl.models.wan import WanModel, is_wan_layout, load_wan
from drl.models.wan_i2v import WanI2VModel, check_i2v_layout, wants_image
from drl.models.z_image import ZImageModel


def load_t2i(path: str, family: str = "auto", denoiser_class: type | None = None) -> T2IModel:
    """Load a text-to-image model from a save_pretrained directory (local) or a hub id.

    ``family``: sd (1.x/2.x), sdxl, sd3 (flow matching) or auto (from the directory's model_index.json or layout,
    drl.models.layout.detect_family).
    ``denoiser_class`` replaces the family's denoiser class (the video models in drl.models.t2v share this loader).
    Missing weights raise FileNotFoundError with one sentence naming the path.
    """
    location = resolve_path(path)
    local = Path(location).expanduser()
    if local.is_dir():
        location = str(local)
    elif not _looks_like_hub_id(location):
        raise FileNotFoundError(missing_model_message(location))
    video = denoiser_class is not None
    if family == "auto":
        family = detect_family(location, video) if local.is_dir() else "sd"
    elif local.is_dir() and detect_family(location, video) != family:  # else a constructor fails deep inside with a TypeError
        found = detect_family(location, video)
        raise ConfigError(
            f"model.family={family} but {location} holds a {found} model: use model.family=auto "
            f"(or model.family={found}, with the model config of that family)."
        )
    cls = FAMILY_CLASSES[family]
    spec = COMPONENTS[COMPONENTS_OF.get(family, family)]
    if denoiser_class is not None:
        spec = [(name, sub, denoiser_class if name == "denoiser" else loader, required) for name, sub, loader, required in spec]
    parts = load_components(location, local.is_dir(), spec)
    model = cls(**parts)
    if family == "sdxl":
        model.force_zeros_for_empty_prompt = _pipeline_flag(location, "force_zeros_for_empty_prompt", True)
    for encoder in model.text_encoders:
        encoder.requires_grad_(False)
    if model.vae is not None:
        model.vae.requires_grad_(False)
    if hasattr(model, "max_sequence_length"):  # never past what the tokenizer was made for
        model.max_sequence_length = min(model.max_sequence_length, model.text_tokenizer_length())
    return model


def configure_t2i(model: T2IModel, m) -> T2IModel:
    """What the model config ``m`` sets on a loaded image model, for drl-train and drl-eval alike: the decode chunk,
    the resolution and the distilled guidance a guidance-embedded family (FLUX.1-dev) runs with."""
    model.decode_chunk_size, model.resolution = m.vae_decode_chunk, m.resolution
    if hasattr(model, "guidance"):
        model.guidance = m.distilled_guidance
    return model


FAMILY_CLASSES = {"sd": T2IModel, "sdxl": SDXLModel, "sd3": SD3Model, "flux": FluxModel, "flux_kontext": FluxKontextModel,
                 "flux2": Flux2Model, "qwen_image": QwenImageModel, "qwen_image_edit": QwenImageEditModel, "z_image": ZImageModel}


# Per family: (field, subfolder, loader, required). Tokenizers load with AutoTokenizer; a function loader is called
# with (location, subfolder).
COMPONENTS: dict[str, list[tuple[str, str, str | type, bool]]] = {
    "sd": [
        ("denoiser", "unet", "UNet2DConditionModel", True),
        ("text_encoder", "text_encoder", "CLIPTextModel", True),
        ("tokenizer", "tokenizer", "tokenizer", True),
        ("scheduler_config", "scheduler", "scheduler", True),
        ("vae", "vae", "AutoencoderKL", False),  # absent only in pixel-space models (the toy)
    ],
    "sdxl": [
        ("denoiser", "unet", "UNet2DConditionModel", True),
        ("text_encoder", "text_encoder", "CLIPTextModel", True),
        ("text_encoder_2", "text_encoder_2", "CLIPTextModelWithProjection", True),
        ("tokenizer", "tokenizer", "tokenizer", True),
        ("tokenizer_2", "tokenizer_2", "tokenizer", True),
        ("scheduler_config", "scheduler", "scheduler", True),
        ("vae", "vae", "AutoencoderKL", True),
    ],
    "sd3": [
        ("denoiser", "transformer", "SD3Transformer2DModel", True),
        ("text_encoder", "text_encoder", "CLIPTextModelWithProjection", True),
        ("text_encoder_2", "text_encoder_2", "CLIPTextModelWithProjection", True),
        ("text_encoder_3", "text_encoder_3", "T5EncoderModel", False),  # optional, as in diffusers (zeros without it)
        ("tokenizer", "tokenizer", "tokenizer", True),
        ("tokenizer_2", "tokenizer_2", "tokenizer", True),
        ("tokenizer_3", "tokenizer_3", "tokenizer", False),
        ("scheduler_config", "scheduler", "scheduler", True),
        ("vae", "vae", "AutoencoderKL", True),
    ],
    "flux": [
        ("denoiser", "transformer", "FluxTransformer2DModel", True),
        ("text_encoder", "text_encoder", "CLIPTextModel", True),
        ("text_encoder_2", "text_encoder_2", "T5EncoderModel", True),
        ("tokenizer", "tokenizer", "tokenizer", True),
        ("tokenizer_2", "tokenizer_2", "tokenizer", True),
        ("scheduler_config", "scheduler", "scheduler", True),
        ("vae", "vae", "AutoencoderKL", True),
    ],
    "flux2": [
        ("denoiser", "transformer", "Flux2Transformer2DModel", True),
        ("text_encoder", "text_encoder", "Mistral3ForConditionalGeneration", True),
        ("tokenizer", "tokenizer", "tokenizer", True),  # the PixtralProcessor's tokenizer: the text path needs no more
        ("scheduler_config", "scheduler", "scheduler", True),
        ("vae", "vae", "AutoencoderKLFlux2", True),
    ],
    "qwen_image": [
        ("denoiser", "transformer", "QwenImageTransformer2DModel", True),
        ("text_encoder", "text_encoder", "Qwen2_5_VLForConditionalGeneration", True),
        ("tokenizer", "tokenizer", "tokenizer", True),
        ("scheduler_config", "scheduler", "scheduler", True),
        ("vae", "vae", "AutoencoderKLQwenImage", True),
    ],
    "qwen_image_edit": [
        ("denoiser", "transformer", "QwenImageTransformer2DModel", True),
        ("text_encoder", "text_encoder", "Qwen2_5_VLForConditionalGeneration", True),
        ("tokenizer", "tokenizer", "tokenizer", True),
        ("processor", "processor", load_processor, True),
        ("scheduler_config", "scheduler", "scheduler", True),
        ("vae", "vae", "AutoencoderKLQwenImage", True),
    ],
    "z_image": [
        ("denoiser", "transformer", "ZImageTransformer2DModel", True),
        ("text_encoder", "text_encoder", "Qwen3Model", True),
        ("tokenizer", "tokenizer", "tokenizer", True),
        ("scheduler_config", "scheduler", "scheduler", True),
        ("vae", "vae", "AutoencoderKL", True),
    ],
}


COMPONENTS_OF = {"flux_kontext": "flux"}  # families whose directories hold another's components


def _pipeline_flag(location: str, key: str, default: bool) -> bool:
    """A flag of the pipeline's model_index.json (e.g. SDXL's force_zeros_for_empty_prompt)."""
    index = Path(location) / "model_index.json"
    if index.is_file():
        return bool(json.loads(index.read_text()).get(key, default))
    return default



def load_t2v(path: str, num_frames: int, family: str = "auto", resolution: int | None = None) -> T2VModel:
    """Load a text-to-video model from a save_pretrained directory: UNet3DConditionModel + CLIP text encoder
    [+ VAE] (toy, ModelScope), or WanPipeline's layout (drl.models.wan; ``family`` wan_i2v or a
    WanImageToVideoPipeline: image-to-video, drl.models.wan_i2v, which sizes the input image by ``resolution``);
    missing weights raise FileNotFoundError with one sentence naming the path."""
    if is_wan_layout(resolve_path(path)):
        location = resolve_path(path)
        image = wants_image(location, family)
        if image:  # read from its config.json files before anything loads
            check_i2v_layout(location, model_index(location))
        model = load_wan(location, num_frames, WanI2VModel if image else WanModel)
        model.resolution = resolution
        return model
    if family == "wan_i2v":
        raise ConfigError(f"model.family=wan_i2v loads a Wan2.2 directory, but {path} holds no Wan (transformer/ and vae/).")
    parts = load_t2i(path, denoiser_class=DENOISER_CLASSES.get(_denoiser_class_name(path), UNet3DConditionModel))
    return T2VModel(**{f.name: getattr(parts, f.name) for f in fields(parts)}, num_frames=num_frames)


def _denoiser_class_name(path: str) -> str | None:
    """The ``_class_name`` in a local directory's unet/config.json (None for a hub id or a missing file)."""
    config = Path(resolve_path(path)).expanduser() / "unet" / "config.json"
    return json.loads(config.read_text()).get("_class_name") if config.is_file() else None
