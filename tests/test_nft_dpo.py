"""DiffusionNFT, Diffusion-DPO and the group/regularisation options: losses on hand-made numbers, end to end."""

import json
import math

import pytest
import torch
from diffusers import DDIMScheduler

from drl.algorithms.ddpo import group_advantages
from drl.algorithms.dpo import best_worst_pairs
from drl.algorithms.nft import optimality_probability
from drl.config import ConfigError, DPOConfig, NFTConfig
from drl.losses import diffusion_dpo_loss, nft_loss
from drl.preference_data import load_image, load_pairs
from drl.sampling import add_noise, make_schedule, predict_x0_eps, step_mean_std, training_target, x0_error_scale
from drl.train import train

from conftest import compose_config


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- losses by hand
def test_nft_loss_by_hand():
    pred, old, target = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # beta = 0.5: v+ = 0.5 old + 0.5 pred = [1.5, 0]; v- = 1.5 old - 0.5 pred = [0.5, 0]
    # x0 errors (scale 2): v+ -> [3, -2], v- -> [1, -2]; squared means 6.5 and 2.5
    plain = nft_loss(pred, old, target, torch.tensor([0.25]), 0.5, torch.tensor([2.0]), adaptive=False)
    torch.testing.assert_close(plain, torch.tensor([(0.25 * 6.5 + 0.75 * 2.5) / 0.5]))
    # adaptive: divided by mean |error|: 6.5 / 2.5 and 2.5 / 1.5
    adaptive = nft_loss(pred, old, target, torch.tensor([0.25]), 0.5, torch.tensor([2.0]), adaptive=True)
    torch.testing.assert_close(adaptive, torch.tensor([(0.25 * 6.5 / 2.5 + 0.75 * 2.5 / 1.5) / 0.5]))
    # scaled by the reward clip c, as NVlabs' code does: c = 2 doubles the plain loss, (0.25 * 6.5 + 0.75 * 2.5) / 0.5 = 7
    scaled = nft_loss(pred, old, target, torch.tensor([0.25]), 0.5, torch.tensor([2.0]), adaptive=False, adv_clip=2.0)
    torch.testing.assert_close(scaled, torch.tensor([14.0]))


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_nft_gradient_at_old_policy_is_advantage_weighted_regression(beta):
    """At v_θ = v_old the gradient is 2 clip(A, -c, c) s² (v_old - v*) / D, whatever β and c (the c/β scaling).

    old = [1, -1], target 0, x̂_0 scale s = 1.5, D = 2: 2 A 2.25 [1, -1] / 2 = 2.25 A [1, -1].
    """
    old, target = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.0, 0.0]])
    # (A, c, r = 1/2 + clip(A, -c, c) / 2c, expected gradient)
    cases = [(1.0, 2.0, 0.75, [2.25, -2.25]), (1.0, 4.0, 0.625, [2.25, -2.25]), (-3.0, 2.0, 0.0, [-4.5, 4.5])]
    for advantage, clip, r, expected in cases:
        assert r == 0.5 + max(-clip, min(clip, advantage)) / (2 * clip)
        pred = old.clone().requires_grad_(True)
        nft_loss(pred, old, target, torch.tensor([r]), beta, torch.tensor([1.5]), adaptive=False, adv_clip=clip).sum().backward()
        torch.testing.assert_close(pred.grad, torch.tensor([expected]))  # descent: toward v* if A > 0, away if A < 0


def _flow_or_ddim(prediction_type):
    from diffusers import FlowMatchEulerDiscreteScheduler

    if prediction_type == "flow":
        return make_schedule(FlowMatchEulerDiscreteScheduler(shift=3.0), 10)
    return make_schedule(DDIMScheduler(prediction_type=prediction_type, clip_sample=False), 10)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "flow"])
