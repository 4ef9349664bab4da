"""RWR regresses on the sampling chain's own states, towards the chain's clean end, weighted by exp(beta r)."""

from dataclasses import replace

import pytest
import torch

from drl.algorithms.denoising import implied_noise
from drl.errors import ConfigError
from drl.losses import rwr_weights
from drl.sampling import add_noise, denoising_step
from drl.train import build_context

from conftest import compose_config


@pytest.fixture(scope="module")
def rwr(random_toy_model):
    """One tiny RWR context and an epoch's batch (DDIM, eta = 1), shared by the tests below."""
    cfg = compose_config(["algorithm=rwr", f"model.path={random_toy_model}", "algorithm.minibatches=1"])
    ctx, _, algorithm = build_context(cfg)
    batch = algorithm.collect(torch.Generator().manual_seed(0))
    batch.rewards = torch.linspace(-1.0, 2.0, batch.batch_size)  # any spread: the weights must follow it
    return ctx, algorithm, batch


def test_implied_noise_inverts_the_forward_process(rwr):
    ctx, _, _ = rwr
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 250, 700, 999])
    x_t = add_noise(ctx.schedule, x0, eps, t)
    torch.testing.assert_close(implied_noise(ctx.schedule, x_t, x0, t), eps, atol=1e-4, rtol=1e-4)
    # by hand at t=700: eps = (x_t - sqrt(a) x0) / sqrt(1 - a)
    a = float(ctx.schedule.alphas_cumprod[700])
    torch.testing.assert_close(implied_noise(ctx.schedule, x_t, x0, t)[2], (x_t[2] - a**0.5 * x0[2]) / (1 - a) ** 0.5)


def test_clean_ends_are_the_last_steps_prediction_not_the_noisy_final_state(rwr):
    ctx, algorithm, batch = rwr  # DDIM, eta = 1: the last step adds noise
    x_last, t_last = batch.latents[:, -2], batch.timesteps[:, -1]
    with torch.no_grad():
        out = ctx.model.denoiser(x_last, t_last, **ctx.model.denoiser_kwargs(batch.cond)).sample
    expected = denoising_step(ctx.schedule, out, t_last, x_last, eta=1.0, prev_sample=batch.final_latents).pred_original_sample
    clean = algorithm.clean_ends(batch)
    torch.testing.assert_close(clean, expected, atol=1e-5, rtol=1e-5)
    assert float((clean - batch.final_latents).abs().mean()) > 1e-3


@pytest.mark.parametrize("states", ["trajectory", "forward"])
def test_rwr_trains_on_the_right_states_with_the_weighted_loss(rwr, states):
    ctx, algorithm, batch = rwr  # the weights may have moved in an earlier test: every check uses the current ones
    algorithm.cfg = replace(algorithm.cfg, regression_states=states, center_weights=False)
    x0 = algorithm.clean_ends(batch)
    weights = rwr_weights(batch.rewards, 1.0, "batch")
    # By hand, before any optimizer step: sum_i w_i mean_s L(x_t^{i,s}) / B over every (sample, step).
    b, s = batch.batch_size, batch.timesteps.shape[1]
    x_t, t = batch.latents[:, :-1].reshape(b * s, *x0.shape[1:]), batch.timesteps.reshape(-1)
    a = ctx.schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    target = (x_t - a.sqrt() * x0.repeat_interleave(s, 0)) / (1 - a).sqrt()
    with torch.no_grad():
        pred = ctx.model.denoiser(x_t, t, encoder_hidden_states=batch.prompt_embeds.repeat_interleave(s, 0)).sample
    per_pair = (pred - target).pow(2).flatten(1).mean(1)  # [B*S]
    by_hand = float((weights.repeat_interleave(s) * per_pair).sum() / (b * s))
    by_hand_centred = float(((weights - 1).repeat_interleave(s) * per_pair).sum() / (b * s))  # weights have mean 1

    seen = []  # (x_t, t) of every training call of the denoiser (clean_ends' no-grad calls excluded)

    def record(module, args, kwargs):
        if torch.is_grad_enabled():
            t = kwargs["timestep"] if "timestep" in kwargs else args[1]
            seen.append((args[0].detach(), t.detach()))

    hook = ctx.model.denoiser.register_forward_pre_hook(record, with_kwargs=True)
    for group in algorithm.optimizer.param_groups:
        group["lr"] = 0.0  # the weights stay put, so a second update sees what the hand-made loss saw
    metrics = algorithm.update(batch, epoch=0)
    hook.remove()
    inputs, timesteps = torch.cat([x for x, _ in seen]), torch.cat([t for _, t in seen])
    if states == "trajectory":
        # Every chain state exactly once (in a shuffled order), and the reported loss matches the hand-made one.
        assert sorted(timesteps.tolist()) == sorted(t.tolist())
        assert torch.allclose(inputs.sum(0), x_t.sum(0), atol=1e-4)
        assert metrics["train/loss"] == pytest.approx(by_hand, rel=1e-4)
        # Centred weights w - 1 (the same weights score the same states again: lr is 0).
        algorithm.cfg = replace(algorithm.cfg, center_weights=True)
        assert algorithm.update(batch, epoch=0)["train/loss"] == pytest.approx(by_hand_centred, rel=1e-3, abs=1e-7)
        algorithm.cfg = replace(algorithm.cfg, center_weights=False)
    else:
        # One fresh q(x_t | x_0) state per sample, at random training timesteps, none of them the chain's.
        assert inputs.shape[0] == b and not any(torch.allclose(x, y) for x in inputs for y in x_t)
    assert metrics["train/optimizer_steps"] == 1


def test_unknown_regression_states_is_a_config_error():
    with pytest.raises(ConfigError, match="algorithm.regression_states='nope' is not one of trajectory, forward"):
        compose_config(["algorithm=rwr", "algorithm.regression_states=nope"])
