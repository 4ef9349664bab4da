"""The memory plan (drl/plan): its counts against hand-computed bytes, no allocation, the CLI, its refusals;
and the two options it names that drl builds for it: model.text_encoder_offload and checkpointing of any denoiser."""

from __future__ import annotations

import resource

import pytest
import torch

from drl.compose import compose_config
from drl.plan.architecture import architecture_of, build_on_meta, from_shipped, shipped_configs
from drl.plan.budget import plan_for
from drl.testing.tiny import build_tiny_sd

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def _cfg(*overrides):
    return compose_config(["model=sd15", "reward=jpeg_compressibility", "model.resolution=16", "logger=none", *overrides])


def _line(lines, prefix):
    return next(line.bytes for line in lines if line.what.startswith(prefix))


def _lora_params(unet, rank):
    """r x (in + out) for every Linear whose name ends with a LoRA target: counted from the real module's shapes."""
    return sum(rank * (mod.in_features + mod.out_features) for name, mod in unet.named_modules()
               if isinstance(mod, torch.nn.Linear) and name.endswith(TARGETS))


def test_lora_counts_equal_hand_computed_bytes():
    model = build_tiny_sd()
    plan = plan_for(architecture_of(model, "tiny-sd"), _cfg("model.finetune=lora", "model.lora_rank=4"))
    unet_params = sum(p.numel() for p in model.denoiser.parameters())
    lora = _lora_params(model.denoiser, 4)
    assert plan.trainable_params == lora
    assert _line(plan.resident, "optimizer state") == 8 * lora  # AdamW: two fp32 moments
    assert _line(plan.update, "gradients") == 4 * lora
    assert _line(plan.resident, "denoiser weights") == 4 * (unet_params + lora)  # fp32 base and adapters
    position_ids = 8 * model.text_encoder.config.max_position_embeddings  # CLIP's int64 buffer
    assert _line(plan.resident, "text encoders") == 4 * sum(p.numel() for p in model.text_encoder.parameters()) + position_ids
    assert _line(plan.resident, "VAE") == 4 * sum(p.numel() for p in model.vae.parameters())


def test_alignprop_counts_the_checkpointed_chain_and_the_rewards_backward():
    """The checkpointed chain keeps x_T and each step's x and noise at the chain's batch (guidance doubles only the
    call); the tail's backward includes a pixel reward's activations, so it grows when the reward is traced."""
    from drl.plan.budget import decode_and_score_peak
    from drl.plan.rewards import differentiable_scores

    model = build_tiny_sd()
    arch = architecture_of(model, "tiny-sd")
    alignprop = ("algorithm=alignprop", "reward=toy_aesthetic", "algorithm.checkpoint_denoiser=true", "algorithm.truncation=all",
                 "train.batch_size=4", "scheduler.num_steps=3", "scheduler.guidance_scale=5.0")
    plan = plan_for(arch, _cfg(*alignprop))
    latent = 4 * 8 * 8 * 4  # [4, 8, 8] fp32: 16 px from the tiny VAE's 2x downsampling
    assert _line(plan.update, "the chain's other calls") == 4 * latent * (2 * 3 + 1)
    scores, untraced = differentiable_scores(_cfg(*alignprop).reward)
    assert [name for name, _ in scores] == ["toy_aesthetic"] and untraced == []
    vae = arch.components["vae"]
    decode_only = decode_and_score_peak(arch, vae, build_on_meta(vae), 8, 1, None)
    with_reward = decode_and_score_peak(arch, vae, build_on_meta(vae), 8, 1, None, scores)
    assert with_reward.bytes > decode_only.bytes and with_reward.storages > decode_only.storages


