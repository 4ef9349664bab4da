"""Diffusion-DPO: its loss on hand-made numbers, online pairs, pairs files, end to end."""

import json
import math

import pytest
import torch

from drl.algorithms.dpo import best_worst_pairs
from drl.errors import ConfigError
from drl.losses import diffusion_dpo_loss
from drl.preference_data import load_image, load_pairs

from conftest import read_records, train_toy_alignment


def _write_images(tmp_path, n=2):
    from PIL import Image

    names = []
    for i in range(n):
        name = f"img{i}.png"
        Image.new("RGB", (40, 40), (255 * (i % 2), 0, 0)).save(tmp_path / name)
        names.append(name)
    return names


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


def test_best_worst_pairs_drop_ties():
    chosen, rejected = best_worst_pairs(torch.tensor([1.0, 5.0, 3.0, 2.0, 2.0, 2.0]), group_size=3, min_gap=0.0)
    assert chosen.tolist() == [1] and rejected.tolist() == [0]


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


def test_dpo_online_runs_end_to_end(tmp_path, random_toy_model):
    train_toy_alignment(tmp_path, random_toy_model, "algorithm=dpo", "algorithm.lr=1e-3", "algorithm.minibatches=1")
    records = read_records(tmp_path)
    assert all(r["train/pairs"] == 8 // 4 and math.isfinite(r["train/loss"]) for r in records)  # best vs worst of 4
    assert records[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-4)  # model = reference at the first step
    assert records[1]["train/loss"] != pytest.approx(math.log(2), abs=1e-4)


def test_dpo_offline_trains_on_a_pairs_file(tmp_path, random_toy_model):
    a, b = _write_images(tmp_path)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"prompt,chosen,rejected\na small red circle at the top left,{a},{b}\na large blue square at the center,{b},{a}\n")
    run = tmp_path / "run"
    train_toy_alignment(run, random_toy_model, "algorithm=dpo", f"algorithm.pairs_path={pairs}", "algorithm.lr=1e-3")
    records = read_records(run)
    assert all(r["train/pairs"] == 4 and r["train/optimizer_steps"] == 4 for r in records)  # 4 minibatches
    assert "reward_mean" not in records[0]  # offline: nothing sampled during training

