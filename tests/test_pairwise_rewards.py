"""Pairwise rewards: a judge that compares two samples is called on the pairs of each group, and each sample
is scored by its win rate there (Pref-GRPO); it trains on the toy world, and is served like any groupwise term."""

import math
import textwrap
import threading
import time

import pytest
import torch
from conftest import compose_config, read_records

from drl.rewards import WeightedReward
from drl.rewards.base import Reward, RewardError, win_rates
from drl.rewards.plugin import build_plugin
from drl.train import train


def brighter(first, second, prompts, metadata):
    """1 when the first image is brighter, 0 when darker, 0.5 for a tie: hand-checkable."""
    a, b = first.flatten(1).mean(1), second.flatten(1).mean(1)
    return (a > b).float() + 0.5 * (a == b).float()


def grey(values: list[float]) -> torch.Tensor:
    """Images [n, 3, 2, 2] of constant brightness."""
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()


def test_win_rates_by_hand():
    # Bradley-Terry strengths 1, 2, 3: P(i beats j) = s_i / (s_i + s_j) for the pairs (0,1), (0,2), (1,2).
    first, second = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2])
    rates = win_rates(torch.tensor([1 / 3, 1 / 4, 2 / 5], dtype=torch.float64), first, second, 3)
    # w_0 = (1/3 + 1/4) / 2, w_1 = (2/3 + 2/5) / 2, w_2 = (3/4 + 3/5) / 2
    assert torch.allclose(rates, torch.tensor([7 / 24, 8 / 15, 27 / 40], dtype=torch.float64), atol=1e-12, rtol=0)
    assert float(rates.mean()) == pytest.approx(0.5)  # every group's win rates average 0.5


def test_a_pairwise_reward_is_called_once_per_group_on_every_pair_and_scores_win_rates():
    calls = []

    def judge(first, second, prompts, metadata):
        calls.append((len(first), list(prompts)))
        return brighter(first, second, prompts, metadata)

    reward = Reward("pref", judge, differentiable=False, pairwise=True)
    assert reward.groupwise  # pairwise compares within groups
    images = grey([0.1, 0.4, 0.2, 0.9, 0.5, 0.3, 0.3, 0.8])
    scores, info = reward.score(images, ["a"] * 4 + ["b"] * 4, [{}] * 8, group_size=4)
    assert calls == [(6, ["a"] * 6), (6, ["b"] * 6)] and info == {}  # 4 * 3 / 2 pairs per group, one call each
    # a: 0.1 < 0.2 < 0.4 < 0.9 -> each beats 0, 2, 1, 3 of the 3 others; b: 0.5 beats the two 0.3, which tie, and 0.8 beats all
    expected = [0, 2 / 3, 1 / 3, 1, 2 / 3, 0.5 / 3, 0.5 / 3, 1]
    assert torch.allclose(scores, torch.tensor(expected), atol=1e-6, rtol=0)

    # Without a group layout (the evaluation batch), a group is the samples of one prompt; a lone sample scores 0.5.
    calls.clear()
    scores, _ = reward.score(grey([0.9, 0.1, 0.5, 0.7]), ["a", "b", "a", "c"], [{}] * 4, group_size=0)
    assert calls == [(1, ["a"])] and scores.tolist() == [1.0, 0.5, 0.0, 0.5]


def test_a_pairwise_judge_that_breaks_its_contract_says_so_in_one_sentence():
    images = grey([0.1, 0.2, 0.3])
    for fn, sentence in [
        (lambda a, b, p, m: torch.tensor([-1.0, 1.0, 0.5]), r"reward 'pref' is pairwise and returned preferences in \[-1, 1\]: return, for each pair, the probability in \[0, 1\]"),
        (lambda a, b, p, m: torch.zeros(len(a), 2), r"reward 'pref' returned preferences of shape \[3, 2\] for 3 pairs: return shape \[3\], one per pair"),
        (lambda a, b, p, m: [0.5] * len(a), r"reward 'pref' returned a list, not a torch.Tensor: return one float per pair"),
    ]:
        with pytest.raises(RewardError, match=sentence) as error:
            Reward("pref", fn, differentiable=False, pairwise=True).score(images, ["a"] * 3, [{}] * 3, group_size=3)
        assert "\n" not in str(error.value)


PAIRWISE_PLUGIN = textwrap.dedent(
    '''
    def brighter(margin: float = 0.0):
        """Pairwise: 1 when the first image is brighter than the second by more than margin, 0 when darker, else 0.5."""
        def prefer(first, second, prompts, metadata):
            assert prompts == [prompts[0]] * len(prompts), "a pair holds one prompt"
            d = first.flatten(1).mean(1) - second.flatten(1).mean(1)
            return (d > margin).float() + 0.5 * (d.abs() <= margin).float()
        return prefer
    '''
)


def test_a_pairwise_plugin_trains_ddpo_on_groups_of_the_toy_world(tmp_path, monkeypatch):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "pairwise_judge.py").write_text(PAIRWISE_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    term = "+reward.terms.pref={_target_: pairwise_judge.brighter, pairwise: true}"
    built = build_plugin("pref", {"_target_": "pairwise_judge.brighter", "pairwise": True}, torch.device("cpu"))
    assert built.pairwise and built.groupwise
    overrides = ["reward.terms.toy_aesthetic=0", term, "algorithm=ddpo", "algorithm.group_size=4", "train.batch_size=4", "hardware.num_threads=1"]
    final = train(compose_config(overrides), tmp_path / "run")
    records = read_records(tmp_path / "run")
    assert [r["epoch"] for r in records] == [0, 1] and math.isfinite(final)
    ranks_std = (sum((k / 3 - 0.5) ** 2 for k in range(4)) / 4) ** 0.5  # win rates 0, 1/3, 2/3, 1 when no two samples tie
    for r in records:
        assert r["reward/pref"] == pytest.approx(0.5, abs=1e-6)  # each group's win rates average 0.5
        assert r["reward_std"] == pytest.approx(ranks_std, abs=1e-6)  # every group a permutation of the four win rates
        assert math.isfinite(r["train/loss"]) and r["train/grad_norm"] > 0
    assert records[-1]["drift_from_base"] > 0  # the weights moved


def test_a_served_pairwise_reward_scores_each_request_s_group():
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from test_reward_server import free_port

    from drl.rewards.remote import remote
    from drl.rewards.server import make_app

    port = free_port()
    reward = WeightedReward([Reward("pref", brighter, differentiable=False, pairwise=True)], [1.0], group_size=0)
    server = uvicorn.Server(uvicorn.Config(make_app(reward, torch.device("cpu")), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            time.sleep(0.02)
        judge = remote(f"http://127.0.0.1:{port}", groupwise=True)  # drl calls a groupwise term once per group, sent whole
        scores, _ = Reward("judge", judge, differentiable=False, groupwise=True).score(grey([0.3, 0.1, 0.7, 0.5]), ["a"] * 4, [{}] * 4, group_size=4)
        assert torch.allclose(scores, torch.tensor([1 / 3, 0, 1, 2 / 3]), atol=1e-6, rtol=0)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
