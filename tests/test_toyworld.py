"""Tests for the procedural toy world and its prompt-alignment classifier."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from drl.toyworld import (
    ATTRIBUTES,
    COLOURS,
    AttributeClassifier,
    Scene,
    alignment_log_prob,
    all_scenes,
    corrupt_caption,
    load_classifier,
    random_scene,
    render,
    sample_images,
    save_classifier,
    vocabulary,
)
from drl.toyworld.classifier import attribute_targets
from drl.toyworld.world import COLOUR_RGB, POSITION_CENTRES, SIZE_FRACTIONS, shape_coverage

SHIPPED_CLASSIFIER = Path(__file__).resolve().parent.parent / "drl" / "assets" / "toy_classifier"
UNSEEN_SEED = 12345  # the shipped classifier was trained and validated on seed 0 streams


def shape_mask(image: np.ndarray) -> np.ndarray:
    """Pixels belonging to the shape: [H, W] bool.

    The background is grey (R = G = B, noise is shared across channels) while every
    shape colour is saturated, so channel spread separates them.
    """
    channels = image.astype(np.int32)
    return channels.max(axis=-1) - channels.min(axis=-1) > 40


@pytest.fixture(scope="module")
def classifier() -> AttributeClassifier:
    torch.set_num_threads(2)
    return load_classifier(SHIPPED_CLASSIFIER)


# --- scenes and prompts ---------------------------------------------------------------


def test_all_scenes_are_unique_and_complete():
    scenes = all_scenes()
    assert len(scenes) == 180 == len(set(scenes))
    assert scenes[0] == Scene("red", "circle", "top left", "small")


def test_prompt_round_trip_for_every_scene():
    for scene in all_scenes():
        assert Scene.from_prompt(scene.prompt) == scene
    assert Scene("red", "circle", "top left", "small").prompt == "a small red circle at the top left"
    assert Scene("blue", "square", "center", "large").prompt == "a large blue square at the center"


@pytest.mark.parametrize(
    "text",
    ["a small red circle", "a tiny red circle at the top left", "a small red hexagon at the center", "hello"],
)
def test_from_prompt_rejects_other_text(text):
    with pytest.raises(ValueError, match="Prompt"):
        Scene.from_prompt(text)


def test_vocabulary_covers_every_prompt_word():
    words = vocabulary()
    assert words == sorted(set(words))
    used = {word for scene in all_scenes() for word in scene.prompt.split()}
    assert used == set(words)


def test_random_scene_is_deterministic_and_covers_every_value():
    scenes = [random_scene(np.random.default_rng(7)) for _ in range(2)]
    assert scenes[0] == scenes[1]
    rng = np.random.default_rng(0)
    drawn = [random_scene(rng) for _ in range(500)]
    for attribute, values in ATTRIBUTES.items():
        assert {getattr(scene, attribute) for scene in drawn} == set(values)


# --- rendering ------------------------------------------------------------------------


def test_render_is_deterministic_with_expected_shape_and_dtype():
    scene = Scene("green", "triangle", "bottom right", "large")
    first = render(scene, np.random.default_rng(3))
    second = render(scene, np.random.default_rng(3))
    other = render(scene, np.random.default_rng(4))
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
    assert render(scene, np.random.default_rng(3), resolution=64).shape == (64, 64, 3)


def test_shape_colour_is_closest_to_the_scene_colour():
    rng = np.random.default_rng(1)
    for scene in all_scenes()[::7]:
        image = render(scene, rng)
        mean_colour = image[shape_mask(image)].mean(axis=0)
        distances = {name: np.linalg.norm(mean_colour - np.array(rgb)) for name, rgb in COLOUR_RGB.items()}
        assert min(distances, key=distances.get) == scene.colour


def test_appearance_jitter_tints_the_background_but_keeps_the_colour_name():
    rng = np.random.default_rng(2)
    tints = []
    for scene in all_scenes()[::5]:
        image = render(scene, rng, appearance_jitter=True).astype(np.float64)
        coverage = shape_coverage(scene.shape, *_centre_px(scene), SIZE_FRACTIONS[scene.size] * 32, 32)
        corner = image[:3, :3].reshape(-1, 3).mean(0) if coverage[:3, :3].max() == 0 else image[-3:, -3:].reshape(-1, 3).mean(0)
        tints.append(corner.max() - corner.min())  # a grey background has equal channels
        mean_colour = image[coverage > 0.99].mean(axis=0)
        distances = {name: np.linalg.norm(mean_colour - np.array(rgb)) for name, rgb in COLOUR_RGB.items()}
        assert min(distances, key=distances.get) == scene.colour
    assert np.median(tints) > 10


def test_appearance_jitter_off_is_the_plain_render():
    scene = Scene("green", "square", "center", "large")
    np.testing.assert_array_equal(render(scene, np.random.default_rng(9)), render(scene, np.random.default_rng(9), appearance_jitter=False))


def _centre_px(scene: Scene) -> tuple[float, float]:
    """Nominal shape centre in pixels of a 32 px image (jitter moves it by at most 2 px)."""
    fx, fy = POSITION_CENTRES[scene.position]
    return fx * 32, fy * 32


def test_shape_centre_of_mass_lies_in_the_named_region():
    rng = np.random.default_rng(2)
    for scene in all_scenes():
        mask = shape_mask(render(scene, rng))
        ys, xs = np.nonzero(mask)
        centre_x, centre_y = xs.mean() + 0.5, ys.mean() + 0.5  # pixel centres, in pixels
        if scene.position == "center":
            assert abs(centre_x - 16) < 4 and abs(centre_y - 16) < 4, scene
        else:
            vertical, horizontal = scene.position.split()
            assert (centre_y < 16) == (vertical == "top"), scene
            assert (centre_x < 16) == (horizontal == "left"), scene


def test_large_shapes_cover_more_pixels_than_small():
    rng = np.random.default_rng(3)
    for scene in all_scenes():
        if scene.size == "small":
            small = shape_mask(render(scene, rng)).sum()
            large = shape_mask(render(scene.replace(size="large"), rng)).sum()
            assert large > 2 * small, scene


def test_shapes_fill_their_bounding_box_as_expected():
    # Square ~100%, circle ~pi/4, triangle ~1/2 of its bounding box.
    expected = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}
    rng = np.random.default_rng(4)
    for shape, fill in expected.items():
        mask = shape_mask(render(Scene("yellow", shape, "center", "large"), rng))
        ys, xs = np.nonzero(mask)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert abs(mask.sum() / box - fill) < 0.12, shape


def test_triangle_points_up():
    mask = shape_mask(render(Scene("red", "triangle", "center", "large"), np.random.default_rng(5)))
    rows = np.nonzero(mask.any(axis=1))[0]
    assert mask[rows[0]].sum() < mask[rows[-1]].sum()


def test_background_noise_varies_between_images():
    rng = np.random.default_rng(6)
    corner_stds = [render(Scene("red", "circle", "center", "small"), rng)[:6, :6, 0].std() for _ in range(30)]
    assert min(corner_stds) < 3 < max(corner_stds)


def test_sample_images_shapes_range_and_given_scenes():
    images, scenes = sample_images(5, np.random.default_rng(0))
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert len(scenes) == 5 and all(isinstance(scene, Scene) for scene in scenes)

    chosen = all_scenes()[:3]
    images, scenes = sample_images(3, np.random.default_rng(0), resolution=16, scenes=chosen)
    assert images.shape == (3, 3, 16, 16) and scenes == chosen
    with pytest.raises(ValueError):
        sample_images(2, np.random.default_rng(0), scenes=chosen)


# --- caption corruption ---------------------------------------------------------------


def test_corrupt_caption_with_rate_zero_is_identity():
    rng = np.random.default_rng(0)
    rates = {attribute: 0.0 for attribute in ATTRIBUTES}
    for scene in all_scenes():
        assert corrupt_caption(scene, rates, rng) == scene


def test_corrupt_caption_with_rate_one_resamples_uniformly():
    rng = np.random.default_rng(0)
    scene = Scene("red", "circle", "top left", "small")
    draws = 4000
    corrupted = [corrupt_caption(scene, {"colour": 1.0}, rng) for _ in range(draws)]
    changed = np.mean([item.colour != scene.colour for item in corrupted])
    assert abs(changed - (1 - 1 / len(COLOURS))) < 0.03
    assert all(item.replace(colour="red") == scene for item in corrupted)  # other attributes kept
    with pytest.raises(ValueError):
        corrupt_caption(scene, {"texture": 1.0}, rng)


# --- classifier -----------------------------------------------------------------------


def test_shipped_classifier_is_small(classifier):
    n_bytes = sum(parameter.numel() * 4 for parameter in classifier.parameters())
    assert n_bytes < 1_000_000


@pytest.mark.parametrize("appearance_jitter", [False, True], ids=["renders", "tinted-and-colour-shifted"])
def test_shipped_classifier_is_accurate_on_unseen_images(classifier, appearance_jitter):
    # Diffusion samples drift in tint and colour; the reward must read them as well as exact renders.
    rng = np.random.default_rng(UNSEEN_SEED + 3 * appearance_jitter)
    images, scenes = sample_images(600, rng, appearance_jitter=appearance_jitter)
    with torch.no_grad():
        logits = classifier(images)
    targets = attribute_targets(scenes)
    for attribute in ATTRIBUTES:
        accuracy = (logits[attribute].argmax(dim=-1) == targets[attribute]).float().mean().item()
        assert accuracy >= 0.95, (attribute, accuracy)


def test_alignment_prefers_the_true_colour(classifier):
    rng = np.random.default_rng(UNSEEN_SEED + 1)
    images, scenes = sample_images(200, rng)
    wrong = [scene.replace(colour=COLOURS[(COLOURS.index(scene.colour) + 1) % len(COLOURS)]) for scene in scenes]
    with torch.no_grad():
        true_score = alignment_log_prob(classifier, images, scenes)
        wrong_score = alignment_log_prob(classifier, images, wrong)
    assert true_score.shape == (200,)
    assert (true_score <= 0).all()
    assert true_score.mean() > wrong_score.mean() + 5
    assert (true_score > wrong_score).float().mean() > 0.95


def test_alignment_log_prob_is_differentiable_in_the_images(classifier):
    images, scenes = sample_images(4, np.random.default_rng(UNSEEN_SEED + 2))
    images.requires_grad_(True)
    alignment_log_prob(classifier, images, scenes).sum().backward()
    assert images.grad is not None
    assert images.grad.abs().sum() > 0
    assert torch.isfinite(images.grad).all()


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = AttributeClassifier(channels=(8, 8, 16, 16), groups=4).eval()
    save_classifier(model, tmp_path / "classifier")
    loaded = load_classifier(tmp_path / "classifier")
    images, _ = sample_images(3, np.random.default_rng(0))
    with torch.no_grad():
        for attribute, logits in model(images).items():
            torch.testing.assert_close(loaded(images)[attribute], logits)


def test_load_classifier_on_missing_directory_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as error:
        load_classifier(missing)
    assert str(missing) in str(error.value)
    assert "scripts/train_toy_classifier.py" in str(error.value)


def test_load_classifier_rejects_other_vocabularies(tmp_path):
    copy = tmp_path / "classifier"
    shutil.copytree(SHIPPED_CLASSIFIER, copy)
    config = json.loads((copy / "config.json").read_text())
    config["attributes"]["colour"] = config["attributes"]["colour"][:-1]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="vocabularies"):
        load_classifier(copy)
