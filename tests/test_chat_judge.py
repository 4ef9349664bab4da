"""The chat-completions judge against a stand-in server on 127.0.0.1 that speaks the OpenAI API's format
(drl.testing.chat_server, which judges by brightness): the request it sends, the scores it parses (a number,
yes/no from logprobs or text, A/B for pairs), retries, timeouts, the key, the cache, and a run that trains."""

import base64
import io
import math

import numpy as np
import pytest
import torch
from conftest import compose_config, read_records
from PIL import Image

from drl.errors import user_message
from drl.rewards.base import Reward, RewardError
from drl.rewards.chat_judge import chat_judge, parse_choice, parse_number
from drl.testing.chat_server import ChatServer
from drl.train import train

TOLERANCE = dict(atol=1e-6, rtol=0)  # float32 scores of float64 arithmetic on the same uint8 pixels


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def brightness(x: torch.Tensor) -> torch.Tensor:
    """What the stand-in sees: the mean of the PNG's uint8 pixels, in [0, 1]."""
    return (x.clamp(0, 1) * 255).round().flatten(1).mean(1).double() / 255


def test_yes_no_from_logprobs_and_the_request_it_sends(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "k-123")
    with ChatServer(key="k-123") as server:
        judge = chat_judge(server.base_url, "my-vlm", template="Is this {prompt}? Answer yes or no.", system="You judge images.", api_key_env="JUDGE_KEY")
        x = images()
        scores = judge(x, ["a red circle", "a blue square", "a", "b"], [{}] * 4)
        assert scores.dtype == torch.float32 and scores.shape == (4,)
        assert torch.allclose(scores, brightness(x).clamp(0.01, 0.99).float(), **TOLERANCE)  # P(yes) / (P(yes) + P(no)) = b
        request = server.requests[0]
        assert request["model"] == "my-vlm" and request["temperature"] == 0 and request["max_tokens"] == 1
        assert request["logprobs"] is True and request["top_logprobs"] == 20
        system, user = request["messages"]
        assert system == {"role": "system", "content": "You judge images."} and user["role"] == "user"
        text, image = user["content"]
        assert text["type"] == "text" and text["text"] in {f"Is this {p}? Answer yes or no." for p in ["a red circle", "a blue square", "a", "b"]}
        assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")
        png = Image.open(io.BytesIO(base64.b64decode(image["image_url"]["url"].split(",", 1)[1])))
        assert png.format == "PNG" and png.size == (8, 8) and png.mode == "RGB"
        sent = {r["messages"][1]["content"][0]["text"]: r["messages"][1]["content"][1]["image_url"]["url"] for r in server.requests}
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(sent["Is this a red circle? Answer yes or no."].split(",", 1)[1]))))
        assert np.array_equal(pixels, (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())  # the first prompt's own image


def test_a_number_in_the_text_and_yes_no_without_logprobs():
    with ChatServer() as server:
        x = images()
        scores = chat_judge(server.base_url, "m", score="number", max_score=10, api_key_env=None)(x, ["a"] * 4, [{}] * 4)
        assert torch.allclose(scores, (torch.round(10 * brightness(x) * 100) / 100 / 10).float(), **TOLERANCE)  # "Score: 7.23" -> 0.723
        assert server.requests[0]["max_tokens"] == 32 and "logprobs" not in server.requests[0]
        judge = chat_judge(server.base_url, "m", api_key_env=None, cache_size=0)
        for text, expected in [("Yes.", 1.0), ("no, it is not", 0.0), ("YES", 1.0)]:  # a server that returns no logprobs
            server.answer = text
            assert judge(x[:1], ["a"], [{}]).tolist() == [expected]
    assert parse_number("Rating: 8/10", r"(\d+)/10", 10.0) == 0.8 and parse_number("none", r"\d+", 1.0) is None
    top = [{"token": " Yes", "logprob": math.log(0.6)}, {"token": "yes", "logprob": math.log(0.1)}, {"token": "No", "logprob": math.log(0.2)}]
    choice = {"message": {"content": "Yes"}, "logprobs": {"content": [{"token": " Yes", "logprob": math.log(0.6), "top_logprobs": top}]}}
    assert parse_choice(choice, ("yes", "no")) == pytest.approx(0.7 / 0.9)  # token variants add up


def test_a_pairwise_judge_compares_two_images_per_request():
    with ChatServer() as server:
        judge = chat_judge(server.base_url, "m", template="Which image shows {prompt} better? Answer A or B.", pairwise=True, api_key_env=None)
        x = images(4)
        reward = Reward("pref", judge, differentiable=False, pairwise=True)
        scores, _ = reward.score(x, ["a"] * 4, [{}] * 4, group_size=4)
        b = brightness(x)
        expected = torch.zeros(4, dtype=torch.float64)
        for i in range(4):
            for j in range(4):
                if i != j:
                    expected[i] += 1 / (1 + math.exp(-20 * (b[i] - b[j])))  # P(A) = sigmoid(20 (b1 - b2))
        assert torch.allclose(scores, (expected / 3).float(), atol=1e-5, rtol=0)
        assert server.served == 6 and all(len(r["messages"][0]["content"]) == 3 for r in server.requests)  # text + 2 images


def test_retries_timeouts_a_wrong_key_and_an_answer_without_a_score_are_one_sentence(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "wrong")
    x = images(1)
    with ChatServer(key="right") as server:
        with pytest.raises(RewardError, match=r"the judge at http://127.0.0.1:\d+/v1/chat/completions refused the request with HTTP 401: "
                                              r"Incorrect API key provided. \(the key is read from \$JUDGE_KEY\).") as refused:  # fmt: skip
            chat_judge(server.base_url, "m", api_key_env="JUDGE_KEY")(x, ["a"], [{}])
        assert "\n" not in str(refused.value)
    with ChatServer() as server:
        server.fail_next = 2  # the model is still loading: 503, 503, then an answer
        assert chat_judge(server.base_url, "m", retries=2, backoff_s=0.01, api_key_env=None)(x, ["a"], [{}]).shape == (1,)
        server.fail_next = 5
        with pytest.raises(RewardError, match=r"no answer from the judge at .* after 2 tries \(last: HTTP 503: the model is loading; try again.\); start it"):
            chat_judge(server.base_url, "m", retries=1, backoff_s=0.01, api_key_env=None)(x, ["a"], [{}])
        server.fail_next, server.delay_s = 0, 1.0
        with pytest.raises(RewardError, match=r"no answer from the judge at .* after 1 tries \(last: .*timed out.*\)"):
            chat_judge(server.base_url, "m", retries=0, timeout_s=0.2, api_key_env=None)(x, ["a"], [{}])
        server.delay_s = 0.0
        server.answer = "I cannot tell."
        with pytest.raises(RewardError, match="the judge answered 'I cannot tell.', which holds no score: a number matching"):
            chat_judge(server.base_url, "m", score="number", api_key_env=None)(x, ["a"], [{}])
        with pytest.raises(RewardError, match="the judge answered 'I cannot tell.', which holds no score: 'yes' or 'no'"):
            chat_judge(server.base_url, "m", api_key_env=None)(x, ["a"], [{}])
    with pytest.raises(RewardError, match="chat_judge: score='stars' is not one of number, yes_no."):
        chat_judge("http://127.0.0.1:1/v1", "m", score="stars")


def test_the_cache_answers_a_known_image_and_prompt_and_requests_run_concurrently():
    with ChatServer() as server:
        server.delay_s = 0.2
        judge = chat_judge(server.base_url, "m", concurrency=4, api_key_env=None)
        x = images(8)
        first = judge(x, ["a"] * 8, [{}] * 8)
        assert server.served == 8 and 2 <= server.max_in_flight <= 4  # at most `concurrency` at once, and more than one
        again = judge(x, ["a"] * 8, [{}] * 8)
        assert torch.equal(first, again) and server.served == 8 and judge.hits == 8  # image hash + prompt: no request
        judge(x[:2], ["b", "b"], [{}, {}])  # another prompt is another question
        assert server.served == 10 and judge.requests == 10


def test_a_chat_judge_trains_ddpo_on_the_toy_world(tmp_path):
    with ChatServer() as server:
        term = "+reward.terms.judge={_target_: drl.rewards.chat_judge.chat_judge, base_url: %s, model: toy-judge, api_key_env: null}" % server.base_url
        overrides = ["reward.terms.toy_aesthetic=0", term, "train.batch_size=4", "hardware.num_threads=1"]
        final = train(compose_config(overrides), tmp_path)
        records = read_records(tmp_path)
        assert [r["epoch"] for r in records] == [0, 1] and math.isfinite(final)
        assert all(0.01 <= r["reward/judge"] <= 0.99 and math.isfinite(r["train/loss"]) for r in records)
        assert records[-1]["drift_from_base"] > 0
        assert server.served >= 2 + 2 * 8  # the dry call, then 8 samples an epoch (and the before/after evaluation)


def test_a_judge_whose_answers_hold_no_score_stops_the_run_at_start_in_one_sentence(tmp_path):
    """The dry call asks the judge about two random images before anything trains: its answer without a score is the
    run's one sentence (drl-train prints it as `drl-train: error: ...`, exit 2), and no epoch ran."""
    with ChatServer() as server:
        server.answer = "I cannot tell."
        term = "+reward.terms.judge={_target_: drl.rewards.chat_judge.chat_judge, base_url: %s, model: toy-judge, api_key_env: null}" % server.base_url
        with pytest.raises(RewardError) as refused:
            train(compose_config(["reward.terms.toy_aesthetic=0", term, "hardware.num_threads=1"]), tmp_path)
    message = user_message(refused.value)
    assert message.startswith("reward 'judge': the judge answered 'I cannot tell.', which holds no score: 'yes' or 'no'")
    assert "\n" not in message and not (tmp_path / "metrics.jsonl").exists()
    assert server.served <= 2  # the dry call's two images, nothing more
