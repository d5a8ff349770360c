"""Rows for different adapters, and for the base model, share one `generate` call (PEFT's `adapter_names=`)
and answer exactly what they answer in a batch of their own adapter."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from kairo.serving.batching import Batcher, Job, Sampling
from kairo.serving.models import load_models
from tests.fixtures.server import tiny_config
from tests.test_serve_batching import batch_sizes

pytestmark = pytest.mark.slow

PROMPTS = ["Hello", "The capital of France is", "Tell me about the sea and the moon", "Why",
           "Name three colors please", "Good morning"]
BASE = "tiny-llama-test"


@pytest.fixture(scope="module")
def models(tiny_model_dir, lora_adapters):
    return load_models(tiny_config(tiny_model_dir, lora_adapters))


def answers(models, rows: list[tuple[str, str, int]], **job_args) -> list[tuple[str, str, int]]:
    """Run `rows` (served name, prompt, max tokens) as one batch; each row's (text, finish reason, tokens)."""

    async def run() -> list[tuple[str, str, int]]:
        jobs = [Job(models.encode_text(prompt), adapter=models.adapter_for(name), sampling=Sampling(),
                    max_new_tokens=limit, model_name=name, **job_args) for name, prompt, limit in rows]
        batcher = Batcher(models)
        await asyncio.to_thread(batcher.run, jobs)
        done = [await job.result() for job in jobs]
        return [(d.text, d.finish_reason, d.completion_tokens) for d in done]

    return asyncio.run(run())


def mixed_rows() -> list[tuple[str, str, int]]:
    names = ["alpha", "beta", BASE]
    return [(names[i % 3], PROMPTS[i], 4 + i) for i in range(len(PROMPTS))]


def test_a_mixed_batch_answers_what_one_adapter_batches_answer(models):
    rows = mixed_rows()
    mixed = answers(models, rows)
    for name in ("alpha", "beta", BASE):
        own = [r for r in rows if r[0] == name]
        assert answers(models, own) == [m for r, m in zip(rows, mixed, strict=True) if r[0] == name]


def test_the_adapters_really_answer_differently_in_the_mixed_batch(models):
    prompt = PROMPTS[1]
    texts = [t for t, _, _ in answers(models, [("alpha", prompt, 8), ("beta", prompt, 8), (BASE, prompt, 8)])]
    assert len(set(texts)) == 3


def test_each_row_of_a_mixed_batch_keeps_its_own_limit(models):
    done = answers(models, mixed_rows())
    for (_, _, limit), (_, reason, tokens) in zip(mixed_rows(), done, strict=True):
        assert tokens == limit if reason == "length" else tokens <= limit


def test_a_stop_string_ends_only_its_row_in_a_mixed_batch(models):
    rows = [("alpha", PROMPTS[2], 12), ("beta", PROMPTS[2], 12)]
    free = answers(models, rows)
    stop = free[0][0][2:4]  # a piece of alpha's answer
    assert stop and stop not in free[1][0]
    cut = answers(models, rows, stop=(stop,))
    assert cut[0][0] == free[0][0][: free[0][0].index(stop)] and cut[0][1] == "stop"
    assert cut[1] == free[1]


def test_beam_search_rows_of_different_adapters_share_a_batch(models):
    rows = [("alpha", PROMPTS[0], 5), ("beta", PROMPTS[0], 5)]

    async def run(batch: list[tuple[str, str, int]]) -> list[str]:
        jobs = [Job(models.encode_text(p), adapter=models.adapter_for(n), sampling=Sampling(num_beams=2),
                    max_new_tokens=m, model_name=n) for n, p, m in batch]
        await asyncio.to_thread(Batcher(models).run, jobs)
        return [(await j.result()).text for j in jobs]

    together = asyncio.run(run(rows))
    assert together == [asyncio.run(run([row]))[0] for row in rows]


def test_requests_for_several_adapters_share_generate_calls_over_http(adapter_server):
    bodies = [{"model": ["alpha", "beta", BASE][i % 3], "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 4,
               "temperature": 0} for i in range(9)]

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as http:
            return await asyncio.gather(*(http.post(f"{adapter_server}/v1/completions", json=b) for b in bodies))

    calls_before, _ = batch_sizes(adapter_server)
    sent = asyncio.run(together())
    calls_after, _ = batch_sizes(adapter_server)
    assert [a.status_code for a in sent] == [200] * 9
    assert calls_after - calls_before <= 3  # one adapter per batch would take at least three calls
    for body, answer in zip(bodies[:3], sent[:3], strict=True):
        alone = httpx.post(f"{adapter_server}/v1/completions", json=body, timeout=60).json()
        assert answer.json()["choices"][0]["text"] == alone["choices"][0]["text"]


def test_a_streamed_row_streams_its_own_adapter_in_a_mixed_batch(adapter_server):
    bodies = [{"model": name, "prompt": PROMPTS[1], "max_tokens": 6, "temperature": 0, "stream": True}
              for name in ("alpha", "beta")]

    async def streamed(http: httpx.AsyncClient, body: dict) -> str:
        text = ""
        async with http.stream("POST", f"{adapter_server}/v1/completions", json=body) as answer:
            async for line in answer.aiter_lines():
                if line.startswith("data: {"):
                    import json

                    text += json.loads(line[6:])["choices"][0]["text"] if json.loads(line[6:])["choices"] else ""
        return text

    async def together() -> list[str]:
        async with httpx.AsyncClient(timeout=120) as http:
            return list(await asyncio.gather(*(streamed(http, b) for b in bodies)))

    texts = asyncio.run(together())
    for body, text in zip(bodies, texts, strict=True):
        plain = httpx.post(f"{adapter_server}/v1/completions", json={**body, "stream": False}, timeout=60).json()
        assert text == plain["choices"][0]["text"]
