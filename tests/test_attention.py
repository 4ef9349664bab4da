"""Every model family computes attention with PyTorch's fused scaled_dot_product_attention.

diffusers picks SDPA processors by default when torch has them; a family whose attention fell back
to the classic baddbmm/softmax processor would be several times slower and hungrier at SD scale.
The spy counts SDPA calls in one denoiser forward: one per attention processor.
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from drl.models.t2v import build_toy_t2v
from drl.testing.tiny import BUILDERS
from drl.models.toy import build_toy_t2i

FAMILIES = {
    "sd15": (lambda: BUILDERS["sd15"](), 16),
    "sdxl": (lambda: BUILDERS["sdxl"](), 16),
    "sd3": (lambda: BUILDERS["sd3"](), 16),
    "wan": (lambda: BUILDERS["wan"](), 32),
    "toy_t2i": (lambda: build_toy_t2i(32), 32),
    "toy_t2v": (lambda: build_toy_t2v(16, 4), 16),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_attention_layer_runs_through_sdpa(family):
    build, resolution = FAMILIES[family]
    model = build()
    processors = model.denoiser.attn_processors
    assert processors, f"{family}: no attention processors found"
    calls = []
    fused = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return fused(*args, **kwargs)

    x = torch.randn(2, *model.latent_shape(resolution))
    cond = model.encode_prompts(["a red circle", "a blue square"])
    with mock.patch.object(F, "scaled_dot_product_attention", spy), torch.no_grad():
        model.denoise(x, torch.tensor([500, 500]), cond)
    assert len(calls) == len(processors), f"{family}: {len(calls)} SDPA calls for {len(processors)} attention layers"
