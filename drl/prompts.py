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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"prompts.path={str(path)!r} is not UTF-8 text (byte {e.start} cannot be decoded): give a text file with one prompt per line.") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"prompts.path={str(path)!r} holds no prompts (one per line expected).")
    return PromptSource(lines, [{} for _ in lines])

