"""Procedural toy world: 32x32 RGB images of one coloured shape, described by a prompt.

Every image is fully determined by a `Scene` (colour, shape, position, size) plus
nuisance randomness (jitter, scale, background grey level and noise) drawn from a
`np.random.Generator`. Prompts have one fixed template, so they can be parsed
back into scenes and scored exactly by the attribute classifier.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np
import torch

COLOURS = ("red", "green", "blue", "yellow", "purple", "cyan")
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
SIZES = ("small", "large")

# Ordered: this order fixes the classifier's heads and `all_scenes()`.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": COLOURS,
    "shape": SHAPES,
    "position": POSITIONS,
    "size": SIZES,
}

# Saturated, well separated RGB values so colour is unambiguous even when blurred.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 200, 50),
    "blue": (45, 75, 235),
    "yellow": (235, 215, 30),
    "purple": (155, 50, 210),
    "cyan": (30, 215, 220),
}

# Region centres as (x, y) fractions of the image width/height.
POSITION_CENTRES: dict[str, tuple[float, float]] = {
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
    "center": (0.5, 0.5),
}

# Shape extent (diameter / side / base and height) as a fraction of the image width.
SIZE_FRACTIONS: dict[str, float] = {"small": 0.22, "large": 0.42}

JITTER_FRACTION = 1 / 16  # max position offset, fraction of width
SCALE_RANGE = (0.9, 1.1)  # random multiplicative factor on the size
BACKGROUND_GREY_RANGE = (15, 110)  # dark to mid grey
BACKGROUND_NOISE_MAX = 12.0  # max per-pixel noise amplitude, grey levels
SUPERSAMPLING = 4  # render at 4x and box-downsample for antialiased edges

# Appearance jitter for training the alignment classifier (`sample_images(..., appearance_jitter=True)`).
# Diffusion samples drift off the renders' exact look: tinted and brighter backgrounds, slightly shifted
# object colours. A classifier that has only seen exact renders reads those drifts as a different colour,
# which makes the alignment reward noise for black-box RL. The jitter stays well inside the gaps between
# the six colours (their nearest pair, cyan/green, differs by 185 grey levels in blue).
JITTER_BACKGROUND_GREY_RANGE = (15, 170)
JITTER_BACKGROUND_TINT = 30.0  # max per-channel offset of the background from grey, grey levels
JITTER_OBJECT_COLOUR = 25.0  # max per-channel offset of the object's colour, grey levels

_PROMPT_PATTERN = re.compile(r"a (\S+) (\S+) (\S+) at the (.+)")


@dataclass(frozen=True)
class Scene:
    """The content of one toy image; `prompt` is its canonical text description."""

    colour: str
    shape: str
    position: str
    size: str

    def __post_init__(self) -> None:
        for attribute, values in ATTRIBUTES.items():
            value = getattr(self, attribute)
            if value not in values:
                raise ValueError(f"Unknown {attribute} {value!r}; expected one of {values}.")

    @property
    def prompt(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} at the {self.position}"

    @classmethod
    def from_prompt(cls, text: str) -> Scene:
        """Parse a prompt of the form 'a {size} {colour} {shape} at the {position}'."""
        match = _PROMPT_PATTERN.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f"Prompt {text!r} does not match 'a {{size}} {{colour}} {{shape}} at the {{position}}'."
            )
        size, colour, shape, position = match.groups()
        try:
            return cls(colour=colour, shape=shape, position=position, size=size)
        except ValueError as error:
            raise ValueError(f"Prompt {text!r} is not a toy-world prompt: {error}") from None

    def replace(self, **changes: str) -> Scene:
        """A copy with some attributes changed, e.g. `scene.replace(colour="red")`."""
        values = {attribute: getattr(self, attribute) for attribute in ATTRIBUTES}
        values.update(changes)
        return Scene(**values)


def all_scenes() -> list[Scene]:
    """All 180 scenes, ordered by colour, then shape, then position, then size."""
    return [Scene(*values) for values in itertools.product(*ATTRIBUTES.values())]


def random_scene(rng: np.random.Generator) -> Scene:
    """A scene with every attribute drawn uniformly and independently."""
    return Scene(*(values[rng.integers(len(values))] for values in ATTRIBUTES.values()))


def vocabulary() -> list[str]:
    """Every word that can appear in a prompt, sorted and unique (for a word tokenizer)."""
    words = {"a", "at", "the"}
    for values in ATTRIBUTES.values():
        for value in values:
            words.update(value.split())
    return sorted(words)


def corrupt_caption(
    scene: Scene, rates: dict[str, float], rng: np.random.Generator, attributes: dict[str, tuple[str, ...]] | None = None
) -> Scene:
    """Return the scene with each attribute resampled with probability `rates[attribute]`.

    The pretrained base model is trained on these corrupted captions, which makes it
    imperfect in the same way real text-to-image models trained on noisy web captions
    are: its images only partly follow the prompt, leaving room for RL fine-tuning.
    The replacement is uniform over the vocabulary, so it may equal the true value.
    Attributes missing from `rates` are kept. `attributes` (default: the image world's) lets
    the video world's scenes (drl.toyworld.video) share this function.
    """
    attributes = ATTRIBUTES if attributes is None else attributes
    unknown = set(rates) - set(attributes)
    if unknown:
        raise ValueError(f"Unknown attributes in rates: {sorted(unknown)}; expected {list(attributes)}.")
    changes = {}
    for attribute, values in attributes.items():
        if rng.random() < rates.get(attribute, 0.0):
            changes[attribute] = values[rng.integers(len(values))]
    return scene.replace(**changes)


def shape_coverage(shape: str, centre_x: float, centre_y: float, extent: float, resolution: int) -> np.ndarray:
    """Fraction of each pixel covered by the shape, via supersampling.

    Coordinates are in output pixels; returns coverage: [H, W] float32 in [0, 1].
    """
    samples = resolution * SUPERSAMPLING
    # Sample-point coordinates at the centres of the sub-pixels.
    coords = (np.arange(samples, dtype=np.float32) + 0.5) / SUPERSAMPLING
    xs = coords[None, :]  # [1, S]
    ys = coords[:, None]  # [S, 1]
    half = extent / 2
    if shape == "circle":
        inside = (xs - centre_x) ** 2 + (ys - centre_y) ** 2 <= half**2
    elif shape == "square":
        inside = (np.abs(xs - centre_x) <= half) & (np.abs(ys - centre_y) <= half)
    elif shape == "triangle":
        # Upward triangle: apex at the top centre, base at the bottom; width shrinks linearly upwards.
        top, bottom = centre_y - half, centre_y + half
        depth = (ys - top) / extent  # 0 at apex, 1 at base
        inside = (ys >= top) & (ys <= bottom) & (np.abs(xs - centre_x) <= half * depth)
    else:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")
    # Box-filter downsample: average each SUPERSAMPLING x SUPERSAMPLING block.
    blocks = inside.reshape(resolution, SUPERSAMPLING, resolution, SUPERSAMPLING)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def render(scene: Scene, rng: np.random.Generator, resolution: int = 32, appearance_jitter: bool = False) -> np.ndarray:
    """Render one image of the scene; returns image: [H, W, 3] uint8.

    Nuisance factors drawn from `rng`: position jitter, size scale, background grey
    level and background noise amplitude (which also varies compressibility).
    `appearance_jitter` adds a background tint and an object-colour offset (classifier training only).
    """
    centre_fx, centre_fy = POSITION_CENTRES[scene.position]
    jitter_x, jitter_y = rng.uniform(-JITTER_FRACTION, JITTER_FRACTION, size=2)
    centre_x = (centre_fx + jitter_x) * resolution
    centre_y = (centre_fy + jitter_y) * resolution
    extent = SIZE_FRACTIONS[scene.size] * rng.uniform(*SCALE_RANGE) * resolution

    background = random_background(rng, resolution, appearance_jitter)
    coverage = shape_coverage(scene.shape, centre_x, centre_y, extent, resolution)
    rgb = np.asarray(COLOUR_RGB[scene.colour], dtype=np.float32)  # [3]
    if appearance_jitter:
        rgb = rgb + rng.uniform(-JITTER_OBJECT_COLOUR, JITTER_OBJECT_COLOUR, size=3)
    return composite(coverage, rgb, background)


def random_background(rng: np.random.Generator, resolution: int, appearance_jitter: bool = False) -> np.ndarray:
    """A grey level with uniform per-pixel noise: [H, W, 1] float grey levels ([H, W, 3] tinted when jittered)."""
    grey = rng.uniform(*(JITTER_BACKGROUND_GREY_RANGE if appearance_jitter else BACKGROUND_GREY_RANGE))
    noise_amplitude = rng.uniform(0.0, BACKGROUND_NOISE_MAX)
    if appearance_jitter:
        grey = grey + rng.uniform(-JITTER_BACKGROUND_TINT, JITTER_BACKGROUND_TINT, size=3)
    return grey + rng.uniform(-noise_amplitude, noise_amplitude, size=(resolution, resolution, 1))


def composite(coverage: np.ndarray, colour: str | np.ndarray, background: np.ndarray) -> np.ndarray:
    """Paint a shape's coverage [H, W] in `colour` (a name or RGB [3]) over `background` [H, W, 1 or 3];
    returns [H, W, 3] uint8."""
    rgb = np.asarray(COLOUR_RGB[colour] if isinstance(colour, str) else colour, dtype=np.float32)  # [3]
    image = coverage[..., None] * rgb + (1.0 - coverage[..., None]) * background  # [H, W, 3]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def sample_images(
    n: int,
    rng: np.random.Generator,
    resolution: int = 32,
    scenes: list[Scene] | None = None,
    appearance_jitter: bool = False,
) -> tuple[torch.Tensor, list[Scene]]:
    """Render `n` images (of `scenes`, or of random scenes when not given); `appearance_jitter`: see `render`.

    Returns images: [n, 3, H, W] float32 in [-1, 1], and the list of n scenes.
    """
    if scenes is None:
        scenes = [random_scene(rng) for _ in range(n)]
    elif len(scenes) != n:
        raise ValueError(f"Got n={n} but {len(scenes)} scenes.")
    # pixels: [n, H, W, 3] uint8
    pixels = np.zeros((n, resolution, resolution, 3), dtype=np.uint8)
    for index, scene in enumerate(scenes):
        pixels[index] = render(scene, rng, resolution, appearance_jitter)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return images.contiguous(), list(scenes)
