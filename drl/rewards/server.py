"""drl-reward-server: any drl reward (built-in or plug-in) over HTTP, batching concurrent requests.

    drl-reward-server reward=toy_alignment --port 8000
    drl-reward-server reward=my_judge hydra.searchpath=[file:///home/me/my_conf] --device cuda

The reward is chosen with drl-train's own config keys (Hydra overrides; model=toy_t2v for clips).
Requests that arrive within --max-wait-ms of each other are scored in one call of up to --max-batch
samples. The wire format is drl.rewards.protocol; the client is drl.rewards.remote.

Who may ask, and how much: with a token (a file, --token-file, or $DRL_REWARD_TOKEN; never the command
line) every request must carry ``Authorization: Bearer <token>``; without one the server listens on
loopback only. A body over --max-body-mb, a request of more than --max-samples samples, or one not
answered within --request-timeout-s is refused with one sentence. On SIGTERM the requests in flight are
answered, then the server stops. --ssl-certfile/--ssl-keyfile serve HTTPS (uvicorn's options).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import ssl
import sys
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from fastapi import FastAPI, HTTPException, Request  # drl[serve]; at module level so that FastAPI resolves the annotations

from drl.errors import ConfigError, HTTPRefusal, RewardError
from drl.rewards import WeightedReward
from drl.rewards.protocol import decode_request

TOKEN_ENV = "DRL_REWARD_TOKEN"  # where the server (and, by default, the remote reward) reads the bearer token
LOOPBACK = ("127.0.0.1", "::1", "localhost")


DEFAULT_MAX_BODY_MB = 256.0  # --max-body-mb


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 2**20)
    """Largest request body; refused (413) from its Content-Length, or as soon as the stream passes it."""
    max_samples: int = 256
    """Most samples in one request (413)."""
    request_timeout_s: float = 300.0
    """From the first byte read to the answer; past it the request is answered 503 (the client retries)."""


@dataclass
class Job:
    """One request: samples [b, ...] on the CPU, and the future its answer goes to."""

    samples: torch.Tensor
    prompts: list
    metadata: list
    group_size: int
    answer: asyncio.Future = field(repr=False)


class Batcher:
    """Collects jobs for up to max_wait_s, scores compatible ones together (one call at a time), answers each."""

    def __init__(self, reward: WeightedReward, device: torch.device, max_batch: int, max_wait_s: float):
        self.reward, self.device, self.max_batch, self.max_wait_s = reward, device, max_batch, max_wait_s
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.grouped = any(r.groupwise for r in reward.rewards + reward.monitors)  # then the group layout must not mix requests
        self.served, self.calls = 0, 0  # samples scored, reward calls made (fewer than requests when batching works)
        self.scoring = 0  # samples in the reward call now running
        self.queued = [0, 0]  # requests and samples in the queue

    async def score(self, samples: torch.Tensor, prompts: list, metadata: list, group_size: int) -> dict:
        job = Job(samples, prompts, metadata, group_size, asyncio.get_running_loop().create_future())
        self.queued = [self.queued[0] + 1, self.queued[1] + len(samples)]
        await self.queue.put(job)
        return await job.answer

    async def take(self, timeout_s: float | None = None) -> Job:
        """The next job out of the queue (asyncio.TimeoutError after ``timeout_s``)."""
        job = await (self.queue.get() if timeout_s is None else asyncio.wait_for(self.queue.get(), timeout_s))
        self.queued = [self.queued[0] - 1, self.queued[1] - len(job.samples)]
        return job

    def depth(self) -> dict:
        """Requests and samples waiting for a reward call, and samples in the call now running."""
        return {"queued_requests": self.queued[0], "queued_samples": self.queued[1], "scoring_samples": self.scoring}

    def fail_waiting(self, error: Exception) -> None:
        """At shutdown: every job still queued gets ``error`` (none remain after a drain)."""
        while not self.queue.empty():
            job = self.queue.get_nowait()
            self.queued = [self.queued[0] - 1, self.queued[1] - len(job.samples)]
            if not job.answer.done():
                job.answer.set_exception(error)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.take()]
            deadline = loop.time() + self.max_wait_s
            while sum(len(j.samples) for j in jobs) < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    jobs.append(await self.take(left))
                except asyncio.TimeoutError:
                    break
            jobs = [j for j in jobs if not j.answer.done()]  # a request that timed out while it waited is not scored
            for batch in self.compatible(jobs):
                self.scoring = sum(len(j.samples) for j in batch)
                try:
                    answers = await loop.run_in_executor(None, self.score_together, batch)
                except Exception as e:  # one sentence back to every client of this batch
                    answers = [e] * len(batch)
                finally:
                    self.scoring = 0
                for job, answer in zip(batch, answers):
                    if job.answer.done():  # timed out meanwhile: its client has had its 503
                        continue
                    job.answer.set_exception(answer) if isinstance(answer, Exception) else job.answer.set_result(answer)

    def compatible(self, jobs: list[Job]) -> list[list[Job]]:
        """Jobs that can share a reward call: same sample shape and, for groupwise rewards, the same group
        size (groups by prompt, group_size 0, stay within their request)."""
        batches: dict[tuple, list[Job]] = {}
        for job in jobs:
            layout = job.group_size if not self.grouped or job.group_size > 0 else id(job)
            batches.setdefault((tuple(job.samples.shape[1:]), layout), []).append(job)
        return list(batches.values())

    def score_together(self, jobs: list[Job]) -> list[dict]:
        samples = torch.cat([j.samples for j in jobs]).to(self.device)  # [sum b, ...]
        prompts = [p for j in jobs for p in j.prompts]
        metadata = [m for j in jobs for m in j.metadata]
        with torch.no_grad():
            scores, terms = self.reward(samples, prompts, metadata, group_size=jobs[0].group_size)
        self.served, self.calls = self.served + len(samples), self.calls + 1
        answers, start = [], 0
        for job in jobs:
            end = start + len(job.samples)
            answers.append({
                "scores": scores[start:end].float().cpu().tolist(),
                "info": {k: v[start:end].float().cpu().tolist() for k, v in terms.items()},
            })  # fmt: skip
            start = end
        return answers


Refused = HTTPRefusal  # a request the server will not score

def check_token(authorization: str | None, token: str | None) -> None:
    """Refused (401) unless ``authorization`` is ``Bearer <token>``; compared in constant time (of the digests)."""
    if token is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Refused(401, f"this server needs a bearer token: give the client the server's token (the remote reward reads ${TOKEN_ENV}, or its token_env / token_file).")
    if not hmac.compare_digest(hashlib.sha256(given.strip().encode()).digest(), hashlib.sha256(token.encode()).digest()):
        raise Refused(401, "the bearer token does not match this server's token.")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) from its Content-Length or as soon as the stream passes ``limit`` bytes."""
    length = request.headers.get("content-length")
    too_big = f"more than this server takes ({limit} bytes, --max-body-mb): send fewer samples per request (the remote reward's batch_size)"
    if length is not None:
        if not length.isdigit():
            raise Refused(400, f"the Content-Length header {length!r} is not a number of bytes.")
        if int(length) > limit:
            raise Refused(413, f"the request body has {int(length)} bytes, {too_big}.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, f"the request body passed {limit} bytes, {too_big}.")
    return bytes(body)


def make_app(
    reward: WeightedReward,
    device: torch.device,
    max_batch: int = 64,
    max_wait_s: float = 0.005,
    video: bool = False,
    token: str | None = None,
    limits: Limits = Limits(),
):
    """The FastAPI application: POST /score, GET /health; every request carries the bearer token when one is set."""
    batcher = Batcher(reward, device, max_batch, max_wait_s)
    stats = {"requests": 0, "in_flight": 0, "timeouts": 0, "refused": Counter()}
    state = {"draining": False}

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        yield  # uvicorn answers the requests in flight before it gets here on SIGTERM
        task.cancel()
        batcher.fail_waiting(Refused(503, "the reward server is stopping; the request was not scored."))
        print(f"drl-reward-server: stopped after answering {stats['requests']} requests ({batcher.served} samples).", file=sys.stderr, flush=True)

    app = FastAPI(title="drl-reward-server", lifespan=lifespan)
    app.state.drain = lambda: state.update(draining=True)  # the server's SIGTERM handler calls it

    def refuse(status: int, sentence: str) -> HTTPException:
        stats["refused"][str(status)] += 1
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return HTTPException(status_code=status, detail=sentence, headers=headers)

    @app.get("/health")
    async def health(request: Request) -> dict:
        try:
            check_token(request.headers.get("authorization"), token)
        except Refused as e:
            raise refuse(e.status, str(e)) from None
        names = [r.name for r in reward.rewards]
        return {"status": "draining" if state["draining"] else "ok", "terms": names, "weights": reward.weights, "video": video,
                "max_batch": max_batch, "max_samples": limits.max_samples, "max_body_bytes": limits.max_body_bytes,
                **batcher.depth(), "in_flight": stats["in_flight"], "requests": stats["requests"], "served": batcher.served,
                "calls": batcher.calls, "timeouts": stats["timeouts"], "refused": dict(stats["refused"])}  # fmt: skip

    async def answer(request: Request) -> dict:
        body = await read_body(request, limits.max_body_bytes)
        try:
            samples, prompts, metadata, group_size = decode_request(body)
        except ValueError as e:
            raise Refused(400, f"bad request: {e}.") from None
        del body
        if len(samples) > limits.max_samples:
            raise Refused(413, f"the request holds {len(samples)} samples, more than this server takes ({limits.max_samples}, --max-samples): lower the remote reward's batch_size.")
        if (samples.dim() == 5) != video:
            raise Refused(400, f"this server scores {'clips' if video else 'images'}, the request sent {list(samples.shape)}.")
        return await batcher.score(samples, prompts, metadata, group_size)

    @app.post("/score")
    async def score(request: Request) -> dict:
        stats["in_flight"] += 1
        try:
            check_token(request.headers.get("authorization"), token)  # before a byte of the body is read
            if state["draining"]:
                raise Refused(503, "the reward server is stopping; send the request to another server.")
            result = await asyncio.wait_for(answer(request), limits.request_timeout_s)
            stats["requests"] += 1
            return result
        except Refused as e:
            raise refuse(e.status, str(e)) from None
        except asyncio.TimeoutError:
            stats["timeouts"] += 1
            raise HTTPException(status_code=503, detail=f"the request was not answered within {limits.request_timeout_s:g} s (--request-timeout-s).") from None
        except (RewardError, ConfigError) as e:  # the reward broke its contract: the client stops with this sentence
            raise HTTPException(status_code=422, detail=str(e)) from None
        except Exception as e:
            raise HTTPException(status_code=500, detail=f"the reward failed: {type(e).__name__}: {e}") from None
        finally:
            stats["in_flight"] -= 1

    return app


def load_reward(overrides: list[str], device: torch.device) -> tuple[WeightedReward, bool]:
    """The weighted reward that drl-train would build from ``overrides``, and whether it scores clips."""
    from drl.compose import compose_config
    from drl.rewards import build_reward, refuse_latent_terms
    from drl.rewards.plugin import dry_call_plugins

    cfg = compose_config([*overrides, "logger=none"])
    video = cfg.model.kind == "t2v"
    reward = build_reward(cfg.reward, device, video=video, group_size=0)  # the group layout comes with each request
    refuse_latent_terms(reward, "drl-reward-server is sent decoded samples: score it in the training process.")
    shape = (3, cfg.model.resolution, cfg.model.resolution)
    dry_call_plugins(reward, (cfg.model.num_frames, *shape) if video else shape, ["a test prompt"], device, needs_grad=False)
    return reward, video


def read_token(token_file: str | None, environ=os.environ) -> str | None:
    """The bearer token: the first line of ``token_file``, else $DRL_REWARD_TOKEN, else None (no token)."""
    if token_file is None:
        return environ.get(TOKEN_ENV, "").strip() or None
    path = Path(token_file).expanduser()
    if not path.is_file():
        raise ConfigError(f"--token-file {token_file}: no such file; write the token into it (e.g. openssl rand -hex 32 > {token_file}).")
    lines = path.read_text().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError(f"--token-file {token_file} is empty; write the token on its first line.")
    return token


def check_serving(host: str, token: str | None, client_certs: bool) -> None:
    """ConfigError unless a server that anyone on the network can reach asks who is calling."""
    if host not in LOOPBACK and token is None and not client_certs:
        raise ConfigError(
            f"--host {host} would let anyone who reaches this machine score with it, and no token is set: "
            f"put a token in a file (--token-file) or in ${TOKEN_ENV}, or keep the default --host 127.0.0.1."
        )


def tls_options(certfile: str | None, keyfile: str | None, ca_certs: str | None) -> dict:
    """uvicorn's TLS keyword arguments; ConfigError for a missing file. ca_certs: clients must show a certificate it signed."""
    if (keyfile or ca_certs) and not certfile:
        raise ConfigError("--ssl-keyfile and --ssl-ca-certs need --ssl-certfile (the server's certificate).")
    for flag, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile), ("--ssl-ca-certs", ca_certs)):
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(f"{flag} {path}: no such file.")
    if not certfile:
        return {}
    options = {"ssl_certfile": str(Path(certfile).expanduser()), "ssl_keyfile": keyfile and str(Path(keyfile).expanduser())}
    if ca_certs:
        options.update(ssl_ca_certs=str(Path(ca_certs).expanduser()), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def build_parser() -> argparse.ArgumentParser:
    """drl-reward-server's command line: drl-train overrides that choose the reward, then the server's flags."""
    parser = argparse.ArgumentParser(prog="drl-reward-server", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="drl-train config overrides that choose the reward, e.g. reward=toy_alignment")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; anything but loopback needs a token (or --ssl-ca-certs)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    parser.add_argument("--max-batch", type=int, default=64, help="most samples scored in one reward call")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with")
    parser.add_argument("--token-file", help=f"file whose first line is the bearer token every request must carry (default: ${TOKEN_ENV}, if set)")
    parser.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB, help="largest request body, in MiB")
    parser.add_argument("--max-samples", type=int, default=Limits.max_samples, help="most samples in one request")
    parser.add_argument("--request-timeout-s", type=float, default=Limits.request_timeout_s, help="a request not answered by then gets 503")
    parser.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM; uvicorn's option)")
    parser.add_argument("--ssl-keyfile", help="its private key (PEM, unencrypted: keep it readable by this user only)")
    parser.add_argument("--ssl-ca-certs", help="require clients to show a certificate signed by these CAs (mutual TLS)")
    return parser


