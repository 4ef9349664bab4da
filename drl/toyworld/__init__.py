"""Toy world: procedural coloured-shape images, their prompts, and the alignment classifier."""

from drl.toyworld.classifier import (
    AttributeClassifier,
    alignment_log_prob,
    load_classifier,
    save_classifier,
    train_classifier,
)
from drl.toyworld.world import (
    ATTRIBUTES,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    all_scenes,
    corrupt_caption,
    random_scene,
    render,
    sample_images,
    vocabulary,
)

__all__ = [
    "ATTRIBUTES",
    "COLOURS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "AttributeClassifier",
    "Scene",
    "alignment_log_prob",
    "all_scenes",
    "corrupt_caption",
    "load_classifier",
    "random_scene",
    "render",
    "sample_images",
    "save_classifier",
    "train_classifier",
    "vocabulary",
]
