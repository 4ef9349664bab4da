"""drl-reward-server's guards, one by one: the bearer token, the refused --host 0.0.0.0, the body and sample
limits (Content-Length and streamed), the per-request timeout, /health's queue depth, the drain on SIGTERM
and TLS. Each refusal is a 4xx with one sentence, and the remote reward shows it. A run of the shipped flow model
(model=toy_flow) trains on a served reward unchanged. Everything on 127.0.0.1."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import torch

from drl.rewards import WeightedReward
from drl.rewards.base import Reward, RewardError
from drl.rewards.protocol import encode_request
from drl.rewards.remote import remote

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
from drl.rewards.server import Limits, check_serving, main, make_app, read_token  # noqa: E402  (needs fastapi)

TOKEN = "0f3a9c-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def brightness(seconds: float = 0.0) -> WeightedReward:
    """A reward a reader checks by hand: each image's mean value (after sleeping ``seconds`` per call)."""

    def fn(images, prompts, metadata):
        time.sleep(seconds)
        return images.flatten(1).mean(1)

    return WeightedReward([Reward("brightness", fn, differentiable=False)], [1.0])


@contextmanager
def serving(reward: WeightedReward, token: str | None = None, limits: Limits = Limits(), max_batch: int = 64, max_wait_s: float = 0.005):
    """make_app under uvicorn in a thread on 127.0.0.1; yields its URL."""
    port = free_port()
    config = uvicorn.Config(make_app(reward, torch.device("cpu"), max_batch, max_wait_s, False, token, limits), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def body(n: int, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, bytes]:
    samples = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return samples, encode_request(samples, [f"p{k}" for k in range(n)], [{}] * n)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}


def test_a_token_server_refuses_requests_without_the_token_and_the_client_sends_it(monkeypatch, tmp_path):
    samples, data = body(4)
    with serving(brightness(), token=TOKEN) as url:
        for headers, sentence in [
            ({}, "this server needs a bearer token"),
            ({"Authorization": TOKEN}, "this server needs a bearer token"),  # no scheme
            (bearer("wrong"), "the bearer token does not match this server's token."),
            (bearer(TOKEN + "x"), "the bearer token does not match this server's token."),
        ]:
            for answer in (httpx.post(f"{url}/score", content=data, headers=headers), httpx.get(f"{url}/health", headers=headers)):
                assert answer.status_code == 401 and answer.json()["detail"].startswith(sentence), answer.text
                assert "\n" not in answer.json()["detail"]
        answer = httpx.post(f"{url}/score", content=data, headers=bearer(TOKEN))
        assert answer.status_code == 200
        assert torch.allclose(torch.tensor(answer.json()["scores"]), samples.flatten(1).mean(1), atol=1e-6, rtol=0)

        # The remote reward reads the token from $DRL_REWARD_TOKEN (or another variable, or a file) and shows the refusal.
        monkeypatch.delenv("DRL_REWARD_TOKEN", raising=False)
        with pytest.raises(RewardError, match=f"the reward server at {url} refused the request: this server needs a bearer token"):
            remote(url, retries=0)(samples, ["a"] * 4, [{}] * 4)
        monkeypatch.setenv("DRL_REWARD_TOKEN", "wrong")
        with pytest.raises(RewardError, match="refused the request: the bearer token does not match"):
            remote(url, retries=0)(samples, ["a"] * 4, [{}] * 4)
        monkeypatch.setenv("DRL_REWARD_TOKEN", TOKEN)
        assert torch.allclose(remote(url)(samples, ["a"] * 4, [{}] * 4)[0], samples.flatten(1).mean(1), atol=1e-6, rtol=0)
        monkeypatch.setenv("MY_JUDGE_TOKEN", TOKEN)
        monkeypatch.delenv("DRL_REWARD_TOKEN")
        assert remote(url, token_env="MY_JUDGE_TOKEN")(samples, ["a"] * 4, [{}] * 4)[0].shape == (4,)
        (tmp_path / "token").write_text(TOKEN + "\n")
        assert remote(url, token_file=str(tmp_path / "token"))(samples, ["a"] * 4, [{}] * 4)[0].shape == (4,)
        health = httpx.get(f"{url}/health", headers=bearer(TOKEN)).json()
        assert health["refused"]["401"] == 10 and health["requests"] == 4


