"""Procedural toy videos: one coloured shape that moves as the prompt says.

A clip is F frames of an R x R image ("a red circle moving right"). Shapes, colours,
backgrounds and the antialiased renderer are the image world's (drl.toyworld.world);
the video world adds motion. Every clip is fully determined by a `VideoScene` plus
nuisance randomness (start position, size scale, background) drawn from a
`np.random.Generator`.

Shape legend:  n clips, F frames, H = W = R pixels.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np
import torch

from drl.toyworld.world import (
    COLOURS,
    SCALE_RANGE,
    SHAPES,
    composite,
    corrupt_caption,
    random_background,
    shape_coverage,
)

MOTIONS = ("moving left", "moving right", "moving up", "moving down", "standing still")
# Ordered: this order fixes the video classifier's heads and `all_video_scenes()`.
VIDEO_ATTRIBUTES: dict[str, tuple[str, ...]] = {"colour": COLOURS, "shape": SHAPES, "motion": MOTIONS}

# Unit direction (dx, dy) in image coordinates (y grows downwards).
MOTION_DIRECTIONS: dict[str, tuple[float, float]] = {
    "moving left": (-1.0, 0.0),
    "moving right": (1.0, 0.0),
    "moving up": (0.0, -1.0),
    "moving down": (0.0, 1.0),
    "standing still": (0.0, 0.0),
}
TOY_FRAMES = 4  # frames per toy clip: enough to show a direction, few enough that an epoch takes seconds
TOY_RESOLUTION = 16  # frame side in pixels
OBJECT_FRACTION = 0.4  # shape extent, fraction of the width: large enough to read at 16 px
TRAVEL_FRACTION = 0.4  # distance a moving shape covers over the clip, fraction of the width
CENTRE_RANGE = (0.4, 0.6)  # where the clip's mid-point (and a still shape) sits, fraction of the width

_PROMPT_PATTERN = re.compile(r"a (\S+) (\S+) (.+)")


@dataclass(frozen=True)
class VideoScene:
    """The content of one toy clip; `prompt` is its canonical text description."""

    colour: str
    shape: str
    motion: str

    def __post_init__(self) -> None:
        for attribute, values in VIDEO_ATTRIBUTES.items():
            if getattr(self, attribute) not in values:
                raise ValueError(f"Unknown {attribute} {getattr(self, attribute)!r}; expected one of {values}.")

    @property
    def prompt(self) -> str:
        return f"a {self.colour} {self.shape} {self.motion}"

    @classmethod
    def from_prompt(cls, text: str) -> VideoScene:
        """Parse a prompt of the form 'a {colour} {shape} {motion}'."""
        match = _PROMPT_PATTERN.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"Prompt {text!r} does not match 'a {{colour}} {{shape}} {{motion}}'.")
        try:
            return cls(*match.groups())
        except ValueError as error:
            raise ValueError(f"Prompt {text!r} is not a toy video prompt: {error}") from None

    def replace(self, **changes: str) -> VideoScene:
        values = {attribute: getattr(self, attribute) for attribute in VIDEO_ATTRIBUTES}
        values.update(changes)
        return VideoScene(**values)


def all_video_scenes() -> list[VideoScene]:
    """All 90 clips' scenes, ordered by colour, then shape, then motion."""
    return [VideoScene(*values) for values in itertools.product(*VIDEO_ATTRIBUTES.values())]


def random_video_scene(rng: np.random.Generator) -> VideoScene:
    return VideoScene(*(values[rng.integers(len(values))] for values in VIDEO_ATTRIBUTES.values()))


def video_vocabulary() -> list[str]:
    """Every word of a video prompt, sorted and unique (for a word tokenizer)."""
    words = {"a"}
    for values in VIDEO_ATTRIBUTES.values():
        for value in values:
            words.update(value.split())
    return sorted(words)


def corrupt_video_caption(scene: VideoScene, rates: dict[str, float], rng: np.random.Generator) -> VideoScene:
    """The image world's caption corruption (`corrupt_caption`) over the video attributes."""
    return corrupt_caption(scene, rates, rng, VIDEO_ATTRIBUTES)


def object_centres(scene: VideoScene, rng: np.random.Generator, frames: int) -> np.ndarray:
    """The shape's centre in each frame, as fractions of the width: [F, 2] (x, y).

    A moving shape travels TRAVEL_FRACTION at constant speed through a random mid-point;
    a still one stays at a random point.
    """
    mid = rng.uniform(*CENTRE_RANGE, size=2)  # [2]
    direction = np.asarray(MOTION_DIRECTIONS[scene.motion])  # [2]
    progress = np.linspace(-0.5, 0.5, frames)[:, None]  # [F, 1]
    return mid + progress * TRAVEL_FRACTION * direction


def render_clip(
    scene: VideoScene, rng: np.random.Generator, resolution: int = TOY_RESOLUTION, frames: int = TOY_FRAMES
) -> np.ndarray:
    """Render one clip of the scene; returns clip: [F, H, W, 3] uint8 (one background for all frames)."""
    centres = object_centres(scene, rng, frames) * resolution  # [F, 2] pixels
    extent = OBJECT_FRACTION * rng.uniform(*SCALE_RANGE) * resolution
    background = random_background(rng, resolution)  # [H, W, 1]
    return np.stack(
        [composite(shape_coverage(scene.shape, x, y, extent, resolution), scene.colour, background) for x, y in centres]
    )


