"""The classifier-free hacking monitors: real toy renders against noise, washed-out frames and by hand."""

import numpy as np
import pytest
import torch

from drl.errors import ConfigError
from drl.rewards import build_reward
from drl.rewards.pixel_stats import background_fraction, high_frequency_energy, per_frame
from drl.toyworld.video import sample_clips

from conftest import compose_config


@pytest.fixture(scope="module")
def renders() -> torch.Tensor:
    clips, _ = sample_clips(32, np.random.default_rng(0))
    return (clips + 1) / 2  # [32, F, 3, H, W] in [0, 1]


def test_renders_are_mostly_background_and_smooth(renders):
    background, texture = per_frame(background_fraction, renders), per_frame(high_frequency_energy, renders)  # [32] each
    assert background.shape == texture.shape == (32,)
    assert 0.7 < float(background.min()) and float(background.max()) < 0.95  # one object of ~10-25% of the frame
    assert float(texture.max()) < 0.006


def test_noise_and_washed_out_frames_are_not(renders):
    noise = torch.rand(renders.shape, generator=torch.Generator().manual_seed(0))
    assert float(per_frame(background_fraction, noise).max()) < 0.05
    assert float(per_frame(high_frequency_energy, noise).min()) > 10 * float(per_frame(high_frequency_energy, renders).max())
    pale = 0.5 * renders + 0.5  # halfway to white: the background is no longer a dark-to-mid grey
    assert float(per_frame(background_fraction, pale).max()) == 0.0
    textured = (renders + 0.1 * torch.randn(renders.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert float(per_frame(background_fraction, textured).mean()) < 0.5 * float(per_frame(background_fraction, renders).mean())


def test_high_frequency_energy_by_hand():
    flat = torch.full((1, 3, 5, 5), 0.3)
    assert float(high_frequency_energy(flat)) < 1e-12  # replicate padding: a flat image has no edges
    impulse = torch.zeros(1, 3, 5, 5)
    impulse[..., 2, 2] = 1.0  # the centre differs from its blur by 8/9, its 8 neighbours by -1/9
    torch.testing.assert_close(high_frequency_energy(impulse), torch.tensor([(64 / 81 + 8 / 81) / 25]))


def test_toy_motion_watches_the_pixel_statistics_on_clips():
    cfg = compose_config(["model=toy_t2v", "reward=toy_motion"])
    assert {"frames_toy_background", "frames_high_frequency"} <= set(cfg.reward.monitor)
    reward = build_reward(cfg.reward, torch.device("cpu"), video=True)
    clips = torch.rand(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    _, terms = reward(clips, ["a red circle moving right", "a blue square moving up"], [{}, {}])
    assert terms["frames_toy_background"].shape == terms["frames_high_frequency"].shape == (2,)
    assert float(terms["frames_toy_background"].max()) < 0.05  # uniform noise is not background


def test_alignprop_refuses_the_background_count_as_a_term(random_toy_model):
    from drl.train import build_context

    cfg = compose_config([f"model.path={random_toy_model}", "algorithm=alignprop", "reward=toy_aesthetic", "+reward.terms.toy_background=0.5"])
    with pytest.raises(ConfigError, match="toy_background is not"):
        build_context(cfg)


def test_the_centroid_of_a_render_moves_as_prompted():
    from drl.rewards.pixel_stats import centroid_direction_accuracy, object_centroids
    from drl.toyworld.video import MOTION_DIRECTIONS, VideoScene, sample_clips

    scenes = [VideoScene(c, "square", m) for c in ("red", "cyan") for m in ("moving left", "moving right", "moving up", "moving down")]
    clips, _ = sample_clips(len(scenes), np.random.default_rng(3), scenes=scenes)
    directions = torch.tensor([MOTION_DIRECTIONS[s.motion] for s in scenes])  # [8, 2]
    assert float(centroid_direction_accuracy((clips + 1) / 2, directions).mean()) == 1.0
    assert float(centroid_direction_accuracy((clips + 1) / 2, -directions).mean()) == 0.0
    track = object_centroids((clips + 1) / 2)  # [8, F, 2]
    travel = ((track[:, -1] - track[:, 0]) * directions).sum(1)  # along the prompt, fraction of the width
    assert float(travel.min()) > 0.2  # the renderer moves the shape 0.4 of the width; the border-based weights damp it


def test_target_colour_is_minus_the_mean_squared_distance_to_the_colour_with_its_gradient():
    """Two 1x2 images by hand against blue: (0, 0.5, 1 | 1, 0, 1) -> -(0 + 0.25 + 0 + 1 + 0 + 0) / 6; a blue image -> 0."""
    reward = build_reward(compose_config(["reward=target_colour"]).reward, torch.device("cpu"))
    images = torch.tensor([[[[0.0, 1.0]], [[0.5, 0.0]], [[1.0, 1.0]]], [[[0.0, 0.0]], [[0.0, 0.0]], [[1.0, 1.0]]]], requires_grad=True)
    scores, _ = reward(images, ["a", "b"], [{}, {}])
    torch.testing.assert_close(scores, torch.tensor([-1.25 / 6, 0.0]))
    scores[0].backward()  # d/dx of -mean (x - t)^2 = -2 (x - t) / 6 per pixel and channel
    torch.testing.assert_close(images.grad[0], -2 * (images[0].detach() - torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)) / 6)
    green = build_reward(compose_config(["reward=target_colour", "reward.target_rgb=[0,1,0]"]).reward, torch.device("cpu"))
    assert float(green(images.detach()[1:], ["b"], [{}])[0]) == pytest.approx(-4 / 6)  # G off by 1 and B by 1, at both pixels
    with pytest.raises(ConfigError, match=r"^reward\.target_rgb=\[0\.0, 2\.0\] must be three numbers in \[0, 1\]"):
        compose_config(["reward=target_colour", "reward.target_rgb=[0,2]"])
