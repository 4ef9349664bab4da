"""The SDE window (Flow-GRPO-Fast, MixGRPO), its ODE solvers and GRPO-Guard, as options of algorithm=ddpo.

Positions against MixGRPO's own rules, the compressed tail against its rebuilt schedule, the windowed rollout
against the full chain with the same noise, the ε-model window against DDIM with eta = 0, the refusals, and
one tiny flow run through the loop with every option on (its denoiser calls against the same run without).
"""

import copy
import re

import pytest
import torch
from conftest import compose_config, read_records, tiny_model_overrides

from drl.chain import gaussian_noise, run_chain
from drl import distributed
from drl.config import find_problems
from drl.errors import ConfigError
from drl.sampling_flow import FlowSchedule
from drl.sde_window import SDEWindow, compress_tail, step_etas, window_start
from drl.images import evaluation_batch
from drl.train import build_context, train


def _mixgrpo_progressive_starts(init: int, max_timestep: int, every: int, step: int, epochs: int) -> list[int]:
    """MixGRPO's GRPOTrainingStates (fastvideo/utils/grpo_states.py), sample_strategy="progressive" with prog_overlap
    and roll_back, written out: each iteration reads cur_timestep, then update_iteration() moves it."""
    cur, cur_iter, starts = init, 0, []
    for _ in range(epochs):
        starts.append(cur)
        cur_iter += 1
        if cur_iter >= every:
            cur_iter = 0
            cur += step
        if cur > max_timestep:
            cur, cur_iter = init, 0
    return starts


@pytest.mark.parametrize("init, max_start, every, stride", [(0, 6, 3, 1), (1, 7, 2, 2), (2, 2, 1, 1)])
def test_sliding_window_moves_as_mixgrpos_progressive_window(init, max_start, every, stride):
    ours = [window_start("sliding", e, torch.Generator(), init, max_start, every, stride) for e in range(40)]
    assert ours == _mixgrpo_progressive_starts(init, max_start, every, stride, 40)


def test_fixed_and_random_window_starts():
    g = torch.Generator().manual_seed(0)
    assert {window_start("fixed", e, g, 3, 5) for e in range(10)} == {3}
    draws = [window_start("random", e, g, 0, 5) for e in range(300)]
    assert set(draws) == set(range(6))  # every start of 0..max_start, and no other
    assert step_etas(6, SDEWindow(2, 2), 0.7) == [0.0, 0.0, 0.7, 0.7, 0.0, 0.0]


def test_random_window_is_the_same_on_every_rank_and_resumes(monkeypatch, tiny_dirs):
    """Rank 0 and rank 1 (distributed.rank patched) draw the same window starts, while their update streams differ;
    a checkpointed algorithm state continues the same draws."""
    overrides = tiny_model_overrides("sd3", tiny_dirs, "algorithm=ddpo", "scheduler.num_steps=6", "algorithm.sde_window=2")
    starts, update_seeds, algorithms = [], [], []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        _, _, algorithm = build_context(compose_config(overrides))
        starts.append([algorithm.next_window().start for _ in range(12)])
        update_seeds.append(algorithm.generator.initial_seed())
        algorithms.append(algorithm)
    assert starts[0] == starts[1] and set(starts[0]) == set(range(5))  # 0 .. S - size - skip_last (= 6 - 2 + 1 - 1)
    assert update_seeds[0] != update_seeds[1]  # the update's own randomness stays per rank
    state = copy.deepcopy(algorithms[0].state_dict())
    expected = [algorithms[0].next_window().start for _ in range(6)]
    algorithms[1].load_state_dict(state)
    assert [algorithms[1].next_window().start for _ in range(6)] == expected


