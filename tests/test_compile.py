"""model.compile: the denoiser is compiled in place after the algorithm's frozen reference copy is taken."""

from __future__ import annotations

import pytest
import torch

from drl.errors import ConfigError
from drl.train import build_context

from conftest import compose_config


def test_compile_wraps_the_trained_denoiser_but_not_the_reference_copy(random_toy_model):
    cfg = compose_config([f"model.path={random_toy_model}", "model.compile=true", "algorithm.kl_coef=0.1"])
    ctx, _, algorithm = build_context(cfg)
    assert ctx.model.denoiser._compiled_call_impl is not None
    # deepcopy of a compiled module would keep calling the original: the copy must predate compilation
    assert algorithm.reference.frozen is not None and algorithm.reference.frozen._compiled_call_impl is None
    assert not any(k.startswith("_orig_mod") for k in ctx.model.denoiser.state_dict())  # checkpoints keep their keys


def test_compile_is_refused_for_control_policies():
    with pytest.raises(ConfigError, match="model.compile=true compiles a text-to-image or video denoiser"):
        compose_config(["experiment=bandit_bc", "model.compile=true"])


@pytest.mark.slow
def test_compiled_denoiser_predicts_what_the_eager_one_does(random_toy_model):
    cfg = compose_config([f"model.path={random_toy_model}", "model.compile=true"])
    ctx, _, _ = build_context(cfg)
    x = torch.randn(2, *ctx.collector.latent_shape, generator=torch.Generator().manual_seed(0))
    cond = ctx.model.encode_prompts(["a red circle", "a blue square"])
    t = ctx.schedule.timesteps[:2]
    with torch.no_grad():
        compiled = ctx.model.denoise(x, t, cond)
        eager = ctx.model.denoiser._call_impl(x, t, encoder_hidden_states=cond["encoder_hidden_states"]).sample
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
