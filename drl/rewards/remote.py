"""The ``remote`` reward: scores from drl-reward-server (or any server that speaks drl.rewards.protocol).

    reward.terms.judge: {_target_: drl.rewards.remote.remote, urls: [http://gpu-node:8000], batch_size: 16}

A call is split into requests of ``batch_size`` samples, sent ``concurrency`` at a time. Request k goes
to urls[(rank + k) % len(urls)], so several servers share the load and every rank talks to them; a
failed request is retried on the next URL after backoff_s * 2**attempt seconds. When every try fails,
RewardError stops the run (its last checkpoint stays; the same command resumes once a server is back).

A server that asks for a token gets ``Authorization: Bearer <token>``, the token read from the environment
variable ``token_env`` (DRL_REWARD_TOKEN) or the file ``token_file``, never from the config (which is saved
with the run). https URLs are verified against the system's CAs, or ``ca_file`` (e.g. a self-signed certificate).
"""

from __future__ import annotations

import os
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import torch

from drl import distributed
from drl.errors import HTTPRefusal, RewardError
from drl.rewards.protocol import encode_request

Answered = HTTPRefusal  # the server answered with an error status: the status and its one sentence
RETRIED_STATUS = (502, 503, 504)  # a proxy or an overloaded server: worth another try


def server_detail(response: httpx.Response) -> str:
    """The server's one sentence ({"detail": ...}), or the HTTP status when the body holds none."""
    try:
        return str(response.json()["detail"])
    except Exception:
        return f"HTTP {response.status_code} {response.reason_phrase}"


def post(client: httpx.Client, url: str, body: bytes) -> dict:
    """POST the body to url/score: the JSON answer, or Answered for an error status. httpx reads the server's
    answer even when the server stopped reading the body (a 413 for an oversized one)."""
    response = client.post(f"{url.rstrip('/')}/score", content=body, headers={"Content-Type": "application/octet-stream"})
    if response.status_code != 200:
        raise Answered(response.status_code, server_detail(response))
    return response.json()


def read_client_token(token_env: str | None, token_file: str | None) -> str | None:
    """The bearer token to send: the first line of ``token_file``, else $token_env, else None."""
    if token_file:
        path = os.path.expanduser(str(token_file))
        try:
            with open(path) as f:
                token = f.readline().strip()
        except OSError as e:
            raise RewardError(f"remote: cannot read token_file {token_file} ({e.strerror}).") from None
        if not token:
            raise RewardError(f"remote: token_file {token_file} is empty; write the server's token on its first line.")
        return token
    return (os.environ.get(str(token_env), "").strip() or None) if token_env else None


class RemoteReward:
    """The scoring callable (samples, prompts, metadata) -> (scores [B], info {key: [B]})."""

    def __init__(
        self, urls, batch_size: int, concurrency: int, timeout_s: float, retries: int, backoff_s: float, groupwise: bool,
        token: str | None = None, ca_file: str | None = None,
    ):  # fmt: skip
        self.urls = [urls] if isinstance(urls, str) else [str(u) for u in urls]
        if not self.urls or batch_size < 1 or concurrency < 1 or timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise RewardError("remote needs urls, batch_size >= 1, concurrency >= 1, timeout_s > 0, retries >= 0 and backoff_s >= 0.")
        self.batch_size, self.timeout_s, self.retries, self.backoff_s = batch_size, timeout_s, retries, backoff_s
        self.groupwise = groupwise  # then every call is one group, sent whole
        if ca_file and not os.path.isfile(os.path.expanduser(str(ca_file))):
            raise RewardError(f"remote: ca_file {ca_file}: no such file.")
        verify = ssl.create_default_context(cafile=os.path.expanduser(str(ca_file))) if ca_file else True
        self.client = httpx.Client(
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=timeout_s,
            verify=verify,
            limits=httpx.Limits(max_connections=concurrency),
            trust_env=False,  # no proxy from the environment between a run and its reward server
        )
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="drl-remote")

    def request(self, k: int, body: bytes) -> dict:
        """Request k, tried on urls[(rank + k + attempt) % n] until one answers."""
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            url = self.urls[(distributed.rank() + k + attempt) % len(self.urls)]
            try:
                return post(self.client, url, body)
            except Answered as e:
                if e.status not in RETRIED_STATUS:  # the server answered: another try would get the same answer
                    raise RewardError(f"the reward server at {url} refused the request: {e}") from None
                failure = f"{url}: {e}"
            except (httpx.TransportError, OSError) as e:  # refused, unreachable, timed out, closed mid-answer
                failure = f"{url}: {str(e) or type(e).__name__}"
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
    token_env: str | None = "DRL_REWARD_TOKEN",
    token_file: str | None = None,
    ca_file: str | None = None,
) -> RemoteReward:
    """A reward served over HTTP (see the module docstring); the term's flags (differentiable: false) stay drl's."""
    token = read_client_token(token_env, token_file)
    return RemoteReward(urls, batch_size, concurrency, timeout_s, retries, backoff_s, groupwise, token, ca_file)
