"""End to end after training: the adapter the train step wrote, served beside the base model, answers as it
learned to — asked through the `openai` client and Kaito's `/chat`."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fixtures.server import alone, running_server, tiny_config

pytestmark = pytest.mark.slow

COUNTRIES = ("France", "Japan", "Kenya")


def question(country: str) -> list[dict]:
    return [{"role": "user", "content": f"What is the capital of {country}?"}]


@pytest.fixture(scope="module")
def client(tiny_model_dir, trained_adapter):
    with running_server(tiny_config(tiny_model_dir, {"capitals": trained_adapter})) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, model: str, country: str):
    return client.chat.completions.create(model=model, messages=question(country), max_tokens=8,
                                          temperature=0).choices[0]


def test_the_trained_adapter_answers_in_the_shape_it_learned_and_the_base_does_not(client):
    for country in COUNTRIES:
        learned = ask(client, "capitals", country)
        assert learned.finish_reason == "stop"  # it learned to end its turn
        assert learned.message.content.endswith(".") and len(learned.message.content) < 16
        assert ask(client, "tiny-llama-test", country).finish_reason == "length"


def test_the_served_trained_adapter_answers_as_it_does_alone(client, tiny_model_dir, trained_adapter):
    for country in COUNTRIES:
        assert ask(client, "capitals", country).message.content == alone(
            tiny_model_dir, trained_adapter, question(country), 8)


def test_kaitos_chat_with_messages_gets_the_same_answer(client):
    url = str(client.base_url).removesuffix("/v1/")
    body = {"messages": question("Japan"), "generate_kwargs": {"do_sample": False, "max_new_tokens": 8}}
    answer = httpx.post(f"{url}/chat", json=body, timeout=60)
    assert answer.status_code == 200
    assert answer.json()["Result"] == ask(client, "capitals", "Japan").message.content
