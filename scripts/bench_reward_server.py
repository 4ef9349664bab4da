"""drl-reward-server under load, on 127.0.0.1 only: N concurrent clients, each sending its own tensors.

For every (--max-batch, --max-wait-ms) pair the script starts a server, lets --clients threads send
--requests requests of --samples samples each (through drl's remote reward, with its retries), and
reports throughput (samples/s) and the p50/p99 latency of a request. It then checks that every request
was answered exactly once, with its own scores: each answer is compared with the same reward scored in
this process on that request's tensors, within TOLERANCE (float32: the server batches requests together,
so its sums run in another order). --kill-restart SIGKILLs the server once a fraction of the requests is
answered and starts it again on the same port; the clients' retries carry them over the gap, and a request
whose retries ran out is sent again once the server is back (as a run stopped by RewardError is rerun and
resumes from its checkpoint): it still counts as answered once, and the reruns are reported.

It stops by itself: a bounded number of requests, and --time-limit-s for the whole script (past it,
no client starts another request and the script exits 1).

    python scripts/bench_reward_server.py                                  # reward=toy_alignment, 8 clients x 16 x 4 samples
    python scripts/bench_reward_server.py --max-batch 4 16 64 --max-wait-ms 0 5 20
    python scripts/bench_reward_server.py --kill-restart --json load.json
    python scripts/bench_reward_server.py -- reward=toy_aesthetic          # drl-train overrides after --
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
"""|remote - in-process| <= atol + rtol * |in-process|: float32 scores (eps 1.2e-7) from sums of a few thousand
terms whose order changes with the batch the server forms; measured differences are printed beside it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """drl-reward-server in a subprocess on 127.0.0.1:port; its output goes to ``log``."""

    def __init__(self, overrides: list[str], port: int, max_batch: int, max_wait_ms: float, max_samples: int, log: Path):
        self.command = [
            sys.executable, "-m", "drl.rewards.server", *overrides, "--port", str(port), "--device", "cpu",
            "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--max-samples", str(max_samples),
        ]  # fmt: skip
        self.url, self.log, self.process = f"http://127.0.0.1:{port}", log, None

    def start(self, deadline: float) -> "Server":
        import httpx

        with open(self.log, "a") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "DRL_REWARD_TOKEN": ""})
        while True:
            try:
                httpx.get(f"{self.url}/health", timeout=2)
                return self
            except httpx.TransportError:
                if self.process.poll() is not None:
                    raise SystemExit(f"bench_reward_server: the server exited with {self.process.returncode}; see {self.log}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit("bench_reward_server: the server did not start before --time-limit-s")
                time.sleep(0.2)

    def health(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/health", timeout=5).json()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def make_requests(cfg, clients: int, requests: int, samples: int) -> dict[tuple[int, int], tuple[torch.Tensor, list, list]]:
    """Every client's requests, each its own tensors and prompts: (client, k) -> (samples [n, 3, H, W], prompts, metadata)."""
    from drl.prompts import build_prompt_source

    source = build_prompt_source(cfg.prompts)
    shape = (3, cfg.model.resolution, cfg.model.resolution)
    out = {}
    for c in range(clients):
        for k in range(requests):
            generator = torch.Generator().manual_seed(1000 * c + k)
            prompts, metadata = source.sample(samples, generator)
            out[(c, k)] = (torch.rand((samples, *shape), generator=generator), list(prompts), list(metadata))
    return out


def run_load(server: Server, work: dict, clients: int, retries: int, backoff_s: float, deadline: float, kill: dict | None) -> dict:
    """Every client sends its requests in order; returns {(client, k): (latency s, scores [n] or the error)} and the wall time."""
    from drl.rewards.remote import remote

    answers: dict[tuple[int, int], list] = {key: [] for key in work}
    latencies: dict[tuple[int, int], float] = {}
    done, back = threading.Event(), threading.Event()
    lock = threading.Lock()
    total, reruns = len(work), [0]

    def client(c: int) -> None:
        reward = remote(server.url, batch_size=len(next(iter(work.values()))[0]), concurrency=1, retries=retries, backoff_s=backoff_s, token_env=None)
        for k in sorted(k for cc, k in work if cc == c):
            if time.monotonic() > deadline:
                return
            samples, prompts, metadata = work[(c, k)]
            t0 = time.perf_counter()
            try:
                result, _ = reward(samples, prompts, metadata)
            except Exception as e:  # RewardError: every retry failed
                result = e
            if isinstance(result, Exception) and kill is not None and back.wait(max(0.0, deadline - time.monotonic())):
                with lock:
                    reruns[0] += 1
                try:  # the rerun, once the server is back
                    result, _ = reward(samples, prompts, metadata)
                except Exception as e:
                    result = e
            with lock:
                latencies[(c, k)] = time.perf_counter() - t0
                answers[(c, k)].append(result)
                if kill is not None and sum(1 for a in answers.values() if a) >= kill["after"] * total:
                    done.set()

    restarted = None
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, c) for c in range(clients)]
        if kill is not None:  # SIGKILL mid-load, then the same server again on the same port
            while not done.wait(0.05) and not all(f.done() for f in futures):
                pass
            server.kill()
            killed_at = time.perf_counter() - start
            time.sleep(kill["down_s"])
            server.start(deadline)
            back.set()
            restarted = {"killed_at_s": killed_at, "back_at_s": time.perf_counter() - start}
        for f in futures:
            f.result()
    if restarted is not None:
        restarted["reruns"] = reruns[0]
    return {"answers": answers, "latencies": latencies, "wall_s": time.perf_counter() - start, "restart": restarted}


