"""SD 1.x, SDXL and SD3 (flow) through the one loop, on tiny random components saved to disk.

Every model is built by drl.testing.tiny (real diffusers/transformers classes, a locally written
CLIP tokenizer), saved with save_pretrained and loaded back by path, exactly as a user's model.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import SMALL, TINY, compose_config, lora_outputs, read_records
from conftest import tiny_model_overrides as _overrides
from test_cli import drl_train

from drl.errors import ConfigError
from drl.models.loading import load_t2i
from drl.sampling import denoising_step
from drl.train import build_context, train


def test_saved_directories_are_diffusers_pipelines_and_load_as_their_family(tiny_dirs):
    from diffusers import DiffusionPipeline

    for name, cls_name in [("sd15", "T2IModel"), ("sdxl", "SDXLModel"), ("sd3", "SD3Model")]:
        index = json.loads((Path(tiny_dirs[name]) / "model_index.json").read_text())
        pipe = DiffusionPipeline.from_pretrained(tiny_dirs[name])
        assert type(pipe).__name__ == index["_class_name"]
        model = load_t2i(tiny_dirs[name])
        assert type(model).__name__ == cls_name  # family from the layout
        # attention through torch's scaled_dot_product_attention (diffusers' *2_0 processors)
        assert all(type(p).__name__.endswith("2_0") for p in model.denoiser.attn_processors.values())


@pytest.mark.slow  # ~17 CPU-s; pytest -m slow tests/test_real_models.py
def test_sd15_runs_from_the_command_line(tmp_path, tiny_dirs):
    result = drl_train(
        [*TINY, *_overrides("sd15", tiny_dirs), "logger=none", "hardware.num_threads=1", f"hydra.run.dir={tmp_path}"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert [r["epoch"] for r in read_records(tmp_path)] == [0, 1]
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    warnings = [line for line in result.stderr.splitlines() if line.startswith("drl-train: warning: prompts=toy")]
    assert len(warnings) == 1  # a real model on the default prompts=toy: one line, once


def test_toy_prompts_warn_only_for_a_real_model():
    from drl.config import PromptsConfig
    from drl.images import toy_prompts_warning
    from drl.models.toy import build_toy_t2i
    from drl.testing.tiny import build_tiny_sd

    real, toy = build_tiny_sd(), build_toy_t2i(8)
    assert "choose prompts=animals" in toy_prompts_warning(real, PromptsConfig(source="toy"))
    assert toy_prompts_warning(real, PromptsConfig(source="file", path="prompts.txt")) is None
    assert toy_prompts_warning(toy, PromptsConfig(source="toy")) is None


@pytest.mark.parametrize(
    "name, algorithm",
    [("sd15", "ddpo"), ("sd15", "rwr"), ("sd15", "alignprop"), ("sdxl", "ddpo"), ("sdxl", "rwr"), ("sdxl", "alignprop"),
     ("sd3", "ddpo"), ("sd3", "rwr"), ("sd3", "alignprop")],
)  # fmt: skip
def test_every_family_trains_with_every_algorithm(tmp_path, tiny_dirs, name, algorithm):
    final = train(compose_config(_overrides(name, tiny_dirs, f"algorithm={algorithm}", "algorithm.lr=1e-2")), tmp_path)
    records = read_records(tmp_path)
    assert len(records) == 2 and math.isfinite(final)
    assert all(math.isfinite(r["train/loss"]) and math.isfinite(r["reward_mean"]) for r in records)
    assert records[-1]["drift_from_base"] > 0  # the LoRA weights moved
    if algorithm == "ddpo":
        assert records[0]["train/ratio_dev_first"] <= 1e-5
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "samples_after.png").is_file()


@pytest.mark.parametrize("name", ["sd15", "sdxl", "sd3"])
def test_on_policy_ratio_is_one_in_float32(tiny_dirs, name):
    """Re-scoring stored transitions in a mixed-timestep batch reproduces the sampling log-probs.

    The ratio DDPO clips (logprob_reduction=mean, the default) is 1 within 1e-5 in float32; with the
    exact sum over latent dims, float32 rounding of a different batch composition is amplified D-fold.
    """
    ctx, _, _ = build_context(compose_config(_overrides(name, tiny_dirs, "scheduler.num_steps=3")))
    batch = ctx.collector.collect(["a cat", "a dog", "a red cube"], [{}] * 3, torch.Generator().manual_seed(0))
    assert batch.stochastic.all() and batch.latents.dtype == torch.float32
    b, i = torch.tensor([0, 1, 2, 0, 2]), torch.tensor([0, 2, 1, 2, 0])
    with torch.no_grad():
        out = ctx.model.denoise(batch.latents[b, i], batch.timesteps[b, i], batch.cond[b])
    step = denoising_step(
        ctx.schedule, out, batch.timesteps[b, i], batch.latents[b, i], eta=ctx.collector.eta, prev_sample=batch.latents[b, i + 1]
    )
    dims = batch.latents[0, 0].numel()
    ratio_mean = torch.exp((step.log_prob - batch.log_probs[b, i]) / dims)
    assert float((ratio_mean - 1).abs().max()) <= 1e-5
    ratio_sum = torch.exp(step.log_prob - batch.log_probs[b, i])
    assert float((ratio_sum - 1).abs().max()) <= 1e-3


def test_sdxl_conditioning_carries_pooled_embeds_and_time_ids(tiny_dirs):
    model = load_t2i(tiny_dirs["sdxl"])
    model.resolution = 16
    cond = model.encode_prompts(["a cat", "a dog"])
    assert cond["encoder_hidden_states"].shape == (2, 16, 32)  # both encoders' hidden states side by side
    assert cond["text_embeds"].shape == (2, 8) and cond["time_ids"].tolist() == [[16, 16, 0, 0, 16, 16]] * 2
    uncond = model.negative_conditioning(2)  # force_zeros_for_empty_prompt, as diffusers does
    assert not uncond["encoder_hidden_states"].any() and not uncond["text_embeds"].any()


def test_sd3_conditioning_matches_the_diffusers_pipeline(tiny_dirs):
    from diffusers import StableDiffusion3Pipeline

    model = load_t2i(tiny_dirs["sd3"])
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_dirs["sd3"])
    embeds, _, pooled, _ = pipe.encode_prompt(
        ["a cat"], None, None, do_classifier_free_guidance=False, max_sequence_length=model.t5_max_length
    )
    cond = model.encode_prompts(["a cat"])
    torch.testing.assert_close(cond["encoder_hidden_states"], embeds)
    torch.testing.assert_close(cond["pooled_projections"], pooled)


@pytest.mark.parametrize(
    "name, pipeline",
    [("sd15", "StableDiffusionPipeline"), ("sdxl", "StableDiffusionXLPipeline"), ("sd3", "StableDiffusion3Pipeline")],
)
def test_exported_lora_loads_into_a_fresh_diffusers_pipeline_and_changes_it(tmp_path, tiny_dirs, name, pipeline):
    import diffusers

    train(compose_config(_overrides(name, tiny_dirs, "algorithm=alignprop", "algorithm.lr=5e-2", "train.epochs=1")), tmp_path)
    pipe = getattr(diffusers, pipeline).from_pretrained(tiny_dirs[name])

    kw = dict(height=16, width=16, num_inference_steps=2, guidance_scale=1.0)
    before, after = lora_outputs(pipe, kw, (str(tmp_path / "lora"), {}))
    assert before.shape == after.shape == (1, 3, 16, 16)
    assert (after - before).abs().max() > 1e-4


def test_sd3_refuses_ddim_with_one_sentence(tiny_dirs):
    """A flow model found by auto-detection with the default DDIM scheduler: a ConfigError (exit 2 in drl-train),
    from the directory before anything loads; a hub id, read only when it loads, is refused by the model itself."""
    path = tiny_dirs["sd3"]
    with pytest.raises(ConfigError, match=rf"^model\.path={path} holds a flow-matching model, which scheduler=ddim cannot sample: use scheduler=flow\.$"):
        compose_config([f"model.path={path}", *SMALL])
    with pytest.raises(ConfigError, match=r"^scheduler=ddim does not fit a SD3Model: use scheduler=flow\.$"):
        load_t2i(path).make_scheduler("ddim")


def test_alignprop_backpropagates_the_clip_aesthetic_reward_into_sd15(tmp_path, tiny_dirs):
    from drl.testing.tiny import save_tiny_aesthetic_head, save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip")
    head = save_tiny_aesthetic_head(tmp_path / "head.pth")
    reward = ["reward=aesthetic", f"reward.aesthetic_clip_path={clip}", f"reward.aesthetic_head_path={head}"]
    train(compose_config(_overrides("sd15", tiny_dirs, "algorithm=alignprop", "train.epochs=1", *reward)), tmp_path / "run")
    record = read_records(tmp_path / "run")[0]
    assert math.isfinite(record["reward_mean"]) and record["train/grad_norm"] > 0 and record["drift_from_base"] > 0


def test_mixed_precision_stores_frozen_parts_in_bf16_and_trains_float32_lora(tmp_path, tiny_dirs):
    cfg = compose_config(_overrides("sd3", tiny_dirs, "hardware.mixed_precision=bf16", "hardware.device=cpu"))
    ctx, _, _ = build_context(cfg)
    assert all(e.dtype == torch.bfloat16 for e in ctx.model.text_encoders) and ctx.model.vae.dtype == torch.bfloat16
    assert ctx.params and all(p.dtype == torch.float32 for p in ctx.params)
    frozen = [p for p in ctx.model.denoiser.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    train(cfg, tmp_path)
    assert all(r["train/ratio_dev_first"] <= 1e-5 and math.isfinite(r["train/loss"]) for r in read_records(tmp_path))
