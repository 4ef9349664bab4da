"""Latent rewards: a term declared space: latent reads x_0 before the decode, and training rollouts skip the decode
when no term reads pixels. On the toy world (pixel-space models: their latents are the image in [-1, 1], and the
decode skipped is the rescale to [0, 1]) with DDPO, AlignProp and toy_flow under an SDE window; on a tiny SD1.x
pipeline with a real VAE (slow)."""

import math
import textwrap

import pytest
import torch
from conftest import SMALL, compose_config, read_records

import drl.train
from drl.errors import ConfigError, RewardError
from drl.models.t2i import T2IModel
from drl.rewards import WeightedReward
from drl.rewards.base import Reward
from drl.rewards.overlap import collect_and_score
from drl.rewards.plugin import build_plugin
from drl.train import build_context, train

LATENT_PLUGIN = textwrap.dedent(
    '''
    def first_channel(channels: int, scale: float = 1.0):
        """Latent: the mean of the first channel of x_0 [B, channels, h, w] (differentiable)."""
        def score(latents, prompts, metadata):
            assert latents.dim() == 4 and latents.shape[1] == channels, f"latents [B, {channels}, h, w], got {list(latents.shape)}"
            return scale * latents[:, 0].flatten(1).mean(1)
        return score

    def brightness():
        def score(images, prompts, metadata):
            assert images.shape[1] == 3
            return images.flatten(1).mean(1)
        return score
    '''
)


def latent_term(plugin: str, channels: int, *flags: str) -> str:
    return f"+reward.terms.lat={{_target_: {plugin}.first_channel, channels: {channels}, space: latent{''.join(', ' + f for f in flags)}}}"


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Contexts built here run outside train(): one torch thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def tiny_sd15(tmp_path_factory) -> str:
    from drl.testing.tiny import build_tiny_sd

    directory = tmp_path_factory.mktemp("tiny_sd15")
    build_tiny_sd(seed=0).save_pretrained(directory)
    return str(directory)


