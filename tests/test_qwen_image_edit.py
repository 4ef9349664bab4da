"""Qwen-Image-Edit on a tiny random pipeline of its real layout (drl.testing.tiny.build_tiny_qwen_image_edit).

Saved with save_pretrained and loaded back by path: the family is read from model_index.json, the source image reaches
the text encoder (vision tokens) and the transformer (its latents), a deterministic drl chain reproduces
QwenImageEditPipeline, GRPO-style DDPO and NFT train two epochs from a prompts file with images, and the exported LoRA
changes a fresh diffusers pipeline's output.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import SMALL, assert_trained_two_epochs, compose_config
from test_flow_families import GRPO, NFT, _edits_file

from drl.errors import ConfigError
from drl.models.layout import detect_family
from drl.models.loading import load_t2i
from drl.plan.architecture import from_shipped, shipped_configs
from drl.rollout import RolloutCollector
from drl.sampling import make_schedule
from drl.train import train


@pytest.fixture(scope="module")
def edit_dir(tmp_path_factory) -> str:
    from drl.testing.tiny import build_tiny_qwen_image_edit

    directory = tmp_path_factory.mktemp("tiny_qwen_edit") / "qwen_image_edit"
    build_tiny_qwen_image_edit(seed=0).save_pretrained(directory)
    return str(directory)


def _source(tmp_path: Path, colour=(200, 30, 30)) -> dict:
    from PIL import Image

    from drl.prompts import read_source_image

    Image.new("RGB", (16, 16), colour).save(tmp_path / "source.png")
    return {"source_image": read_source_image(tmp_path / "source.png", "test")}


def test_family_is_read_from_model_index_and_wrong_family_or_missing_processor_is_refused(tmp_path, edit_dir):
    index = json.loads((Path(edit_dir) / "model_index.json").read_text())
    assert index["_class_name"] == "QwenImageEditPipeline" and index["processor"] == ["transformers", "Qwen2VLProcessor"]
    assert detect_family(edit_dir) == "qwen_image_edit"
    assert type(load_t2i(edit_dir)).__name__ == "QwenImageEditModel"
    with pytest.raises(ConfigError, match=r"^model\.family=qwen_image but model\.path=.* holds a qwen_image_edit model: use model\.family=auto \(or qwen_image_edit\)\.$"):
        compose_config(["model=qwen_image", f"model.path={edit_dir}", *SMALL])
    broken = tmp_path / "broken"
    shutil.copytree(edit_dir, broken)
    shutil.rmtree(broken / "processor")
    with pytest.raises(FileNotFoundError, match=rf"^'{broken}' is not a complete diffusers directory for this model: missing processor/\.$"):
        load_t2i(str(broken))


def test_the_source_image_reaches_the_text_encoder_and_the_transformer(tmp_path, edit_dir):
    """The conditioning of one instruction differs with the source image, in its text (vision tokens) and its latents;
    the unconditional branch is the empty instruction with the same image."""
    model = load_t2i(edit_dir)
    model.resolution = 16
    red, blue = _source(tmp_path, (200, 30, 30)), _source(tmp_path, (30, 30, 200))
    cond = model.condition(["make it green"] * 2, [red, blue])
    assert cond["source_images"].dtype == torch.uint8 and cond["source_latents"].shape == (2, 4, 8, 8)
    assert (cond["encoder_hidden_states"][0] - cond["encoder_hidden_states"][1]).abs().max() > 1e-4
    uncond = model.negative_conditioning(2, like=cond)
    assert torch.equal(uncond["source_latents"], cond["source_latents"])
    text_only = model.encode_prompts([""], cond["source_images"][:1])
    torch.testing.assert_close(uncond["encoder_hidden_states"][:1], text_only["encoder_hidden_states"], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"^A QwenImageEditModel edits a source image given with each prompt: use a prompts file"):
        model.condition(["make it green"], [{}])


def test_text_encoder_offload_caches_each_instruction_and_image_once(tmp_path, edit_dir):
    from drl.models.prompt_cache import offload_text_encoders

    reference, model = load_t2i(edit_dir), load_t2i(edit_dir)
    reference.resolution = model.resolution = 16
    cache = offload_text_encoders(model, torch.device("cpu"))
    red, blue = _source(tmp_path, (200, 30, 30)), _source(tmp_path, (30, 30, 200))
    prompts, metadata = ["make it green", "make it green", "make it green"], [red, blue, red]
    cond, expected = model.condition(prompts, metadata), reference.condition(prompts, metadata)
    for key in ("encoder_hidden_states", "encoder_hidden_states_mask", "source_latents"):
        torch.testing.assert_close(cond[key], expected[key], atol=1e-5, rtol=1e-5)  # float32; batch padding only
    assert cache.encoded == 2  # the same instruction with two images: two entries


@pytest.mark.slow
def test_deterministic_chain_reproduces_the_diffusers_pipeline(tmp_path, edit_dir, monkeypatch):
    """eta=0, guidance 1: drl's chain against QwenImageEditPipeline at 16 px, its ~1024² source resize pinned to
    16 px (drl edits at the generated size): text with the image, source latents, img_shapes and the levels must
    all match for the final latents to agree (float32, 1e-4)."""
    import diffusers
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit
    from PIL import Image

    model = load_t2i(edit_dir)
    model.resolution = 16
    metadata = [_source(tmp_path)]
    schedule = make_schedule(model.make_scheduler("flow"), 2, mu=model.shift_mu())
    collector = RolloutCollector(model, schedule, eta=0.0, guidance_scale=1.0, batch_size=1, resolution=16, device=torch.device("cpu"))
    noise = torch.randn(1, *collector.latent_shape, generator=torch.Generator().manual_seed(0))
    ours = collector.collect(["make it green"], metadata, torch.Generator(), initial_noise=noise)
    monkeypatch.setattr(pipeline_qwenimage_edit, "calculate_dimensions", lambda area, ratio: (16, 16, None))
    pipe = diffusers.QwenImageEditPipeline.from_pretrained(edit_dir, processor=model.processor)  # its own load needs torchvision
    theirs = pipe(
        image=Image.open(tmp_path / "source.png").convert("RGB"), prompt="make it green", height=16, width=16,
        num_inference_steps=2, latents=model.pack_latents(noise), output_type="latent",
    ).images  # fmt: skip
    torch.testing.assert_close(ours.latents[:, -1], model.unpack_latents(theirs, 8, 8), atol=1e-4, rtol=1e-4)


def _edit_overrides(edit_dir: str, edits: Path, *extra: str) -> list[str]:
    return ["model=qwen_image_edit", f"model.path={edit_dir}", *SMALL, "prompts=file", f"prompts.path={edits}",
            "reward.terms.toy_aesthetic=0", "+reward.terms.fidelity={_target_: test_flow_families.source_fidelity}", *extra]  # fmt: skip


@pytest.mark.parametrize("extra", [GRPO, pytest.param(NFT, marks=pytest.mark.slow)], ids=["grpo", "nft"])
def test_an_editing_run_trains_two_epochs_from_a_prompts_file_with_images(tmp_path, edit_dir, extra):
    """The sources condition rollout, update (the stored conditioning) and the before/after evaluation; the reward
    reads them (negative distance to the source); the LoRA is exported."""
    edits = _edits_file(tmp_path / "data")
    cfg = compose_config(_edit_overrides(edit_dir, edits, *extra, "algorithm.lr=1e-2", "train.eval_size=2"))
    train(cfg, tmp_path / "run")
    assert_trained_two_epochs(tmp_path / "run", cfg, negative_reward=True)


@pytest.mark.slow
def test_exported_lora_loads_into_the_edit_pipeline_and_changes_it(tmp_path, edit_dir, monkeypatch):
    import diffusers
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit
    from PIL import Image

    edits = _edits_file(tmp_path / "data")
    overrides = ["model=qwen_image_edit", f"model.path={edit_dir}", *SMALL, "prompts=file", f"prompts.path={edits}"]
    train(compose_config([*overrides, "algorithm=alignprop", "algorithm.lr=5e-2", "train.epochs=1"]), tmp_path / "run")
    monkeypatch.setattr(pipeline_qwenimage_edit, "calculate_dimensions", lambda area, ratio: (16, 16, None))
    pipe = diffusers.QwenImageEditPipeline.from_pretrained(edit_dir, processor=load_t2i(edit_dir).processor)
    source = Image.open(tmp_path / "data" / "images" / "0.png").convert("RGB")

    def generate():
        kw = dict(height=16, width=16, num_inference_steps=2, output_type="pt")
        return pipe(image=source, prompt="make it green", generator=torch.Generator().manual_seed(0), **kw).images

    before = generate()
    pipe.load_lora_weights(str(tmp_path / "run" / "lora"))
    after = generate()
    assert before.shape == after.shape == (1, 3, 16, 16)
    assert (after - before).abs().max() > 1e-4


def test_memory_plan_counts_the_source_tokens(edit_dir):
    """The plan knows the family: the published config is shipped (Qwen/Qwen-Image-Edit), the text grows by the source's
    vision tokens (the image processor's 28 px groups), and the transformer call it traces (run here on the tiny
    transformer) carries the source's tokens after the generated ones."""
    from drl.plan.architecture import from_directory
    from drl.plan.budget import edits_a_source, vision_tokens
    from drl.plan.inputs import CallShape, denoiser_inputs

    shipped = shipped_configs()
    edit, plain = from_shipped(shipped["qwen/qwen-image-edit"]), from_shipped(shipped["qwen/qwen-image"])
    assert edits_a_source(edit) and not edits_a_source(plain) and edits_a_source(from_directory(Path(edit_dir)))
    assert vision_tokens(edit, 512) == 18**2 and vision_tokens(edit, 1024) == 37**2  # round(512 / 28) = 18, round(1024 / 28) = 37
    model = load_t2i(edit_dir)
    transformer = from_directory(Path(edit_dir)).components["transformer"]
    args, kwargs = denoiser_inputs(transformer, CallShape(2, 8, 1, 20, torch.float32, source_image=True))()
    assert kwargs["hidden_states"].shape == (2, 2 * 16, 16) and kwargs["img_shapes"] == [[(1, 4, 4), (1, 4, 4)]] * 2
    assert model.denoiser(*args, **kwargs, return_dict=False)[0].shape == (2, 32, 16)
