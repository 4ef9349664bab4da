"""FLUX.2 (model=flux2) on a tiny random pipeline of Flux2Pipeline's layout (drl.testing.tiny.build_tiny_flux2: the
real component classes, a 30-layer Mistral3 text encoder, tokenizer/ saved as a PixtralProcessor), loaded back by
path as a user's download would be.

diffusers' Flux2Pipeline.from_pretrained builds the PixtralProcessor, which transformers does only where torchvision
is installed (drl does not need it: the text path uses the processor's tokenizer). The reference pipeline here is
therefore Flux2Pipeline constructed from the directory's components as drl loads them (each with its own class's
from_pretrained), and the pipeline's own __call__ / encode_prompt / load_lora_weights run on it.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL, assert_trained_two_epochs, compose_config
from test_flow_families import GRPO, NFT

from drl.errors import ConfigError
from drl.models.layout import detect_family
from drl.models.loading import load_t2i
from drl.rollout import RolloutCollector
from drl.sampling import make_schedule
from drl.train import train

PROMPTS = ["a cat", "a red cube"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the calls made outside train(); train() sets its own


@pytest.fixture(scope="module")
def flux2_dir(tmp_path_factory) -> str:
    from drl.testing.tiny import build_tiny_flux2

    directory = tmp_path_factory.mktemp("tiny_flux2") / "flux2"
    build_tiny_flux2(seed=0).save_pretrained(directory)
    return str(directory)


def flux2_pipeline(directory: str):
    import diffusers

    return diffusers.Flux2Pipeline(**load_t2i(directory).pipeline_components())


def overrides(directory: str, *extra: str) -> list[str]:
    return ["model=flux2", f"model.path={directory}", *SMALL, *extra]


def test_layout_is_read_as_flux2_and_wrong_family_or_missing_parts_are_refused(tmp_path, flux2_dir):
    index = json.loads((Path(flux2_dir) / "model_index.json").read_text())
    assert index["_class_name"] == "Flux2Pipeline" and index["tokenizer"] == ["transformers", "PixtralProcessor"]
    assert (Path(flux2_dir) / "tokenizer" / "processor_config.json").is_file()
    assert detect_family(flux2_dir) == "flux2"
    assert compose_config(overrides(flux2_dir, "model.family=auto")).model.path == flux2_dir  # auto: read, accepted
    with pytest.raises(ConfigError, match=r"^model\.family=flux but model\.path=.* holds a flux2 model: use model\.family=auto \(or flux2\)\.$"):
        compose_config(overrides(flux2_dir, "model.family=flux"))
    with pytest.raises(ConfigError, match=rf"^model\.family=flux but {flux2_dir} holds a flux2 model: use model\.family=auto"):
        load_t2i(flux2_dir, family="flux")
    broken = tmp_path / "flux2"
    shutil.copytree(flux2_dir, broken)
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(FileNotFoundError, match=rf"^'{broken}' is not a complete diffusers directory for this model: missing text_encoder/\.$"):
        load_t2i(str(broken))


def test_deterministic_chain_reproduces_flux2pipeline(flux2_dir):
    """eta=0: drl's flow chain is the Euler ODE. Text encoding (layers 10/20/30 of the chat-templated prompt), the
    patchified latent space, the 4-axis ids, the distilled guidance, the step-dependent shift μ and the batch-norm
    de-normalisation in the decode must all match Flux2Pipeline for its final latents and images to agree (float32)."""
    model = load_t2i(flux2_dir)
    model.resolution, model.guidance = 16, 2.5
    steps = 3
    schedule = make_schedule(model.make_scheduler("flow"), steps, mu=model.shift_mu(steps))
    collector = RolloutCollector(model, schedule, eta=0.0, guidance_scale=1.0, batch_size=2, resolution=16, device=torch.device("cpu"))
    assert collector.latent_shape == (16, 4, 4)  # 4 VAE channels x a 2x2 patch, 8 x 8 latents / 2
    noise = torch.randn(2, *collector.latent_shape, generator=torch.Generator().manual_seed(0))
    ours = collector.collect(PROMPTS, [{}, {}], torch.Generator(), initial_noise=noise)
    pipe = flux2_pipeline(flux2_dir)
    kw = dict(height=16, width=16, num_inference_steps=steps, guidance_scale=2.5, latents=noise, max_sequence_length=model.max_sequence_length)
    theirs = pipe(prompt=PROMPTS, output_type="latent", **kw).images  # [B, N, 4C]
    torch.testing.assert_close(ours.latents[:, -1], model.unpack_latents(theirs, 4, 4), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(schedule.sigmas.numpy(), pipe.scheduler.sigmas.numpy(), atol=1e-6)  # μ for 3 steps
    images = pipe(prompt=PROMPTS, output_type="pt", **kw).images
    torch.testing.assert_close(model.decode(ours.latents[:, -1]), images, atol=1e-4, rtol=1e-4)
    assert model.shift_mu(3) != model.shift_mu(10)  # FLUX.2's shift depends on the number of steps


def test_offloaded_text_encoder_and_checkpointed_transformer_give_the_same_numbers(flux2_dir):
    """model.text_encoder_offload: the cached conditioning is the plain one; model.gradient_checkpointing (diffusers'
    switch on Flux2Transformer2DModel): the LoRA gradient of one call is the plain one (float32, 1e-6)."""
    from drl.models.checkpointing import enable_activation_checkpointing
    from drl.models.finetune import setup_trainable
    from drl.models.prompt_cache import offload_text_encoders

    model = load_t2i(flux2_dir)
    model.resolution = 16
    plain = model.encode_prompts(PROMPTS)
    cache = offload_text_encoders(model, torch.device("cpu"))
    cached = model.encode_prompts([*PROMPTS, PROMPTS[0]])
    assert cache.encoded == 2
    torch.testing.assert_close(cached["encoder_hidden_states"][:2], plain["encoder_hidden_states"], atol=0, rtol=0)
    params = setup_trainable(model.denoiser, "lora", 4, 4.0, ["to_q", "to_k", "to_v", "to_out.0", "to_qkv_mlp_proj"])
    latents = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([900.0, 400.0])

    def grads():
        model.denoiser.zero_grad()
        model.forward_denoiser(model.denoiser, latents, t, plain).square().sum().backward()
        return [p.grad.clone() for p in params]

    model.denoiser.train()
    before = grads()
    enable_activation_checkpointing(model.denoiser)
    assert model.denoiser.gradient_checkpointing
    for a, b in zip(before, grads()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


ALIGNPROP = ["algorithm=alignprop", "model.gradient_checkpointing=true", "model.text_encoder_offload=true"]


@pytest.mark.parametrize(
    "extra", [GRPO, pytest.param(NFT, marks=pytest.mark.slow), pytest.param(ALIGNPROP, marks=pytest.mark.slow)], ids=["grpo", "nft", "alignprop"]
)
def test_flux2_trains_two_epochs(tmp_path, flux2_dir, extra):
    cfg = compose_config(overrides(flux2_dir, "algorithm.lr=1e-2", *extra))
    train(cfg, tmp_path)
    assert_trained_two_epochs(tmp_path, cfg)


def test_exported_lora_loads_into_flux2pipeline_and_changes_it(tmp_path, flux2_dir):
    train(compose_config(overrides(flux2_dir, *ALIGNPROP, "algorithm.lr=5e-2", "train.epochs=1")), tmp_path)
    pipe = flux2_pipeline(flux2_dir)

    def generate():
        kw = dict(height=16, width=16, num_inference_steps=2, output_type="pt", max_sequence_length=256)
        return pipe(prompt="a cat", generator=torch.Generator().manual_seed(0), **kw).images

    before = generate()
    pipe.load_lora_weights(str(tmp_path / "lora"))
    trained = {name: p for name, p in pipe.transformer.named_parameters() if "lora_B" in name}  # zero until trained
    assert {name.split(".lora_B")[0] for name in trained} == {
        *(f"transformer_blocks.0.attn.{m}" for m in ("to_q", "to_k", "to_v", "to_out.0")), "single_transformer_blocks.0.attn.to_qkv_mlp_proj"
    }
    assert all(p.abs().max() > 0 for p in trained.values())  # every exported layer loaded, double and single blocks
    after = generate()
    assert before.shape == after.shape == (1, 3, 16, 16)
    assert (after - before).abs().max() > 1e-4


def test_memory_plan_sizes_flux2_dev_and_a_flux2_directory(flux2_dir):
    """The shipped FLUX.2-dev config builds on the meta device at its published size; a FLUX.2 directory is planned
    (its transformer's inputs: 4-axis ids, no pooled projection)."""
    from drl.plan.architecture import build_on_meta, from_shipped, shipped_configs
    from drl.plan.budget import memory_plan

    dev = from_shipped(shipped_configs()["black-forest-labs/flux.2-dev"])
    n = sum(p.numel() for p in build_on_meta(dev.components["transformer"]).parameters())
    assert 32.0e9 < n < 32.5e9  # "a 32 billion parameter rectified flow transformer"
    plan = memory_plan(compose_config(overrides(flux2_dir, "reward=jpeg_compressibility")))
    assert plan.resident[0].what == "denoiser weights (Flux2Transformer2DModel)" and plan.trainable_params > 0
    assert plan.activations_with_checkpointing < plan.activations_without_checkpointing
