"""The 2025-26 flow families (FLUX.1, ...) on tiny random pipelines of their real layout (drl.testing.tiny).

Each is saved with save_pretrained and loaded back by path as a user's download would be: the family is read
from model_index.json, a deterministic drl chain reproduces the family's own diffusers pipeline, GRPO-style
DDPO and NFT train two epochs, and the exported LoRA changes the output of a fresh diffusers pipeline.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL, assert_trained_two_epochs, compose_config, lora_outputs, read_records

from drl.errors import ConfigError
from drl.models.layout import detect_family
from drl.models.loading import load_t2i
from drl.rollout import RolloutCollector
from drl.sampling import make_schedule
from drl.train import train

# family -> (model config, diffusers pipeline class)
FAMILIES = {
    "flux": ("flux", "FluxPipeline"), "qwen_image": ("qwen_image", "QwenImagePipeline"), "z_image": ("z_image", "ZImagePipeline"),
}  # fmt: skip
# the pipeline's guidance argument that means "none" where it is not distilled guidance (Z-Image: cond + g (cond - uncond))
NO_GUIDANCE = {"z_image": 0.0}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory) -> dict[str, str]:
    from drl.testing.tiny import BUILDERS

    root = tmp_path_factory.mktemp("tiny_families")
    for name in FAMILIES:
        BUILDERS[name](seed=0).save_pretrained(root / name)
    return {name: str(root / name) for name in FAMILIES}


def overrides(name: str, dirs: dict[str, str], *extra: str) -> list[str]:
    return [f"model={FAMILIES[name][0]}", f"model.path={dirs[name]}", "scheduler=flow", *SMALL, *extra]


@pytest.mark.parametrize("name", FAMILIES)
def test_family_is_read_from_model_index_and_loads_as_its_class(family_dirs, name):
    index = json.loads((Path(family_dirs[name]) / "model_index.json").read_text())
    assert index["_class_name"] == FAMILIES[name][1] and detect_family(family_dirs[name]) == name
    assert type(load_t2i(family_dirs[name])).__name__.lower().startswith(name.replace("_", ""))


def test_unknown_pipeline_and_wrong_family_are_refused_in_one_sentence(tmp_path, family_dirs):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "HunyuanVideoPipeline"}))
    (tmp_path / "transformer").mkdir()  # once read as SD3 for this folder alone
    with pytest.raises(ConfigError, match=rf"^{tmp_path} holds a HunyuanVideoPipeline, which is not a text-to-image family drl trains: use"):
        compose_config([f"model.path={tmp_path}", "scheduler=flow", *SMALL])
    with pytest.raises(ConfigError, match=r"^model\.family=sd3 but model\.path=.* holds a flux model: use model\.family=auto \(or flux\)\.$"):
        compose_config([f"model.path={family_dirs['flux']}", "model.family=sd3", "scheduler=flow", *SMALL])
    with pytest.raises(ConfigError, match=r"holds a flow-matching model, which scheduler=ddim cannot sample: use scheduler=flow\.$"):
        compose_config([f"model.path={family_dirs['flux']}", *SMALL])


def test_missing_component_is_refused_naming_the_directory(tmp_path, family_dirs):
    import shutil

    broken = tmp_path / "flux"
    shutil.copytree(family_dirs["flux"], broken)
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(FileNotFoundError, match=rf"^'{broken}' is not a complete diffusers directory for this model: missing text_encoder_2/\.$"):
        load_t2i(str(broken))


@pytest.mark.parametrize(
    "name, guidance",
    [("flux", 4.0), pytest.param("qwen_image", None, marks=pytest.mark.slow), pytest.param("z_image", None, marks=pytest.mark.slow)],
)
def test_deterministic_chain_reproduces_the_diffusers_pipeline(family_dirs, name, guidance):
    """eta=0: drl's flow chain is the Euler ODE; packing, ids, timestep scale (Z-Image: 1 - σ and -v), the levels
    (μ-shifted, or Z-Image-Turbo's static shift of linspace(1, 1/S)) and the distilled guidance must all match the
    family's pipeline for the final latents to agree (float32, 1e-4)."""
    import diffusers

    model = load_t2i(family_dirs[name])
    model.resolution = 16
    if guidance is not None:  # FLUX.1-dev's distilled guidance
        model.guidance = guidance
    schedule = make_schedule(model.make_scheduler("flow"), 3, mu=model.shift_mu())
    collector = RolloutCollector(model, schedule, eta=0.0, guidance_scale=1.0, batch_size=2, resolution=16, device=torch.device("cpu"))
    noise = torch.randn(2, *collector.latent_shape, generator=torch.Generator().manual_seed(0))
    ours = collector.collect(["a cat", "a red cube"], [{}, {}], torch.Generator(), initial_noise=noise)
    pipe = getattr(diffusers, FAMILIES[name][1]).from_pretrained(family_dirs[name])
    theirs = pipe(
        ["a cat", "a red cube"], height=16, width=16, num_inference_steps=3, guidance_scale=NO_GUIDANCE.get(name, guidance),
        latents=model.pack_latents(noise), output_type="latent", max_sequence_length=model.max_sequence_length,
    ).images  # fmt: skip
    torch.testing.assert_close(ours.latents[:, -1], model.unpack_latents(theirs, 8, 8), atol=1e-4, rtol=1e-4)
    # the same levels as the pipeline's scheduler (σ_0 = 1, shifted by μ)
    np.testing.assert_allclose(schedule.sigmas.numpy(), pipe.scheduler.sigmas.numpy(), atol=1e-6)


def _slow_but(*fast, extra=None):
    """Every family, in the default run only where ``fast`` names it (the rest: pytest -m slow)."""
    args = [(n,) if extra is None else (n, extra) for n in FAMILIES]
    return [pytest.param(*a, marks=() if a[0] in fast else pytest.mark.slow) for a in args]


GRPO = ["algorithm=ddpo", "algorithm.group_size=2"]  # GRPO-style DDPO: groups of prompts, per-group advantages
NFT = ["algorithm=nft", "algorithm.group_size=2", "scheduler.eta=0"]  # NFT samples with the flow ODE


# GRPO on FLUX's transformer runs by default in the editing test below (FLUX.1-Kontext), Z-Image's NFT here
@pytest.mark.parametrize("name, extra", [*_slow_but(extra=GRPO), *_slow_but("z_image", extra=NFT)])
def test_family_trains_two_epochs(tmp_path, family_dirs, name, extra):
    cfg = compose_config(overrides(name, family_dirs, "algorithm.lr=1e-2", *extra))
    train(cfg, tmp_path)
    assert_trained_two_epochs(tmp_path, cfg)


@pytest.mark.parametrize("name", _slow_but("flux"))
def test_exported_lora_loads_into_the_family_pipeline_and_changes_it(tmp_path, family_dirs, name):
    import diffusers

    train(compose_config(overrides(name, family_dirs, "algorithm=alignprop", "algorithm.lr=5e-2", "train.epochs=1")), tmp_path)
    pipe = getattr(diffusers, FAMILIES[name][1]).from_pretrained(family_dirs[name])

    kw = dict(height=16, width=16, num_inference_steps=2, max_sequence_length=16)
    before, after = lora_outputs(pipe, kw, (str(tmp_path / "lora"), {}))
    assert before.shape == after.shape == (1, 3, 16, 16)
    assert (after - before).abs().max() > 1e-4


# ------------------------------------------------------------------ image-conditioned (editing) runs
def source_fidelity():
    """A reward that reads each prompt's source image (metadata["source_image"] [3, H, W] in [0, 1]): the edit
    scores higher the closer it stays to its source (negative mean absolute difference). [B]"""

    def score(samples, prompts, metadata):
        resize = lambda image: torch.nn.functional.interpolate(image[None], size=samples.shape[-2:], mode="bilinear")  # noqa: E731
        sources = torch.cat([resize(m["source_image"]) for m in metadata]).to(samples)  # [B, 3, H, W], from any size
        return -(samples - sources).abs().flatten(1).mean(1)

    return score


def _edits_file(directory: Path) -> Path:
    """Two source images (PNG, 16 and 24 px: the model resizes) and an editing prompt for each, as JSONL."""
    from PIL import Image

    (directory / "images").mkdir(parents=True)
    lines = []
    for k, (colour, size) in enumerate([((200, 30, 30), 16), ((30, 30, 200), 24)]):
        Image.new("RGB", (size, size), colour).save(directory / "images" / f"{k}.png")
        lines.append(json.dumps({"prompt": f"make shape {k} green", "image": f"images/{k}.png"}))
    (directory / "edits.jsonl").write_text("\n".join(lines) + "\n")
    return directory / "edits.jsonl"


@pytest.fixture(scope="module")
def kontext_dir(tmp_path_factory) -> str:
    from drl.testing.tiny import build_tiny_flux_kontext

    directory = tmp_path_factory.mktemp("tiny_kontext") / "flux_kontext"
    build_tiny_flux_kontext(seed=0).save_pretrained(directory)
    return str(directory)


@pytest.mark.slow
def test_kontext_chain_with_a_source_image_reproduces_the_diffusers_pipeline(tmp_path, kontext_dir):
    import diffusers
    from PIL import Image

    from drl.prompts import read_source_image

    assert detect_family(kontext_dir) == "flux_kontext"
    model = load_t2i(kontext_dir)
    model.resolution, model.guidance = 16, 2.5
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "source.png")
    metadata = [{"source_image": read_source_image(tmp_path / "source.png", "test")}]
    schedule = make_schedule(model.make_scheduler("flow"), 2, mu=model.shift_mu())
    collector = RolloutCollector(model, schedule, eta=0.0, guidance_scale=1.0, batch_size=1, resolution=16, device=torch.device("cpu"))
    noise = torch.randn(1, *collector.latent_shape, generator=torch.Generator().manual_seed(0))
    ours = collector.collect(["make it green"], metadata, torch.Generator(), initial_noise=noise)
    assert ours.cond["source_latents"].shape == (1, 4, 8, 8)
    pipe = diffusers.FluxKontextPipeline.from_pretrained(kontext_dir)
    theirs = pipe(
        image=Image.open(tmp_path / "source.png"), prompt="make it green", height=16, width=16, max_area=16 * 16,
        num_inference_steps=2, guidance_scale=2.5, latents=model.pack_latents(noise), output_type="latent",
        max_sequence_length=model.max_sequence_length, _auto_resize=False,
    ).images  # fmt: skip
    torch.testing.assert_close(ours.latents[:, -1], model.unpack_latents(theirs, 8, 8), atol=1e-4, rtol=1e-4)
    text_only = collector.collect(["make it green"], [{"source_image": torch.zeros(3, 16, 16)}], torch.Generator(), initial_noise=noise)
    assert (text_only.latents[:, -1] - ours.latents[:, -1]).abs().max() > 1e-4  # the source image is read