def test_the_regression_target_is_the_output_whose_x0_is_the_data(prediction_type):
    """What NFT and DPO regress onto (ε, v, or the flow velocity ε - x_0) is, at x_t = add_noise(x_0, ε, t),
    the output from which the sampler recovers x_0 exactly; the flow x_t is diffusers' own scale_noise."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    schedule = _flow_or_ddim(prediction_type)
    g = torch.Generator().manual_seed(1)
    t = schedule.timesteps[[0, 4, 9]]
    x0, eps = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    x_t = add_noise(schedule, x0, eps, t)
    x0_hat = step_mean_std(schedule, training_target(schedule, x0, eps, t), t, x_t, eta=0.0)[2]
    torch.testing.assert_close(x0_hat, x0, rtol=1e-4, atol=1e-4)
    if prediction_type == "flow":
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
        scheduler.set_timesteps(10)
        torch.testing.assert_close(x_t, scheduler.scale_noise(x0, t, eps))
        torch.testing.assert_close(training_target(schedule, x0, eps, t), eps - x0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "flow"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_nft_loss_in_output_space_is_the_x0_space_loss_of_every_parameterisation(prediction_type, adaptive):
    """The NFT module docstring's claim, checked with the sampler's own x̂_0 (drl.sampling.step_mean_std).

    x̂_0 is affine in the output, so v± formed from ε-, v- or flow outputs have x̂_0(v±) equal to the same
    combinations of x̂_0(v_old) and x̂_0(v_θ); and nft_loss on outputs equals the x̂_0-space loss
    c/β [r f(x̂_0(v+) - x_0) + (1 - r) f(x̂_0(v-) - x_0)], f the (adaptive) mean squared error.
    """
    schedule = _flow_or_ddim(prediction_type)
    g = torch.Generator().manual_seed(0)
    t = schedule.timesteps[[0, 4, 9]]  # [3]: noisy, middle, nearly clean
    x0, eps = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    x_t = add_noise(schedule, x0, eps, t)
    pred, old = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    r, beta, clip = torch.tensor([0.9, 0.2, 0.5]), 0.3, 2.0

    def x0_of(out):  # the x̂_0 that the sampler itself derives from a model output at (x_t, t)
        return step_mean_std(schedule, out, t, x_t, eta=0.0)[2]

    positive, negative = (1 - beta) * old + beta * pred, (1 + beta) * old - beta * pred
    torch.testing.assert_close(x0_of(positive), (1 - beta) * x0_of(old) + beta * x0_of(pred), rtol=1e-4, atol=1e-4)

    def f(error):
        squared = error.pow(2).flatten(1).mean(1)
        return squared / error.abs().flatten(1).mean(1) if adaptive else squared

    expected = clip / beta * (r * f(x0_of(positive) - x0) + (1 - r) * f(x0_of(negative) - x0))
    target = training_target(schedule, x0, eps, t)
    loss = nft_loss(pred, old, target, r, beta, x0_error_scale(schedule, t), adaptive, clip)
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)


def test_diffusion_dpo_loss_by_hand():
    zero = torch.zeros(1, 2)
    # chosen: model error 1, reference error 2; rejected: model error 4, reference error 1
    pred_w, ref_w = torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0**0.5, 2.0**0.5]])
    pred_l, ref_l = torch.tensor([[2.0, 2.0]]), torch.tensor([[1.0, 1.0]])
    loss, logits = diffusion_dpo_loss(pred_w, pred_l, ref_w, ref_l, zero, zero, beta=0.5)
    # logits = -0.25 * ((1 - 4) - (2 - 1)) = 1
    torch.testing.assert_close(logits, torch.tensor([1.0]))
    torch.testing.assert_close(loss, torch.tensor([math.log(1 + math.exp(-1.0))]))
    same, zero_logits = diffusion_dpo_loss(ref_w, ref_l, ref_w, ref_l, zero, zero, beta=0.5)
    torch.testing.assert_close(same, torch.tensor([math.log(2.0)]))  # the reference itself: log 2
    assert float(zero_logits) == 0.0


def test_group_advantages_with_a_std_floor_by_hand():
    rewards = torch.tensor([1.0, 3.0, 5.0, 5.0, 0.0, 0.1])
    adv = group_advantages(rewards, group_size=2, std_floor=0.5)
    # groups: std 1 (kept), std 0 (ties -> 0), std 0.05 (floored to 0.5): +-0.05 / 0.5
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0, 0.0, 0.0, -0.1, 0.1]), atol=1e-6, rtol=0)


def test_group_advantages_over_the_batch_std_by_hand():
    rewards = torch.tensor([0.0, 2.0, 10.0, 10.1])
    adv = group_advantages(rewards, group_size=2, std_over="batch")
    std = rewards.std(unbiased=False)  # sqrt(mean r^2 - mean^2) of all four: ~4.53
    # the near-tied second group keeps its small spread instead of being blown up to +-1
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0, -0.05, 0.05]) / std, atol=1e-6, rtol=0)


def test_optimality_probability_by_hand():
    r = optimality_probability(torch.tensor([0.0, 2.0, 10.0, 10.0]), group_size=2, clip=2.0)
    torch.testing.assert_close(r, torch.tensor([0.25, 0.75, 0.5, 0.5]))  # A = -1, 1, 0, 0
    r_batch = optimality_probability(torch.tensor([0.0, 0.0, 4.0, 4.0]), group_size=1, clip=0.5)
    torch.testing.assert_close(r_batch, torch.tensor([0.0, 0.0, 1.0, 1.0]))  # A = -1, -1, 1, 1 clipped to [-0.5, 0.5]


def test_best_worst_pairs_drop_ties():
    chosen, rejected = best_worst_pairs(torch.tensor([1.0, 5.0, 3.0, 2.0, 2.0, 2.0]), group_size=3, min_gap=0.0)
    assert chosen.tolist() == [1] and rejected.tolist() == [0]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_x0_error_scale_is_the_derivative_of_x0(prediction_type):
    schedule = make_schedule(DDIMScheduler(prediction_type=prediction_type, clip_sample=False), 10)
    t = torch.tensor([1, 501, 901])
    x, out, delta = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    x0_a, _ = predict_x0_eps(schedule, out, t, x)
    x0_b, _ = predict_x0_eps(schedule, out + delta, t, x)
    torch.testing.assert_close((x0_b - x0_a).abs(), x0_error_scale(schedule, t).view(-1, 1) * delta.abs(), rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------------- pairs file
def _write_images(tmp_path, n=2):
    from PIL import Image

    names = []
    for i in range(n):
        name = f"img{i}.png"
        Image.new("RGB", (40, 40), (255 * (i % 2), 0, 0)).save(tmp_path / name)
        names.append(name)
    return names


def test_pairs_file_jsonl_and_csv(tmp_path):
    a, b = _write_images(tmp_path)
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"prompt": "a red circle", "chosen": a, "rejected": b}) + "\n\n")
    (tmp_path / "pairs.csv").write_text(f"prompt,chosen,rejected\na red circle,{a},{b}\n")
    for name in ("pairs.jsonl", "pairs.csv"):
        (pair,) = load_pairs(tmp_path / name)
        assert pair.prompt == "a red circle" and pair.chosen == tmp_path / a and pair.rejected == tmp_path / b
    image = load_image(tmp_path / b, 32)
    assert image.shape == (3, 32, 32) and float(image[0].min()) == 1.0 and float(image[1].max()) == 0.0


@pytest.mark.parametrize(
    "content, error, message",
    [
        ('{"prompt": "x", "chosen": "img0.png"}\n', ConfigError, "has no rejected"),
        ('{"prompt": "x", "chosen": "img0.png", "rejected": "nope.png"}\n', FileNotFoundError, "nope.png"),
        ("not json\n", ConfigError, "is not a JSON object"),
        ("", ConfigError, "holds no pairs"),
    ],
)
def test_bad_pairs_files_fail_with_a_sentence(tmp_path, content, error, message):
    _write_images(tmp_path)
    (tmp_path / "pairs.jsonl").write_text(content)
    with pytest.raises(error, match=message):
        load_pairs(tmp_path / "pairs.jsonl")
    (tmp_path / "pairs.csv").write_text("prompt,chosen\nx,img0.png\n")
    with pytest.raises(ConfigError, match="lacks rejected"):
        load_pairs(tmp_path / "pairs.csv")


# ---------------------------------------------------------------------------- config
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
        (["algorithm=nft", "algorithm.ema_decay=1.5"], "algorithm.ema_decay=1.5 must be in [0, 1]"),
    ],
)
def test_new_options_fail_with_a_sentence(overrides, message):
    with pytest.raises(ConfigError) as info:
        compose_config(overrides)
    assert message in str(info.value)


# ------------------------------------------------------------------------ end to end
def _run(run_dir, model, *overrides):
    return train(compose_config([f"model.path={model}", "reward=toy_alignment", "hardware.num_threads=1", *overrides]), run_dir)


def test_nft_runs_end_to_end_on_policy_with_kl_and_ema(tmp_path, random_toy_model):
    _run(tmp_path, random_toy_model, "algorithm=nft", "scheduler.eta=0", "algorithm.kl_coef=0.1", "algorithm.ema_decay=0.9")
    records = _records(tmp_path)
    assert len(records) == 2 and all(math.isfinite(r["train/loss"]) for r in records)
    assert records[0]["train/old_dev_first"] == 0.0  # v_θ = v_old before the first step
    assert records[0]["train/pairs"] == 8 * 2  # half of 4 timesteps per sample
    assert records[1]["train/kl_to_base"] > 0 and records[1]["drift_from_base"] > 0
    assert (tmp_path / "samples_after.png").is_file() and (tmp_path / "model" / "unet").is_dir()


def test_dpo_online_runs_end_to_end(tmp_path, random_toy_model):
    _run(tmp_path, random_toy_model, "algorithm=dpo", "algorithm.lr=1e-3", "algorithm.minibatches=1")
    records = _records(tmp_path)
    assert all(r["train/pairs"] == 8 // 4 and math.isfinite(r["train/loss"]) for r in records)  # best vs worst of 4
    assert records[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-4)  # model = reference at the first step
    assert records[1]["train/loss"] != pytest.approx(math.log(2), abs=1e-4)


def test_dpo_offline_trains_on_a_pairs_file(tmp_path, random_toy_model):
    a, b = _write_images(tmp_path)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"prompt,chosen,rejected\na small red circle at the top left,{a},{b}\na large blue square at the center,{b},{a}\n")
    run = tmp_path / "run"
    _run(run, random_toy_model, "algorithm=dpo", f"algorithm.pairs_path={pairs}", "algorithm.lr=1e-3")
    records = _records(run)
    assert all(r["train/pairs"] == 4 and r["train/optimizer_steps"] == 4 for r in records)  # 4 minibatches
    assert "reward_mean" not in records[0]  # offline: nothing sampled during training


def test_ddpo_shared_group_noise_starts_each_group_from_one_x_T(random_toy_model):
    from drl.algorithms.base import collect_groups
    from drl.train import build_context

    ctx, _, _ = build_context(compose_config([f"model.path={random_toy_model}", "algorithm.group_size=4"]))
    batch = collect_groups(ctx, 4, torch.Generator().manual_seed(0), share_noise=True)
    x_T = batch.latents[:, 0]
    assert torch.equal(x_T[0], x_T[3]) and not torch.equal(x_T[0], x_T[4])
    assert batch.prompts[0] == batch.prompts[3] and not torch.equal(batch.latents[0, -1], batch.latents[1, -1])


def test_ddpo_ratio_is_one_on_policy_in_float32(tmp_path, random_toy_model):
    """The on-policy check of every ddpo run, with group options on: <= 1e-5 at the first inner step of every epoch.

    (The same on a tiny flow model: tests/test_nft_dpo_models.py.)
    """
    _run(tmp_path, random_toy_model, "algorithm.group_size=4", "algorithm.share_group_noise=true", "algorithm.ema_decay=0.9")
    records = _records(tmp_path)
    assert len(records) == 2 and all(r["train/ratio_dev_first"] <= 1e-5 for r in records)
    assert records[1]["drift_from_base"] > 0  # the second epoch's check comes after real updates


# ------------------------------------------------------------------- shared regularisation
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
