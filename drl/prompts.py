"""Where prompts come from: the toy world, a list in the config, or a text file."""

from __future__ import annotations

import zlib
from pathlib import Path

import torch

from drl.config import PromptsConfig
from drl.errors import ConfigError


class PromptSource:
    """Draws prompts uniformly (with replacement) from a fixed pool, using the run's generator."""

    def __init__(self, pool: list[str], metadata: list[dict]):
        if not pool:
            raise ValueError("The prompt pool is empty.")
        self.pool, self.pool_metadata = pool, metadata

    def sample(self, n: int, generator: torch.Generator) -> tuple[list[str], list[dict]]:
        index = torch.randint(len(self.pool), (n,), generator=generator).tolist()
        return [self.pool[i] for i in index], [dict(self.pool_metadata[i]) for i in index]

    def first(self, n: int) -> list[str]:
        """A fixed, varied list of n prompts (the pool cycled), for before/after grids."""
        return [self.pool[i % len(self.pool)] for i in range(n)]

    def first_conditions(self, n: int) -> list[dict]:
        """The metadata of :meth:`first`'s prompts that the model conditions on (an editing task's source
        image); {} for prompts that carry none, so evaluation rewards see what they always saw."""
        entries = [self.pool_metadata[i % len(self.pool)] for i in range(n)]
        return [{"source_image": m["source_image"]} if "source_image" in m else {} for m in entries]


def build_prompt_source(cfg: PromptsConfig, video: bool = False) -> PromptSource:
    """``video``: source=toy draws the video world's prompts ("a red circle moving right")."""
    if cfg.source == "toy":
        from drl.toyworld import all_scenes
        from drl.toyworld.video import all_video_scenes

        scenes = all_video_scenes() if video else all_scenes()
        # A fixed pseudo-random order (crc32, not hash(), which is salted per process), so that the
        # first few prompts, which the grids use, mix colours, shapes and positions.
        scenes = sorted(scenes, key=lambda s: (zlib.crc32(s.prompt.encode()), s.prompt))
        return PromptSource([s.prompt for s in scenes], [{"scene": s.prompt} for s in scenes])
    if cfg.source == "list":
        return PromptSource(list(cfg.prompts), [{} for _ in cfg.prompts])
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"prompts.path={str(path)!r} does not exist; give a text file with one prompt per line.")
    if path.suffix == ".jsonl":
        return _image_prompts(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"prompts.path={str(path)!r} is not UTF-8 text (byte {e.start} cannot be decoded): give a text file with one prompt per line.") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"prompts.path={str(path)!r} holds no prompts (one per line expected).")
    return PromptSource(lines, [{} for _ in lines])



def _image_prompts(path: Path) -> PromptSource:
    """A JSONL file of {"prompt": ..., "image": path relative to the file}: an editing instruction (or an
    image-to-video prompt) and its source image, read with PIL only (nothing in the file executes) into
    metadata["source_image"] [3, H, W] float in [0, 1], which the model conditions on and a reward may read."""
    import json

    prompts, metadata = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise ConfigError(f"prompts.path={str(path)!r} line {number} is not JSON: give one {{\"prompt\": ..., \"image\": ...}} object per line.") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not isinstance(record.get("image"), str):
            raise ConfigError(f"prompts.path={str(path)!r} line {number} needs a \"prompt\" and an \"image\" string (the image's path relative to the file).")
        prompts.append(record["prompt"])
        metadata.append({"source_image": read_source_image(path.parent / record["image"], f"prompts.path={str(path)!r} line {number}")})
    if not prompts:
        raise ConfigError(f"prompts.path={str(path)!r} holds no prompts (one JSON object per line expected).")
    return PromptSource(prompts, metadata)


def read_source_image(path: Path, where: str) -> torch.Tensor:
    """An image file -> [3, H, W] float in [0, 1] (PIL decodes it; RGB). ``where`` names the line that gave it."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"{where}: image {str(path)!r} does not exist (image paths are relative to the prompts file).")
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ConfigError(f"{where}: {str(path)!r} is not an image PIL can read ({e.__class__.__name__}).") from None
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(rgb.height, rgb.width, 3)
    return pixels.permute(2, 0, 1).float() / 255
