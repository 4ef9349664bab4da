"""Plug-in rewards: a reward written in a file outside drl, named by _target_, trains; its mistakes
stop the run with one sentence naming the reward and the fix."""

import json
import math
import os
import sys
import textwrap

import pytest
import torch
from conftest import compose_config, read_records, tiny_model_overrides
from test_cli import drl_train

from drl.errors import ConfigError, NonFiniteError, RewardError, user_message
from drl.rewards.base import Reward
from drl.train import build_context, train

PLUGIN_SOURCE = textwrap.dedent(
    '''
    import torch

    def brightness(scale, device=None):
        """Differentiable: the mean pixel value times scale; the red channel's mean as per-sample info."""
        def score(images, prompts, metadata):
            return scale * images.flatten(1).mean(1), {"red": images[..., 0, :, :].flatten(1).mean(1)}  # images or clips
        return score

    class Rank:
        """Groupwise: the rank of each sample's brightness within its group, in [0, 1]."""
        def __call__(self, images, prompts, metadata):
            assert len(set(prompts)) == 1, "a group holds one prompt"
            order = images.mean(dim=(1, 2, 3)).argsort().argsort().float()
            return order / max(len(images) - 1, 1)

    def returns_list():
        return lambda images, prompts, metadata: [0.5] * len(images)

    def wrong_shape():
        return lambda images, prompts, metadata: images.mean(dim=(2, 3))

    def integer_scores():
        return lambda images, prompts, metadata: (images.mean(dim=(1, 2, 3)) > 0.5).long()

    def nan_scores():
        return lambda images, prompts, metadata: torch.full((len(images),), float("nan"))

    def detached():
        return lambda images, prompts, metadata: torch.tensor([float(x.detach().mean()) for x in images])
    '''
)


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A directory outside the repository holding user_rewards_<id>.py; returns (dir, module name).
    The module is not importable until the test puts the directory on sys.path (as PYTHONPATH would)."""
    name = f"user_rewards_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    directory = tmp_path / "my_code"
    directory.mkdir()
    (directory / f"{name}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.delitem(sys.modules, name, raising=False)
    return directory, name


def _plugin(module: str, factory: str, **options) -> str:
    """A command-line override adding reward term ``mine`` (and switching the default term off)."""
    items = ", ".join([f"_target_: {module}.{factory}", *(f"{k}: {v}" for k, v in options.items())])
    return "+reward.terms.mine={" + items + "}"


def _tiny(*extra):
    return ["reward.terms.toy_aesthetic=0", "hardware.num_threads=1", "train.batch_size=4", *extra]


@pytest.mark.parametrize("algorithm", ["ddpo", "alignprop"])
def test_a_reward_from_a_file_outside_drl_trains_on_the_toy_world(tmp_path, plugin_dir, monkeypatch, algorithm):
    directory, module = plugin_dir
    overrides = _tiny(f"algorithm={algorithm}", _plugin(module, "brightness", scale=2.0, differentiable="true"))
    with pytest.raises(RewardError, match=f"reward 'mine': cannot import '{module}'.*on PYTHONPATH"):
        build_context(compose_config(overrides))  # not on the import path yet
    monkeypatch.syspath_prepend(str(directory))
    final = train(compose_config(overrides), tmp_path / "run")
    records = read_records(tmp_path / "run")
    assert [r["epoch"] for r in records] == [0, 1] and math.isfinite(final)
    assert all(0 < r["reward/mine"] <= 2 and r["reward_mean"] == pytest.approx(r["reward/mine"]) for r in records)
    assert all(0 <= r["reward/mine/red"] <= 1 for r in records)  # the per-sample info, logged
    assert records[-1]["drift_from_base"] > 0


@pytest.mark.parametrize(
    "factory, options, message",
    [
        ("returns_list", {}, "reward 'mine' returned a list, not a torch.Tensor: return one float per sample as a tensor of shape \\[2\\]"),
        ("wrong_shape", {}, "reward 'mine' returned scores of shape \\[2, 3\\] for 2 samples: return shape \\[2\\]"),
        ("integer_scores", {}, "reward 'mine' returned torch.int64 scores: return a floating-point tensor"),
        ("brightness", {}, "reward 'mine': user_rewards_.*\\.brightness\\(scale, device=None\\) cannot be called with \\['device'\\] "
                           "\\(missing a required argument: 'scale'\\); set its arguments as reward.terms.mine.<argument>=<value>."),
        ("nowhere", {}, "reward 'mine': module 'user_rewards_.*' \\(.*\\) has no 'nowhere'; check _target_="),
        ("brightness", {"scale": 1, "video": "true"}, "reward 'mine' scores clips but the model makes images: if user_rewards_.*"
                                                     "brightness scores images, set video: false on the term."),
    ],
)  # fmt: skip
def test_each_mistake_is_one_sentence_naming_the_reward_and_the_fix(plugin_dir, monkeypatch, factory, options, message):
    directory, module = plugin_dir
    monkeypatch.syspath_prepend(str(directory))
    with pytest.raises((RewardError, ConfigError), match=message) as error:
        build_context(compose_config(_tiny(_plugin(module, factory, **options))))  # the dry call at start
    assert user_message(error.value) == str(error.value)  # drl-train's one-sentence path


def test_a_reward_without_gradient_under_alignprop_names_the_fix(plugin_dir, monkeypatch):
    directory, module = plugin_dir
    monkeypatch.syspath_prepend(str(directory))
    declared = _tiny("algorithm=alignprop", _plugin(module, "detached", differentiable="true"))
    with pytest.raises(RewardError, match="reward 'mine' is declared differentiable but its scores carry no gradient.*"
                                          "algorithm=alignprop.*set differentiable: false and train with algorithm=ddpo"):  # fmt: skip
        build_context(compose_config(declared))
    undeclared = _tiny("algorithm=alignprop", _plugin(module, "brightness", scale=1))
    with pytest.raises(ConfigError, match="alignprop needs a differentiable reward, and mine is not: use algorithm=ddpo.*set differentiable: true"):
        build_context(compose_config(undeclared))


def test_nan_from_a_plugin_goes_through_the_nonfinite_handling(tmp_path, plugin_dir, monkeypatch):
    directory, module = plugin_dir
    monkeypatch.syspath_prepend(str(directory))
    with pytest.raises(NonFiniteError, match="The reward was NaN/inf in 2 epochs in a row"):
        train(compose_config(_tiny(_plugin(module, "nan_scores"), "train.max_nonfinite_batches=2")), tmp_path)
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [{"epoch": 0, "skipped_nonfinite": 1}]


def test_a_mapping_term_without_target_is_a_config_error():
    with pytest.raises(ConfigError, match="reward term 'x' is a mapping without _target_: give a weight, or _target_: module.factory"):
        compose_config(["+reward.terms.x={weight: 1.0}"])


def test_the_contract_is_checked_on_every_call_not_only_at_start():
    calls = {"n": 0}

    def flaky(images, prompts, metadata):
        calls["n"] += 1
        return images.mean(dim=(1, 2, 3)) if calls["n"] == 1 else images.mean(dim=(1, 2, 3)).tolist()

    reward = Reward("flaky", flaky, differentiable=False)
    assert reward(torch.rand(3, 3, 4, 4), ["a"] * 3, [{}] * 3).shape == (3,)
    with pytest.raises(RewardError, match="reward 'flaky' returned a list"):
        reward(torch.rand(3, 3, 4, 4), ["a"] * 3, [{}] * 3)


@pytest.mark.slow  # ~30 CPU-s: drl-train subprocesses; the in-process plugin tests above cover the reward path
def test_a_user_config_directory_and_pythonpath_make_reward_my_judge_work_from_the_command_line(tmp_path, plugin_dir):
    directory, module = plugin_dir
    (tmp_path / "my_conf" / "reward").mkdir(parents=True)
    (tmp_path / "my_conf" / "reward" / "my_judge.yaml").write_text(
        f"# my own judge\nterms:\n  judge:\n    _target_: {module}.brightness\n    scale: 3.0\n"
    )
    args = ["reward=my_judge", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "train.epochs=1", "train.samples_per_epoch=4",
            "train.batch_size=4", "train.grid_size=2", "train.eval_size=2", "scheduler.num_steps=2", "logger=none",
            "hardware.num_threads=1", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    missing = drl_train(args, tmp_path)  # without PYTHONPATH: one sentence, no traceback
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"drl-train: error: reward 'judge': cannot import '{module}'" in missing.stderr
    os.environ["PYTHONPATH"] = str(directory)
    try:
        result = drl_train(args, tmp_path)
    finally:
        del os.environ["PYTHONPATH"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert 0 < read_records(tmp_path / "run")[0]["reward/judge"] <= 3


@pytest.mark.parametrize("algorithm", ["ddpo", "alignprop"])
def test_a_plugin_reward_trains_a_tiny_sd15_pipeline(tmp_path, tiny_dirs, plugin_dir, monkeypatch, algorithm):
    directory, module = plugin_dir
    monkeypatch.syspath_prepend(str(directory))
    overrides = tiny_model_overrides("sd15", tiny_dirs, f"algorithm={algorithm}", "algorithm.lr=1e-2", "reward.terms.toy_aesthetic=0",
                                     _plugin(module, "brightness", scale=1.0, differentiable="true"))  # fmt: skip
    final = train(compose_config(overrides), tmp_path)
    records = read_records(tmp_path)
    assert len(records) == 2 and math.isfinite(final)
    assert all(0 < r["reward/mine"] < 1 for r in records) and records[-1]["drift_from_base"] > 0


RANK_STD = (sum((k / 3 - 0.5) ** 2 for k in range(4)) / 4) ** 0.5  # ranks 0, 1/3, 2/3, 1 of a group of 4


@pytest.mark.parametrize("algorithm", ["ddpo", "nft", "dpo"])
def test_a_groupwise_rank_reward_scores_each_group_of_one_prompt(tmp_path, plugin_dir, monkeypatch, algorithm):
    directory, module = plugin_dir
    monkeypatch.syspath_prepend(str(directory))
    overrides = _tiny(f"algorithm={algorithm}", "algorithm.group_size=4", _plugin(module, "Rank", groupwise="true"))
    train(compose_config(overrides), tmp_path)  # Rank asserts that each call holds one prompt
    for record in read_records(tmp_path):  # every group's scores are a permutation of the four ranks
        assert record["reward_mean"] == pytest.approx(0.5, abs=1e-6) and record["reward_std"] == pytest.approx(RANK_STD, abs=1e-6)
        assert math.isfinite(record["train/loss"])


@pytest.mark.parametrize("kind", ["groupwise", "pairwise"])
def test_a_group_reward_needs_an_algorithm_that_samples_groups_and_is_refused_before_any_work(plugin_dir, monkeypatch, kind):
    directory, module = plugin_dir
    monkeypatch.syspath_prepend(str(directory))
    for algorithm in (["algorithm=rwr"], ["algorithm=ddpo", "algorithm.group_size=1"]):
        with pytest.raises(ConfigError, match=f"reward term 'mine' is {kind}: it compares the samples of one prompt's group, and "
                           f"{algorithm[0]} samples one per prompt; use algorithm=ddpo, nft or dpo with algorithm.group_size > 1.") as refused:
            compose_config(_tiny(*algorithm, _plugin(module, "Rank", **{kind: "true"})))  # validation: no model is built
        assert "\n" not in str(refused.value)
    # Built without the config's check (e.g. by a script), the reward refuses too.
    with pytest.raises(ConfigError, match="reward 'mine' scores whole groups .* use algorithm=ddpo, nft or dpo with algorithm.group_size > 1"):
        from drl.rewards import build_reward

        cfg = compose_config(_tiny("algorithm.group_size=4", _plugin(module, "Rank", groupwise="true")))
        build_reward(cfg.reward, torch.device("cpu"), group_size=1)


def test_eval_terms_are_scored_only_before_and_after_training_with_their_paired_gain(tmp_path, plugin_dir, monkeypatch):
    directory, module = plugin_dir
    monkeypatch.syspath_prepend(str(directory))
    calls = []
    import drl.rewards.plugin as plugin

    build = plugin.build_plugin

    def counting(name, spec, device):  # count the held-out judge's calls
        reward = build(name, spec, device)
        inner = reward.fn
        reward.fn = lambda s, p, m: (calls.append(len(s)), inner(s, p, m))[1]
        return reward

    monkeypatch.setattr(plugin, "build_plugin", counting)
    monkeypatch.setattr("drl.rewards.build_plugin", counting)
    judge = "+reward.eval_terms.judge={_target_: %s.brightness, scale: 2.0}" % module
    train(compose_config(["reward=toy_motion_only", "model=toy_t2v", "model.num_frames=4", "train.epochs=1", "train.batch_size=4",
                          "hardware.num_threads=1", judge.replace("brightness, ", "brightness, video: true, ")]), tmp_path)  # fmt: skip
    assert calls == [2, 6, 6]  # the dry call at start, then the 6 evaluation clips before and after; never in training
    record = json.loads((tmp_path / "eval.json").read_text())
    before, after = record["eval_terms"]["before"]["judge"], record["eval_terms"]["after"]["judge"]
    assert len(before) == len(after) == 6 and all(0 < x < 2 for x in before + after)
    gain = torch.tensor(after, dtype=torch.float64) - torch.tensor(before, dtype=torch.float64)
    assert record["eval_terms"]["gain"]["judge"]["gain"] == pytest.approx(float(gain.mean()))
    assert record["eval_terms"]["gain"]["judge"]["gain_se"] == pytest.approx(float(gain.std() / 6**0.5))
    assert "summary" in record and "eval/gain" in record["summary"]  # the training reward's paired gain, as before
    assert {"toy_motion_only", "frames_toy_object", "temporal_consistency", "eval:judge"} <= set(record["terms"]["after"])  # monitors too
    assert all("reward/judge" not in r for r in read_records(tmp_path))


def test_without_a_group_layout_a_groupwise_reward_gets_the_samples_of_each_prompt():
    seen = []

    def rank(images, prompts, metadata):
        seen.append(list(prompts))
        return images.flatten(1).mean(1).argsort().argsort().float()

    reward = Reward("rank", rank, differentiable=False, groupwise=True)
    images = torch.tensor([0.9, 0.1, 0.2, 0.8, 0.5]).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    scores, _ = reward.score(images, ["a", "b", "a", "b", "a"], [{}] * 5, group_size=0)  # e.g. the evaluation batch
    assert seen == [["a", "a", "a"], ["b", "b"]]
    assert scores.tolist() == [2.0, 0.0, 0.0, 1.0, 1.0]  # ranks within a: 0.9 > 0.5 > 0.2; within b: 0.8 > 0.1
    with pytest.raises(RewardError, match="reward 'rank' scores groups of 2 samples, but the batch has 5"):
        reward.score(images, ["a"] * 5, [{}] * 5, group_size=2)
