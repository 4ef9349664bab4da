"""drl-reward-server and the remote reward, on 127.0.0.1: the same scores as in-process, load spread over
several servers, and a server that dies mid-run stops the run with its checkpoint; the rerun resumes exactly."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from conftest import compose_config, read_records

import drl.train
from drl.checkpoint import load_checkpoint
from drl.errors import RewardError
from drl.prompts import build_prompt_source
from drl.rewards import build_reward
from drl.rewards.protocol import decode_request, encode_request
from drl.rewards.remote import remote
from drl.train import train

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """drl-reward-server in a subprocess on 127.0.0.1:port, ready when /health answers."""

    def __init__(self, port: int, *overrides: str):
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "drl.rewards.server", *overrides, "--port", str(port), "--device", "cpu", "--max-wait-ms", "20"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def ready(self) -> "Server":
        deadline = time.monotonic() + 120
        while True:
            try:
                self.health()
                return self
            except OSError:
                assert self.process.poll() is None, self.process.stderr.read()
                assert time.monotonic() < deadline, "the reward server did not start"
                time.sleep(0.3)

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def servers():
    """Starts servers on demand; every one is stopped at the end of the test."""
    started = []

    def start(port: int | None = None, *overrides: str, wait: bool = True) -> Server:
        server = Server(port or free_port(), *overrides)
        started.append(server)
        return server.ready() if wait else server

    yield start
    for server in started:
        server.stop()


def test_the_protocol_round_trips_samples_prompts_and_metadata_exactly():
    samples = torch.rand(3, 2, 3, 8, 8)  # clips
    body = encode_request(samples, ["a", "b", "c"], [{"k": 1}, {}, {"x": "y"}], group_size=3)
    back, prompts, metadata, group_size = decode_request(body)
    assert torch.equal(back, samples) and prompts == ["a", "b", "c"] and metadata == [{"k": 1}, {}, {"x": "y"}] and group_size == 3
    with pytest.raises(ValueError, match="not a safetensors file"):
        decode_request(b"not a tensor")


FLOAT32_BATCHES = 1e-5
"""Relative tolerance between scores of the same images computed in batches of other sizes (float32 rounding)."""


def test_remote_rewards_equal_in_process_rewards_and_several_urls_share_the_load(servers):
    reward = ["reward=toy_alignment", "+reward.terms.toy_aesthetic=0.5"]  # a weighted sum, prompts matter
    a, b = servers(None, *reward, wait=False), servers(None, *reward, wait=False)  # both start at once
    a.ready(), b.ready()
    cfg = compose_config(reward)
    local = build_reward(cfg.reward, torch.device("cpu"))
    prompts = build_prompt_source(cfg.prompts).sample(12, torch.Generator().manual_seed(0))[0]
    samples = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected, terms = local(samples, prompts, [{}] * 12)
    scores, info = remote([a.url, b.url], batch_size=2, concurrency=3)(samples, prompts, [{}] * 12)
    assert scores.shape == (12,) and scores.dtype == torch.float32
    # The servers score batches of 2, in-process one batch of 12: kernels round those shapes differently on some
    # CPUs (~1e-7 relative; a float32 step at 25 is 2e-6), relative to the largest score near 0.
    def assert_scores_close(actual, wanted):
        torch.testing.assert_close(actual, wanted, rtol=FLOAT32_BATCHES, atol=FLOAT32_BATCHES * float(wanted.abs().max()))

    assert_scores_close(scores, expected)
    assert_scores_close(torch.tensor(info["toy_aesthetic"]), terms["toy_aesthetic"])
    assert (expected[:, None] - expected[None]).abs().add(torch.eye(12) * 1e3).min() > 1e3 * FLOAT32_BATCHES  # a mix-up would show
    assert a.health()["served"] == b.health()["served"] == 6  # 6 requests of 2, alternating over the URLs
    # What goes wrong is one sentence: a request the server refuses, and a server that does not answer.
    with pytest.raises(RewardError, match=f"the reward server at {a.url} refused the request: this server scores images"):
        remote(a.url)(torch.rand(2, 3, 3, 8, 8), ["a", "b"], [{}, {}])
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RewardError, match=f"no reward server answered after 2 tries \\(last: {dead}: .*refused.*\\); start it"):
        remote(dead, retries=1, backoff_s=0.01)(torch.rand(2, 3, 8, 8), ["a", "b"], [{}, {}])


@pytest.mark.slow
def test_a_dead_server_stops_the_run_with_its_checkpoint_and_the_rerun_ends_as_an_uninterrupted_run(tmp_path, servers, monkeypatch):
    port = free_port()
    server = servers(port, "reward=toy_aesthetic")
    judge = "{_target_: drl.rewards.remote.remote, urls: [http://127.0.0.1:%d], batch_size: 3, retries: 1, backoff_s: 0.05}" % port
    overrides = ["reward.terms.toy_aesthetic=0", f"+reward.terms.judge={judge}", "train.epochs=4", "train.save_every=1",
                 "train.batch_size=4", "hardware.num_threads=1"]  # fmt: skip
    train(compose_config(overrides), tmp_path / "straight")

    save = drl.train.save_checkpoint

    def save_then_kill_the_server(directory, state):
        save(directory, state)
        if state["epoch"] == 1:
            server.stop()

    with monkeypatch.context() as patch:
        patch.setattr(drl.train, "save_checkpoint", save_then_kill_the_server)
        with pytest.raises(RewardError, match="reward 'judge': no reward server answered after 2 tries .*rerun the same command") as stop:
            train(compose_config(overrides), tmp_path / "stopped")
    assert "\n" not in str(stop.value)
    assert load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")["epoch"] == 1
    servers(port, "reward=toy_aesthetic")  # back on the same address
    train(compose_config(overrides), tmp_path / "stopped")
    straight, resumed = read_records(tmp_path / "straight"), read_records(tmp_path / "stopped")
    assert [r["epoch"] for r in resumed] == [0, 1, 2, 3]
    for x, y in zip(straight, resumed):
        assert (x["reward_mean"], x["train/loss"], x["train/grad_norm"]) == (y["reward_mean"], y["train/loss"], y["train/grad_norm"])
    local = compose_config(["train.epochs=4", "train.batch_size=4", "hardware.num_threads=1"])  # toy_aesthetic in-process
    train(local, tmp_path / "local")
    # Remote batches of 3, in-process batches of 4: equal up to float32 rounding, carried through 4 epochs of updates.
    local_means = [r["reward_mean"] for r in read_records(tmp_path / "local")]
    assert local_means == pytest.approx([r["reward_mean"] for r in straight], rel=10 * FLOAT32_BATCHES)