@pytest.fixture
def plugin(tmp_path, monkeypatch) -> str:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "latent_judge.py").write_text(LATENT_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    return "latent_judge"


def test_each_term_reads_its_space_and_a_missing_input_is_one_sentence():
    seen = {}

    def record(name):
        def fn(x, prompts, metadata):
            seen[name] = x
            return x.flatten(1).mean(1)

        return fn

    reward = WeightedReward([Reward("pix", record("pix"), False), Reward("lat", record("lat"), False, space="latent")], [1.0, 2.0])
    samples, latents = torch.rand(3, 3, 8, 8), torch.randn(3, 4, 2, 2)
    total, terms = reward(samples, ["a"] * 3, [{}] * 3, latents=latents)
    assert seen["pix"] is samples and seen["lat"] is latents and reward.needs_pixels
    assert torch.allclose(total, samples.flatten(1).mean(1) + 2 * latents.flatten(1).mean(1))
    only_latent = WeightedReward([Reward("lat", record("lat"), False, space="latent")], [1.0])
    assert not only_latent.needs_pixels
    assert torch.equal(only_latent(None, ["a"] * 3, [{}] * 3, latents=latents)[0], latents.flatten(1).mean(1))
    with pytest.raises(RewardError, match="reward 'lat' reads latents \\(space: latent\\), and this call has none"):
        only_latent(samples, ["a"] * 3, [{}] * 3)
    with pytest.raises(RewardError, match="reward 'x': space='pixels' is not one of pixel, latent"):
        build_plugin("x", {"_target_": "drl.rewards.jpeg.jpeg_compressibility", "space": "pixels"}, torch.device("cpu"))


# toy_flow under an SDE window with an ODE tail: the stored steps end before x_0, so x_0 is Rollout.clean_latents.
TOY_FLOW_WINDOW = ["model=toy_flow", "scheduler.num_steps=4", "algorithm.sde_window=2", "algorithm.sde_window_position=fixed",
                   "algorithm.sde_window_start=1"]  # fmt: skip


def test_a_latent_term_gets_x0_whether_scored_in_chunks_or_whole_and_on_a_pixel_model_x0_is_the_image(plugin):
    """toy_flow (pixel space) under an SDE window: the overlapped path (chunks handed over while sampling) and the
    whole-batch path both pass the chain's x_0 (after the window's ODE tail), undecoded; with a pixel term beside it,
    the decoded sample is that x_0 rescaled from [-1, 1] to [0, 1]."""
    base = [*SMALL, *TOY_FLOW_WINDOW, "train.samples_per_epoch=4", "train.batch_size=2", "reward.terms.toy_aesthetic=0"]
    ctx, reward, algorithm = build_context(compose_config([*base, latent_term(plugin, 3)]))
    results = []
    for overlap in (True, False):
        batch, scores = collect_and_score(algorithm, ctx.collector, reward, torch.Generator().manual_seed(3), overlap)
        assert batch.samples is None  # no term reads pixels: nothing was decoded
        assert batch.clean_latents is not None and not torch.equal(batch.clean_latents, batch.latents[:, -1])  # a tail ran
        torch.testing.assert_close(scores, batch.clean_latents[:, 0].flatten(1).mean(1), atol=0, rtol=0)
        results.append(scores)
    torch.testing.assert_close(results[0], results[1], atol=0, rtol=0)  # the same computation, chunk by chunk
    both = WeightedReward([*reward.rewards, Reward("pix", lambda images, prompts, metadata: images.flatten(1).mean(1), False)], [1.0, 1.0])
    batch, scores = collect_and_score(algorithm, ctx.collector, both, torch.Generator().manual_seed(3), True)
    torch.testing.assert_close(batch.samples, ((batch.clean_latents + 1) / 2).clamp(0, 1), atol=0, rtol=0)
    torch.testing.assert_close(batch.reward_terms["lat"], results[0], atol=0, rtol=0)  # same seed, same x_0


class DecodeCounter:
    """Counts model.decode calls (a VAE decode, or a pixel model's rescale) inside the training loop's rollouts and
    updates (``training``) and outside them (``elsewhere``: the before/after evaluation, whose grids a person looks at)."""

    def __init__(self, monkeypatch):
        self.inside, self.training, self.elsewhere, self.entered = False, 0, 0, 0
        decode = T2IModel.decode

        def counting(model, *args, **kwargs):
            if self.inside:
                self.training += 1
            else:
                self.elsewhere += 1
            return decode(model, *args, **kwargs)

        monkeypatch.setattr(T2IModel, "decode", counting)
        from drl.algorithms.alignprop import AlignProp

        monkeypatch.setattr(drl.train, "collect_and_score", self.inside_training(drl.train.collect_and_score))
        monkeypatch.setattr(AlignProp, "update", self.inside_training(AlignProp.update))

    def inside_training(self, fn):
        def wrapped(*args, **kwargs):
            self.inside, self.entered = True, self.entered + 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.inside = False

        return wrapped


def train_on_a_latent_term(tmp_path, plugin, monkeypatch, base: list[str], channels: int) -> None:
    """A short run on a differentiable latent term trains, and the training loop never decodes (the counter does
    count: the evaluation decodes its grids)."""
    counter = DecodeCounter(monkeypatch)
    cfg = compose_config([*base, "algorithm.lr=1e-2", "reward.terms.toy_aesthetic=0", latent_term(plugin, channels, "differentiable: true")])
    final = train(cfg, tmp_path)
    records = read_records(tmp_path)
    assert len(records) == 2 and math.isfinite(final) and all(math.isfinite(r["reward/lat"]) for r in records)
    assert records[-1]["drift_from_base"] > 0 and all(r["train/grad_norm"] > 0 for r in records)
    assert counter.entered >= 2 and counter.elsewhere >= 2  # two epochs of training; the before and after evaluations
    assert counter.training == 0


@pytest.mark.parametrize(
    "base",
    [
        pytest.param(["algorithm=alignprop"], id="toy_t2i-alignprop"),
        pytest.param(["algorithm=ddpo", *TOY_FLOW_WINDOW], id="toy_flow-ddpo-sde_window"),
        pytest.param(["algorithm=ddpo"], id="toy_t2i-ddpo", marks=pytest.mark.slow),  # the rollout path, as toy_flow's
    ],
)
def test_a_latent_reward_trains_a_short_toy_run_without_decoding(tmp_path, plugin, monkeypatch, base):
    train_on_a_latent_term(tmp_path, plugin, monkeypatch, [*SMALL, "logger=none", "train.eval_size=2", *base], channels=3)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ddpo", "alignprop"])
def test_a_latent_reward_trains_a_tiny_sd15_pipeline_without_a_vae_decode(tmp_path, tiny_sd15, plugin, monkeypatch, algorithm):
    """The same with a real VAE (SD1.x: 4 latent channels at 1/8 of the resolution); about 20 s each on a shared CPU."""
    train_on_a_latent_term(tmp_path, plugin, monkeypatch, ["model=sd15", f"model.path={tiny_sd15}", *SMALL, f"algorithm={algorithm}"], channels=4)


def test_the_reward_server_refuses_a_latent_term_at_start(plugin, capsys):
    pytest.importorskip("fastapi")
    from drl.rewards.server import main

    with pytest.raises(SystemExit) as exit:
        main(["reward.terms.toy_aesthetic=0", latent_term(plugin, 3)])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1
    assert "reward 'lat' reads latents (space: latent), and drl-reward-server is sent decoded samples" in err


@pytest.mark.slow  # about 20 s on the shared machine
def test_the_latent_reward_benchmark_counts_no_decode_for_the_latent_term(tiny_sd15, tmp_path):
    from conftest import load_script

    bench = load_script("bench_latent_reward")
    results = bench.main(["--repeats", "1", "--json", str(tmp_path / "latent.json"), "model=sd15", f"model.path={tiny_sd15}", *SMALL])
    for algorithm in ("ddpo", "alignprop"):
        r = results[algorithm]
        assert r["decodes_per_call"]["pixel"] >= 1 and r["decodes_per_call"]["latent"] == 0
        assert r["pixel_s"] > 0 and r["latent_s"] > 0 and len(r["runs"]["pixel"]) == 1


def test_drl_eval_refuses_a_latent_term_before_loading_a_model(plugin, tmp_path):
    from test_drl_eval import eval_config

    from drl.evaluation.compare import compare

    cfg = eval_config("reward.terms.toy_aesthetic=0", latent_term(plugin, 3))
    with pytest.raises(ConfigError, match=r"^reward 'lat' reads latents \(space: latent\), and drl-eval scores decoded samples and reference images"):
        compare(cfg, tmp_path / "out", torch.device("cpu"))
    assert not (tmp_path / "out").exists()
