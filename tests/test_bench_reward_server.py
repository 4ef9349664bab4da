"""scripts/bench_reward_server.py on tiny settings: every request answered exactly once with its own scores,
throughput and latency reported; with --kill-restart, nothing lost across a SIGKILLed server. Loopback only."""

import json

import pytest
import torch
from conftest import load_script

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
bench = load_script("bench_reward_server")


def test_the_check_catches_a_missing_a_repeated_a_failed_and_a_wrong_answer():
    work = {(0, k): None for k in range(5)}
    reference = {(0, k): torch.tensor([float(k), 1.0]) for k in range(5)}
    answers = {
        (0, 0): [torch.tensor([0.0, 1.0])],
        (0, 1): [],  # never answered
        (0, 2): [torch.tensor([2.0, 1.0]), torch.tensor([2.0, 1.0])],  # answered twice
        (0, 3): [RuntimeError("no reward server answered")],
        (0, 4): [torch.tensor([3.0, 1.0])],  # request 3's scores
    }
    checked = bench.check(work, answers, reference)
    assert (checked["answered_once"], checked["missing"], checked["repeated"], checked["failed"], checked["wrong"]) == (1, 1, 1, 1, 1)
    assert checked["failures"] == ["no reward server answered"] and checked["max_abs_diff"] == 1.0
    close = {(0, 0): [torch.tensor([0.0 + 5e-6, 1.0])]}  # inside TOLERANCE
    assert bench.check({(0, 0): None}, close, {(0, 0): torch.tensor([0.0, 1.0])})["answered_once"] == 1


@pytest.mark.slow  # a server subprocess: about 90 s on the shared 2-core machine
def test_concurrent_clients_are_each_answered_once_with_their_own_scores(tmp_path, capsys):
    out = tmp_path / "load.json"
    code = bench.main(["--clients", "3", "--requests", "2", "--samples", "2", "--max-batch", "4", "--max-wait-ms", "20",
                       "--time-limit-s", "400", "--json", str(out), "reward=toy_alignment"])  # fmt: skip
    summary = json.loads(out.read_text())
    assert code == 0 and summary["ok"], capsys.readouterr()
    (row,) = summary["results"]
    assert row["answered_once"] == row["requests"] == 6 and row["max_abs_diff"] <= summary["tolerance"]["atol"]
    assert row["server_requests"] == 6 and row["server_samples"] == 12 and 1 <= row["server_calls"] <= 6
    assert row["samples_per_s"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
    assert "answered once 6/6" in capsys.readouterr().out


@pytest.mark.slow
def test_a_server_killed_mid_load_loses_no_request(tmp_path):
    out = tmp_path / "kill.json"
    code = bench.main(["--clients", "3", "--requests", "4", "--samples", "2", "--max-batch", "4", "--kill-restart", "--kill-after", "0.3",
                       "--retries", "2", "--backoff-s", "0.2", "--time-limit-s", "500", "--json", str(out), "reward=toy_alignment"])  # fmt: skip
    summary = json.loads(out.read_text())
    (row,) = summary["results"]
    assert code == 0 and summary["ok"] and row["answered_once"] == row["requests"] == 12
    assert row["restart"]["reruns"] >= 1  # short retries: some requests outlived them and were sent again once the server was back
    assert row["restart"]["back_at_s"] > row["restart"]["killed_at_s"] and row["max_abs_diff"] <= summary["tolerance"]["atol"]