def check(work: dict, answers: dict, reference: dict) -> dict:
    """Exactly one answer per request, equal to its in-process scores within TOLERANCE."""
    missing = [key for key, a in answers.items() if len(a) == 0]
    repeated = [key for key, a in answers.items() if len(a) > 1]
    failed = [key for key, a in answers.items() if len(a) == 1 and isinstance(a[0], Exception)]
    diffs, wrong = [], []
    for key, a in answers.items():
        if len(a) == 1 and not isinstance(a[0], Exception):
            expected = reference[key]
            diffs.append(float((a[0] - expected).abs().max()))
            if a[0].shape != expected.shape or not torch.allclose(a[0], expected, **TOLERANCE):
                wrong.append(key)
    return {
        "requests": len(work), "answered_once": len(work) - len(missing) - len(repeated) - len(failed) - len(wrong),
        "missing": len(missing), "repeated": len(repeated), "failed": len(failed), "wrong": len(wrong),
        "failures": sorted({str(answers[k][0]) for k in failed})[:3], "max_abs_diff": max(diffs, default=float("nan")),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients, each with its own tensors")
    parser.add_argument("--requests", type=int, default=16, help="requests per client")
    parser.add_argument("--samples", type=int, default=4, help="samples per request")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[64], help="the server's --max-batch values to try")
    parser.add_argument("--max-wait-ms", type=float, nargs="+", default=[5.0], help="the server's --max-wait-ms values to try")
    parser.add_argument("--kill-restart", action="store_true", help="SIGKILL the server mid-load and start it again on the same port")
    parser.add_argument("--kill-after", type=float, default=0.3, help="--kill-restart: once this fraction of the requests is answered")
    parser.add_argument("--down-s", type=float, default=1.0, help="--kill-restart: seconds between the kill and the restart")
    parser.add_argument("--retries", type=int, default=6, help="the clients' retries (backoff doubling from --backoff-s)")
    parser.add_argument("--backoff-s", type=float, default=0.5)
    parser.add_argument("--time-limit-s", type=float, default=900, help="the whole script stops within about this time")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("overrides", nargs="*", help="drl-train overrides that choose the reward (default: reward=toy_alignment)")
    args = parser.parse_args(argv)
    if min(args.clients, args.requests, args.samples, *args.max_batch) < 1 or min(args.max_wait_ms) < 0 or args.time_limit_s <= 0:
        parser.error("--clients, --requests, --samples and --max-batch must be >= 1, --max-wait-ms >= 0, --time-limit-s > 0")
    deadline = time.monotonic() + args.time_limit_s
    overrides = args.overrides or ["reward=toy_alignment"]

    from drl.compose import compose_config
    from drl.rewards.server import load_reward

    cfg = compose_config([*overrides, "logger=none"])
    reward, _ = load_reward(overrides, torch.device("cpu"))
    work = make_requests(cfg, args.clients, args.requests, args.samples)
    with torch.no_grad():  # what each request must be answered with
        reference = {key: reward(s, p, m, group_size=0)[0].float() for key, (s, p, m) in work.items()}

    results, ok = [], True
    with tempfile.TemporaryDirectory(prefix="bench-reward-server-") as tmp:
        for max_batch in args.max_batch:
            for max_wait_ms in args.max_wait_ms:
                server = Server(overrides, free_port(), max_batch, max_wait_ms, args.samples, Path(tmp) / "server.log")
                try:
                    server.start(deadline)
                    kill = {"after": args.kill_after, "down_s": args.down_s} if args.kill_restart else None
                    load = run_load(server, work, args.clients, args.retries, args.backoff_s, deadline, kill)
                    health = server.health()
                finally:
                    server.stop()
                checked = check(work, load["answers"], reference)
                lat = np.array(sorted(load["latencies"].values())) * 1000
                answered = checked["answered_once"] * args.samples
                row = {
                    "max_batch": max_batch, "max_wait_ms": max_wait_ms, "clients": args.clients, "samples_per_request": args.samples,
                    "samples_per_s": answered / load["wall_s"], "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
                    "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"), "wall_s": load["wall_s"],
                    "server_calls": health["calls"], "server_requests": health["requests"], "server_samples": health["served"],
                    "restart": load["restart"], **checked,
                }  # fmt: skip
                results.append(row)
                ok &= checked["answered_once"] == checked["requests"]
                if not args.kill_restart:  # one server saw everything: each request scored once
                    ok &= health["requests"] == checked["requests"] and health["served"] == checked["requests"] * args.samples
                r = load["restart"]
                restart = f"  killed at {r['killed_at_s']:.1f} s, back at {r['back_at_s']:.1f} s, {r['reruns']} reruns" if r else ""
                print(
                    f"max_batch {max_batch:4d}  max_wait {max_wait_ms:5.1f} ms  {row['samples_per_s']:8.1f} samples/s  "
                    f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  calls {health['calls']:4d}  "
                    f"answered once {checked['answered_once']}/{checked['requests']}  max |diff| {checked['max_abs_diff']:.2g}{restart}",
                    flush=True,
                )  # fmt: skip
                if checked["failures"]:
                    print(f"  failures: {checked['failures']}", flush=True)
    summary = {"tolerance": TOLERANCE, "overrides": overrides, "kill_restart": args.kill_restart, "ok": ok, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    if not ok:
        print("bench_reward_server: some requests were not answered exactly once with their own scores (see above).", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
