"""Hostile and surprising requests: a bounded amount of work per request, requests served in turn, text that
is not Unicode, booleans where numbers are meant, Kaito's extra generate_kwargs, and OpenAI's Responses API."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.fixtures.server import running_server, tiny_config
from tests.test_serve_batching import batch_sizes

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Hello"}]
SURROGATE = b'"\\ud800"'  # JSON's escape for a lone UTF-16 surrogate: valid JSON, not Unicode text


@pytest.fixture(scope="module")
def client(adapter_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{adapter_server}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def bounded_server(tiny_model_dir, lora_adapters):
    """Small batches and a small per-request bound, so that a long request is easy to make."""
    config = tiny_config(tiny_model_dir, lora_adapters, max_request_tokens=400, max_batch_size=2, batch_wait_ms=0)
    with running_server(config) as url:
        yield url


# -- the work one request may ask for -------------------------------------------------------------------


def test_a_request_over_the_token_bound_is_400_naming_the_limit(bounded_server):
    prompts = [f"Tell me about the number {i}" for i in range(20)]
    answer = httpx.post(f"{bounded_server}/v1/completions",
                        json={"model": "alpha", "prompt": prompts, "n": 2, "max_tokens": 8}, timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert "limit of 400 tokens per request" in error["message"] and "--max-request-tokens" in error["message"]
    assert "40 rows" in error["message"]
    assert error["code"] == "request_too_large"


def test_many_choices_of_one_chat_count_against_the_bound(bounded_server):
    answer = httpx.post(f"{bounded_server}/v1/chat/completions",
                        json={"model": "alpha", "messages": QUESTION, "n": 8, "max_tokens": 60}, timeout=60)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "max_tokens", answer.text
    kaito = httpx.post(f"{bounded_server}/chat", json={"prompt": "Hi", "generate_kwargs": {
        "max_new_tokens": 60, "num_return_sequences": 8}}, timeout=60)
    assert kaito.status_code == 400 and "limit of 400 tokens" in kaito.json()["detail"], kaito.text


def test_a_request_within_the_bound_is_answered(bounded_server):
    answer = httpx.post(f"{bounded_server}/v1/completions",
                        json={"model": "alpha", "prompt": ["Hi", "Yes"], "n": 2, "max_tokens": 4}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["choices"]) == 4


def test_a_long_request_does_not_starve_a_later_short_one(bounded_server):
    """Batches of 2: a later one-row request is served after a batch or two, not after all twelve rows."""
    long_body = {"model": "alpha", "prompt": [f"Count to {i}" for i in range(12)], "max_tokens": 24,
                 "min_tokens": 24, "temperature": 0}
    short_body = {"model": "alpha", "prompt": "Hi", "max_tokens": 2, "temperature": 0}

    async def both() -> tuple[float, float]:
        async with httpx.AsyncClient(timeout=120) as http:
            async def timed(body: dict) -> float:
                answer = await http.post(f"{bounded_server}/v1/completions", json=body)
                assert answer.status_code == 200, answer.text
                return time.monotonic()

            # The short one is sent once the long one's first batch is done (not after a fixed delay: on a quiet
            # machine all twelve rows took less than one), so it finds the long one's rows waiting.
            calls, _ = batch_sizes(bounded_server)
            long_request = asyncio.ensure_future(timed(long_body))
            while batch_sizes(bounded_server)[0] == calls and not long_request.done():
                await asyncio.sleep(0.002)
            assert not long_request.done()
            short_done = await timed(short_body)
            return await long_request, short_done

    long_done, short_done = asyncio.run(both())
    assert short_done < long_done


# -- text that is not Unicode ---------------------------------------------------------------------------


@pytest.mark.parametrize(("route", "body"), [
    ("/v1/chat/completions", b'{"model": "alpha", "messages": [{"role": "user", "content": %s}], "max_tokens": 2}'),
    ("/v1/chat/completions", b'{"model": %s, "messages": [{"role": "user", "content": "Hi"}]}'),
    ("/v1/completions", b'{"model": "alpha", "prompt": %s, "max_tokens": 2}'),
    ("/v1/completions", b'{"model": "alpha", "prompt": "Hi", "user": %s}'),
    ("/v1/completions", b'{"prompt": %s, "generate_kwargs": {"max_new_tokens": 2}}'),
    ("/v1/responses", b'{"model": "alpha", "input": %s}'),
    ("/chat", b'{"prompt": %s}'),
    ("/chat", b'{"messages": [{"role": "user", "content": %s}]}'),
    ("/chat", b'{"prompt": "Hi", "generate_kwargs": {%s: 1}}'),
])
def test_a_lone_surrogate_in_any_text_field_is_a_4xx_never_a_500(adapter_server, route, body):
    answer = httpx.post(f"{adapter_server}{route}", content=body % SURROGATE,
                        headers={"Content-Type": "application/json"}, timeout=60)
    assert answer.status_code in (400, 422), answer.text
    text = answer.json()["error"]["message"] if route.startswith("/v1/") else answer.json()["detail"]
    assert "lone UTF-16 surrogate" in text


# -- booleans where numbers are meant ---------------------------------------------------------------------


def test_max_tokens_true_is_refused_not_read_as_one(adapter_server):
    for route, body, param in (
            ("/v1/completions", {"model": "alpha", "prompt": "Hi", "max_tokens": True}, "max_tokens"),
            ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "n": True}, "n"),
            ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "temperature": False}, "temperature")):
        answer = httpx.post(f"{adapter_server}{route}", json=body, timeout=60)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == param and "boolean" in error["message"], error
    kaito = httpx.post(f"{adapter_server}/chat", json={"prompt": "Hi", "generate_kwargs": {"max_new_tokens": True}})
    assert kaito.status_code == 422 and "max_new_tokens" in kaito.json()["detail"], kaito.text


# -- Kaito's extra generate_kwargs ------------------------------------------------------------------------


def test_an_unknown_generate_kwarg_is_accepted_with_a_warning_header(adapter_server, caplog):
    body = {"prompt": "Hi", "generate_kwargs": {"max_new_tokens": 2, "additional_param": "Example value"}}
    with caplog.at_level("WARNING", logger="kairo.serve"):
        answer = httpx.post(f"{adapter_server}/chat", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert "additional_param" in answer.headers["X-Kairo-Warning"]
    assert any("additional_param" in r.getMessage() for r in caplog.records)
    newer = httpx.post(f"{adapter_server}/v1/completions", json={**body, "max_length": 8}, timeout=60)
    assert newer.status_code == 200 and "additional_param" in newer.headers["X-Kairo-Warning"], newer.text


@pytest.mark.parametrize("name", ["streamer", "assistant_model", "custom_generate", "logits_processor"])
def test_a_generate_kwarg_that_hands_over_code_is_refused_by_name(adapter_server, name):
    answer = httpx.post(f"{adapter_server}/chat",
                        json={"prompt": "Hi", "generate_kwargs": {"max_new_tokens": 2, name: "x"}}, timeout=60)
    assert answer.status_code == 422, answer.text
    assert f"'{name}'" in answer.json()["detail"]
    top = httpx.post(f"{adapter_server}/v1/completions", json={"prompt": "Hi", "max_length": 8, name: "x"})
    assert top.status_code == 400 and f"'{name}'" in top.json()["error"]["message"], top.text


def test_a_known_setting_with_a_value_it_would_ignore_is_still_refused(adapter_server):
    answer = httpx.post(f"{adapter_server}/chat", json={"prompt": "Hi", "generate_kwargs": {
        "max_length": 8, "num_beam_groups": 2, "num_beams": 2}}, timeout=60)
    assert answer.status_code == 422 and "num_beam_groups=2" in answer.json()["detail"], answer.text


# -- OpenAI's Responses API -------------------------------------------------------------------------------


def test_responses_create_answers_text_as_chat_completions_does(client):
    response = client.responses.create(model="alpha", input="Hello", max_output_tokens=6, temperature=0)
    chat = client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=6, temperature=0)
    assert response.object == "response" and response.model == "alpha"
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.usage.output_tokens == chat.usage.completion_tokens
    assert response.status in ("completed", "incomplete")


def test_responses_take_messages_and_instructions(client):
    response = client.responses.create(model="beta", instructions="Answer briefly.", temperature=0,
                                       max_output_tokens=4, input=[{"role": "user", "content": [
                                           {"type": "input_text", "text": "Name a color"}]}])
    chat = client.chat.completions.create(model="beta", max_tokens=4, temperature=0, messages=[
        {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a color"}])
    assert response.output_text == chat.choices[0].message.content


def test_responses_stream_their_text_as_typed_events(client):
    events = list(client.responses.create(model="alpha", input="Hello", max_output_tokens=6, temperature=0,
                                          stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert deltas == final.output_text
    plain = client.responses.create(model="alpha", input="Hello", max_output_tokens=6, temperature=0)
    assert final.output_text == plain.output_text


def test_responses_refuse_what_they_would_ignore(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="alpha", input="Hi", previous_response_id="resp_123")
    assert caught.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="alpha", input="Hi", tools=[{"type": "function", "name": "f",
                                                                    "parameters": {"type": "object"}}])
    assert caught.value.param == "tools"