def test_evaluation_samples_with_the_scheduler_not_the_training_window(tiny_dirs):
    """The fixed-input evaluation (eval.json, the grids) is the scheduler's own sampler whatever window the training
    drew: after a windowed rollout, its samples equal a run's without a window, bit for bit."""
    base = tiny_model_overrides("sd3", tiny_dirs, "algorithm=ddpo", "scheduler.num_steps=6", "train.eval_size=3")
    batches = []
    for window in ([], ["algorithm.sde_window=2", "algorithm.sde_window_position=fixed", "algorithm.sde_window_start=1"]):
        ctx, reward, algorithm = build_context(compose_config([*base, *window]))
        if window:
            algorithm.collect(torch.Generator().manual_seed(0))  # a training rollout: only steps 1, 2 stochastic
            assert algorithm.window.start == 1
        batches.append(evaluation_batch(ctx, reward, seed=0)[0])
    assert batches[0].stochastic.all() and batches[1].stochastic.all()  # every step: the scheduler's sampler
    torch.testing.assert_close(batches[1].samples, batches[0].samples, atol=0, rtol=0)


def test_compressed_tail_is_mixgrpos_post_window_schedule():
    """MixGRPO's run_sample_step ("post" strategy) on its own levels shift(linspace(1, 0, S + 1)): the levels up to the
    window's end, then shift(linspace(t_end, 0, k + 1)) with t_end the unshifted level there. Float64, 1e-12."""
    shift, S, stop, k = 3.0, 10, 4, 3
    shifted = lambda u: shift * u / (1 + (shift - 1) * u)  # noqa: E731  sd3_time_shift
    sigmas = shifted(torch.linspace(1, 0, S + 1, dtype=torch.float64))
    schedule = FlowSchedule(sigmas, (sigmas[:-1] * 1000).float(), 1000, float(sigmas[1]), shift=shift)
    theirs = torch.cat([sigmas[:stop], shifted(torch.linspace(1, 0, S + 1, dtype=torch.float64)[stop] * torch.linspace(1, 0, k + 1, dtype=torch.float64))])
    ours = compress_tail(schedule, stop, k)
    torch.testing.assert_close(ours.sigmas, theirs, atol=1e-12, rtol=0)
    assert ours.num_steps == stop + k and torch.equal(ours.timesteps[: stop + 1], schedule.timesteps[: stop + 1])


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Contexts built here run outside train(): one torch thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def flow_ctx(tiny_dirs):
    """A tiny SD3 (flow) run's pieces: 6 steps, 4 samples in groups of 2 that share x_T."""
    overrides = tiny_model_overrides(
        "sd3", tiny_dirs, "algorithm=ddpo", "scheduler.num_steps=6", "algorithm.group_size=2", "algorithm.share_group_noise=true",
        "algorithm.sde_window=2", "algorithm.sde_window_position=fixed", "algorithm.sde_window_start=2",
    )  # fmt: skip
    ctx, _, algorithm = build_context(compose_config(overrides))
    return ctx, algorithm


def _full_chain(ctx, prompts, seed, etas, ode_solver="euler"):
    """The whole chain, every step recorded, with the collector's noise stream (x_T, then one z per step)."""
    collector = ctx.collector
    noise = gaussian_noise(torch.Generator().manual_seed(seed), collector.dtype, ctx.device, collector.dtype)
    cond = ctx.model.encode_prompts(prompts)
    x = noise((len(prompts), *collector.latent_shape))
    with torch.no_grad():
        return run_chain(ctx.schedule, x, collector._denoiser(cond, None), noise, eta=etas, ode_solver=ode_solver)


def test_window_rollout_is_the_full_chains_window_with_the_same_noise(flow_ctx):
    """No shared x_T: the stored window is the full chain's steps 2..4 (x_T through the ODE, then the SDE), bit for bit,
    and the clean latents its end; only the window's steps are stochastic; the calls are S per sample."""
    ctx, _ = flow_ctx
    prompts = ["a red circle", "a blue square", "a red circle", "a green ring"]
    window = SDEWindow(start=2, size=2)
    before = ctx.collector.denoiser_rows
    batch = ctx.collector.collect(prompts, [{}] * 4, torch.Generator().manual_seed(7), window=window, record_means=True)
    assert ctx.collector.denoiser_rows - before == 4 * 6
    full = _full_chain(ctx, prompts, 7, step_etas(6, window, ctx.collector.eta))
    assert full.stochastic.tolist() == [False, False, True, True, False, False]
    torch.testing.assert_close(batch.latents, full.latents[:, 2:5], atol=0, rtol=0)
    torch.testing.assert_close(batch.log_probs, full.log_probs[:, 2:4], atol=0, rtol=0)
    torch.testing.assert_close(batch.final_latents, full.sample, atol=0, rtol=0)
    assert batch.stochastic.tolist() == [True, True] and torch.equal(batch.timesteps[0], ctx.schedule.timesteps[2:4])
    assert batch.means.shape == (4, 2, *ctx.collector.latent_shape)