def test_the_server_reads_its_token_from_a_file_or_the_environment_never_the_command_line(tmp_path, capsys):
    (tmp_path / "token").write_text(f"  {TOKEN}  \nsecond line ignored\n")
    assert read_token(str(tmp_path / "token"), environ={}) == TOKEN
    assert read_token(None, environ={"DRL_REWARD_TOKEN": TOKEN}) == TOKEN
    assert read_token(None, environ={"DRL_REWARD_TOKEN": " "}) is None and read_token(None, environ={}) is None
    (tmp_path / "empty").write_text("\n")
    for argv, sentence in [
        (["--token-file", str(tmp_path / "missing")], f"--token-file {tmp_path / 'missing'}: no such file"),
        (["--token-file", str(tmp_path / "empty")], f"--token-file {tmp_path / 'empty'} is empty"),
        (["--token", TOKEN], "a token on the command line is visible to every user of this machine"),
        ([f"--token={TOKEN}"], "a token on the command line is visible to every user of this machine"),
    ]:
        with pytest.raises(SystemExit) as exit:
            main(["reward=toy_aesthetic", *argv])
        err = capsys.readouterr().err
        assert exit.value.code == 2 and err.startswith(f"drl-reward-server: error: {sentence}") and err.count("\n") == 1, err


def test_every_interface_without_a_token_is_refused_before_the_reward_loads(capsys, monkeypatch):
    monkeypatch.delenv("DRL_REWARD_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exit:
        main(["reward=no_such_reward", "--host", "0.0.0.0"])  # the reward would fail to compose: the host check comes first
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1
    assert err.startswith("drl-reward-server: error: --host 0.0.0.0 would let anyone who reaches this machine score with it, and no token is set")
    check_serving("127.0.0.1", None, False), check_serving("::1", None, False)  # loopback needs no token
    check_serving("0.0.0.0", TOKEN, False), check_serving("0.0.0.0", None, True)  # a token, or client certificates


def test_bodies_over_the_limit_are_refused_from_their_length_or_while_streaming_and_so_are_too_many_samples():
    limits = Limits(max_body_bytes=20_000, max_samples=8)
    with serving(brightness(), limits=limits) as url:
        _, small = body(8)  # 8 x 3 x 8 x 8 float32 = 6 KiB: fits
        assert httpx.post(f"{url}/score", content=small).status_code == 200
        _, big = body(40)  # 30 KiB
        answer = httpx.post(f"{url}/score", content=big)
        assert answer.status_code == 413
        assert answer.json()["detail"] == (
            f"the request body has {len(big)} bytes, more than this server takes (20000 bytes, --max-body-mb): "
            "send fewer samples per request (the remote reward's batch_size)."
        )
        # No Content-Length (chunked): the stream is cut once it passes the limit, not read to its end.
        sent = []

        def chunks():
            for start in range(0, 10 * len(big), 4096):
                sent.append(start)
                yield (big * 10)[start : start + 4096]

        answer = httpx.post(f"{url}/score", content=chunks())
        assert answer.status_code == 413 and answer.json()["detail"].startswith("the request body passed 20000 bytes, more than this server takes")
        _, many = body(9, size=4)  # 9 samples in 2 KiB
        answer = httpx.post(f"{url}/score", content=many)
        assert answer.status_code == 413
        assert answer.json()["detail"] == "the request holds 9 samples, more than this server takes (8, --max-samples): lower the remote reward's batch_size."
        # The remote reward shows the sentence, also for a body far over the limit that the server never reads.
        huge = torch.rand(400, 3, 16, 16)
        with pytest.raises(RewardError, match=r"refused the request: the request body has \d+ bytes, more than this server takes \(20000 bytes"):
            remote(url, batch_size=400, retries=0)(huge, ["a"] * 400, [{}] * 400)
        with pytest.raises(RewardError, match=r"refused the request: the request holds 9 samples"):
            remote(url, batch_size=9, retries=0)(torch.rand(9, 3, 4, 4), ["a"] * 9, [{}] * 9)
        assert httpx.get(f"{url}/health").json()["refused"] == {"413": 5}


def test_a_request_not_answered_in_time_gets_503_and_the_server_keeps_serving():
    with serving(brightness(seconds=1.0), limits=Limits(request_timeout_s=0.3)) as url:
        samples, data = body(2)
        answer = httpx.post(f"{url}/score", content=data)
        assert answer.status_code == 503
        assert answer.json()["detail"] == "the request was not answered within 0.3 s (--request-timeout-s)."
        # 503 is retried by the remote reward; after its retries it stops with the server's sentence.
        with pytest.raises(RewardError, match=r"no reward server answered after 2 tries \(last: .*not answered within 0.3 s"):
            remote(url, retries=1, backoff_s=0.01)(samples, ["a", "b"], [{}, {}])
        assert httpx.get(f"{url}/health").json()["timeouts"] == 3
    with serving(brightness(seconds=0.2), limits=Limits(request_timeout_s=5)) as url:  # in time: answered
        assert httpx.post(f"{url}/score", content=data).status_code == 200


def test_health_reports_the_queue_depth_and_what_was_served():
    release = threading.Event()

    def held(images, prompts, metadata):  # every call waits until the test has looked at /health
        assert release.wait(timeout=60)
        return images.flatten(1).mean(1)

    reward = WeightedReward([Reward("held", held, differentiable=False)], [1.0])
    with serving(reward, max_batch=2, max_wait_s=0.0) as url:
        data = [body(2, seed=k)[1] for k in range(4)]
        with ThreadPoolExecutor(4) as pool:
            answers = [pool.submit(httpx.post, f"{url}/score", content=d, timeout=60) for d in data]
            deadline = time.monotonic() + 30
            while (during := httpx.get(f"{url}/health").json())["queued_requests"] < 3:  # one request is scored, 3 wait
                assert time.monotonic() < deadline, during
                time.sleep(0.05)
            assert during["in_flight"] == 4 and during["scoring_samples"] == 2 and during["queued_samples"] == 6
            release.set()
            assert all(a.result().status_code == 200 for a in answers)
        after = httpx.get(f"{url}/health").json()
        assert (after["in_flight"], after["queued_requests"], after["scoring_samples"]) == (0, 0, 0)
        assert (after["requests"], after["served"], after["calls"]) == (4, 8, 4)
        assert after["max_samples"] == Limits.max_samples and after["status"] == "ok"



def test_a_toy_flow_run_on_the_served_reward_sees_the_rewards_of_the_in_process_term(tmp_path):
    """The server scores the flow model's pixel-space samples as any others: a one-epoch model=toy_flow run whose
    toy_alignment is served (batches of 3) logs the rewards of the same run scoring in-process (one batch)."""
    import json

    from conftest import compose_config, read_records

    from drl.rewards import build_reward
    from drl.train import train

    run = ["model=toy_flow", "reward=toy_alignment", "algorithm=nft", "train.epochs=1", "train.samples_per_epoch=4",
           "train.batch_size=4", "train.grid_size=2", "train.eval_size=4", "scheduler.num_steps=2", "logger=none",
           "hardware.num_threads=1"]  # fmt: skip
    local = compose_config(run, tiny=False)
    with serving(build_reward(local.reward, torch.device("cpu"))) as url:
        judge = "{_target_: drl.rewards.remote.remote, urls: [%s], batch_size: 3, token_env: null}" % url
        served = compose_config([*run, "reward.terms.toy_alignment=0", f"+reward.terms.served={judge}"], tiny=False)
        assert served.scheduler.kind == "flow"
        train(served, tmp_path / "served")
    train(local, tmp_path / "local")
    # Batches of 3 against one of 4: equal up to float32 rounding (~1e-7 relative; rewards are ~-20).
    (a,), (b,) = read_records(tmp_path / "served"), read_records(tmp_path / "local")
    assert a["reward_mean"] == pytest.approx(b["reward_mean"], rel=1e-5) and a["reward_std"] == pytest.approx(b["reward_std"], rel=1e-4)
    before = [json.loads((tmp_path / name / "eval.json").read_text())["summary"]["eval/reward_before"] for name in ("served", "local")]
    assert before[0] == pytest.approx(before[1], rel=1e-5)

SLOW_REWARD = '''
import time


def slow(seconds: float = 1.0):
    def score(images, prompts, metadata):
        time.sleep(seconds)
        return images.flatten(1).mean(1)

    return score
'''


class Process:
    """drl-reward-server in a subprocess with a plug-in reward that sleeps ``seconds`` per call."""

    def __init__(self, tmp_path, *args: str, seconds: float = 0.0, env: dict | None = None):
        (tmp_path / "slow_reward.py").write_text(SLOW_REWARD)
        self.port = free_port()
        reward = ["reward.terms.toy_aesthetic=0", f"+reward.terms.slow={{_target_: slow_reward.slow, seconds: {seconds}}}"]
        command = [sys.executable, "-m", "drl.rewards.server", *reward, "--port", str(self.port), "--device", "cpu", *args]
        environ = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env or {})}
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environ)

    def wait_ready(self, url: str, **client) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2, **client)
                return
            except httpx.TransportError:
                assert self.process.poll() is None, self.process.stderr.read()
                assert time.monotonic() < deadline, "the reward server did not start"
                time.sleep(0.3)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def test_sigterm_answers_the_requests_in_flight_then_stops(tmp_path):
    server = Process(tmp_path, "--max-batch", "2", "--max-wait-ms", "0", seconds=1.0)
    url = f"http://127.0.0.1:{server.port}"
    try:
        server.wait_ready(url)
        data = [body(2, seed=k) for k in range(4)]  # 4 requests, scored 2 samples (1 s) at a time: 4 s in all
        with ThreadPoolExecutor(4) as pool:
            answers = [pool.submit(httpx.post, f"{url}/score", content=d, timeout=60) for _, d in data]
            deadline = time.monotonic() + 30
            while httpx.get(f"{url}/health").json()["in_flight"] < 4:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            server.process.send_signal(signal.SIGTERM)
            for (samples, _), answer in zip(data, answers):
                result = answer.result()
                assert result.status_code == 200, result.text
                assert torch.allclose(torch.tensor(result.json()["scores"]), samples.flatten(1).mean(1), atol=1e-6, rtol=0)
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
        err = server.process.stderr.read()
        assert "stopping: answering the requests in flight" in err and "stopped after answering 4 requests (8 samples)." in err
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health")
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_serves_https_with_uvicorns_certificate_options_and_the_client_verifies_it(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    (tmp_path / "token").write_text(TOKEN)
    server = Process(tmp_path, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--token-file", str(tmp_path / "token"))
    url = f"https://127.0.0.1:{server.port}"
    try:
        server.wait_ready(url, verify=str(cert))
        samples = torch.rand(3, 3, 8, 8)
        os.environ["TLS_TEST_TOKEN"] = TOKEN
        try:
            scores, _ = remote(url, token_env="TLS_TEST_TOKEN", ca_file=str(cert))(samples, ["a"] * 3, [{}] * 3)
            assert torch.allclose(scores, samples.flatten(1).mean(1), atol=1e-6, rtol=0)
            with pytest.raises(RewardError, match="no reward server answered after 1 tries .*CERTIFICATE_VERIFY_FAILED"):
                remote(url, token_env="TLS_TEST_TOKEN", retries=0)(samples, ["a"] * 3, [{}] * 3)  # the system's CAs do not know it
        finally:
            del os.environ["TLS_TEST_TOKEN"]
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{server.port}/health")  # plain HTTP is not served
    finally:
        server.stop()
