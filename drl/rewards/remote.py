"""The ``remote`` reward: scores from drl-reward-server (or any server that speaks drl.rewards.protocol).

    reward.terms.judge: {_target_: drl.rewards.remote.remote, urls: [http://gpu-node:8000], batch_size: 16}

A call is split into requests of ``batch_size`` samples, sent ``concurrency`` at a time. Request k goes
to urls[(rank + k) % len(urls)], so several servers share the load and every rank talks to them; a
failed request is retried on the next URL after backoff_s * 2**attempt seconds. When every try fails,
RewardError stops the run (its last checkpoint stays; the same command resumes once a server is back).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import torch

from drl import distributed
from drl.errors import RewardError
from drl.rewards.protocol import encode_request

RETRIED_STATUS = (502, 503, 504)  # a proxy or an overloaded server: worth another try


def post(url: str, body: bytes, timeout_s: float) -> dict:
    request = urllib.request.Request(f"{url.rstrip('/')}/score", data=body, headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def server_detail(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read())["detail"])
    except Exception:
        return f"HTTP {error.code} {error.reason}"


class RemoteReward:
    """The scoring callable (samples, prompts, metadata) -> (scores [B], info {key: [B]})."""

    def __init__(self, urls, batch_size: int, concurrency: int, timeout_s: float, retries: int, backoff_s: float, groupwise: bool):
        self.urls = [urls] if isinstance(urls, str) else [str(u) for u in urls]
        if not self.urls or batch_size < 1 or concurrency < 1 or timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise RewardError("remote needs urls, batch_size >= 1, concurrency >= 1, timeout_s > 0, retries >= 0 and backoff_s >= 0.")
        self.batch_size, self.timeout_s, self.retries, self.backoff_s = batch_size, timeout_s, retries, backoff_s
        self.groupwise = groupwise  # then every call is one group, sent whole
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="drl-remote")

    def request(self, k: int, body: bytes) -> dict:
        """Request k, tried on urls[(rank + k + attempt) % n] until one answers."""
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            url = self.urls[(distributed.rank() + k + attempt) % len(self.urls)]
            try:
                return post(url, body, self.timeout_s)
            except urllib.error.HTTPError as e:
                if e.code not in RETRIED_STATUS:  # the server answered: another try would get the same answer
                    raise RewardError(f"the reward server at {url} refused the request: {server_detail(e)}") from None
                failure = f"{url}: {server_detail(e)}"
            except (urllib.error.URLError, OSError) as e:  # refused, unreachable, timed out
                failure = f"{url}: {getattr(e, 'reason', e)}"
        raise RewardError(
            f"no reward server answered after {self.retries + 1} tries (last: {failure}); start it (drl-reward-server ...) "
            "and rerun the same command: the run resumes from its last checkpoint."
        )

    def __call__(self, samples: torch.Tensor, prompts: list, metadata: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n = len(samples)
        size = n if self.groupwise else self.batch_size
        bodies = [encode_request(samples[s : s + size], prompts[s : s + size], metadata[s : s + size], n if self.groupwise else 0)
                  for s in range(0, n, size)]  # fmt: skip
        answers = list(self.pool.map(self.request, range(len(bodies)), bodies))
        scores = torch.tensor([x for a in answers for x in a["scores"]], dtype=torch.float32, device=samples.device)  # [B]
        info = {key: [x for a in answers for x in a["info"][key]] for key in answers[0].get("info", {})}
        return scores, info


def remote(
    urls: list[str] | str,
    batch_size: int = 16,
    concurrency: int = 2,
    timeout_s: float = 60.0,
    retries: int = 3,
    backoff_s: float = 1.0,
    groupwise: bool = False,
) -> RemoteReward:
    """A reward served over HTTP (see the module docstring); the term's flags (differentiable: false) stay drl's."""
    return RemoteReward(urls, batch_size, concurrency, timeout_s, retries, backoff_s, groupwise)
