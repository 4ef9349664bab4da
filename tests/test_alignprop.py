"""AlignProp's reward gradient through the DDIM chain, against finite differences; truncation."""

import pytest
import torch

from drl.algorithms.alignprop import truncation_mask
from drl.errors import ConfigError
from drl.models.finetune import setup_trainable
from drl.models.loading import load_t2i
from drl.rollout import RolloutCollector
from drl.sampling import make_schedule
from drl.train import build_context

from conftest import compose_config


def _float64_collector(random_toy_model, steps=3, eta=0.0, guidance_scale=1.0):
    model = load_t2i(random_toy_model)
    params = setup_trainable(model.denoiser, "lora", rank=2, alpha=2.0, targets=["to_q", "to_v"])
    model.denoiser.to(torch.float64).eval()
    model.text_encoder.to(torch.float64)
    with torch.no_grad():  # non-zero LoRA B so the adapter is live
        for p in params:
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    schedule = make_schedule(model.make_scheduler("ddim"), steps)
    collector = RolloutCollector(
        model, schedule, eta=eta, guidance_scale=guidance_scale, batch_size=2, resolution=32, device=torch.device("cpu")
    )
    return collector, params


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_reward_gradient_matches_finite_differences(random_toy_model, eta):
    collector, params = _float64_collector(random_toy_model, eta=eta)
    weights = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    prompts = ["a small red circle at the top left", "a large blue square at the center"]
    all_steps = torch.ones(3, dtype=torch.bool)

    def reward():
        samples = collector.sample_with_grad(prompts, torch.Generator().manual_seed(5), all_steps)
        return (samples * weights).sum()

    reward().backward()
    for param in params[:3]:
        index = (0,) * param.ndim
        analytic = float(param.grad[index])
        eps = 1e-6
        with torch.no_grad():
            original = float(param[index])
            param[index] = original + eps
            up = float(reward())
            param[index] = original - eps
            down = float(reward())
            param[index] = original
        numeric = (up - down) / (2 * eps)
        assert abs(analytic - numeric) <= 1e-2 * max(abs(numeric), 1e-8), (analytic, numeric)


@pytest.mark.parametrize(
    "mode, k, expected",
    [("all", 2, [True, True, True, True]), ("last", 2, [False, False, True, True]), ("last", 1, [False, False, False, True])],
)
def test_truncation_masks(mode, k, expected):
    assert truncation_mask(4, mode, k, torch.Generator().manual_seed(0)).tolist() == expected


def test_random_truncation_draws_k_from_1_to_K():
    g = torch.Generator().manual_seed(0)
    counts = {int(truncation_mask(6, "random", 3, g).sum()) for _ in range(60)}
    assert counts == {1, 2, 3}


def test_only_the_truncated_steps_call_the_denoiser_with_grad(random_toy_model):
    collector, _ = _float64_collector(random_toy_model, steps=4)
    calls = []
    hook = collector.model.denoiser.register_forward_hook(lambda m, i, o: calls.append(torch.is_grad_enabled()))
    mask = truncation_mask(4, "last", 2, torch.Generator())
    samples = collector.sample_with_grad(["a small red circle at the top left"], torch.Generator().manual_seed(0), mask)
    hook.remove()
    assert calls == [False, False, True, True]
    assert samples.requires_grad


def test_checkpointed_gradient_equals_plain_gradient(random_toy_model, monkeypatch):
    """Plain, reentrant checkpoints (one process, DDP) and non-reentrant ones (what an FSDP-sharded denoiser gets)."""
    import drl.rollout

    collector, params = _float64_collector(random_toy_model)
    grads = []
    for use_checkpoint, sharded in ((False, False), (True, False), (True, True)):
        monkeypatch.setattr(drl.rollout, "is_sharded", lambda module: sharded)
        for p in params:
            p.grad = None
        samples = collector.sample_with_grad(["a small red circle at the top left"], torch.Generator().manual_seed(0), torch.ones(3, dtype=torch.bool), use_checkpoint)
        samples.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(grads[0], grads[2])


