"""What every algorithm shares: weight EMA, the KL to the base model, warm-up, and the options that set them."""

import pytest
import torch
from conftest import compose_config

from drl.algorithms.schemas.dpo import DPOConfig
from drl.algorithms.schemas.nft import NFTConfig
from drl.errors import ConfigError


def test_weight_ema_swaps_in_and_restores():
    from drl.algorithms.regularization import WeightEMA

    p = torch.nn.Parameter(torch.zeros(3))
    ema = WeightEMA([p], decay=0.5)
    ema.step()  # diffusers' warm-up: the first step copies the weights (decay 0)
    with torch.no_grad():
        p.fill_(1.0)
    ema.step()  # then decay = min(0.5, (1 + 1) / (10 + 1)) = 2/11: shadow = 0 + (9/11) * (1 - 0)
    with ema.applied():
        torch.testing.assert_close(p.detach(), torch.full((3,), 9 / 11))
    torch.testing.assert_close(p.detach(), torch.ones(3))


def test_denoising_kl_is_zero_at_the_reference_and_grows_with_drift(random_toy_model):
    from drl.algorithms.regularization import denoising_kl
    from drl.train import build_context

    ctx, _, algorithm = build_context(compose_config([f"model.path={random_toy_model}", "algorithm=rwr", "algorithm.kl_coef=0.1"]))
    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    embeds = ctx.model.encode_prompts(["a small red circle at the top left", "a large blue square at the center"])
    assert float(denoising_kl(ctx, algorithm.reference, x0, embeds, torch.Generator().manual_seed(1)).detach().max()) == 0.0
    with torch.no_grad():
        ctx.model.denoiser.conv_out.bias.add_(0.1)  # the trained model drifts; the frozen reference does not
    kl = denoising_kl(ctx, algorithm.reference, x0, embeds, torch.Generator().manual_seed(1))
    torch.testing.assert_close(kl, torch.full((2,), 0.01), rtol=1e-3, atol=1e-6)  # a constant 0.1 shift of every output
    kl.sum().backward()
    assert float(ctx.model.denoiser.conv_out.bias.grad.abs().sum()) > 0


def test_warmup_ramps_the_learning_rate_linearly(random_toy_model):
    from drl.train import build_context

    _, _, algorithm = build_context(compose_config([f"model.path={random_toy_model}", "algorithm.lr=1e-3", "algorithm.warmup_steps=4"]))
    param, lrs = algorithm.ctx.params[0], []
    for _ in range(6):
        lrs.append(algorithm.lr)
        param.grad = torch.ones_like(param)
        algorithm.optimizer_step()
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_new_options_compose_and_validate():
    nft = compose_config(["algorithm=nft", "algorithm.beta=0.1", "algorithm.kl_coef=0.01", "algorithm.ema_decay=0.9"])
    assert isinstance(nft.algorithm, NFTConfig) and nft.algorithm.beta == 0.1 and nft.algorithm.kl_coef == 0.01
    dpo = compose_config(["algorithm=dpo", "algorithm.pairs_path=/tmp/p.jsonl"])
    assert isinstance(dpo.algorithm, DPOConfig) and dpo.algorithm.pairs_path == "/tmp/p.jsonl"
    ddpo = compose_config(["algorithm.group_size=4", "algorithm.share_group_noise=true", "algorithm.adv_std_floor=0.1"])
    assert ddpo.algorithm.share_group_noise and ddpo.algorithm.adv_std_floor == 0.1
    assert compose_config(["algorithm=nft", "scheduler.eta=0"]).scheduler.eta == 0  # NFT takes a deterministic sampler


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["algorithm=nft", "algorithm.group_size=3"], "not a multiple of algorithm.group_size=3"),
        (["algorithm=dpo", "algorithm.group_size=1"], "needs algorithm.group_size >= 2"),
        (["algorithm=pretrain", "algorithm.kl_coef=0.1"], "kl_coef is not supported by algorithm=pretrain"),
        (["experiment=bandit_dsrl", "algorithm.kl_coef=0.1"], "kl_coef is not supported by algorithm=dsrl"),
        (["experiment=bandit_diffusion_ql", "algorithm.kl_coef=0.1"], "kl_coef is not supported by algorithm=diffusion_ql"),
        (["experiment=bandit_dppo", "algorithm.kl_coef=0.1"], "kl_coef is not supported by algorithm=dppo"),
        (["algorithm=nft", "algorithm.ema_decay=1.5"], "algorithm.ema_decay=1.5 must be in [0, 1]"),
    ],
)
def test_new_options_fail_with_a_sentence(overrides, message):
    with pytest.raises(ConfigError) as info:
        compose_config(overrides)
    assert message in str(info.value)

