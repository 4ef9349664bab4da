"""drl-reward-server: any drl reward (built-in or plug-in) over HTTP, batching concurrent requests.

    drl-reward-server reward=toy_alignment --port 8000
    drl-reward-server reward=my_judge hydra.searchpath=[file:///home/me/my_conf] --device cuda

The reward is chosen with drl-train's own config keys (Hydra overrides; model=toy_t2v for clips).
Requests that arrive within --max-wait-ms of each other are scored in one call of up to --max-batch
samples. The wire format is drl.rewards.protocol; the client is drl.rewards.remote.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import torch
from fastapi import FastAPI, HTTPException, Request  # drl[serve]; at module level so that FastAPI resolves the annotations

from drl.errors import ConfigError, RewardError
from drl.rewards import WeightedReward
from drl.rewards.protocol import decode_request


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

    async def score(self, samples: torch.Tensor, prompts: list, metadata: list, group_size: int) -> dict:
        job = Job(samples, prompts, metadata, group_size, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.answer

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            deadline = loop.time() + self.max_wait_s
            while sum(len(j.samples) for j in jobs) < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            for batch in self.compatible(jobs):
                try:
                    answers = await loop.run_in_executor(None, self.score_together, batch)
                except Exception as e:  # one sentence back to every client of this batch
                    for job in batch:
                        job.answer.set_exception(e)
                    continue
                for job, answer in zip(batch, answers):
                    job.answer.set_result(answer)

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


def make_app(reward: WeightedReward, device: torch.device, max_batch: int = 64, max_wait_s: float = 0.005, video: bool = False):
    """The FastAPI application: POST /score, GET /health."""
    batcher = Batcher(reward, device, max_batch, max_wait_s)

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app = FastAPI(title="drl-reward-server", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict:
        names = [r.name for r in reward.rewards]
        return {"status": "ok", "terms": names, "weights": reward.weights, "video": video, "max_batch": max_batch,
                "served": batcher.served, "calls": batcher.calls}  # fmt: skip

    @app.post("/score")
    async def score(request: Request) -> dict:
        try:
            samples, prompts, metadata, group_size = decode_request(await request.body())
        except ValueError as e:
            raise HTTPException(status_code=400, detail=f"bad request: {e}.") from None
        if (samples.dim() == 5) != video:
            raise HTTPException(status_code=400, detail=f"this server scores {'clips' if video else 'images'}, the request sent {list(samples.shape)}.")
        try:
            return await batcher.score(samples, prompts, metadata, group_size)
        except (RewardError, ConfigError) as e:  # the reward broke its contract: the client stops with this sentence
            raise HTTPException(status_code=422, detail=str(e)) from None
        except Exception as e:
            raise HTTPException(status_code=500, detail=f"the reward failed: {type(e).__name__}: {e}") from None

    return app


def load_reward(overrides: list[str], device: torch.device) -> tuple[WeightedReward, bool]:
    """The weighted reward that drl-train would build from ``overrides``, and whether it scores clips."""
    from drl.compose import compose_config
    from drl.rewards import build_reward
    from drl.rewards.plugin import dry_call_plugins

    cfg = compose_config([*overrides, "logger=none"])
    video = cfg.model.kind == "t2v"
    reward = build_reward(cfg.reward, device, video=video, group_size=0)  # the group layout comes with each request
    shape = (3, cfg.model.resolution, cfg.model.resolution)
    dry_call_plugins(reward, (cfg.model.num_frames, *shape) if video else shape, ["a test prompt"], device, needs_grad=False)
    return reward, video


def build_parser() -> argparse.ArgumentParser:
    """drl-reward-server's command line: drl-train overrides that choose the reward, then the server's flags."""
    parser = argparse.ArgumentParser(prog="drl-reward-server", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="drl-train config overrides that choose the reward, e.g. reward=toy_alignment")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    parser.add_argument("--max-batch", type=int, default=64, help="most samples scored in one reward call")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device} but no CUDA device is visible; use --device cpu.")
        device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
        reward, video = load_reward(args.overrides, device)
    except (ConfigError, RewardError, FileNotFoundError) as e:
        print(f"drl-reward-server: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # Hydra's composition errors (an unknown group option, a bad override)
        print(f"drl-reward-server: error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    import uvicorn

    print(f"drl-reward-server: {', '.join(r.name for r in reward.rewards)} on http://{args.host}:{args.port} ({device})", flush=True)
    uvicorn.run(make_app(reward, device, args.max_batch, args.max_wait_ms / 1000, video), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