@pytest.mark.parametrize("use_checkpoint", [False, True])
def test_per_sample_steps_give_each_row_the_gradient_of_its_own_truncation(random_toy_model, use_checkpoint):
    """Rows with their own grad steps ([B, S]) in one chain: the samples are the chain's, and the gradient is the sum
    of each row's gradient with its steps applied to the whole batch (rows are independent given the noise)."""
    collector, params = _float64_collector(random_toy_model, steps=4, eta=1.0, guidance_scale=3.0)
    prompts = ["a small red circle at the top left", "a large blue square at the center", "a green triangle"]
    masks = torch.tensor([[False, True, True, True], [False, False, False, True], [False, False, True, True]])
    weights = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def grad_and_samples(mask, row=None):
        for p in params:
            p.grad = None
        samples = collector.sample_with_grad(prompts, torch.Generator().manual_seed(5), mask, use_checkpoint)
        terms = samples * weights
        (terms.sum() if row is None else terms[row].sum()).backward()
        return torch.cat([p.grad.flatten() for p in params]), samples.detach()

    together, samples = grad_and_samples(masks)
    per_row = [grad_and_samples(masks[r], row=r) for r in range(3)]
    torch.testing.assert_close(together, sum(grad for grad, _ in per_row))
    torch.testing.assert_close(samples, per_row[0][1])  # a split step runs smaller batches: float64 rounding


def test_a_step_whose_rows_differ_runs_the_rows_with_gradient_apart(random_toy_model):
    collector, _ = _float64_collector(random_toy_model, steps=3, guidance_scale=3.0)
    calls = []  # (grad enabled, batch) of each denoiser call; guidance doubles the batch
    hook = collector.model.denoiser.register_forward_hook(lambda m, i, o: calls.append((torch.is_grad_enabled(), i[0].shape[0])))
    masks = torch.tensor([[False, True, True], [False, False, True]])
    samples = collector.sample_with_grad(["a red circle", "a blue square"], torch.Generator().manual_seed(0), masks)
    hook.remove()
    assert calls == [(False, 4), (True, 2), (False, 2), (True, 4)]
    assert samples.requires_grad


def test_batches_sharing_a_call_keep_their_own_draws_and_optimizer_steps(random_toy_model):
    cfg = compose_config(
        [f"model.path={random_toy_model}", "algorithm=alignprop", "reward=toy_aesthetic", "scheduler.num_steps=4",
         "scheduler.guidance_scale=1.0", "algorithm.truncation=random", "algorithm.truncation_steps=4",
         "algorithm.checkpoint_denoiser=false", "algorithm.gradient_accumulation=2", "algorithm.batches_per_call=2",
         "train.samples_per_epoch=10", "train.batch_size=2"]
    )
    ctx, _, algorithm = build_context(cfg)
    draws, draw = [], algorithm._grad_steps
    algorithm._grad_steps = lambda: draws.append(draw()) or draws[-1]  # record each batch's (mask [S], stop)
    calls = []  # batch of each denoiser call
    hook = ctx.model.denoiser.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    metrics = algorithm.update(algorithm.collect(torch.Generator().manual_seed(1)), epoch=0)
    hook.remove()
    # 5 batches of 2: two calls of two batches (an optimizer step each), then the last batch alone
    assert metrics["samples"] == 10 and metrics["train/optimizer_steps"] == 3 and len(draws) == 5
    masks = [mask for mask, _ in draws]
    expected = []
    for pair in (masks[0:2], masks[2:4]):  # a step where the two batches' masks differ runs as two calls of 2
        expected += [4 if bool(pair[0][i]) == bool(pair[1][i]) else 2 for i in range(4) for _ in range(1 + (pair[0][i] != pair[1][i]))]
    expected += [2] * 4
    assert calls == expected and 2 in expected[:-4]  # (these seeds' draws differ within a call)
    assert metrics["train/steps_with_grad"] == sum(int(m.sum()) for m in masks) / 5
    assert metrics["train/denoiser_calls_update"] == sum(calls) == 10 * 4  # each sample's 4 steps, unguided, no KL