def test_shared_prefix_runs_once_per_group_and_dpm_tail_is_shorter(flow_ctx):
    """Groups of 2 sharing x_T: the ODE prefix (2 steps) runs on 2 rows instead of 4; DPM-Solver++(2M) finishes the path
    in 1 step instead of 2. Calls: 2·2 + 4·2 + 4·1 = 16 (the full chain: 24). Group members agree until the window."""
    ctx, _ = flow_ctx
    prompts = ["a red circle", "a red circle", "a blue square", "a blue square"]
    x_T = torch.randn(2, *ctx.collector.latent_shape, generator=torch.Generator().manual_seed(1)).repeat_interleave(2, 0)
    before = ctx.collector.denoiser_rows
    window = SDEWindow(start=2, size=2, ode_solver="dpmpp_2m", tail_steps=1)
    batch = ctx.collector.collect(prompts, [{}] * 4, torch.Generator().manual_seed(3), initial_noise=x_T, window=window, shared=2)
    assert ctx.collector.denoiser_rows - before == 2 * 2 + 4 * 2 + 4 * 1
    x_start = batch.latents[:, 0]
    assert torch.equal(x_start[0], x_start[1]) and not torch.equal(x_start[0], x_start[2])
    assert not torch.equal(batch.latents[0, -1], batch.latents[1, -1])  # the window's noise parts the group
    assert torch.isfinite(batch.samples).all() and batch.samples.shape[0] == 4


def test_ddim_window_keeps_eta_zero_outside(tiny_dirs):
    """An ε-model's window (tiny SD1.x): DDIM with eta = 0 before and after it (the same x at its first step as the
    deterministic DDIM chain, bit for bit), the scheduler's eta inside."""
    window = ["algorithm.sde_window=1", "algorithm.sde_window_position=fixed", "algorithm.sde_window_start=1", "scheduler.num_steps=3"]
    ctx, _, algorithm = build_context(compose_config(tiny_model_overrides("sd15", tiny_dirs, "algorithm=ddpo", *window)))
    assert ctx.schedule.kind == "ddim" and ctx.collector.eta == 1.0
    prompts = ["a red circle", "a blue square"]
    batch = ctx.collector.collect(prompts, [{}] * 2, torch.Generator().manual_seed(5), window=algorithm.next_window())
    ode = _full_chain(ctx, prompts, 5, 0.0)
    torch.testing.assert_close(batch.latents[:, 0], ode.latents[:, 1], atol=0, rtol=0)
    assert batch.latents.shape[1] == 2 and batch.stochastic.tolist() == [True]


@pytest.fixture(scope="module")
def ddpo_configs():
    """algorithm=ddpo composed once on each scheduler kind; the refusals below edit copies (composing costs ~1 s)."""
    model = {"ddim": [], "ddpm": [], "flow": ["model=toy_flow"]}  # the flow sampler needs a flow model
    return {kind: compose_config(["algorithm=ddpo", f"scheduler={kind}", *model[kind]]) for kind in ("ddim", "ddpm", "flow")}


