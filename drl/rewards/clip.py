"""CLIP-based rewards, differentiable end to end: LAION aesthetic score, CLIP score, PickScore.

All three share one loader and one image preprocessing written with torch ops (resize the
short side with bicubic interpolation, centre-crop, normalise), so gradients reach the
pixels and AlignProp can use them:

    aesthetic   LAION's improved aesthetic predictor (Schuhmann 2022): an MLP head on the
                L2-normalised CLIP ViT-L/14 image embedding; loads the public head's state dict
                (sac+logos+ava1-l14-linearMSE.pth: keys layers.{0,2,4,6,7}.{weight,bias}).
    clip_score  cosine similarity of the image and prompt embeddings (Hessel et al. 2021, without the ×2.5).
    pickscore   PickScore (Kirstain et al. 2023): a fine-tuned CLIP-H; score = exp(logit_scale) · cosine.

Weights are read from local paths in the reward config; a missing path is one sentence naming
it and the command that downloads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from drl.rewards.base import Reward

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AESTHETIC_HEAD_URL = (
    "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac+logos+ava1-l14-linearMSE.pth"
)


def require_path(path: str, what: str, download: str) -> Path:
    local = Path(path).expanduser()
    if not local.exists():
        raise FileNotFoundError(f"No {what} found at {str(local)!r}: download it first with `{download}`.")
    return local


def hub_download(repo: str, path: str) -> str:
    return f"huggingface-cli download {repo} --local-dir {path}"


@dataclass
class ImagePreprocess:
    """CLIPImageProcessor's resize -> centre-crop -> normalise, as differentiable torch ops."""

    size: int
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    @classmethod
    def from_dir(cls, directory: Path, default_size: int) -> ImagePreprocess:
        config_file = directory / "preprocessor_config.json"
        if not config_file.is_file():
            return cls(default_size)
        config = json.loads(config_file.read_text())
        crop = config.get("crop_size", default_size)
        size = crop["height"] if isinstance(crop, dict) else int(crop)
        return cls(size, tuple(config.get("image_mean", CLIP_MEAN)), tuple(config.get("image_std", CLIP_STD)))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> CLIP pixel values [B, 3, size, size]."""
        h, w = images.shape[-2:]
        scale = self.size / min(h, w)
        new_h, new_w = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        x = F.interpolate(images.float(), size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=new_h < h)
        top, left = (new_h - self.size) // 2, (new_w - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size]
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


class ClipEmbedder:
    """A frozen transformers CLIPModel with its tokenizer and differentiable preprocessing."""

    def __init__(
        self, path: str, what: str, repo: str, device: torch.device | str,
        processor_path: str | None = None, processor_repo: str | None = None,
    ):  # fmt: skip
        from transformers import AutoTokenizer, CLIPModel

        directory = require_path(path, what, hub_download(repo, path))
        processor_dir = directory
        if processor_path:  # tokenizer + preprocessor_config.json kept elsewhere (PickScore's live in laion's CLIP-H repo)
            processor_dir = require_path(
                processor_path, f"{what} processor", hub_download(processor_repo or repo, processor_path)
            )
        self.model = CLIPModel.from_pretrained(directory).to(device).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(processor_dir)
        self.preprocess = ImagePreprocess.from_dir(processor_dir, self.model.config.vision_config.image_size)
        self.device = device

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> L2-normalised projected image embeddings [B, E]."""
        return F.normalize(_features(self.model.get_image_features(pixel_values=self.preprocess(images))), dim=-1)

    def text_embeds(self, prompts: list[str]) -> torch.Tensor:
        """prompts -> L2-normalised projected text embeddings [B, E]."""
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, return_tensors="pt").to(self.device)
        return F.normalize(_features(self.model.get_text_features(**tokens)), dim=-1)


def _features(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output is the projection (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class AestheticHead(torch.nn.Module):
    """LAION's improved-aesthetic-predictor MLP; ``layers`` indices match the public state dict."""

    def __init__(self, input_dim: int = 768):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(input_dim, 1024), torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16), torch.nn.Linear(16, 1),
        )  # fmt: skip

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.layers(embeds).squeeze(-1)


def load_aesthetic_head(path: str, device: torch.device | str) -> AestheticHead:
    """The head from a .pth/.pt (torch.save of the state dict, as LAION publishes it) or a .safetensors file."""
    local = require_path(path, "LAION aesthetic head", f"wget {AESTHETIC_HEAD_URL} -O {path}")
    if local.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(local))
    else:
        state = torch.load(local, map_location="cpu", weights_only=True)
    head = AestheticHead(state["layers.0.weight"].shape[1])
    head.load_state_dict(state)
    return head.to(device).eval().requires_grad_(False)


def aesthetic(clip_path: str, head_path: str, device: torch.device | str) -> Reward:
    """LAION aesthetic score (about 1-10) of each image."""
    clip = ClipEmbedder(clip_path, "CLIP ViT-L/14 (aesthetic reward)", "openai/clip-vit-large-patch14", device)
    head = load_aesthetic_head(head_path, device)
    return Reward("aesthetic", lambda s, p, m: head(clip.image_embeds(s)).float(), differentiable=True)


def clip_score(clip_path: str, device: torch.device | str) -> Reward:
    """Cosine similarity between each image and its prompt under CLIP."""
    clip = ClipEmbedder(clip_path, "CLIP model (clip_score reward)", "openai/clip-vit-large-patch14", device)
    return Reward("clip_score", lambda s, p, m: (clip.image_embeds(s) * clip.text_embeds(p)).sum(-1).float(), differentiable=True)


def pickscore(model_path: str, processor_path: str | None, device: torch.device | str) -> Reward:
    """PickScore: exp(logit_scale) · cosine(image, prompt) under the PickScore CLIP model."""
    clip = ClipEmbedder(
        model_path,
        "PickScore model",
        "yuvalkirstain/PickScore_v1",
        device,
        processor_path,
        "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    )
    scale = float(clip.model.logit_scale.exp())

    def score(samples: torch.Tensor, prompts: list, metadata: list) -> torch.Tensor:
        return (scale * (clip.image_embeds(samples) * clip.text_embeds(prompts)).sum(-1)).float()

    return Reward("pickscore", score, differentiable=True)
