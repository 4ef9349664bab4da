"""The shared collector: shapes, reproducibility, and log-probs that re-score exactly."""

import torch

from drl.algorithms.ddpo import select_train_steps
from drl.sampling import denoising_step
from drl.train import build_context

from conftest import compose_config


def _ctx(random_toy_model, *overrides):
    cfg = compose_config([f"model.path={random_toy_model}", *overrides])
    return build_context(cfg)


def test_collector_shapes_and_types(random_toy_model):
    ctx, reward, _ = _ctx(random_toy_model, "train.batch_size=3", "reward=toy_alignment")
    prompts, meta = ctx.prompts.sample(5, torch.Generator().manual_seed(0))
    batch = ctx.collector.collect(prompts, meta, torch.Generator().manual_seed(0))  # 2 chunks: 3 + 2
    S = ctx.schedule.num_steps
    assert batch.latents.shape == (5, S + 1, 3, 32, 32)
    assert batch.timesteps.shape == (5, S) and batch.timesteps.dtype == torch.long
    assert batch.log_probs.shape == (5, S) and batch.log_probs.dtype == torch.float32
    assert batch.prompt_embeds.shape[0] == 5 and batch.samples.shape == (5, 3, 32, 32)
    assert batch.stochastic.shape == (S,) and bool(batch.stochastic.all())
    assert 0 <= float(batch.samples.min()) and float(batch.samples.max()) <= 1
    assert torch.equal(batch.timesteps[0], ctx.schedule.timesteps)
    # the decoded samples are the last latents mapped to [0, 1]
    torch.testing.assert_close(batch.samples, ((batch.latents[:, -1] + 1) / 2).clamp(0, 1))
    scores, terms = reward(batch.samples, batch.prompts, batch.metadata)
    assert scores.shape == (5,) and set(terms) == {"toy_alignment"}


def test_same_generator_same_rollout(random_toy_model):
    ctx, _, _ = _ctx(random_toy_model)
    prompts, meta = ctx.prompts.sample(4, torch.Generator().manual_seed(0))
    a = ctx.collector.collect(prompts, meta, torch.Generator().manual_seed(7))
    b = ctx.collector.collect(prompts, meta, torch.Generator().manual_seed(7))
    c = ctx.collector.collect(prompts, meta, torch.Generator().manual_seed(8))
    assert torch.equal(a.latents, b.latents) and torch.equal(a.log_probs, b.log_probs)
    assert not torch.equal(a.latents, c.latents)


def test_classifier_free_guidance_changes_samples(random_toy_model):
    ctx, _, _ = _ctx(random_toy_model, "scheduler.guidance_scale=3.0")
    assert len(ctx.collector.uncond(2)) == 2
    prompts, meta = ctx.prompts.sample(2, torch.Generator().manual_seed(0))
    guided = ctx.collector.collect(prompts, meta, torch.Generator().manual_seed(1))
    ctx.collector.guidance_scale = 1.0
    plain = ctx.collector.collect(prompts, meta, torch.Generator().manual_seed(1))
    assert guided.uncond is not None and plain.uncond is None
    assert not torch.allclose(guided.latents[:, -1], plain.latents[:, -1])


def test_importance_ratio_is_one_on_policy(random_toy_model):
    """Re-scoring stored transitions in mixed-timestep batches reproduces the sampling log-probs."""
    ctx, _, _ = _ctx(random_toy_model)
    prompts, meta = ctx.prompts.sample(4, torch.Generator().manual_seed(0))
    batch = ctx.collector.collect(prompts, meta, torch.Generator().manual_seed(3))
    b = torch.tensor([0, 1, 2, 3, 0, 2])
    i = torch.tensor([0, 3, 1, 2, 3, 0])  # different timesteps in one denoiser call
    with torch.no_grad():
        out = ctx.model.denoise(batch.latents[b, i], batch.timesteps[b, i], batch.cond[b])
    step = denoising_step(ctx.schedule, out, batch.timesteps[b, i], batch.latents[b, i], eta=1.0, prev_sample=batch.latents[b, i + 1])
    dims = batch.latents[0, 0].numel()
    ratio_mean = torch.exp((step.log_prob - batch.log_probs[b, i]) / dims)
    assert float((ratio_mean - 1).abs().max()) <= 1e-5
    ratio_sum = torch.exp(step.log_prob - batch.log_probs[b, i])
    assert float((ratio_sum - 1).abs().max()) <= 1e-2


