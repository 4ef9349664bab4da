"""Flow policies for control: the rectified-flow BC loss, ReinFlow's and FQL's math on hand-made numbers, the
bad inputs, and short bandit runs of ReinFlow, FQL and DSRL over a flow BC policy."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import compose_config, read_records
from diffusers import FlowMatchEulerDiscreteScheduler

from drl.algorithms.control_losses import (
    chain_entropy_rate,
    chain_log_prob_rate,
    fql_critic_loss,
    fql_distillation_loss,
    fql_q_loss,
    policy_bc_loss,
)
from drl.config import PolicyModelConfig
from drl.errors import ConfigError
from drl.models.critic import BoundedStdNetwork
from drl.models.policy import FlowPolicy, load_policy
from drl.sampling import make_schedule
from drl.train import build_context, train

BANDIT = ["logger=none", "hardware.num_threads=1", "model.hidden_dim=64", "env.eval_episodes=200", "env.dataset_size=2000", "train.batch_size=64"]


def _flow_policy(obs_dim=3, act_dim=2) -> FlowPolicy:
    return FlowPolicy.build(obs_dim, act_dim, PolicyModelConfig(hidden_dim=32, policy_kind="flow"), seed=0)


def _eval(run_dir, stage: str) -> float:
    return json.loads((run_dir / f"eval_{stage}.json").read_text())["eval/return_mean"]


# ------------------------------------------------------------------------ math
def test_flow_bc_loss_is_the_rectified_flow_loss_by_hand():
    """sigma ~ U(0, 1), a_sigma = (1 - sigma) a + sigma eps, target eps - a: the same draws, written out."""
    policy = _flow_policy()
    schedule = make_schedule(policy.make_scheduler("flow"), 4)
    states, actions = torch.randn(5, 3), torch.rand(5, 2) * 2 - 1
    seen = {}

    def denoiser(x, t, s):  # a stand-in velocity field: records its input and returns 2 x
        seen.update(x=x, t=t)
        return 2 * x

    loss = policy_bc_loss(denoiser, schedule, states, actions, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    sigma = torch.rand(5, generator=g)  # what sample_training_timesteps draws, / 1000
    eps = torch.randn(5, 2, generator=g)
    x = (1 - sigma[:, None]) * actions + sigma[:, None] * eps
    assert torch.allclose(seen["t"], sigma * 1000, atol=1e-4) and torch.allclose(seen["x"], x, atol=1e-6)
    assert math.isclose(float(loss), float(((2 * x - (eps - actions)) ** 2).mean()), rel_tol=1e-6)


def test_flow_policy_samples_by_euler_steps_of_its_ode():
    """eta = 0 on a flow policy: x <- x + v (sigma' - sigma) on diffusers' FlowMatchEuler levels, any number of steps."""
    policy, states = _flow_policy(), torch.randn(4, 3)
    for steps in (1, 4, 10):
        schedule = make_schedule(policy.make_scheduler("flow"), steps)
        noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(steps))
        chain = policy.sample(schedule, states, eta=0.0, initial_noise=noise)
        reference = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
        reference.set_timesteps(steps)
        x = noise
        with torch.no_grad():
            for i, t in enumerate(reference.timesteps):
                x = x + policy.denoiser(x, t.expand(4), states) * (reference.sigmas[i + 1] - reference.sigmas[i])
        assert chain.latents.shape == (4, steps + 1, 2) and not chain.stochastic.any()
        assert torch.allclose(chain.latents[:, -1], x, atol=1e-5) and torch.equal(chain.actions, x.clamp(-1, 1))


def test_reinflow_step_log_probs_are_the_hand_computed_gaussians():
    """Each noisy step is N(x + v dsigma, diag(sigma_theta'(s, t)^2)); its log-prob, the chain's normalised log-prob and
    entropy rate against torch.distributions.Normal, step by step (float32, atol 1e-4)."""
    policy, states = _flow_policy(), torch.randn(6, 3)
    schedule = make_schedule(policy.make_scheduler("flow"), 4)
    noise_net = BoundedStdNetwork(3, 2, min_std=0.1, max_std=0.3, hidden_dim=8, time_dim=16)
    step_std = lambda x, t: noise_net(states, policy.denoiser.time_embedding(t)).view(x.shape)  # noqa: E731
    with torch.no_grad():
        chain = policy.sample(schedule, states, eta=0.0, generator=torch.Generator().manual_seed(0), step_std=step_std)
        stds, by_hand = [], []
        for i, t in enumerate(schedule.timesteps):
            x, x_next = chain.latents[:, i], chain.latents[:, i + 1]
            mean = x + policy.denoiser(x, t.expand(6), states) * float(schedule.sigmas[i + 1] - schedule.sigmas[i])
            std = noise_net(states, policy.denoiser.time_embedding(t.expand(6)))
            by_hand.append(torch.distributions.Normal(mean, std).log_prob(x_next).sum(1))
            stds.append(std)
    assert chain.stochastic.all()
    assert torch.allclose(chain.log_probs, torch.stack(by_hand, 1), atol=1e-4)
    initial = torch.distributions.Normal(0.0, 1.0).log_prob(chain.latents[:, 0]).sum(1)
    rate = (initial + torch.stack(by_hand, 1).sum(1)) / (5 * 2)  # (S + 1) steps x D dims
    assert torch.allclose(chain_log_prob_rate(chain.log_probs, chain.latents[:, 0]), rate, atol=1e-5)
    std_stack = torch.stack(stds, 1)  # [B, S, D]
    entropy = (torch.distributions.Normal(0.0, 1.0).entropy() * 2 + torch.distributions.Normal(0.0, std_stack).entropy().sum((1, 2))) / 10
    assert torch.allclose(chain_entropy_rate(std_stack), entropy, atol=1e-5)


def test_reinflow_noise_is_bounded_by_the_tanh_log_variance_map():
    net = BoundedStdNetwork(3, 2, min_std=0.1, max_std=0.24, hidden_dim=8)
    with torch.no_grad():
        net.net[-1].weight.zero_()
        net.net[-1].bias.copy_(torch.tensor([0.3, -50.0]))
    std = net(torch.randn(4, 3))
    low, high = math.log(0.1**2), math.log(0.24**2)
    expected = math.exp(0.5 * (low + (high - low) * (math.tanh(0.3) + 1) / 2))
    assert torch.allclose(std[:, 0], torch.full((4,), expected), atol=1e-6) and torch.allclose(std[:, 1], torch.full((4,), 0.1), atol=1e-6)
    wild = BoundedStdNetwork(3, 2, min_std=0.1, max_std=0.24, hidden_dim=8)(1e3 * torch.randn(256, 3))
    assert wild.min() >= 0.1 - 1e-6 and wild.max() <= 0.24 + 1e-6


def test_fql_loss_terms_on_hand_values():
    q1, q2, y = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0]), torch.tensor([2.0, 2.0])
    close = lambda value, expected: math.isclose(float(value.detach()), expected, rel_tol=1e-6)  # noqa: E731  float32
    assert close(fql_critic_loss(q1, q2, y), 0.5 * ((1 + 0) / 2 + (1 + 4) / 2))  # mean over both critics
    a1, a2 = torch.tensor([1.0, -3.0], requires_grad=True), torch.tensor([3.0, 1.0])
    assert close(fql_q_loss(a1, a2, "mean", False), -(2.0 + -1.0) / 2)
    assert close(fql_q_loss(a1, a2, "min", False), -(1.0 + -3.0) / 2)
    normalised = fql_q_loss(a1, a2, "mean", True)  # -mean(q) / mean|q| with q = (2, -1)
    assert close(normalised, -0.5 / 1.5)
    normalised.backward()
    assert torch.allclose(a1.grad, torch.tensor([-1 / 1.5 / 4, -1 / 1.5 / 4]))  # d/dq1 of -mean((q1+q2)/2) / 1.5
    one_step = torch.tensor([[0.5, 0.0], [1.0, -1.0]], requires_grad=True)
    flow = torch.tensor([[0.0, 0.0], [1.0, 1.0]], requires_grad=True)
    distill = fql_distillation_loss(one_step, flow)
    assert close(distill, (0.25 + 0 + 0 + 4) / 4)
    distill.backward()
    assert flow.grad is None and torch.allclose(one_step.grad, torch.tensor([[0.25, 0.0], [0.0, -1.0]]))


# ---------------------------------------------------------------- bad input
def test_algorithms_refuse_the_policy_kind_they_do_not_take():
    with pytest.raises(ConfigError, match="algorithm=fql takes a flow policy, not the diffusion policy of model=diffusion_policy"):
        compose_config(["experiment=bandit_fql", "model=diffusion_policy", "scheduler=ddpm"], tiny=False)
    with pytest.raises(ConfigError, match="algorithm=diffusion_ql takes a diffusion policy, not the flow policy of model=flow_policy"):
        compose_config(["experiment=bandit_diffusion_ql", "model=flow_policy", "scheduler=flow", "scheduler.eta=0"], tiny=False)
    with pytest.raises(ConfigError, match="samples with scheduler=flow, not scheduler.kind=ddpm"):
        compose_config(["experiment=bandit_flow_bc", "scheduler=ddpm"], tiny=False)


@pytest.mark.parametrize("bound", ["algorithm.max_std=1.5", "algorithm.min_std=0", "algorithm.max_std=-0.1"])
def test_reinflow_noise_bound_outside_zero_one_is_refused(bound):
    with pytest.raises(ConfigError, match=r"is outside \(0, 1\]: ReinFlow's learned noise std is bounded"):
        compose_config(["experiment=bandit_reinflow", "model.path=x", bound], tiny=False)


# ------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def flow_bc(tmp_path_factory):
    """A short flow BC run on the bandit (the policy every fine-tune below starts from) and its evaluation return."""
    run = tmp_path_factory.mktemp("flow_bc")
    common = BANDIT + ["train.epochs=2", "algorithm.steps_per_epoch=100", "env.eval_every=2"]
    return run, train(compose_config(["experiment=bandit_flow_bc", *common], tiny=False), run)


def test_flow_bc_learns_the_data_and_saves_a_flow_policy(flow_bc):
    run, bc = flow_bc
    assert 0.05 < bc < 0.75  # spread over the data's four modes, as diffusion BC
    assert isinstance(load_policy(run), FlowPolicy)
    with pytest.raises(ConfigError, match="is a flow policy; model=diffusion_policy expects model.policy_kind=diffusion"):
        build_context(compose_config(["experiment=bandit_dppo", f"model.path={run}", *BANDIT], tiny=False))


def test_reinflow_raises_the_flow_bc_policys_return(flow_bc, tmp_path):
    run, _ = flow_bc
    cfg = compose_config(["experiment=bandit_reinflow", f"model.path={run}", *BANDIT, "train.epochs=5", "env.eval_every=5"], tiny=False)
    train(cfg, tmp_path)
    start, end = _eval(tmp_path, "before"), _eval(tmp_path, "after")
    records = read_records(tmp_path)
    assert end > start + 0.1, (start, end)
    assert records[0]["train/ratio_dev_first"] < 1e-4  # re-scored with the rollout's own step function
    assert all(0.1 - 1e-6 <= r["train/noise_std"] <= 0.24 + 1e-6 for r in records)
    assert (tmp_path / "noise_network.pt").is_file() and (tmp_path / "value_function.pt").is_file()


def test_fql_beats_flow_bc_at_the_same_budget(flow_bc, tmp_path):
    _, bc = flow_bc
    cfg = compose_config(
        ["experiment=bandit_fql", *BANDIT, "train.epochs=2", "algorithm.steps_per_epoch=100", "env.eval_every=2", "scheduler.num_steps=4"], tiny=False
    )
    fql = train(cfg, tmp_path)
    assert fql > bc + 0.1, (bc, fql)
    assert (tmp_path / "one_step_policy.pt").is_file() and read_records(tmp_path)[-1]["train/critic_loss"] < 1.0


def test_dsrl_steers_a_frozen_flow_policy_through_its_ode_noise(flow_bc, tmp_path):
    run, _ = flow_bc
    before = {k: v.clone() for k, v in load_policy(run).denoiser.state_dict().items()}
    cfg = compose_config(
        ["experiment=bandit_dsrl", "model=flow_policy", "scheduler=flow", "scheduler.eta=0", "scheduler.num_steps=4", f"model.path={run}", *BANDIT,
         "train.epochs=4", "train.samples_per_epoch=128", "train.batch_size=128", "algorithm.updates_per_epoch=40", "env.eval_every=4"],
        tiny=False,
    )
    train(cfg, tmp_path)
    start, end = _eval(tmp_path, "before"), _eval(tmp_path, "after")
    assert end > start + 0.1, (start, end)
    after = load_policy(tmp_path).denoiser.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ------------------------------------------------------------- slow: MuJoCo and Pendulum
@pytest.mark.slow
def test_pendulum_fql_runs_on_chunks_from_a_generated_dataset(tmp_path):
    """FQL on Pendulum-v1 with Ta = 2 from a small random dataset: finite losses, an evaluation, the one-step policy saved."""
    from drl.envs.dataset import generate_dataset

    data = generate_dataset("Pendulum-v1", lambda obs, rng: rng.uniform(-1, 1, (len(obs), 1)), 1000, seed=0, name="random").save(tmp_path / "p.npz")
    cfg = compose_config(
        ["experiment=pendulum_fql", f"env.dataset={data}", "model.action_horizon=2", "model.hidden_dim=32", "train.epochs=2",
         "algorithm.steps_per_epoch=20", "train.batch_size=32", "env.eval_every=2", "env.eval_episodes=2", "logger=none", "hardware.num_threads=1"],
        tiny=False,
    )
    train(cfg, tmp_path / "run")
    records = read_records(tmp_path / "run")
    assert all(math.isfinite(r["train/loss"]) and math.isfinite(r["train/critic_loss"]) for r in records)
    assert "eval/return_mean" in records[-1] and (tmp_path / "run" / "one_step_policy.pt").is_file()


@pytest.mark.slow
def test_hopper_reinflow_fine_tunes_a_chunked_flow_bc_policy(tmp_path):
    """Flow BC (Ta = 4) on a small random Hopper-v5 dataset, then two epochs of ReinFlow: the ratio starts at 1, the std stays
    within its bounds, and the value function and noise network are saved."""
    from drl.envs.dataset import generate_dataset

    data = generate_dataset("Hopper-v5", lambda obs, rng: rng.uniform(-1, 1, (len(obs), 3)), 2000, seed=0, name="random").save(tmp_path / "h.npz")
    common = ["model.hidden_dim=32", "env.eval_episodes=2", "logger=none", "hardware.num_threads=1"]
    train(compose_config(["experiment=hopper_flow_bc_chunks", f"env.dataset={data}", "train.epochs=1", "algorithm.steps_per_epoch=50",
                          "train.batch_size=64", *common], tiny=False), tmp_path / "bc")
    train(compose_config(["experiment=hopper_reinflow", f"model.path={tmp_path / 'bc'}", "train.epochs=2", "train.samples_per_epoch=200",
                          "env.eval_every=2", "algorithm.critic_warmup_epochs=0", *common], tiny=False), tmp_path / "rf")
    records = read_records(tmp_path / "rf")
    assert records[0]["train/ratio_dev_first"] < 1e-4
    assert all(0.1 - 1e-6 <= r["train/noise_std"] <= 0.24 + 1e-6 and math.isfinite(r["train/loss"]) for r in records)
    # every chunk runs its 4 env steps but an episode's last, which runs 1 to 4 (random data: the hopper falls early)
    assert all(4 * r["train/decisions"] - 3 * r["samples"] <= r["train/env_steps"] <= 4 * r["train/decisions"] for r in records)
    assert (tmp_path / "rf" / "noise_network.pt").is_file() and (tmp_path / "rf" / "value_function.pt").is_file()
