"""Offline preference pairs for DPO: a JSONL or CSV file of (prompt, chosen image, rejected image).

JSONL, one object per line:
    {"prompt": "a red circle at the top left", "chosen": "img/0001_a.png", "rejected": "img/0001_b.png"}
CSV, with a header naming the same three columns:
    prompt,chosen,rejected
    a red circle at the top left,img/0001_a.png,img/0001_b.png
Relative image paths are resolved against the pairs file's directory. Any image format Pillow
reads works; images are converted to RGB and resized to model.resolution.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from drl.errors import ConfigError

COLUMNS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: Path
    rejected: Path


def _rows(path: Path) -> list[tuple[str, dict]]:
    """(where, record) for every record of a .jsonl or .csv file."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"{path}: the CSV header lacks {', '.join(missing)} (expected columns: {', '.join(COLUMNS)}).")
            return [(f"{path}:{i + 2}", row) for i, row in enumerate(reader)]
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ConfigError(f"{path}:{i + 1} is not a JSON object (one per line expected).") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{path}:{i + 1} is not a JSON object (one per line expected).")
            rows.append((f"{path}:{i + 1}", record))
        return rows
    raise ConfigError(f"algorithm.pairs_path={str(path)!r} must end in .jsonl or .csv.")


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """Read and check a pairs file; every image must exist. Raises one clear error otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"algorithm.pairs_path={str(path)!r} does not exist; give a JSONL or CSV file of prompt, chosen, rejected.")
    pairs = []
    for where, record in _rows(path):
        missing = [c for c in COLUMNS if not str(record.get(c) or "").strip()]
        if missing:
            raise ConfigError(f"{where} has no {', '.join(missing)} (every pair needs {', '.join(COLUMNS)}).")
        images = [path.parent / str(record[c]).strip() for c in ("chosen", "rejected")]
        for image in images:
            if not image.is_file():
                raise FileNotFoundError(f"{where}: image {str(image)!r} does not exist.")
        pairs.append(PreferencePair(str(record["prompt"]), *images))
    if not pairs:
        raise ConfigError(f"algorithm.pairs_path={str(path)!r} holds no pairs.")
    return pairs


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """An image file -> [3, resolution, resolution] float in [0, 1]."""
    with Image.open(path) as image:
        rgb = image.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