def test_select_train_steps_respects_fraction_and_stochastic_mask():
    stochastic = torch.tensor([True, True, False, True])
    steps = select_train_steps(stochastic, batch_size=3, fraction=0.5, generator=torch.Generator().manual_seed(0))
    assert steps.shape == (3, 2)
    assert not (steps == 2).any()
    assert all(len(set(row.tolist())) == 2 for row in steps)


def test_select_train_steps_leaves_out_the_last_stochastic_steps():
    stochastic = torch.tensor([True, True, True, True, False])  # the last step has no density
    steps = select_train_steps(stochastic, batch_size=4, fraction=1.0, generator=torch.Generator().manual_seed(0), skip_last=2)
    assert sorted(set(steps.flatten().tolist())) == [0, 1]  # stochastic steps 2 and 3 are the last two
    one = select_train_steps(stochastic, batch_size=1, fraction=1.0, generator=torch.Generator().manual_seed(0), skip_last=9)
    assert one.tolist() == [[0]]  # never an empty set: the first stochastic step stays


def test_sampling_batch_is_apart_from_the_training_batch(random_toy_model):
    """train.sample_batch_size sets the collector's denoiser calls; the update keeps train.batch_size."""
    ctx, reward, algorithm = _ctx(random_toy_model, "train.batch_size=2", "train.sample_batch_size=6", "train.samples_per_epoch=6")
    sizes = []
    hook = ctx.model.denoiser.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    batch = algorithm.collect(torch.Generator().manual_seed(0))
    assert sizes == [6] * ctx.schedule.num_steps  # one chunk of 6, not three of 2
    sizes.clear()
    batch.rewards, _ = reward(batch.samples, batch.prompts, batch.metadata)
    algorithm.update(batch, epoch=0)
    hook.remove()
    assert sizes and max(sizes) == 2


def test_sample_batch_size_must_be_positive():
    import pytest

    from drl.errors import ConfigError

    with pytest.raises(ConfigError, match="train.sample_batch_size=0 must be > 0"):
        compose_config(["train.sample_batch_size=0"])


def test_one_chain_serves_rollouts_alignprop_and_policies(random_toy_model):
    """The same generator gives the same chain whether it is recorded (rollouts), run with gradients
    (AlignProp) or stopped early (ReFL: its x̂_0 at that step); a policy's actions come from the same chain."""
    from drl.chain import gaussian_noise, run_chain
    from drl.config import PolicyModelConfig
    from drl.models.policy import DiffusionPolicy
    from drl.sampling import make_schedule

    ctx, _, _ = _ctx(random_toy_model, "scheduler.eta=1.0")
    prompts, meta = ctx.prompts.sample(3, torch.Generator().manual_seed(0))
    S = ctx.schedule.num_steps
    rollout = ctx.collector.collect(prompts, meta, torch.Generator().manual_seed(5))
    with torch.no_grad():
        samples, x0, _ = ctx.collector.sample_with_grad(
            prompts, torch.Generator().manual_seed(5), torch.zeros(S, dtype=torch.bool), with_latents=True
        )
        _, refl_x0, _ = ctx.collector.sample_with_grad(
            prompts, torch.Generator().manual_seed(5), torch.zeros(S, dtype=torch.bool), stop_step=1, with_latents=True
        )
    assert torch.equal(samples, rollout.samples) and torch.equal(x0, rollout.latents[:, -1])
    # ReFL's x̂_0 at step 1 is the prediction from x_{t_1}, the rollout's second latent
    cond = ctx.model.encode_prompts(prompts)
    with torch.no_grad():
        step = denoising_step(ctx.schedule, ctx.model.denoise(rollout.latents[:, 1], rollout.timesteps[:, 1], cond), rollout.timesteps[:, 1], rollout.latents[:, 1], eta=1.0, prev_sample=rollout.latents[:, 2])
    torch.testing.assert_close(refl_x0, step.pred_original_sample.to(refl_x0.dtype))
    torch.testing.assert_close(step.log_prob, rollout.log_probs[:, 1])

    policy = DiffusionPolicy.build(3, 2, PolicyModelConfig(hidden_dim=16, diffusion_steps=5), seed=0)
    schedule = make_schedule(policy.make_scheduler("ddpm"), 5)
    states = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    out = policy.sample(schedule, states, generator=torch.Generator().manual_seed(2))
    noise = gaussian_noise(torch.Generator().manual_seed(2), torch.float32, states.device, states.dtype)
    chain = run_chain(schedule, noise((4, 2)), lambda x, t: policy.denoise(x, t, states), noise, eta=1.0)
    assert torch.equal(out.actions, chain.sample.clamp(-1, 1)) and torch.equal(out.log_probs, chain.log_probs)
    assert out.latents.shape == (4, 6, 2) and out.stochastic.shape == (5,)
