"""A judge behind an OpenAI-compatible chat-completions API (vLLM, sglang, llama.cpp's server, a hosted API).

    reward.terms.judge:
      _target_: drl.rewards.chat_judge.chat_judge
      base_url: http://judge-node:8001/v1         # POST {base_url}/chat/completions
      model: Qwen/Qwen2.5-VL-7B-Instruct
      template: "Does this image show {prompt}? Answer yes or no."
      score: yes_no                               # or number (with max_score)

Each sample becomes one request: its image as a base64 PNG (``data:image/png;base64,...``) and the template
with the sample's prompt in place of ``{prompt}``. The score is parsed from the answer:

- ``number``: the first number in the text (``number_pattern``), divided by ``max_score``;
- ``yes_no``: P(yes) / (P(yes) + P(no)) from the first answer token's ``top_logprobs`` when the server
  returns them (``answers`` names the two words), else 1 for a text that starts with yes, 0 for no.

With ``pairwise: true`` (a drl flag, drl.rewards.base) each request shows two images of one group, and the
score is P(first preferred): ``answers`` default to ("A", "B"). ``concurrency`` requests are in flight at
once; a timeout, a refused connection, 429 or 5xx is retried ``retries`` times (backoff doubling); answers
are cached by (image hash, text). The API key is read from the environment variable ``api_key_env``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import numpy as np
import torch
from PIL import Image

from drl.rewards.base import RewardError

RETRIED_STATUS = (408, 409, 429, 500, 502, 503, 504)  # busy or restarting: worth another try
NUMBER = r"[-+]?\d+(?:\.\d+)?"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def png_data_url(image: torch.Tensor) -> tuple[str, bytes]:
    """image [3, H, W] float in [0, 1] -> (data:image/png;base64,... URL, the PNG bytes)."""
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # [H, W, 3]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    png = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii"), png


def parse_number(text: str, pattern: str, max_score: float) -> float | None:
    """The first match of ``pattern`` in ``text`` (its first group if it has one) / max_score; None without a match."""
    match = re.search(pattern, text)
    if match is None:
        return None
    try:
        return float(match.group(1) if match.groups() else match.group(0)) / max_score
    except (TypeError, ValueError):
        return None


def parse_choice(choice: dict, answers: tuple[str, str]) -> float | None:
    """P(answers[0]) / (P(answers[0]) + P(answers[1])) from the first token's top_logprobs (tokens compared without
    case or surrounding spaces); without logprobs, 1 or 0 from the text's first word; None if neither is there."""
    first, second = (a.strip().lower() for a in answers)
    content = (choice.get("logprobs") or {}).get("content") or []
    if content:
        p = {first: 0.0, second: 0.0}
        for candidate in content[0].get("top_logprobs") or [content[0]]:
            token = str(candidate.get("token", "")).strip().lower()
            if token in p and candidate.get("logprob") is not None:
                p[token] += math.exp(float(candidate["logprob"]))
        if p[first] + p[second] > 0:
            return p[first] / (p[first] + p[second])
    text = str((choice.get("message") or {}).get("content") or "")
    words = re.findall(r"[A-Za-z0-9]+", text)
    word = words[0].lower() if words else ""
    return 1.0 if word == first else 0.0 if word == second else None


