"""drl.evaluation: FID/KID/CLIPScore against torchmetrics and hand-computed references, within-prompt
diversity by hand, determinism for a seed, and the reward-hacking verdict on constructed sample sets."""

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from drl.config import QualityConfig
from drl.evaluation.features import PixelFeatures, build_features, extract
from drl.evaluation.hacking import QualityProbe, hacking_warning
from drl.evaluation.metrics import clip_score, diversity, frechet_distance, kernel_distance, paired_distance
from drl.toyworld import Scene, all_scenes
from drl.toyworld.world import sample_images


def _renders(scenes, seed=0):
    """Toy renders [N, 3, 32, 32] in [0, 1]."""
    images, _ = sample_images(len(scenes), np.random.default_rng(seed), 32, scenes=scenes)
    return (images + 1) / 2


@pytest.fixture(scope="module")
def toy_features():
    return build_features("toy", video=False, toy=True)


@pytest.fixture(scope="module")
def two_sets():
    scenes = all_scenes()
    varied = _renders(scenes[::3])  # 60 scenes of every colour, shape, position
    blobs = _renders([Scene("yellow", "circle", "center", "large")] * 40, seed=1)  # the default run's collapse
    return varied, blobs


def test_fid_matches_torchmetrics_on_images_and_scipy_on_features(toy_features, two_sets):
    varied, blobs = two_sets
    ours = frechet_distance(extract(toy_features, varied), extract(toy_features, blobs))
    # torchmetrics called directly, with the same extractor reading the images itself.
    direct = FrechetInceptionDistance(feature=toy_features)
    direct.update(varied, real=True)
    direct.update(blobs, real=False)
    assert ours == pytest.approx(float(direct.compute()), rel=1e-4)
    # The textbook formula: |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2)).
    a, b = extract(toy_features, varied).double().numpy(), extract(toy_features, blobs).double().numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert ours == pytest.approx(reference, rel=1e-3)
    assert ours > 2 * frechet_distance(extract(toy_features, varied[:30]), extract(toy_features, varied[30:]))  # small-N bias included


def test_kid_matches_torchmetrics_and_the_unbiased_mmd_and_is_deterministic_for_a_seed(toy_features, two_sets):
    varied, blobs = two_sets
    f_real, f_fake = extract(toy_features, varied), extract(toy_features, blobs)
    mean, std = kernel_distance(f_real, f_fake, seed=3)
    direct = KernelInceptionDistance(feature=toy_features, subset_size=40)
    direct.update(varied, real=True)
    direct.update(blobs, real=False)
    torch.manual_seed(3)
    d_mean, d_std = direct.compute()
    assert (mean, std) == pytest.approx((float(d_mean), float(d_std)), rel=1e-4)
    assert kernel_distance(f_real, f_fake, seed=3) == (mean, std)  # same seed, same subsets
    state = torch.get_rng_state()
    kernel_distance(f_real, f_fake, seed=4)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    # With one subset of every sample (equal sizes), KID is the unbiased MMD^2 of the cubic polynomial kernel.
    x, y = f_real[:40].double(), f_fake.double()
    k = lambda p, q: (p @ q.T / x.shape[1] + 1) ** 3  # noqa: E731
    m = len(x)
    mmd = (k(x, x).sum() - k(x, x).trace() + k(y, y).sum() - k(y, y).trace()) / (m * (m - 1)) - 2 * k(x, y).mean()
    assert kernel_distance(x, y)[0] == pytest.approx(float(mmd), rel=1e-6)


def test_within_prompt_diversity_is_the_mean_pairwise_distance_within_each_prompt():
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [10.0, 10.0], [10.0, 12.0]])
    groups = ["a", "a", "a", "b", "b"]
    # a: |0-1|=5, |0-2|=1, |1-2|=sqrt(9+9)=4.243; b: 2 -> pooled over the 4 pairs
    assert diversity(features, groups) == pytest.approx((5 + 1 + 18**0.5 + 2) / 4)
    assert np.isnan(diversity(features, ["a", "b", "c", "d", "e"]))  # no prompt has two samples
    assert diversity(features[:2]) == pytest.approx(5.0)  # one group: the whole set
    assert paired_distance(features[:2], features[2:4]).tolist() == pytest.approx([1.0, (49 + 36) ** 0.5])