def test_full_fsdp_bf16_and_reference_counts():
    model = build_tiny_sd()
    arch = architecture_of(model, "tiny-sd")
    n = sum(p.numel() for p in model.denoiser.parameters())
    full = plan_for(arch, _cfg("model.finetune=full", "algorithm=dpo", "hardware.mixed_precision=bf16"))
    assert _line(full.resident, "optimizer state") == 8 * n
    assert _line(full.resident, "reference model") == 4 * n  # full fine-tuning: a frozen fp32 copy
    position_ids = 8 * model.text_encoder.config.max_position_embeddings  # int64: not cast
    assert _line(full.resident, "text encoders") == 2 * sum(p.numel() for p in model.text_encoder.parameters()) + position_ids  # bf16
    lora = plan_for(arch, _cfg("model.finetune=lora", "algorithm=dpo"))
    assert _line(lora.resident, "reference model") == 0  # the base is the adapter switched off
    sharded = plan_for(arch, _cfg("model.finetune=full", "hardware.sharding=fsdp", "hardware.num_processes=4"))
    assert _line(sharded.resident, "optimizer state") == 8 * n // 4
    assert _line(sharded.update, "gradients") == 4 * n // 4


def test_checkpointing_keeps_less_and_activations_grow_with_the_batch():
    arch = architecture_of(build_tiny_sd(), "tiny-sd")
    small = plan_for(arch, _cfg("train.batch_size=2"))
    large = plan_for(arch, _cfg("train.batch_size=8"))
    assert 0 < small.activations_with_checkpointing < small.activations_without_checkpointing
    assert large.activations_without_checkpointing == 4 * small.activations_without_checkpointing


def test_real_size_models_build_on_meta_without_allocating():
    """FLUX.1-dev's 12 B transformer from the shipped published config: shapes only, RSS barely moves."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    flux = from_shipped(shipped_configs()["black-forest-labs/flux.1-dev"])
    transformer = build_on_meta(flux.components["transformer"])
    n = sum(p.numel() for p in transformer.parameters())
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    assert all(p.device.type == "meta" for p in transformer.parameters())
    assert 11.8e9 < n < 12.0e9  # FLUX.1-dev: "a 12 billion parameter rectified flow transformer" (11.9 B)
    assert grown < 300  # MiB; the fp32 weights would be 44 GiB


def test_cli_prints_the_fits_table(capsys):
    from drl.plan.cli import plan_main

    plan_main(["train.batch_size=4", "logger=none"])  # the default toy run
    out = capsys.readouterr().out
    assert "Memory plan: toy_t2i" in out and "optimizer state" in out
    for card in ("24 GB card: fits", "48 GB card: fits", "80 GB card: fits"):
        assert card in out


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["model=sd15", "model.path=someone/unknown-model"], "--plan: the memory plan cannot size model.path='someone/unknown-model'"),
        (["model.no_such_option=1"], "invalid config:"),
    ],
)
def test_a_plan_it_cannot_make_fails_with_one_sentence(capsys, overrides, says):
    from drl.plan.cli import plan_main

    with pytest.raises(SystemExit) as exit_info:
        plan_main(overrides)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and says in err and len(err.splitlines()) == 1


# ------------------------------------------------------------- the options the plan names
def test_text_encoder_offload_caches_each_prompt_once_on_the_cpu():
    from drl.models.prompt_cache import offload_text_encoders

    reference = build_tiny_sd()
    model = build_tiny_sd()
    cache = offload_text_encoders(model, torch.device("cpu"))
    prompts = ["a red circle", "a blue square", "a red circle"]
    cond = model.encode_prompts(prompts)
    expected = reference.encode_prompts(prompts)
    torch.testing.assert_close(cond["encoder_hidden_states"], expected["encoder_hidden_states"], rtol=1e-5, atol=1e-6)
    model.encode_prompts(["a blue square"])
    assert cache.encoded == 2  # each distinct prompt encoded once
    assert model.text_encoders_offloaded and next(model.text_encoder.parameters()).device.type == "cpu"


def test_offload_refuses_a_trained_text_encoder():
    from drl.errors import ConfigError

    with pytest.raises(ConfigError, match="text_encoder_offload"):
        compose_config(["algorithm=pretrain", "model.from_scratch=true", "model.text_encoder_offload=true", "algorithm.train_text_encoder=true"])


@pytest.mark.slow  # ~25 s of float64 3D convolutions on the shared CPU
def test_checkpointing_a_denoiser_without_diffusers_switch_keeps_the_gradient():
    """A UNet3DConditionModel (ModelScope's, the toy video's family) has no diffusers switch: drl checkpoints its blocks."""
    from diffusers import UNet3DConditionModel

    from drl.models.checkpointing import enable_activation_checkpointing

    def unet():
        torch.manual_seed(0)
        return UNet3DConditionModel(
            sample_size=4, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            cross_attention_dim=8, attention_head_dim=4, norm_num_groups=4,
        ).double()

    x = torch.randn(1, 4, 2, 4, 4, dtype=torch.float64)
    text = torch.randn(1, 3, 8, dtype=torch.float64)
    grads, saved = [], []
    for checkpointed in (False, True):
        net = unet()
        if checkpointed:
            enable_activation_checkpointing(net)
        count = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: count.append(t.numel()) or t, lambda t: t):
            out = net(x, torch.tensor([3]), encoder_hidden_states=text).sample
        out.pow(2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
        saved.append(sum(count))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)  # float64: the same computation, recomputed
    assert saved[1] < saved[0] / 2


# ------------------------------------------------------------- the traced peaks
def test_no_grad_peak_counts_what_is_alive_at_once():
    """A residual MLP on the meta device: the skip input lives across the two layers, as a UNet's skips do."""
    from drl.plan.tracing import trace_call

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(64, 256), torch.nn.Linear(256, 64)

        def forward(self, x):
            h = self.a(x)  # [B, 256], alive until forward returns (a local)
            return (self.b(torch.relu(h)) + x,)  # relu(h) [B, 256] alive until b's output [B, 64] exists

    with torch.device("meta"):
        net = Residual()
    trace = trace_call(net, lambda: ((torch.randn(10, 64),), {}))
    # the most alive at once: h, relu(h) and b's output; the sum comes after relu(h) is freed
    assert trace.no_grad_peak == (2 * 10 * 256 + 10 * 64) * 4