def main(argv: list[str] | None = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    if any(a == "--token" or a.startswith("--token=") for a in raw):
        print(f"drl-reward-server: error: a token on the command line is visible to every user of this machine; put it in a file (--token-file) or in ${TOKEN_ENV}.", file=sys.stderr)
        sys.exit(2)
    args = build_parser().parse_args(argv)
    try:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device} but no CUDA device is visible; use --device cpu.")
        if args.max_batch < 1 or args.max_samples < 1 or args.max_body_mb <= 0 or args.request_timeout_s <= 0 or args.max_wait_ms < 0:
            raise ConfigError("--max-batch, --max-samples, --max-body-mb and --request-timeout-s must be > 0, and --max-wait-ms >= 0.")
        token = read_token(args.token_file)
        tls = tls_options(args.ssl_certfile, args.ssl_keyfile, args.ssl_ca_certs)
        check_serving(args.host, token, bool(args.ssl_ca_certs))  # before the reward loads
        device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
        reward, video = load_reward(args.overrides, device)
    except (ConfigError, RewardError, FileNotFoundError) as e:
        print(f"drl-reward-server: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # Hydra's composition errors (an unknown group option, a bad override)
        print(f"drl-reward-server: error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    import uvicorn

    limits = Limits(int(args.max_body_mb * 2**20), args.max_samples, args.request_timeout_s)
    app = make_app(reward, device, args.max_batch, args.max_wait_ms / 1000, video, token, limits)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:  # SIGTERM/SIGINT: refuse new requests, answer those in flight (uvicorn waits for them)
            if not self.should_exit:
                app.state.drain()
                print(f"drl-reward-server: stopping: answering the requests in flight (up to {args.request_timeout_s:g} s).", file=sys.stderr, flush=True)
            super().handle_exit(sig, frame)

    scheme = "https" if tls else "http"
    auth = "bearer token" if token else "client certificates" if args.ssl_ca_certs else "no token: loopback only"
    print(f"drl-reward-server: {', '.join(r.name for r in reward.rewards)} on {scheme}://{args.host}:{args.port} ({device}; {auth})", flush=True)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=int(args.request_timeout_s) + 1, **tls)
    Server(config).run()


if __name__ == "__main__":
    main()