def sample_clips(
    n: int,
    rng: np.random.Generator,
    resolution: int = TOY_RESOLUTION,
    frames: int = TOY_FRAMES,
    scenes: list[VideoScene] | None = None,
) -> tuple[torch.Tensor, list[VideoScene]]:
    """Render `n` clips (of `scenes`, or of random scenes when not given).

    Returns clips: [n, F, 3, H, W] float32 in [-1, 1], and the list of n scenes.
    """
    if scenes is None:
        scenes = [random_video_scene(rng) for _ in range(n)]
    elif len(scenes) != n:
        raise ValueError(f"Got n={n} but {len(scenes)} scenes.")
    pixels = np.stack([render_clip(scene, rng, resolution, frames) for scene in scenes])  # [n, F, H, W, 3] uint8
    clips = torch.from_numpy(pixels).permute(0, 1, 4, 2, 3).float().div(127.5).sub(1.0)
    return clips.contiguous(), list(scenes)


# ----------------------------------------------------------------------------- classifier
# The (colour, shape, motion) classifier is the image world's AttributeClassifier on clips whose
# frames are stacked as channels ([B, F*3, H, W]): its first convolution sees every frame, so
# displacement between frames is as visible to it as colour is.
VIDEO_CLASSIFIER_CHANNELS = (32, 48, 64)
VIDEO_RECREATE_COMMAND = "python scripts/train_toy_classifier.py --video"


def stack_frames(clips: torch.Tensor) -> torch.Tensor:
    """clips [B, F, 3, H, W] -> [B, F*3, H, W] (frame-major channels)."""
    return clips.reshape(clips.shape[0], -1, *clips.shape[3:])


def build_video_classifier(frames: int = TOY_FRAMES):
    from drl.toyworld.classifier import AttributeClassifier

    return AttributeClassifier(VIDEO_ATTRIBUTES, channels=VIDEO_CLASSIFIER_CHANNELS, in_channels=3 * frames)


# Robustness augmentation of the classifier's training clips. A classifier trained on clean renders has
# gradients that point anywhere off the render manifold, and reward backprop finds them (the clips turn
# into patterns it scores highly); one trained on heavily noised, flickering clips has smoother,
# more perceptual gradients (the randomised-smoothing effect), so the reward is much harder to hack.
AUGMENT_NOISE_MAX = 0.5  # per-clip Gaussian pixel-noise std ~ U(0, this), [-1, 1] units
AUGMENT_FLICKER_MAX = 0.15  # per-frame brightness offset ~ U(-this, this)


def augment_clips(clips: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """clips [n, F, 3, H, W] in [-1, 1] -> the same with per-clip pixel noise and per-frame flicker (unclipped)."""
    n, f = clips.shape[:2]
    noise_std = rng.uniform(0.0, AUGMENT_NOISE_MAX, size=(n, 1, 1, 1, 1))
    flicker = rng.uniform(-AUGMENT_FLICKER_MAX, AUGMENT_FLICKER_MAX, size=(n, f, 1, 1, 1))
    noise = rng.standard_normal(clips.shape) * noise_std + flicker
    return clips + torch.from_numpy(noise).float()


def stacked_clip_sampler(frames: int = TOY_FRAMES, augment: bool = True):
    """A classifier sampler: (n, rng, resolution) -> (stacked clips [n, F*3, H, W], scenes); the clips are in
    [-1, 1] plus `augment_clips` noise when `augment` (training and the held-out check see the same noise)."""

    def sample(n: int, rng: np.random.Generator, resolution: int) -> tuple[torch.Tensor, list[VideoScene]]:
        clips, scenes = sample_clips(n, rng, resolution, frames)
        return stack_frames(augment_clips(clips, rng) if augment else clips), scenes

    return sample


def load_video_classifier(directory, device: torch.device | str = "cpu"):
    from drl.toyworld.classifier import load_classifier

    return load_classifier(directory, device, VIDEO_ATTRIBUTES, VIDEO_RECREATE_COMMAND)


@torch.no_grad()
def attribute_spread(model, attribute: str, reference: VideoScene = VideoScene("red", "circle", "moving left")) -> float:
    """How far apart a text encoder keeps the values of one attribute: the mean pairwise L2 distance of its
    states [L, D] for prompts that differ only in that attribute (e.g. all 5 motions of a red circle).

    A text encoder trained jointly on captions whose motion words are mostly wrong learns to map every motion to
    nearly the same states; then no update of the denoiser alone (AlignProp, DDPO) can make clips follow motion.
    """
    prompts = [reference.replace(**{attribute: value}).prompt for value in VIDEO_ATTRIBUTES[attribute]]
    states = model.encode_prompts(prompts)["encoder_hidden_states"].flatten(1).float()  # [n, L * D]
    n = len(prompts)
    return float(torch.cdist(states, states).sum() / (n * (n - 1)))