@pytest.mark.parametrize(
    "kind, changes, message",
    [
        ("ddpm", {"algorithm.sde_window": 2}, r"^algorithm\.sde_window runs the steps outside the window as an ODE, which ancestral DDPM has not"),
        ("ddim", {"algorithm.sde_window": 2, "algorithm.ode_solver": "dpmpp_2m"}, r"^algorithm\.ode_solver=dpmpp_2m and algorithm\.ode_steps_after_window are flow-ODE solvers \(scheduler=flow\); scheduler\.kind=ddim"),
        ("flow", {"algorithm.ode_solver": "dpmpp_2m"}, r"^algorithm\.ode_solver and algorithm\.ode_steps_after_window solve the steps outside an SDE window: set algorithm\.sde_window > 0\.$"),
        ("flow", {"algorithm.sde_window": 4, "algorithm.skip_last_steps": 1}, r"^algorithm\.sde_window=4 \(\+ skip_last_steps=1\) does not fit in scheduler\.num_steps=4\.$"),
        ("flow", {"algorithm.sde_window": 2, "algorithm.sde_window_position": "fixed", "algorithm.sde_window_start": 3}, r"^algorithm\.sde_window_start=3 is past the window's last start, 2"),
        ("flow", {"algorithm.sde_window": 2, "algorithm.sde_window_max_start": 3}, r"^algorithm\.sde_window_max_start=3 puts the window past the last step: at most 2\.$"),
        ("ddim", {"algorithm.step_reweight": True}, r"^algorithm\.step_reweight is GRPO-Guard's 1/\(-dσ\) weighting of flow SDE steps"),
        ("ddim", {"scheduler.sde_type": "cps"}, r"^scheduler\.sde_type=cps is a noise form of the flow sampler \(scheduler=flow\)"),
        ("flow", {"scheduler.sde_type": "cps", "algorithm.kl_form": "flow_grpo"}, r"^algorithm\.kl_form=flow_grpo uses Flow-GRPO's SDE coefficient"),
    ],
)
def test_window_guard_and_cps_refuse_what_they_cannot_do_in_one_sentence(ddpo_configs, kind, changes, message):
    cfg = copy.deepcopy(ddpo_configs[kind])
    for key, value in changes.items():
        group, name = key.split(".")
        setattr(getattr(cfg, group), name, value)
    problems = find_problems(cfg)
    assert len(problems) == 1 and re.search(message, problems[0]), problems


def test_a_refused_option_is_a_config_error_before_any_work():
    with pytest.raises(ConfigError, match=r"algorithm\.sde_window runs the steps outside the window as an ODE"):
        compose_config(["algorithm=ddpo", "scheduler=ddpm", "algorithm.sde_window=2"])


def test_every_option_on_a_tiny_flow_run_and_its_denoiser_calls(tmp_path, tiny_dirs):
    """CPS noise, a sliding 2-step window, DPM-Solver++(2M) with a 1-step tail, GRPO-Guard's RatioNorm and reweighting:
    the ratio is 1 on-policy in both epochs, only the window's steps are trained, the window slides, and the calls fall
    from 4·6 to 4·1 + 4·2 + 4·1 = 16 (epoch 0, window at step 1: 1 prefix step, 2 window, 1 tail) per rollout."""
    options = [
        "algorithm=ddpo", "scheduler.num_steps=6", "scheduler.sde_type=cps", "algorithm.sde_window=2",
        "algorithm.sde_window_position=sliding", "algorithm.sde_window_start=1", "algorithm.ode_solver=dpmpp_2m",
        "algorithm.ode_steps_after_window=1", "algorithm.ratio_norm=true", "algorithm.step_reweight=true",
        "algorithm.lr=1e-2", "algorithm.minibatches=1", "train.eval_size=2", "logger=none",
    ]  # fmt: skip
    train(compose_config(tiny_model_overrides("sd3", tiny_dirs, *options)), tmp_path)
    records = read_records(tmp_path)
    assert [r["train/sde_window_start"] for r in records] == [1, 2]
    assert all(r["train/ratio_dev_first"] <= 1e-5 and r["train/pairs"] == 4 * 2 for r in records)
    assert records[0]["train/denoiser_calls_sample"] == 4 * 1 + 4 * 2 + 4 * 1
    assert records[1]["train/denoiser_calls_sample"] == 4 * 2 + 4 * 2 + 4 * 1  # window at 2: 2 prefix steps
    assert all(r["train/denoiser_calls_update"] == 4 * 2 for r in records)
    assert records[-1]["drift_from_base"] > 0
