"""Wan2.2 image-to-video (model=wan22_i2v) on tiny random pipelines of its two layouts (drl.testing.tiny).

    I2V-A14B   WanImageToVideoPipeline: two experts at boundary_ratio 0.9, mask + image latents on the channel axis
    TI2V-5B    WanPipeline (expand_timesteps) loaded with model.family=wan_i2v: the image is the fixed first latent frame
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import SMALL, assert_trained_two_epochs, compose_config, save_tiny_builds

from drl.errors import ConfigError
from drl.models.loading import load_t2v
from drl.models.wan import WanExperts
from drl.models.wan_i2v import WanI2VModel
from drl.prompts import read_source_image
from drl.rollout import RolloutCollector
from drl.sampling import make_schedule
from drl.train import train

LAYOUTS = {"wan22_i2v": 32, "wan22_ti2v": 64}  # tiny builder -> frame side (4 x 4 latents in both)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, str]:
    return save_tiny_builds(tmp_path_factory.mktemp("tiny_wan22_i2v"), LAYOUTS, num_frames=5)


def _load(dirs, name: str) -> WanI2VModel:
    return load_t2v(dirs[name], 5, "wan_i2v", LAYOUTS[name])


def _start_images(directory: Path, size: int) -> Path:
    """Two random RGB start frames (PNG, at the clip's size and at 3/4 of it: the model resizes) and a prompt for
    each, as the JSONL prompts file of an image-conditioned run."""
    from PIL import Image

    (directory / "images").mkdir(parents=True)
    lines = []
    for k, side in enumerate([size, size * 3 // 4]):
        pixels = torch.randint(0, 256, (side, side, 3), generator=torch.Generator().manual_seed(k), dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(directory / "images" / f"{k}.png")
        lines.append(json.dumps({"prompt": f"shape {k} moving right", "image": f"images/{k}.png"}))
    (directory / "starts.jsonl").write_text("\n".join(lines) + "\n")
    return directory / "starts.jsonl"


def test_the_variants_are_read_from_model_index_and_model_family(dirs):
    a14b, ti2v = _load(dirs, "wan22_i2v"), _load(dirs, "wan22_ti2v")
    assert json.loads((Path(dirs["wan22_i2v"]) / "model_index.json").read_text())["_class_name"] == "WanImageToVideoPipeline"
    assert isinstance(a14b, WanI2VModel) and isinstance(a14b.denoiser, WanExperts) and a14b.denoiser.boundary == 900.0
    assert a14b.denoiser.config.in_channels == 12 and a14b.latent_shape(32) == (4, 2, 4, 4)  # 4 + 4 mask + 4 image
    assert isinstance(ti2v, WanI2VModel) and ti2v.expand_timesteps and ti2v.latent_shape(64) == (4, 1, 4, 4)  # f - 1
    assert isinstance(load_t2v(dirs["wan22_i2v"], 5), WanI2VModel)  # family auto: the directory says image-to-video
    assert type(load_t2v(dirs["wan22_ti2v"], 5)).__name__ == "WanModel"  # TI2V-5B alone is text-to-video


@pytest.mark.parametrize("name", [pytest.param("wan22_i2v", marks=pytest.mark.slow), "wan22_ti2v"])
def test_deterministic_chain_reproduces_wan_image_to_video_pipeline(tmp_path, dirs, name):
    """eta=0, 4 steps from the same noise and start image: the final latents match WanImageToVideoPipeline's
    (float32, 1e-4): the A14B's channel condition and expert switch, the 5B's fixed first frame at timestep 0."""
    import diffusers
    from PIL import Image

    model, size = _load(dirs, name), LAYOUTS[name]
    pixels = torch.randint(0, 256, (size, size, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(tmp_path / "start.png")
    metadata = [{"source_image": read_source_image(tmp_path / "start.png", "test")}] * 2
    schedule = make_schedule(model.make_scheduler("flow"), 4)
    collector = RolloutCollector(model, schedule, eta=0.0, guidance_scale=1.0, batch_size=2, resolution=size, device=torch.device("cpu"))
    noise = torch.randn(2, *collector.latent_shape, generator=torch.Generator().manual_seed(0))
    ours = collector.collect(["a cat", "a red cube"], metadata, torch.Generator(), initial_noise=noise)
    # The 5B pipeline draws the first frame's noise too and overwrites it; the A14B's every frame is ours.
    full = torch.cat([torch.randn(2, 4, 1, 4, 4), noise], dim=2) if model.expand_timesteps else noise
    pipe = diffusers.WanImageToVideoPipeline.from_pretrained(dirs[name])
    theirs = pipe(
        image=Image.open(tmp_path / "start.png"), prompt_embeds=ours.cond["encoder_hidden_states"], height=size, width=size,
        num_frames=5, num_inference_steps=4, guidance_scale=1.0, latents=full.clone(), output_type="latent",
    ).frames  # fmt: skip  (prompt_embeds: diffusers' I2V prompt cleaning needs ftfy; the text path is WanPipeline's, tested in test_wan22)
    torch.testing.assert_close(model.with_condition_frames(ours.latents[:, -1], ours.cond), theirs, atol=1e-4, rtol=1e-4)
    other = collector.collect(["a cat", "a red cube"], [{"source_image": torch.zeros(3, size, size)}] * 2, torch.Generator(), initial_noise=noise)
    assert (other.latents[:, -1] - ours.latents[:, -1]).abs().max() > 1e-4  # the generated frames read the image


def test_ti2v_first_frame_stays_out_of_the_chain_and_its_log_prob(dirs):
    """The 5B's stored trajectory holds only the generated frames (so no transition, log-prob or loss sees the
    image's frame); decoding puts the image's latent back in front, so the clip's first frame is the image's."""
    model, size = _load(dirs, "wan22_ti2v"), 64
    schedule = make_schedule(model.make_scheduler("flow"), 2)
    collector = RolloutCollector(model, schedule, eta=1.0, guidance_scale=1.0, batch_size=2, resolution=size, device=torch.device("cpu"))
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(3))
    rollout = collector.collect(["a", "b"], [{"source_image": image}] * 2, torch.Generator().manual_seed(0))
    assert rollout.latents.shape == (2, 3, 4, 1, 4, 4) and rollout.cond["image_condition"].shape == (2, 4, 1, 4, 4)
    clip = model.with_condition_frames(rollout.latents[:, -1], rollout.cond)
    torch.testing.assert_close(clip[:, :, :1], rollout.cond["image_condition"], atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(rollout.samples, model.decode(clip), atol=1e-6, rtol=1e-5)
    # The velocity read back is the generated frames' only, and the image's tokens are given timestep 0.
    seen = {}
    hook = model.denoiser.register_forward_pre_hook(lambda m, args, kwargs: seen.update(t=kwargs["timestep"]), with_kwargs=True)
    with torch.no_grad():
        out = model.forward_denoiser(model.denoiser, rollout.latents[:, 0], torch.tensor([900.0, 900.0]), rollout.cond)
    hook.remove()
    assert out.shape == (2, 4, 1, 4, 4)
    assert seen["t"].shape == (2, 8) and (seen["t"][:, :4] == 0).all() and (seen["t"][:, 4:] == 900).all()


# ------------------------------------------------------------------------------ runs
def start_fidelity():
    """A reward that reads each prompt's start image (metadata["source_image"] [3, H, W] in [0, 1]): the clip scores
    higher the closer its frames stay to it (negative mean absolute difference over all frames; TI2V-5B's first
    frame is the image itself, so only the generated frames differ between samples). [B]"""

    def score(samples, prompts, metadata):
        resize = lambda image: torch.nn.functional.interpolate(image[None], size=samples.shape[-2:], mode="bilinear")  # noqa: E731
        starts = torch.cat([resize(m["source_image"]) for m in metadata]).to(samples)  # [B, 3, H, W]
        return -(samples - starts[:, None]).abs().flatten(1).mean(1)  # samples [B, F, 3, H, W]

    return score


REWARD = "+reward.terms.start={_target_: test_wan22_i2v.start_fidelity, video: true}"
GRPO = ["algorithm=ddpo", "algorithm.group_size=2"]
NFT = ["algorithm=nft", "algorithm.group_size=2", "scheduler.eta=0"]


def overrides(name: str, dirs: dict[str, str], starts: Path, *extra: str) -> list[str]:
    # no quality probe: its FID on the clips' pixel features takes ~60 s here (as in test_wan22)
    return [
        "model=wan22_i2v", f"model.path={dirs[name]}", *SMALL, f"model.resolution={LAYOUTS[name]}", "model.num_frames=5",
        "reward=frames_toy_aesthetic", "reward.terms.frames_toy_aesthetic=0", REWARD, "quality.features=none",
        "prompts=file", f"prompts.path={starts}", "algorithm.lr=1e-2", "scheduler.num_steps=3", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "name, extra",
    [("wan22_i2v", GRPO), *[pytest.param(n, e, marks=pytest.mark.slow) for n, e in [("wan22_i2v", NFT), ("wan22_ti2v", GRPO), ("wan22_ti2v", NFT)]]],
)
def test_an_image_to_video_run_carries_its_start_images_from_the_prompts_file(tmp_path, dirs, name, extra):
    """Two epochs from a JSONL of {prompt, image}: the images condition the rollout, the update (the stored
    conditioning: GRPO's first ratio is 1) and the before/after evaluation, and the reward reads them."""
    starts = _start_images(tmp_path / "data", LAYOUTS[name])
    cfg = compose_config(overrides(name, dirs, starts, "train.eval_size=2", *extra))
    train(cfg, tmp_path / "run")
    assert_trained_two_epochs(tmp_path / "run", cfg, negative_reward=True)
    lora = tmp_path / "run" / "lora"
    assert (lora / "transformer_2" / "pytorch_lora_weights.safetensors").is_file() == (name == "wan22_i2v")


@pytest.mark.slow
def test_exported_lora_of_both_experts_loads_into_wan_image_to_video_pipeline_and_changes_it(tmp_path, dirs):
    import diffusers
    from PIL import Image

    starts = _start_images(tmp_path / "data", 32)
    train(compose_config(overrides("wan22_i2v", dirs, starts, *GRPO, "algorithm.lr=5e-2", "train.epochs=1", "train.eval_size=0")), tmp_path / "run")
    pipe = diffusers.WanImageToVideoPipeline.from_pretrained(dirs["wan22_i2v"])
    model = _load(dirs, "wan22_i2v")
    embeds = model.encode_prompts(["a cat"])["encoder_hidden_states"]

    def generate():
        kw = dict(height=32, width=32, num_frames=5, num_inference_steps=4, guidance_scale=1.0, output_type="pt")
        return pipe(image=Image.open(starts.parent / "images" / "0.png"), prompt_embeds=embeds, generator=torch.Generator().manual_seed(0), **kw).frames

    before = generate()
    pipe.load_lora_weights(str(tmp_path / "run" / "lora"))
    high_only = generate()
    pipe.load_lora_weights(str(tmp_path / "run" / "lora" / "transformer_2"), load_into_transformer_2=True)
    both = generate()
    assert before.shape == both.shape == (1, 5, 3, 32, 32)
    assert (high_only - before).abs().max() > 1e-4 and (both - high_only).abs().max() > 1e-4


def test_wrong_directories_for_image_to_video_are_refused_in_one_sentence(tmp_path, dirs):
    def variant(name: str, edit) -> str:
        copy = tmp_path / f"{name}_{len(list(tmp_path.iterdir()))}"
        shutil.copytree(dirs[name], copy)
        edit(copy)
        return str(copy)

    def set_json(path: Path, **changes):
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    with pytest.raises(ConfigError, match=r"holds a WanImageToVideoPipeline, which needs an input image with each prompt: use model=wan22_i2v"):
        load_t2v(dirs["wan22_i2v"], 5, "wan")
    t2v = variant("wan22_ti2v", lambda d: set_json(d / "model_index.json", expand_timesteps=False))  # a plain WanPipeline
    with pytest.raises(ConfigError, match=r"holds a text-to-video Wan \(transformer in_channels=4, no expand_timesteps\), which cannot start from an image"):
        load_t2v(t2v, 5, "wan_i2v")
    narrow = variant("wan22_i2v", lambda d: set_json(d / "transformer" / "config.json", in_channels=4))
    with pytest.raises(ConfigError, match=r"transformer/config\.json has in_channels=4, but a Wan2\.2 image-to-video transformer takes 12 \(the latents, the 4-channel frame mask"):
        load_t2v(narrow, 5)
    wan21 = variant("wan22_i2v", lambda d: set_json(d / "transformer" / "config.json", image_dim=32))
    with pytest.raises(ConfigError, match=r"is a Wan2\.1 image-to-video model \(its transformer takes CLIP image embeddings"):
        load_t2v(wan21, 5)
    no_expert = variant("wan22_i2v", lambda d: shutil.rmtree(d / "transformer_2"))
    with pytest.raises(FileNotFoundError, match=r"is not a complete diffusers directory for this model: missing transformer_2/"):
        load_t2v(no_expert, 5)


def test_an_image_to_video_model_without_start_images_is_refused(dirs):
    with pytest.raises(ValueError, match=r"^A WanI2VModel starts each clip from an image given with each prompt: use a prompts file"):
        _load(dirs, "wan22_i2v").condition(["a cat"], [{}])


def test_video_families_are_checked_against_the_model_kind():
    with pytest.raises(ConfigError, match=r"model\.family=wan_i2v does not fit model\.kind=t2i: video families \(wan, wan_i2v\) take kind=t2v"):
        compose_config(["model=wan22_i2v", "model.kind=t2i"])


def test_the_memory_plan_sizes_the_published_i2v_a14b():
    """The shipped real-size config: two experts that take 36 channels (16 latent + 4 mask + 16 image) and return 16;
    the rollout stores the latents at 16 channels and the 20 condition channels once per sample."""
    from drl.plan.architecture import build_on_meta, from_shipped, shipped_configs
    from drl.plan.budget import image_condition_channels, latent_channels

    arch = from_shipped(shipped_configs()["wan-ai/wan2.2-i2v-a14b-diffusers"])
    experts, vae = arch.of_role("denoiser"), arch.of_role("vae")[0]
    assert [e.config["in_channels"] for e in experts] == [36, 36] and arch.extra["boundary_ratio"] == 0.9
    assert latent_channels(experts[0], vae) == 16 and image_condition_channels(experts[0], 16) == 20
    n = sum(p.numel() for p in build_on_meta(experts[0]).parameters())
    assert 14.2e9 < n < 14.4e9  # "A14B": 14 B active per step, one expert
