"""The toy world's flow-matching model: shipped in drl's diffusers layout, loaded by the ordinary flow path,
pretrained with the rectified-flow loss, and refused with one sentence where a flow model does not fit."""

import math

import pytest
import torch
from conftest import compose_config, read_records

from drl.errors import ConfigError
from drl.models.layout import absent_components, detect_family, resolve_path
from drl.models.loading import load_t2i
from drl.models.sd3 import SD3Model
from drl.rollout import RolloutCollector
from drl.sampling import add_noise, make_schedule, training_target

ABSENT = ("vae", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")


def test_shipped_flow_model_is_an_sd3_pipeline_directory_that_loads_through_the_flow_path():
    from diffusers import StableDiffusion3Pipeline

    location = resolve_path("drl:toy_flow")
    assert detect_family(location) == "sd3"  # from model_index.json's StableDiffusion3Pipeline
    assert set(ABSENT) <= absent_components(location)
    model = load_t2i("drl:toy_flow")  # model.family=auto
    assert isinstance(model, SD3Model) and model.vae is None and model.text_encoder_2 is None
    assert model.make_scheduler("flow").config.shift == 1.0
    # diffusers itself loads the directory as its pipeline class, given the components it declares absent
    pipe = StableDiffusion3Pipeline.from_pretrained(location, **{name: None for name in ABSENT})
    for (name, ours), theirs in zip(model.denoiser.state_dict().items(), pipe.transformer.state_dict().values()):
        assert torch.equal(ours, theirs), name
    cond = model.encode_prompts(["a red circle at the top left", ""])
    assert cond["encoder_hidden_states"].shape == (2, 12, 64)  # the CLIP tokens alone: no T5 slot
    assert cond["pooled_projections"].shape == (2, 64)


@pytest.mark.parametrize("eta", [0.0, 0.7])  # the ODE and Flow-GRPO's SDE
def test_short_sampling_gives_images_of_the_right_shape(eta):
    model = load_t2i("drl:toy_flow")
    schedule = make_schedule(model.make_scheduler("flow"), 3)
    collector = RolloutCollector(model, schedule, eta=eta, guidance_scale=1.0, batch_size=4, resolution=32, device=torch.device("cpu"))
    batch = collector.collect(["a blue square at the center"] * 4, [{}] * 4, torch.Generator().manual_seed(0))
    assert batch.samples.shape == (4, 3, 32, 32) and 0 <= batch.samples.min() and batch.samples.max() <= 1
    assert batch.latents.shape == (4, 4, 3, 32, 32) and bool(batch.stochastic.all()) == (eta > 0)


def test_rectified_flow_forward_process_and_target_match_diffusers():
    """x_σ = (1 - σ) x_0 + σ ε as FlowMatchEulerDiscreteScheduler.scale_noise; the target ε - x_0 as diffusers'
    SD3 training script (train_dreambooth_sd3.py: target = noise - model_input)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    schedule = make_schedule(FlowMatchEulerDiscreteScheduler.from_config(scheduler.config), 10)
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(3, 3, 8, 8, generator=generator) * 2 - 1, torch.randn(3, 3, 8, 8, generator=generator)
    t = scheduler.timesteps[torch.tensor([0, 400, 990])]  # training levels σ = t / 1000
    torch.testing.assert_close(add_noise(schedule, x0, noise, t), scheduler.scale_noise(x0, t, noise))
    torch.testing.assert_close(training_target(schedule, x0, noise, t), noise - x0)


def test_flow_pretrain_loss_is_the_hand_computed_rectified_flow_loss():
    """denoising_loss on a flow model: σ ~ U(0, 1), ε ~ N(0, I) from the update's generator, then the mean squared
    error between v_θ((1 - σ) x_0 + σ ε, σ·1000) and ε - x_0, per sample."""
    from drl.algorithms.denoising import denoising_loss
    from drl.train import build_context

    ctx, _, _ = build_context(compose_config(["model=toy_flow", "algorithm=pretrain"]))
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    x0, cond = images * 2 - 1, ctx.model.encode_prompts(["a red circle at the top left", "", "a small cyan triangle at the bottom right"])
    with torch.no_grad():
        loss = denoising_loss(ctx, x0, cond, torch.Generator().manual_seed(7))
        generator = torch.Generator().manual_seed(7)
        sigma = torch.rand(3, generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        x_t = (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * noise
        v = ctx.model.denoiser(x_t, timestep=sigma * 1000, **ctx.model.denoiser_kwargs(cond)).sample
        expected = (v - (noise - x0)).pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(loss, expected)


@pytest.mark.slow  # ~12 CPU-s; pytest -m slow tests/test_toy_flow.py
def test_flow_pretraining_from_scratch_lowers_the_loss(tmp_path):
    from drl.train import train

    cfg = compose_config(
        ["model=toy_flow", "model.from_scratch=true", "algorithm=pretrain", "reward=toy_alignment", "algorithm.steps_per_epoch=8",
         "algorithm.warmup_steps=0", "train.batch_size=16", "train.epochs=3", "train.eval_size=0", "hardware.num_threads=1"]
    )  # fmt: skip
    train(cfg, tmp_path)
    losses = [r["train/loss"] for r in read_records(tmp_path) if "train/loss" in r]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert detect_family(tmp_path / "model") == "sd3" and isinstance(load_t2i(str(tmp_path / "model")), SD3Model)


def test_drl_eval_compares_the_shipped_flow_model_with_the_toy_features_and_renders(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from drl.compose import config_dir
    from drl.config import register_configs
    from drl.evaluation.cli import validate_eval
    from drl.evaluation.compare import compare

    register_configs()
    GlobalHydra.instance().clear()
    overrides = ["model=toy_flow", "models=[drl:toy_flow]", "reward=toy_alignment", "num_prompts=3", "samples_per_prompt=2",
                 "scheduler.num_steps=2", "logger=none", "grid_rows=2", "hardware.num_threads=1"]  # fmt: skip
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = validate_eval(compose(config_name="eval", overrides=overrides))
    assert cfg.scheduler.kind == "flow"
    record = compare(cfg, tmp_path, torch.device("cpu"))
    assert record["features"] == "toy" and record["reference"] == "auto" and record["n_samples"] == 6
    assert math.isfinite(record["models"][0]["rewards"]["toy_alignment"]["mean"])
    assert math.isfinite(record["models"][0]["metrics"]["fid_reference"])


def test_toy_flow_selects_the_flow_scheduler():
    cfg = compose_config(["model=toy_flow"])
    assert cfg.scheduler.kind == "flow" and cfg.model.family == "sd3"
    assert compose_config(["model=toy_flow", "model.family=auto"]).scheduler.kind == "flow"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=toy_flow", "scheduler=ddim"],
         r"^model\.family=sd3 does not fit scheduler\.kind=ddim: flow models \(sd3, flux, .*\) take scheduler=flow, the others ddim or ddpm\.$"),
        (["model=toy_flow", "scheduler=ddpm"], r"^model\.family=sd3 does not fit scheduler\.kind=ddpm"),
        (["model=toy_flow", "model.family=auto", "scheduler=ddim"],
         r"^model\.path=drl:toy_flow holds a flow-matching model, which scheduler=ddim cannot sample: use scheduler=flow\.$"),
        (["scheduler=flow"],
         r"^model\.path=drl:toy_t2i holds an ε/v-prediction \(sd\) model, which scheduler=flow cannot sample: use scheduler=ddim or scheduler=ddpm\.$"),
        (["model=toy_flow", "model.path=drl:toy_t2i", "scheduler=flow"], r"^model\.family=sd3 but model\.path=drl:toy_t2i holds a sd model"),
        (["algorithm.kl_form=flow_grpo"], r"^algorithm\.kl_form=flow_grpo is Flow-GRPO's KL for flow models \(scheduler=flow\); got scheduler\.kind=ddim\.$"),
        (["model.from_scratch=true", "model.family=sdxl", "algorithm=pretrain"], r"^model\.from_scratch=true builds a toy architecture"),
    ],
)  # fmt: skip
def test_a_flow_model_with_a_ddpm_option_or_the_reverse_stops_with_one_sentence(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_config(overrides)


# ------------------------------------------------------------------ every flow method runs on the toy flow model
@pytest.fixture(scope="module")
def random_toy_flow(tmp_path_factory) -> str:
    """A randomly initialised toy_flow (on toy_t2i's text encoder) in its shipped layout: runs the methods'
    plumbing in seconds, independent of the shipped weights."""
    from drl.models.toy import build_toy_flow

    directory = tmp_path_factory.mktemp("toy_flow")
    build_toy_flow(seed=0).save_pretrained(directory)
    return str(directory)


ONE_EPOCH = ["model=toy_flow", "reward=toy_alignment", "hardware.num_threads=1", "train.epochs=1", "train.samples_per_epoch=4",
             "train.batch_size=4", "train.grid_size=2", "train.eval_size=2", "scheduler.num_steps=2"]  # fmt: skip
METHODS = {  # Flow-GRPO: SDE sampling, groups, its KL; AlignProp through the ODE (its default) and the SDE
    "flow_grpo": ["algorithm=ddpo", "algorithm.group_size=2", "algorithm.kl_form=flow_grpo", "algorithm.kl_coef=0.01"],
    "nft": ["algorithm=nft", "algorithm.group_size=2", "scheduler.eta=0"],
    "dpo": ["algorithm=dpo", "algorithm.group_size=2", "algorithm.minibatches=2"],
    "rwr": ["algorithm=rwr", "algorithm.minibatches=2"],
    "alignprop_ode": ["algorithm=alignprop"],
    "alignprop_sde": ["algorithm=alignprop", "scheduler.eta=0.7"],
}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_flow_method_runs_an_epoch_on_the_toy_flow_model(tmp_path, random_toy_flow, method):
    from drl.train import train

    cfg = compose_config([*ONE_EPOCH, f"model.path={random_toy_flow}", *METHODS[method]], tiny=False)
    assert cfg.scheduler.kind == "flow" and cfg.scheduler.eta == (0.0 if method in ("nft", "alignprop_ode") else 0.7)
    final = train(cfg, tmp_path)
    records = read_records(tmp_path)
    assert len(records) == 1 and math.isfinite(final) and math.isfinite(records[0]["train/loss"])
    assert records[0]["drift_from_base"] > 0  # the update moved the weights
    if method == "flow_grpo":
        assert records[0]["train/ratio_dev_first"] <= 1e-5 and records[0]["train/kl_to_base"] >= 0
    assert isinstance(load_t2i(str(tmp_path / "model")), SD3Model)  # exported in the layout it was loaded from


@pytest.mark.parametrize("toy, reference", [("toy_flow_grpo", "ref_flow_grpo_sd35"), ("toy_diffusion_nft", "ref_diffusion_nft_sd35")])
def test_toy_flow_counterparts_keep_every_setting_of_their_reference_recipe_but_the_scale(toy, reference):
    from dataclasses import asdict

    ours, theirs = compose_config([f"experiment={toy}"], tiny=False), compose_config([f"experiment={reference}"], tiny=False)
    assert ours.model.path == "drl:toy_flow" and ours.reward.terms == {"toy_alignment": 1.0} and ours.prompts.source == "toy"
    assert {k: v for k, v in asdict(ours.algorithm).items() if k != "group_size"} == {
        k: v for k, v in asdict(theirs.algorithm).items() if k != "group_size"
    }
    assert ours.scheduler == theirs.scheduler and ours.seed == theirs.seed and ours.train.eval_eta == theirs.train.eval_eta
    for key in ("finetune", "lora_rank", "lora_alpha", "lora_targets"):
        assert getattr(ours.model, key) == getattr(theirs.model, key), key
    assert ours.algorithm.group_size < theirs.algorithm.group_size and ours.train.samples_per_epoch % ours.algorithm.group_size == 0


def test_the_evaluation_samples_with_train_eval_eta_whatever_the_run_trains_with(random_toy_flow):
    """An SDE run (eta 0.7) evaluated with train.eval_eta=0 draws the very samples an ODE run's evaluation draws
    (the same computation: exact), as Flow-GRPO evaluates its SDE-trained model with the ODE."""
    from drl.images import evaluation_batch
    from drl.train import build_context

    def evaluation(*overrides):
        cfg = compose_config([*ONE_EPOCH, f"model.path={random_toy_flow}", "algorithm=ddpo", "algorithm.group_size=2", *overrides], tiny=False)
        ctx, reward, _ = build_context(cfg)
        batch, _ = evaluation_batch(ctx, reward, cfg.seed)
        assert ctx.collector.eta == cfg.scheduler.eta  # the run's own sampler again after the evaluation
        return batch

    ode, sde = evaluation("scheduler.eta=0.7", "train.eval_eta=0"), evaluation("scheduler.eta=0.7")
    assert torch.equal(ode.samples, evaluation("scheduler.eta=0.0001", "train.eval_eta=0").samples)
    assert not bool(ode.stochastic.any()) and bool(sde.stochastic.all())
    assert not torch.equal(ode.samples, sde.samples)
    with pytest.raises(ConfigError, match=r"^train\.eval_eta sets the evaluation's eta, which scheduler=ddpm ignores"):
        compose_config(["scheduler=ddpm", "train.eval_eta=0"])


LEARNING_RUNS = {  # docs/results/2026-12-07-toy-flow.md: each raised the 64 fixed inputs' alignment by > 3 s.e. on seed 0
    # (RWR, which does not, is left out; the page has its curves)
    "alignprop_ode": ["algorithm=alignprop", "train.epochs=20"],
    "alignprop_sde": ["algorithm=alignprop", "scheduler.eta=0.7", "train.epochs=20"],
    "nft": ["algorithm=nft", "train.epochs=10"],
    "online_dpo": ["algorithm=dpo", "algorithm.lr=1e-4", "train.epochs=20"],
    "flow_grpo_style": ["experiment=toy_alignment_grpo", "algorithm.kl_form=flow_grpo", "algorithm.kl_coef=0.01", "train.epochs=10"],
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(LEARNING_RUNS))
def test_each_flow_method_raises_the_alignment_of_the_shipped_flow_model(tmp_path, method):
    """64 samples an epoch, seed 0 (1.5-4 CPU-min each on an idle core); the page's criterion is 3 s.e., the test
    keeps a margin."""
    import json

    from drl.train import train

    cfg = compose_config(["model=toy_flow", "reward=toy_alignment", *LEARNING_RUNS[method], "seed=0", "hardware.num_threads=1",
                          "logger=none"], tiny=False)  # fmt: skip
    assert cfg.scheduler.kind == "flow" and cfg.scheduler.eta == (0.0 if method == "alignprop_ode" else 0.7)
    train(cfg, tmp_path)
    summary = json.loads((tmp_path / "eval.json").read_text())["summary"]
    assert summary["eval/n"] == 64 and summary["eval/gain"] > 2 * summary["eval/gain_se"], summary