def test_training_peak_is_the_activations_and_backward_buffers_not_the_weight_gradients():
    from drl.plan.tracing import trace_training_peak

    with torch.device("meta"):
        net = torch.nn.Sequential(torch.nn.Linear(32, 32, bias=False), torch.nn.Tanh(), torch.nn.Linear(32, 32, bias=False))
    peak, storages = trace_training_peak(net, lambda: ((torch.randn(8, 32),), {}), output=lambda out: out)
    act = 8 * 32 * 4  # one [8, 32] fp32 activation
    # forward: h1, tanh(h1) (saved), out; backward from ones: grad_out, grad of tanh's output, grad of h1 (the
    # weights' gradients [32, 32] are excluded): at most 5 activations alive at once, at least the 3 of the forward
    assert 3 * act <= peak <= 5 * act
    assert peak == storages * act  # every storage alive at the peak is one [8, 32] activation
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.slow  # a DDPO epoch of warm-up and one measured, at batch 256, in a fresh process: ~1-3 min on 2 shared cores
def test_the_plan_matches_the_measured_peak_of_the_tiny_pipeline(tmp_path):
    """scripts/check_memory_plan.py on the tiny SD 1.x pipeline: the peak RSS over the built model, and each phase's
    peak over its start, within 20% of the plan (the script exits 1 otherwise)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "check_memory_plan.py"
    out = subprocess.run(
        [sys.executable, str(script), "--case", "tiny", "--algorithm", "ddpo", "--checkpointing", "off", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    rows = {r["phase"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    for phase in ("peak_over_built", "sampling_added", "update_added"):
        assert rows[phase]["plan_mib"] > 50  # tensors, not the interpreter, dominate what is compared
        assert abs(rows[phase]["ratio"] - 1) <= 0.2, rows[phase]


def test_a_denoiser_output_of_one_tensor_per_sample_is_stacked_for_the_backward():
    """Z-Image returns a list of per-sample tensors; the traced backward needs one tensor ([B, ...])."""
    from drl.plan.tracing import first_output

    per_sample = [torch.full((4, 1, 2, 2), float(i)) for i in range(3)]
    stacked = first_output((per_sample,))
    assert stacked.shape == (3, 4, 1, 2, 2) and torch.equal(stacked[2], per_sample[2])
    single = torch.ones(3, 4)
    assert first_output((single,)) is single