def test_an_editing_run_carries_its_source_images_from_the_prompts_file_to_the_reward(tmp_path, kontext_dir):
    """GRPO on FLUX.1-Kontext from a JSONL of {prompt, image}: the sources condition rollout, update (the stored
    conditioning) and the before/after evaluation, and the reward reads them."""
    edits = _edits_file(tmp_path / "data")
    reward = "+reward.terms.fidelity={_target_: test_flow_families.source_fidelity}"
    cfg = compose_config([
        "model=flux_kontext", f"model.path={kontext_dir}", *SMALL, *GRPO, "algorithm.lr=1e-2", "prompts=file",
        f"prompts.path={edits}", "reward.terms.toy_aesthetic=0", reward, "train.eval_size=2",
    ])  # fmt: skip
    train(cfg, tmp_path / "run")
    records = read_records(tmp_path / "run")
    assert len(records) == 2 and all(math.isfinite(r["reward_mean"]) and r["reward_mean"] < 0 for r in records)
    assert records[0]["train/ratio_dev_first"] <= 1e-5 and records[-1]["drift_from_base"] > 0
    evaluation = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert len(evaluation["before"]) == len(evaluation["after"]) == 2 and all(v < 0 for v in evaluation["after"])


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", r"line 1 is not JSON"),
        ('{"prompt": "x"}', r'line 1 needs a "prompt" and an "image" string'),
        ('{"prompt": "x", "image": "missing.png"}', r"line 1: image .*missing\.png' does not exist \(image paths are relative to the prompts file\)\.$"),
        ('{"prompt": "x", "image": "edits.jsonl"}', r"line 1: .*edits\.jsonl' is not an image PIL can read"),
    ],
)
def test_bad_image_prompt_files_are_refused_in_one_sentence(tmp_path, line, message):
    from drl.config import PromptsConfig
    from drl.prompts import build_prompt_source

    (tmp_path / "edits.jsonl").write_text(line + "\n")
    with pytest.raises((ConfigError, FileNotFoundError), match=message):
        build_prompt_source(PromptsConfig(source="file", path=str(tmp_path / "edits.jsonl")))


def test_an_editing_model_without_source_images_is_refused(kontext_dir):
    model = load_t2i(kontext_dir)
    model.resolution = 16
    with pytest.raises(ValueError, match=r"^A FluxKontextModel edits a source image given with each prompt: use a prompts file"):
        model.condition(["make it green"], [{}])


def test_drl_eval_loads_the_base_with_the_configured_distilled_guidance(family_dirs):
    from drl.config import ModelConfig
    from drl.evaluation.models import load_base

    model = load_base(ModelConfig(path=family_dirs["flux"], family="flux", resolution=16, distilled_guidance=2.0))
    assert model.guidance == 2.0 and model.resolution == 16  # FluxModel's default is 3.5
