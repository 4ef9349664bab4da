"""Wan2.2 (model=wan22) on tiny random pipelines of its two layouts (drl.testing.tiny), saved and loaded by path.

    T2V-A14B   transformer/ (high noise) and transformer_2/ (low noise) switched at boundary_ratio; LoRA on both
    TI2V-5B    one transformer, a timestep per latent token (expand_timesteps), Wan2.2's 16x residual VAE
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import SMALL, compose_config, lora_outputs, read_records, save_tiny_builds

from drl.errors import ConfigError
from drl.models.loading import load_t2v
from drl.models.wan import WanExperts
from drl.rollout import RolloutCollector
from drl.sampling import make_schedule
from drl.train import train

LAYOUTS = {"wan22": 32, "wan22_ti2v": 64}  # tiny builder -> frame side (4 x 4 latents in both)


@pytest.fixture(scope="module")
def wan22_dirs(tmp_path_factory) -> dict[str, str]:
    return save_tiny_builds(tmp_path_factory.mktemp("tiny_wan22"), LAYOUTS, num_frames=5)


def overrides(name: str, dirs: dict[str, str], *extra: str) -> list[str]:
    # no quality probe: its FID on the clips' pixel features (a 15360-d covariance) takes ~60 s here
    size = f"model.resolution={LAYOUTS[name]}"
    return ["model=wan22", f"model.path={dirs[name]}", *SMALL, size, "model.num_frames=5", "reward=frames_toy_aesthetic", "quality.features=none", *extra]


def test_the_layouts_are_read_from_model_index(wan22_dirs):
    a14b, ti2v = (load_t2v(wan22_dirs[name], 5) for name in LAYOUTS)
    assert json.loads((Path(wan22_dirs["wan22"]) / "model_index.json").read_text())["boundary_ratio"] == 0.875
    assert isinstance(a14b.denoiser, WanExperts) and a14b.denoiser.boundary == 875.0 and not a14b.expand_timesteps
    assert ti2v.expand_timesteps and ti2v.vae_scale_factor == 16 and ti2v.latent_shape(64) == (4, 2, 4, 4)


@pytest.mark.slow
@pytest.mark.parametrize("name", LAYOUTS)
def test_deterministic_chain_reproduces_wan_pipeline(wan22_dirs, name):
    """eta=0, 4 steps: the experts' switch (step 1 above the boundary, 2-4 below) and the per-token timesteps must
    match WanPipeline for the final latents to agree (float32, 1e-4)."""
    import diffusers

    model, size = load_t2v(wan22_dirs[name], 5), LAYOUTS[name]
    schedule = make_schedule(model.make_scheduler("flow"), 4)
    collector = RolloutCollector(model, schedule, eta=0.0, guidance_scale=1.0, batch_size=2, resolution=size, device=torch.device("cpu"))
    noise = torch.randn(2, *collector.latent_shape, generator=torch.Generator().manual_seed(0))
    prompts = ["a cat", "a red cube"]
    ours = collector.collect(prompts, [{}, {}], torch.Generator(), initial_noise=noise)
    pipe = diffusers.WanPipeline.from_pretrained(wan22_dirs[name])
    theirs = pipe(
        prompts, height=size, width=size, num_frames=5, num_inference_steps=4, guidance_scale=1.0, latents=noise.clone(),
        output_type="latent", max_sequence_length=model.max_sequence_length,
    ).frames  # fmt: skip
    torch.testing.assert_close(ours.latents[:, -1], theirs, atol=1e-4, rtol=1e-4)
    if name == "wan22":  # the low-noise expert is used: the high-noise one alone ends elsewhere
        model.denoiser.boundary = 0.0
        alone = collector.collect(prompts, [{}, {}], torch.Generator(), initial_noise=noise)
        assert (alone.latents[:, -1] - theirs).abs().max() > 1e-3


def test_experts_split_a_batch_of_mixed_timesteps(wan22_dirs):
    experts = load_t2v(wan22_dirs["wan22"], 5).denoiser
    x, text = torch.randn(3, 4, 2, 4, 4), torch.randn(3, 16, 16)
    t = torch.tensor([999.0, 300.0, 875.0])  # high, low, high (>= the boundary)
    with torch.no_grad():
        mixed = experts(x, t, text).sample
        high = experts.transformer(x, t, text).sample
        low = experts.transformer_2(x, t, text).sample
    torch.testing.assert_close(mixed[[0, 2]], high[[0, 2]], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(mixed[1], low[1], atol=1e-6, rtol=1e-5)


GRPO = ["algorithm=ddpo", "algorithm.group_size=2"]
NFT = ["algorithm=nft", "algorithm.group_size=2", "scheduler.eta=0"]


@pytest.mark.parametrize(
    "name, extra",
    [("wan22", GRPO), *[pytest.param(n, e, marks=pytest.mark.slow) for n, e in [("wan22", NFT), ("wan22_ti2v", GRPO), ("wan22_ti2v", NFT)]]],
)
def test_wan22_trains_two_epochs(tmp_path, wan22_dirs, name, extra):
    cfg = compose_config(overrides(name, wan22_dirs, "algorithm.lr=1e-2", "scheduler.num_steps=3", *extra))
    train(cfg, tmp_path)
    records = read_records(tmp_path)
    assert len(records) == 2 and all(math.isfinite(r["train/loss"]) and math.isfinite(r["reward_mean"]) for r in records)
    assert records[-1]["drift_from_base"] > 0
    if cfg.algorithm.name == "ddpo":
        assert records[0]["train/ratio_dev_first"] <= 1e-5
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    if name == "wan22":  # LoRA on both experts, each exported
        assert (tmp_path / "lora" / "transformer_2" / "pytorch_lora_weights.safetensors").is_file()


def test_exported_lora_of_both_experts_loads_into_wan_pipeline_and_changes_it(tmp_path, wan22_dirs):
    import diffusers

    train(compose_config(overrides("wan22", wan22_dirs, "algorithm=ddpo", "algorithm.lr=5e-2", "train.epochs=1")), tmp_path)
    pipe = diffusers.WanPipeline.from_pretrained(wan22_dirs["wan22"])

    kw = dict(height=32, width=32, num_frames=5, num_inference_steps=4, guidance_scale=1.0, max_sequence_length=16)
    lora = tmp_path / "lora"
    before, high_only, both = lora_outputs(pipe, kw, (str(lora), {}), (str(lora / "transformer_2"), {"load_into_transformer_2": True}))
    assert before.shape == both.shape == (1, 5, 3, 32, 32)
    assert (high_only - before).abs().max() > 1e-4 and (both - high_only).abs().max() > 1e-4


def test_incomplete_two_expert_directory_and_an_image_pipeline_are_refused(tmp_path, wan22_dirs):
    broken = tmp_path / "wan22"
    shutil.copytree(wan22_dirs["wan22"], broken)
    index = json.loads((broken / "model_index.json").read_text())
    (broken / "model_index.json").write_text(json.dumps({**index, "transformer_2": [None, None]}))
    with pytest.raises(ConfigError, match=r"is not a complete Wan2\.2 two-expert directory: its model_index\.json needs both"):
        load_t2v(str(broken), 5)
    (tmp_path / "flux").mkdir()
    (tmp_path / "flux" / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ConfigError, match=r"holds a FluxPipeline, which is not a text-to-video pipeline: use model.kind=t2i"):
        load_t2v(str(tmp_path / "flux"), 5)
