"""Concurrent requests are answered together in one `generate` call, each row keeping its own limits,
and generation runs off the event loop so the server stays responsive."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.server import started_server, tiny_config

pytestmark = pytest.mark.slow

PROMPTS = ["Hello", "The capital of France is", "Tell me about the sea and the moon", "Why",
           "Name three colors please", "Good morning", "Write a short sentence about a dog", "Yes"]


def batch_sizes(url: str) -> tuple[float, float]:
    """(generate calls so far, calls that answered exactly one request) from /metrics."""
    total = single = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == "kairo_batch_size_count":
                total = sample.value
            if sample.name == "kairo_batch_size_bucket" and sample.labels["le"] == "1.0":
                single = sample.value
    return total, single


def request_body(i: int) -> dict:
    return {"model": "beta", "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 3 + i % 5, "temperature": 0}


async def send_together(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120) as http:
        return await asyncio.gather(*(http.post(f"{url}/v1/completions", json=b) for b in bodies))


@pytest.fixture(scope="module")
def burst(adapter_server):
    """Twelve requests sent at once (varied prompts and max_tokens), with the batch metrics around them."""
    before = batch_sizes(adapter_server)
    answers = asyncio.run(send_together(adapter_server, [request_body(i) for i in range(12)]))
    after = batch_sizes(adapter_server)
    return answers, before, after


def test_concurrent_requests_are_all_answered(burst):
    answers, _, _ = burst
    assert [a.status_code for a in answers] == [200] * 12


def test_concurrent_requests_share_a_generate_call(burst):
    _, (calls_before, single_before), (calls_after, single_after) = burst
    batched_calls = (calls_after - calls_before) - (single_after - single_before)
    assert batched_calls >= 1  # at least one generate call answered more than one request
    assert calls_after - calls_before < 12


def test_each_row_of_a_batch_keeps_its_own_max_tokens(burst):
    answers, _, _ = burst
    for i, answer in enumerate(answers):
        choice, usage = answer.json()["choices"][0], answer.json()["usage"]
        if choice["finish_reason"] == "length":
            assert usage["completion_tokens"] == request_body(i)["max_tokens"]
        else:
            assert usage["completion_tokens"] <= request_body(i)["max_tokens"]


def test_a_batched_answer_equals_the_answer_given_alone(adapter_server, burst):
    answers, _, _ = burst
    for i in (0, 2, 6):  # short, middle and long prompts: left padding must not change the answer
        alone = httpx.post(f"{adapter_server}/v1/completions", json=request_body(i), timeout=60).json()
        assert answers[i].json()["choices"][0]["text"] == alone["choices"][0]["text"]


def test_greedy_answers_stay_greedy_when_sampled_requests_arrive_with_them(adapter_server):
    greedy = request_body(1)
    sampled = {**greedy, "temperature": 0.9, "top_p": 0.9}
    answers = asyncio.run(send_together(adapter_server, [greedy, sampled, greedy, sampled]))
    assert answers[0].json()["choices"][0]["text"] == answers[2].json()["choices"][0]["text"]
    alone = httpx.post(f"{adapter_server}/v1/completions", json=greedy, timeout=60).json()
    assert answers[0].json()["choices"][0]["text"] == alone["choices"][0]["text"]


def test_health_answers_at_once_while_the_model_generates(tiny_model_dir):
    from kairo.serving.models import load_models

    def slow_load(config):
        models = load_models(config)
        # Each forward pass takes 50 ms (and lets go of the GIL, as real GPU work does).
        models.model.register_forward_pre_hook(lambda *args: time.sleep(0.05))
        return models

    with started_server(tiny_config(tiny_model_dir), load=slow_load) as server:
        wait_ready(server.url)

        async def generate_and_probe():
            async with httpx.AsyncClient(timeout=60) as http:
                body = {"prompt": "Hello", "max_tokens": 40, "min_tokens": 40, "temperature": 0}
                generation = asyncio.create_task(http.post(f"{server.url}/v1/completions", json=body))
                await asyncio.sleep(0.3)
                started = time.monotonic()
                health = await http.get(f"{server.url}/health")
                return health, time.monotonic() - started, generation.done(), await generation

        health, seconds, done_by_then, generation = asyncio.run(generate_and_probe())
    assert health.status_code == 200 and seconds < 0.5
    assert not done_by_then  # the probe was answered in the middle of the generation
    assert generation.json()["usage"]["completion_tokens"] == 40


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/ready").status_code != 200:
        assert time.monotonic() < deadline, "the server did not get ready"
        time.sleep(0.05)
