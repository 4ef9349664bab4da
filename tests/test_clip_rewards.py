"""CLIP-based rewards on a tiny random CLIP saved to disk: values against transformers' own
processing and forward pass, gradients to the pixels, and a clear error for missing weights."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel

from drl.config import RewardConfig
from drl.testing.tiny import save_tiny_aesthetic_head, save_tiny_clip
from drl.rewards import build_reward
from drl.rewards.clip import AestheticHead, ImagePreprocess

PROMPTS = ["a cat", "a red cube"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("clip")
    save_tiny_clip(directory)
    save_tiny_aesthetic_head(directory / "aesthetic_head.pth")
    return directory


def _images(size=16, seed=0):
    """Two images with pixel values on the uint8 grid, so PIL and torch see the same input."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (2, 3, size, size), generator=g).float() / 255


def _reference_pixels(directory, images):
    processor = CLIPImageProcessor.from_pretrained(directory)
    pil = [Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().numpy()) for im in images]
    return torch.as_tensor(np.stack(processor(images=pil, return_tensors="np")["pixel_values"]))


def test_preprocessing_matches_clips_image_processor(clip_dir):
    ours = ImagePreprocess.from_dir(clip_dir, 224)
    images = _images(16)  # already at CLIP's size: normalisation only, must be exact
    torch.testing.assert_close(ours(images), _reference_pixels(clip_dir, images), atol=1e-5, rtol=1e-5)
    larger = _images(32, seed=1)  # resized 32 -> 16: torch's antialiased bicubic vs PIL's, close
    assert (ours(larger) - _reference_pixels(clip_dir, larger)).abs().mean() < 0.05


def test_clip_score_and_pickscore_match_clips_forward(clip_dir):
    cfg = RewardConfig(
        terms={"clip_score": 1.0, "pickscore": 1.0},
        clip_path=str(clip_dir),
        pickscore_path=str(clip_dir),
        pickscore_processor_path=None,
    )
    images = _images(16)
    _, terms = build_reward(cfg, "cpu")(images, PROMPTS, [{}, {}])
    model = CLIPModel.from_pretrained(clip_dir).eval()
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(clip_dir)(PROMPTS, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        logits = model(**tokens, pixel_values=_reference_pixels(clip_dir, images)).logits_per_image  # [2, 2]
    torch.testing.assert_close(terms["pickscore"], logits.diagonal(), atol=1e-4, rtol=1e-4)  # exp(scale) · cos
    torch.testing.assert_close(terms["clip_score"], logits.diagonal() / model.logit_scale.exp(), atol=1e-5, rtol=1e-5)


def test_aesthetic_loads_laions_head_format_and_is_differentiable(clip_dir):
    state = torch.load(clip_dir / "aesthetic_head.pth", weights_only=True)
    assert sorted({k.split(".")[1] for k in state}) == ["0", "2", "4", "6", "7"]  # the public checkpoint's keys
    cfg = RewardConfig(
        terms={"aesthetic": 1.0}, aesthetic_clip_path=str(clip_dir), aesthetic_head_path=str(clip_dir / "aesthetic_head.pth")
    )
    reward = build_reward(cfg, "cpu")
    assert reward.differentiable
    images = _images(16).requires_grad_(True)
    scores, _ = reward(images, PROMPTS, [{}, {}])
    # Reference: transformers' processor and features, the head applied by hand.
    model = CLIPModel.from_pretrained(clip_dir).eval()
    head = AestheticHead(state["layers.0.weight"].shape[1])
    head.load_state_dict(state)
    with torch.no_grad():
        features = model.get_image_features(pixel_values=_reference_pixels(clip_dir, images.detach()))
        features = features if isinstance(features, torch.Tensor) else features.pooler_output
        expected = head.eval()(features / features.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(scores.detach(), expected, atol=1e-5, rtol=1e-5)
    scores.sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_reward_frames_aesthetic_is_the_laion_aesthetic_on_frames(clip_dir):
    """reward=frames_aesthetic (VADER's reward for real video models) scores frames with the LAION aesthetic,
    not the toy one: with every frame scored (frame_subset=0) it is the mean of the image reward over frames."""
    from conftest import compose_config

    paths = [f"reward.aesthetic_clip_path={clip_dir}", f"reward.aesthetic_head_path={clip_dir / 'aesthetic_head.pth'}"]
    cfg = compose_config(["model=toy_t2v", "reward=frames_aesthetic", "reward.frame_subset=0", *paths])
    assert cfg.reward.terms == {"frames_aesthetic": 1.0}
    clips = torch.rand(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0))  # [B, F, 3, H, W]
    scores, terms = build_reward(cfg.reward, "cpu", video=True)(clips, PROMPTS, [{}, {}])
    image = build_reward(RewardConfig(terms={"aesthetic": 1.0}, aesthetic_clip_path=str(clip_dir),
                                      aesthetic_head_path=str(clip_dir / "aesthetic_head.pth")), "cpu")  # fmt: skip
    per_frame, _ = image(clips.flatten(0, 1), [p for p in PROMPTS for _ in range(3)], [{}] * 6)
    torch.testing.assert_close(scores, per_frame.view(2, 3).mean(1), atol=1e-6, rtol=1e-6)
    assert list(terms) == ["frames_aesthetic"]


@pytest.mark.parametrize(
    "terms, key, command",
    [
        ({"aesthetic": 1.0}, "aesthetic_clip_path", "huggingface-cli download openai/clip-vit-large-patch14"),
        ({"clip_score": 1.0}, "clip_path", "huggingface-cli download openai/clip-vit-large-patch14"),
        ({"pickscore": 1.0}, "pickscore_path", "huggingface-cli download yuvalkirstain/PickScore_v1"),
    ],
)
def test_missing_reward_weights_name_the_path_and_the_download(tmp_path, terms, key, command):
    missing = str(tmp_path / "not-here")
    with pytest.raises(FileNotFoundError) as info:
        build_reward(RewardConfig(terms=terms, **{key: missing}), "cpu")
    message = str(info.value)
    assert missing in message and command in message and message.count(". ") == 0


def test_missing_aesthetic_head_names_the_wget_command(tmp_path, clip_dir):
    cfg = RewardConfig(
        terms={"aesthetic": 1.0}, aesthetic_clip_path=str(clip_dir), aesthetic_head_path=str(tmp_path / "head.pth")
    )
    with pytest.raises(FileNotFoundError, match="No LAION aesthetic head found at .*head.pth.*wget https://"):
        build_reward(cfg, "cpu")