def test_clip_score_matches_100_times_the_cosine_under_the_same_clip(tmp_path):
    from transformers import AutoTokenizer, CLIPModel

    from drl.testing.tiny import save_tiny_clip
    from drl.rewards.clip import ImagePreprocess

    save_tiny_clip(tmp_path)
    images = torch.randint(0, 256, (3, 3, 16, 16), generator=torch.Generator().manual_seed(0)).float() / 255
    prompts = ["a cat", "a red cube", "a dog"]
    ours = clip_score(images, prompts, str(tmp_path))
    model = CLIPModel.from_pretrained(tmp_path).eval()
    tokens = AutoTokenizer.from_pretrained(tmp_path)(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        image = model.get_image_features(pixel_values=ImagePreprocess.from_dir(tmp_path, 16)(images))
        text = model.get_text_features(**tokens)
    image, text = [t if isinstance(t, torch.Tensor) else t.pooler_output for t in (image, text)]
    cosine = torch.nn.functional.cosine_similarity(image, text)
    assert ours == pytest.approx(max(float((100 * cosine).mean()), 0.0), abs=1e-3)
    with pytest.raises(FileNotFoundError, match="No CLIP model"):
        clip_score(images, prompts, str(tmp_path / "absent"))


def test_pixel_features_of_clips_concatenate_their_frames():
    clips = torch.rand(2, 3, 3, 32, 32)
    features = extract(PixelFeatures(frames=3), clips)
    assert features.shape == (2, 3 * 3 * 16 * 16)
    assert float(features[1, 0]) == pytest.approx(float(clips[1, 0, 0, :2, :2].mean()))  # frame 0, red, top-left 2x2
    assert float(features[1, 768]) == pytest.approx(float(clips[1, 1, 0, :2, :2].mean()))  # frame 1 follows


def test_the_probe_flags_a_collapse_while_the_reward_rises_and_nothing_else(tmp_path, toy_features, two_sets):
    varied, blobs = two_sets
    probe = QualityProbe(toy_features, QualityConfig(max_diversity_drop=0.3))
    n = 40
    quality = {"before": probe.observe(tmp_path, "before", varied[:n]), "after": probe.observe(tmp_path, "after", blobs)}
    assert (tmp_path / "eval_features.safetensors").is_file()
    summary, warning = probe.judge(quality, gain=0.2, gain_se=0.01)
    assert summary["eval/diversity_change"] < -0.5 and summary["eval/hacking_warning"] == 1
    assert warning.startswith("Possible reward hacking") and warning.count(". ") == 0  # one sentence
    assert summary["eval/distance_to_base"] > 0 and summary["eval/fid_to_base"] > 0
    assert probe.judge(quality, gain=0.01, gain_se=0.01)[1] is None  # the reward did not rise: no warning
    # Another varied set of the same scenes (a model that still follows prompts): no warning.
    kept = {"before": quality["before"], "after": probe.observe(tmp_path, "after", _renders(all_scenes()[::3][:n], seed=5))}
    summary, warning = probe.judge(kept, gain=0.2, gain_se=0.01)
    assert warning is None and abs(summary["eval/diversity_change"]) < 0.15
    assert hacking_warning({"diversity_change": -0.2}, 1.0, 0.1, max_drop=0.3) is None


def test_a_run_writes_diversity_and_distance_to_base_into_eval_json(tmp_path, tiny_config, random_toy_model):
    import json

    from drl.train import train

    train(tiny_config([f"model.path={random_toy_model}", "train.epochs=1", "quality.max_diversity_drop=0.5"]), tmp_path)
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    before, after, summary = evaluation["quality"]["before"], evaluation["quality"]["after"], evaluation["summary"]
    assert before["features"] == "toy" and before["diversity"] > 0  # the random toy model is pixel-space: toy features
    assert summary["eval/diversity_change"] == pytest.approx(after["diversity"] / before["diversity"] - 1)
    assert summary["eval/distance_to_base"] == after["distance_to_base"] > 0
    assert summary["eval/hacking_warning"] == int("warning" in evaluation)
    assert (tmp_path / "eval_features.safetensors").is_file()


def test_inception_features_need_their_weights_on_disk(tmp_path):
    from drl.errors import ConfigError

    with pytest.raises(FileNotFoundError, match="quality.inception_weights=None is not a file"):
        build_features("inception", video=False, toy=False)
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"")
    try:
        import torch_fidelity  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(ConfigError, match="needs torch-fidelity"):
            build_features("inception", video=False, toy=False, inception_weights=str(weights))
    with pytest.raises(ConfigError, match="quality.features='nope' is not one of"):
        build_features("nope", video=False, toy=True)
