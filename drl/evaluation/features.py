"""Feature extractors: samples in [0, 1] -> one feature vector per sample, for FID, KID and diversity.

Every extractor is a frozen ``nn.Module`` with a ``num_features`` attribute (what torchmetrics' FID and KID
read when given a custom extractor) whose forward takes images [B, 3, H, W] or clips [B, F, 3, H, W] in
[0, 1] and returns [B, D] float32:

    toy          the shipped toy classifier's pooled features (images: drl:toy_classifier, clips: drl:toy_video_classifier)
    clip         a local CLIP image encoder's L2-normalised embedding (clips: the mean over frames)
    inception    torchmetrics' InceptionV3 (needs torch-fidelity and its weights file on disk; nothing is downloaded)
    pixels       the sample itself, average-pooled to 16 x 16 (no weights at all: a crude last resort)

``auto`` picks toy for the toy models, clip when a CLIP path is given, else pixels (its name goes into the
results, so the choice is never silent).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from drl.config import QUALITY_FEATURES
from drl.errors import ConfigError

FEATURES = tuple(k for k in QUALITY_FEATURES if k != "none")
PIXEL_SIDE = 16  # pixels: samples are pooled to 16 x 16 before flattening (768 features per frame)
TOY_IMAGE_SIDE = 32  # the toy image classifier was trained on 32 x 32 renders


class FeatureExtractor(nn.Module):
    """Frozen, eval-mode base: ``name`` and ``num_features`` say what it computes."""

    name: str = ""
    num_features: int = 0

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)  # never leaves eval mode (GroupNorm, dropout in CLIP)


class ToyFeatures(FeatureExtractor):
    """The toy classifier's pooled features [B, C]: what it reads to tell colour, shape, position (or motion)."""

    name = "toy"

    def __init__(self, classifier: nn.Module, video: bool):
        super().__init__()
        self.classifier, self.video = classifier.eval().requires_grad_(False), video
        self.num_features = classifier.channels[-1]

    @torch.no_grad()
    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        x = samples.float() * 2 - 1  # the classifiers read [-1, 1]
        if self.video:
            x = x.reshape(x.shape[0], -1, *x.shape[3:])  # [B, F*3, H, W], frame-major (toyworld.video.stack_frames)
        elif x.shape[-1] != TOY_IMAGE_SIDE:
            x = F.interpolate(x, size=TOY_IMAGE_SIDE, mode="bilinear", align_corners=False)
        return self.classifier.embed(x).float()


class ClipFeatures(FeatureExtractor):
    """A CLIP image encoder's L2-normalised projected embedding [B, E]; clips average their frames' embeddings."""

    name = "clip"

    def __init__(self, path: str, device: torch.device | str = "cpu"):
        super().__init__()
        from drl.rewards.clip import ClipEmbedder

        self.embedder = ClipEmbedder(path, "CLIP model (evaluation features)", "openai/clip-vit-large-patch14", device)
        self.model = self.embedder.model  # registered, so .to() moves it
        self.num_features = self.model.config.projection_dim

    @torch.no_grad()
    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        if samples.ndim == 5:  # [B, F, 3, H, W]
            b, f = samples.shape[:2]
            per_frame = self.embedder.image_embeds(samples.reshape(b * f, *samples.shape[2:]).float())
            return per_frame.view(b, f, -1).mean(1).float()
        return self.embedder.image_embeds(samples.float()).float()


class InceptionFeatures(FeatureExtractor):
    """torchmetrics' FID InceptionV3 (2048-d pool features) from a weights file the user already has."""

    name = "inception"
    num_features = 2048

    def __init__(self, weights_path: str | None):
        super().__init__()
        if not weights_path or not Path(weights_path).expanduser().is_file():
            raise FileNotFoundError(
                f"quality.inception_weights={weights_path!r} is not a file: Inception features need torch-fidelity's "
                "pt_inception-2015-12-05-6726825d.pth on disk (drl downloads nothing); or use quality.features=toy, clip or pixels."
            )
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.inception = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(Path(weights_path).expanduser()))
        except ModuleNotFoundError:
            raise ConfigError("quality.features=inception needs torch-fidelity: `pip install torch-fidelity`.") from None

    @torch.no_grad()
    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        frames = samples.reshape(-1, *samples.shape[-3:]) if samples.ndim == 5 else samples
        out = self.inception((frames.float().clamp(0, 1) * 255).round().to(torch.uint8)).float()  # [B(*F), 2048]
        return out.view(samples.shape[0], -1, out.shape[-1]).mean(1) if samples.ndim == 5 else out


class PixelFeatures(FeatureExtractor):
    """The sample average-pooled to 16 x 16 and flattened (frames concatenated): no weights needed."""

    name = "pixels"

    def __init__(self, frames: int = 1):
        super().__init__()
        self.num_features = 3 * PIXEL_SIDE * PIXEL_SIDE * frames

    @torch.no_grad()
    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        frames = samples.reshape(-1, *samples.shape[-3:]).float()  # [B*F, 3, H, W]
        pooled = F.adaptive_avg_pool2d(frames, PIXEL_SIDE)
        return pooled.reshape(samples.shape[0], -1)


def is_toy_model(model) -> bool:
    """The toy world's models (shipped, pretrained or fine-tuned from them) are the pixel-space ones: no VAE."""
    return getattr(model, "vae", None) is None


def build_features(
    kind: str,
    *,
    video: bool,
    toy: bool,
    num_frames: int = 1,
    clip_path: str | None = None,
    inception_weights: str | None = None,
    classifier_path: str = "drl:toy_classifier",
    video_classifier_path: str = "drl:toy_video_classifier",
    device: torch.device | str = "cpu",
) -> FeatureExtractor:
    """The extractor ``kind`` names (see the module docstring); ``auto`` resolves as described there."""
    if kind not in FEATURES:
        raise ConfigError(f"quality.features={kind!r} is not one of {', '.join(FEATURES)}.")
    if kind == "auto":
        kind = "toy" if toy else "clip" if clip_path else "pixels"
    if kind == "toy":
        from drl.models.t2i import resolve_path
        from drl.toyworld.classifier import load_classifier
        from drl.toyworld.video import load_video_classifier

        if video:
            return ToyFeatures(load_video_classifier(resolve_path(video_classifier_path), device), video=True)
        return ToyFeatures(load_classifier(resolve_path(classifier_path), device), video=False)
    if kind == "clip":
        if not clip_path:
            raise ConfigError("quality.features=clip needs quality.clip_path (a local transformers CLIP directory).")
        return ClipFeatures(clip_path, device)
    if kind == "inception":
        return InceptionFeatures(inception_weights).to(device)
    return PixelFeatures(num_frames if video else 1)


@torch.no_grad()
def extract(extractor: FeatureExtractor, samples: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """samples [N, ...] in [0, 1] -> features [N, D] float32 on the CPU, batch_size samples per call."""
    device = next(iter(extractor.parameters()), torch.empty(0)).device
    return torch.cat([extractor(chunk.to(device)).cpu() for chunk in samples.split(batch_size)])