def test_batches_per_call_must_divide_gradient_accumulation(random_toy_model):
    with pytest.raises(ConfigError, match=r"algorithm.batches_per_call \(3\) must divide algorithm.gradient_accumulation \(4\)"):
        compose_config([f"model.path={random_toy_model}", "algorithm=alignprop", "reward=toy_aesthetic",
                        "algorithm.gradient_accumulation=4", "algorithm.batches_per_call=3"])
    with pytest.raises(ConfigError, match="algorithm.refl=true stops each batch at its own step"):
        compose_config([f"model.path={random_toy_model}", "algorithm=alignprop", "reward=toy_aesthetic", "algorithm.refl=true",
                        "algorithm.gradient_accumulation=2", "algorithm.batches_per_call=2"])


def test_alignprop_refuses_a_non_differentiable_reward(random_toy_model):
    cfg = compose_config([f"model.path={random_toy_model}", "algorithm=alignprop", "reward=jpeg_compressibility"])
    with pytest.raises(ConfigError, match="needs a differentiable reward, and jpeg_compressibility is not"):
        build_context(cfg)


def test_refl_scores_the_one_step_prediction_with_a_single_grad_call(random_toy_model):
    collector, params = _float64_collector(random_toy_model, steps=4)
    calls = []
    hook = collector.model.denoiser.register_forward_hook(lambda m, i, o: calls.append(torch.is_grad_enabled()))
    mask = torch.tensor([False, False, True, False])
    samples = collector.sample_with_grad(["a small red circle at the top left"], torch.Generator().manual_seed(0), mask, stop_step=2)
    hook.remove()
    assert calls == [False, False, True]  # the chain stops at step 2
    samples.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


@pytest.mark.slow  # ~70 s on 2 cores: pytest -m slow tests/test_alignprop.py
def test_alignprop_kl_to_base_is_flat_at_init_and_pulls_back_after_a_step(random_toy_model):
    from drl.algorithms.regularization import denoising_kl

    cfg = compose_config(
        [f"model.path={random_toy_model}", "algorithm=alignprop", "algorithm.kl_coef=0.1", "algorithm.lr=1e-2",
         "reward=toy_aesthetic", "train.samples_per_epoch=4", "train.batch_size=2", "scheduler.num_steps=2"]
    )  # validates: kl_coef is accepted for alignprop
    ctx, _, algorithm = build_context(cfg)
    prompts = ["a small red circle at the top left", "a large blue square at the center"]
    _, latents, cond = ctx.collector.sample_with_grad(prompts, torch.Generator().manual_seed(0), torch.ones(2, dtype=torch.bool), with_latents=True)
    assert latents.requires_grad and latents.shape == (2, *ctx.collector.latent_shape)  # a latent reward backpropagates through them
    x0 = latents.detach()  # the KL is taken at the samples' own points, as AlignProp.update does

    def kl_and_grad():
        algorithm.optimizer.zero_grad(set_to_none=True)
        kl = denoising_kl(ctx, algorithm.reference, x0, cond, torch.Generator().manual_seed(1)).mean()
        kl.backward()
        return float(kl.detach()), sum(float(p.grad.abs().sum()) for p in ctx.params if p.grad is not None)

    assert kl_and_grad() == (0.0, 0.0)  # the trained model is the reference: no KL, no gradient
    metrics = algorithm.update(algorithm.collect(torch.Generator().manual_seed(2)), epoch=0)  # two optimizer steps on the reward
    assert metrics["train/kl_to_base"] > 0  # the second minibatch is scored after the first step
    kl, grad = kl_and_grad()
    assert kl > 0 and grad > 0
    with torch.no_grad():  # one plain gradient step on the KL alone moves the model back towards the base
        for p in ctx.params:
            if p.grad is not None:
                p.sub_(0.5 * p.grad / grad)
    assert kl_and_grad()[0] < kl