class ChatJudge:
    """The scoring callable: fn(images, prompts, metadata) -> scores [B]; pairwise: fn(first, second, prompts, metadata)."""

    def __init__(
        self, base_url: str, model: str, template: str, score: str, answers, max_score: float, number_pattern: str, system: str | None,
        pairwise: bool, concurrency: int, timeout_s: float, retries: int, backoff_s: float, max_tokens: int | None,
        cache_size: int, api_key_env: str | None, extra_body: dict | None,
    ):  # fmt: skip
        if score not in ("number", "yes_no"):
            raise RewardError(f"chat_judge: score={score!r} is not one of number, yes_no.")
        if concurrency < 1 or timeout_s <= 0 or retries < 0 or backoff_s < 0 or cache_size < 0 or max_score == 0:
            raise RewardError("chat_judge needs concurrency >= 1, timeout_s > 0, retries >= 0, backoff_s >= 0, cache_size >= 0 and max_score != 0.")
        try:
            re.compile(number_pattern)
        except re.error as e:
            raise RewardError(f"chat_judge: number_pattern {number_pattern!r} is not a regular expression ({e}).") from None
        answers = tuple(answers) if answers is not None else ("A", "B") if pairwise else ("yes", "no")
        if len(answers) != 2:
            raise RewardError(f"chat_judge: answers must name two words (the first scores 1), not {list(answers)}.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.template, self.score, self.answers, self.system = model, template, score, answers, system
        self.max_score, self.number_pattern, self.pairwise = float(max_score), number_pattern, pairwise
        self.retries, self.backoff_s, self.cache_size = retries, backoff_s, cache_size
        self.max_tokens = max_tokens if max_tokens is not None else (1 if score == "yes_no" else 32)
        self.extra_body = dict(extra_body or {})
        key = os.environ.get(api_key_env, "").strip() if api_key_env else ""
        self.key_hint = f" (the key is read from ${api_key_env})" if api_key_env else ""
        loopback = urlparse(base_url).hostname in LOOPBACK
        self.client = httpx.Client(
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=concurrency),
            trust_env=not loopback,  # a proxy from the environment for a hosted API, never for this machine's own server
        )
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="drl-chat-judge")
        self.cache: OrderedDict[str, float] = OrderedDict()
        self.lock = threading.Lock()
        self.requests, self.hits = 0, 0  # answers fetched from the server, and served from the cache

    # ------------------------------------------------------------------ one request
    def body(self, images: list[str], text: str) -> dict:
        content = [{"type": "text", "text": text}, *({"type": "image_url", "image_url": {"url": url}} for url in images)]
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [{"role": "user", "content": content}]
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens, **self.extra_body}
        if self.score == "yes_no":
            body.update(logprobs=True, top_logprobs=20)
        return body

    def ask(self, images: list[str], text: str) -> float:
        """POST one chat completion (retried) and parse its score; RewardError with one sentence otherwise."""
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self.client.post(self.url, json=self.body(images, text))
            except httpx.TransportError as e:  # refused, unreachable, timed out
                failure = str(e) or type(e).__name__
                continue
            if response.status_code in RETRIED_STATUS:
                failure = f"HTTP {response.status_code}: {error_message(response)}"
                continue
            if response.status_code != 200:
                hint = self.key_hint if response.status_code in (401, 403) else ""
                raise RewardError(f"the judge at {self.url} refused the request with HTTP {response.status_code}: {error_message(response)}{hint}.")
            try:
                choice = response.json()["choices"][0]
            except Exception:
                raise RewardError(f"the judge at {self.url} answered without choices[0]; is it an OpenAI-compatible chat-completions endpoint?") from None
            return self.parse(choice)
        raise RewardError(f"no answer from the judge at {self.url} after {self.retries + 1} tries (last: {failure}); start it, or raise timeout_s or retries.")

    def parse(self, choice: dict) -> float:
        if self.score == "number":
            text = str((choice.get("message") or {}).get("content") or "")
            value = parse_number(text, self.number_pattern, self.max_score)
            wanted = f"a number matching {self.number_pattern!r}"
        else:
            value = parse_choice(choice, self.answers)
            text = str((choice.get("message") or {}).get("content") or "")
            wanted = f"{self.answers[0]!r} or {self.answers[1]!r} (as the first word, or in the first token's logprobs)"
        if value is None:
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise RewardError(f"the judge answered {shown!r}, which holds no score: {wanted}; change the template or the score parser.")
        return value

    # ------------------------------------------------------------------ cache
    def cached(self, pngs: list[bytes], text: str, images: list[str]) -> float:
        digest = hashlib.sha256()
        for png in pngs:
            digest.update(hashlib.sha256(png).digest())
        key = f"{digest.hexdigest()}|{text}"
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                self.hits += 1
                return self.cache[key]
        value = self.ask(images, text)
        with self.lock:
            self.requests += 1
            if self.cache_size:
                self.cache[key] = value
                while len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)
        return value

    # ------------------------------------------------------------------ the reward
    def __call__(self, *args) -> torch.Tensor:
        if self.pairwise:
            first, second, prompts, metadata = args
            groups = [[a, b] for a, b in zip(first, second)]
            device = first.device
        else:
            samples, prompts, metadata = args
            if samples.dim() != 4:
                raise RewardError(f"chat_judge scores images [B, 3, H, W], not {list(samples.shape)}; for clips, score frames (frames_ rewards) in your own term.")
            groups = [[image] for image in samples]
            device = samples.device
        jobs = []
        for images, prompt in zip(groups, prompts):
            encoded = [png_data_url(image) for image in images]
            jobs.append(([png for _, png in encoded], self.template.replace("{prompt}", str(prompt)), [url for url, _ in encoded]))
        values = list(self.pool.map(lambda job: self.cached(*job), jobs))
        return torch.tensor(values, dtype=torch.float32, device=device)


def error_message(response: httpx.Response) -> str:
    """The API's error sentence ({"error": {"message": ...}} or {"detail": ...}), else the start of the body."""
    try:
        data = response.json()
        message = data.get("error", {}).get("message") if isinstance(data.get("error"), dict) else data.get("error") or data.get("detail")
        if message:
            return str(message).splitlines()[0]
    except Exception:
        pass
    return response.text[:120].replace("\n", " ") or response.reason_phrase


def chat_judge(
    base_url: str,
    model: str,
    template: str = "Does this image match the description: {prompt}? Answer yes or no.",
    score: str = "yes_no",
    answers: list[str] | None = None,
    max_score: float = 1.0,
    number_pattern: str = NUMBER,
    system: str | None = None,
    pairwise: bool = False,
    concurrency: int = 8,
    timeout_s: float = 60.0,
    retries: int = 3,
    backoff_s: float = 1.0,
    max_tokens: int | None = None,
    cache_size: int = 100_000,
    api_key_env: str | None = "OPENAI_API_KEY",
    extra_body: dict | None = None,
) -> ChatJudge:
    """A chat-completions judge as a reward term (see the module docstring); ``pairwise`` is drl's flag, passed on."""
    return ChatJudge(
        str(base_url), str(model), str(template), str(score), answers, max_score, str(number_pattern), system, bool(pairwise),
        concurrency, timeout_s, retries, backoff_s, max_tokens, cache_size, api_key_env, extra_body,
    )  # fmt: skip
