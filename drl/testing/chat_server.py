"""A small stand-in for a VLM judge behind an OpenAI-compatible chat-completions API, on 127.0.0.1 only.

It speaks the request and response format of POST /v1/chat/completions (what vLLM, sglang and llama.cpp's
server answer) and judges by brightness, so that a run can be checked by hand and can learn:

- one image and ``logprobs: true``: the first token is "Yes" or "No" with top_logprobs
  log b and log(1 - b), b the image's mean brightness (clamped to [0.01, 0.99]);
- one image without logprobs: the text "Score: <10 b, two decimals>";
- two images: "A" when the first is brighter, else "B"; with logprobs, P(A) = sigmoid(20 (b1 - b2)).

    python -m drl.testing.chat_server --port 8001          # then base_url: http://127.0.0.1:8001/v1

It reads the API key from $DRL_CHAT_SERVER_KEY (if set, requests must carry it), refuses bodies over
--max-body-mb, and counts what it served (GET /stats).
"""

from __future__ import annotations

import argparse
import base64
import hmac
import io
import json
import math
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

KEY_ENV = "DRL_CHAT_SERVER_KEY"
DATA_URL = "data:image/png;base64,"


def brightness(url: str) -> float:
    """Mean brightness in [0, 1] of a data:image/png;base64 URL."""
    if not url.startswith(DATA_URL):
        raise ValueError("images must be data:image/png;base64 URLs")
    image = Image.open(io.BytesIO(base64.b64decode(url[len(DATA_URL) :], validate=True)))
    if image.format != "PNG":
        raise ValueError("images must be PNG")
    return float(np.asarray(image.convert("RGB"), dtype=np.float64).mean() / 255)


def judge(request: dict) -> dict:
    """The chat.completion answer to ``request`` (see the module docstring)."""
    content = [part for message in request["messages"] if message.get("role") == "user" for part in message["content"]]
    images = [brightness(part["image_url"]["url"]) for part in content if part.get("type") == "image_url"]
    if not images or len(images) > 2:
        raise ValueError(f"send one or two images, not {len(images)}")
    if len(images) == 2:
        p = 1 / (1 + math.exp(-20 * (images[0] - images[1])))
        tokens = [("A", p), ("B", 1 - p)]
    else:
        b = min(max(images[0], 0.01), 0.99)
        tokens = [("Yes", b), ("No", 1 - b)]
    tokens.sort(key=lambda t: -t[1])
    logprobs = request.get("logprobs")
    text = tokens[0][0] if logprobs or len(images) == 2 else f"Score: {10 * images[0]:.2f}"
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if logprobs:
        top = [{"token": t, "logprob": math.log(max(p, 1e-12)), "bytes": list(t.encode())} for t, p in tokens]
        choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top[: int(request.get("top_logprobs") or 1)]}]}
    return {
        "id": "chatcmpl-drl-test", "object": "chat.completion", "created": 0, "model": request.get("model", ""),
        "choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }  # fmt: skip


class ChatServer(ThreadingHTTPServer):
    """The server on 127.0.0.1:port (0: a free port). ``fail_next``: answer that many requests 503 first;
    ``answer``: a fixed text instead of the judge's (e.g. one with no score); ``delay_s``: think that long per request."""

    daemon_threads = True

    def __init__(self, port: int = 0, key: str | None = None, max_body_bytes: int = 32 * 2**20):
        super().__init__(("127.0.0.1", port), Handler)
        self.key, self.max_body_bytes = key, max_body_bytes
        self.fail_next, self.answer, self.delay_s = 0, None, 0.0
        self.served, self.refused, self.requests = 0, 0, []  # requests: each answered request's body
        self.in_flight, self.max_in_flight = 0, 0
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status: int, message: str) -> None:
        with self.server.lock:
            self.server.refused += 1
        self.send(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}})

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/stats":
            return self.send(200, {"served": self.server.served, "refused": self.server.refused})
        self.error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        server = self.server
        if server.key is not None:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), server.key.encode()):
                return self.error(401, "Incorrect API key provided.")
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self.error(404, f"no route {self.path}")
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > server.max_body_bytes:
            self.close_connection = True
            return self.error(413, f"the body must have a Content-Length of at most {server.max_body_bytes} bytes.")
        try:
            request = json.loads(self.rfile.read(int(length)))
        except ValueError:
            return self.error(400, "the body is not JSON.")
        with server.lock:
            if server.fail_next > 0:
                server.fail_next -= 1
                failing = True
            else:
                failing = False
        if failing:
            return self.error(503, "the model is loading; try again.")
        with server.lock:
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            time.sleep(server.delay_s)
            answer = judge(request)
        except (KeyError, TypeError, ValueError) as e:
            return self.error(400, f"bad request: {e}")
        finally:
            with server.lock:
                server.in_flight -= 1
        if server.answer is not None:
            answer["choices"][0]["message"]["content"] = server.answer
            answer["choices"][0].pop("logprobs", None)
        with server.lock:
            server.served += 1
            server.requests.append(request)
        self.send(200, answer)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m drl.testing.chat_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--max-body-mb", type=float, default=32)
    args = parser.parse_args(argv)
    server = ChatServer(args.port, os.environ.get(KEY_ENV) or None, int(args.max_body_mb * 2**20))
    print(f"chat judge stand-in on {server.base_url} (127.0.0.1 only)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
