"""The inference server, running on 127.0.0.1 with the tiny model and two adapters, used as clients use it:
the `openai` Python client and Kaito's `/chat` body."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fixtures.server import alone

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(adapter_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{adapter_server}/v1", api_key="unused", max_retries=0, timeout=60)


def test_the_seed_curl_body_gets_a_200_with_the_result(adapter_server):
    answer = httpx.post(f"{adapter_server}/chat", json={"prompt": "YOUR QUESTION HERE"}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"Result"}
    assert answer.json()["Result"].startswith("YOUR QUESTION HERE")  # Kaito's return_full_text default


def test_chat_with_return_full_text_false_gives_only_the_new_text(adapter_server):
    body = {"prompt": "The capital of France is", "return_full_text": False,
            "generate_kwargs": {"do_sample": False, "max_length": 20}}
    full = httpx.post(f"{adapter_server}/chat", json={**body, "return_full_text": True}, timeout=60).json()
    new = httpx.post(f"{adapter_server}/chat", json=body, timeout=60).json()
    assert full["Result"] == "The capital of France is" + new["Result"]


def test_chat_with_messages_answers_with_the_assistant_reply(adapter_server, tiny_model_dir, lora_adapters):
    body = {"messages": QUESTION, "generate_kwargs": {"do_sample": False, "max_new_tokens": 6}}
    answer = httpx.post(f"{adapter_server}/chat", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["Result"] == alone(tiny_model_dir, lora_adapters["alpha"], QUESTION, 6)


def test_chat_takes_generation_settings_at_the_top_level_as_newer_kaito_does(adapter_server):
    nested = {"prompt": "The sea is", "generate_kwargs": {"do_sample": False, "max_length": 12}}
    flat = {"prompt": "The sea is", "do_sample": False, "max_length": 12}
    answers = [httpx.post(f"{adapter_server}/chat", json=b, timeout=60).json()["Result"] for b in (nested, flat)]
    assert answers[0] == answers[1]


def test_chat_with_beam_search_answers_as_transformers_does(adapter_server, tiny_model_dir, lora_adapters):
    body = {"messages": QUESTION, "generate_kwargs": {"do_sample": False, "num_beams": 3, "max_new_tokens": 6}}
    answer = httpx.post(f"{adapter_server}/chat", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["Result"] == alone(tiny_model_dir, lora_adapters["alpha"], QUESTION, 6, num_beams=3)


def test_chat_completion_through_the_openai_client(client):
    reply = client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=5, temperature=0)
    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert reply.model == "alpha"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_a_streamed_chat_completion_adds_up_to_the_plain_answer(client):
    plain = client.chat.completions.create(model="beta", messages=QUESTION, max_tokens=8, temperature=0)
    chunks = list(client.chat.completions.create(model="beta", messages=QUESTION, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_the_stream_ends_with_done(adapter_server):
    body = {"model": "alpha", "messages": QUESTION, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{adapter_server}/v1/chat/completions", json=body, timeout=60) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = [line for line in answer.iter_lines() if line]
    assert events[-1] == "data: [DONE]"


def test_completions_plain_and_streamed(client):
    plain = client.completions.create(model="alpha", prompt="The capital of France is", max_tokens=6, temperature=0)
    assert plain.object == "text_completion" and plain.id.startswith("cmpl-")
    assert plain.usage.completion_tokens == 6 and plain.choices[0].finish_reason == "length"
    streamed = client.completions.create(model="alpha", prompt="The capital of France is", max_tokens=6,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == plain.choices[0].text


def test_completions_answer_every_prompt_of_a_list_and_echo(client):
    reply = client.completions.create(model="alpha", prompt=["Hello", "The sea is"], max_tokens=3, temperature=0,
                                      echo=True)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].text.startswith("Hello") and reply.choices[1].text.startswith("The sea is")


def test_a_stop_sequence_ends_the_answer_before_it(client):
    plain = client.completions.create(model="beta", prompt="Hello", max_tokens=12, temperature=0)
    text = plain.choices[0].text
    stop = text[len(text) // 2:][:2]
    assert stop.strip(), f"the tiny model's answer {text!r} has no usable middle"
    cut = client.completions.create(model="beta", prompt="Hello", max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_models_lists_the_adapters_and_the_base_model(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["alpha", "beta", "tiny-llama-test"]


def test_two_adapters_are_chosen_by_model_and_each_answers_as_it_does_alone(client, tiny_model_dir, lora_adapters):
    answers = {name: client.chat.completions.create(model=name, messages=QUESTION, max_tokens=8, temperature=0)
               .choices[0].message.content for name in ("alpha", "beta", "tiny-llama-test")}
    assert len(set(answers.values())) == 3, answers
    assert answers["alpha"] == alone(tiny_model_dir, lora_adapters["alpha"], QUESTION, 8)
    assert answers["beta"] == alone(tiny_model_dir, lora_adapters["beta"], QUESTION, 8)
    assert answers["tiny-llama-test"] == alone(tiny_model_dir, None, QUESTION, 8)


def test_without_model_the_first_adapter_answers(adapter_server, client):
    named = client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=6, temperature=0)
    body = {"messages": QUESTION, "max_tokens": 6, "temperature": 0}
    default = httpx.post(f"{adapter_server}/v1/chat/completions", json=body, timeout=60).json()
    assert default["model"] == "alpha"
    assert default["choices"][0]["message"]["content"] == named.choices[0].message.content


def test_health_ready_and_home_answer(adapter_server):
    health = httpx.get(f"{adapter_server}/health").json()
    assert health["status"] == "Healthy" and health["adapters"] == {"alpha": "", "beta": ""}  # folders: no digest
    ready = httpx.get(f"{adapter_server}/ready")
    assert ready.status_code == 200 and ready.json()["models"] == ["alpha", "beta", "tiny-llama-test"]
    assert httpx.get(f"{adapter_server}/").json() == {"message": "Server is running"}


def test_metrics_count_requests_by_route_and_status_and_generated_tokens(adapter_server, client):
    client.chat.completions.create(model="beta", messages=QUESTION, max_tokens=4, temperature=0)
    httpx.post(f"{adapter_server}/v1/chat/completions", json={"model": "nope", "messages": QUESTION})
    text = httpx.get(f"{adapter_server}/metrics").text
    assert 'kairo_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'kairo_requests_total{route="/v1/chat/completions",status="404"}' in text
    assert 'kairo_generated_tokens_total{model="beta"}' in text
    assert "kairo_request_duration_seconds_bucket" in text and "kairo_batch_size_bucket" in text
