"""Bad requests get a 4xx that says what is wrong (OpenAI's error shape on /v1, Kaito's `detail` on /chat),
never a 500; the bearer token is enforced; the server answers /health while the model loads."""

from __future__ import annotations

import logging
import threading

import httpx
import openai
import pytest

from tests.fixtures.server import running_server, started_server, tiny_config

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Hello"}]
LONG_TEXT = " ".join(["water"] * 600)  # more tokens than the tiny model's context of 512


@pytest.fixture(scope="module")
def client(adapter_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{adapter_server}/v1", api_key="unused", max_retries=0, timeout=60)


def openai_error(answer: httpx.Response) -> dict:
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_an_unknown_model_is_404_listing_the_models_there(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gamma", messages=QUESTION, max_tokens=2)
    assert caught.value.status_code == 404
    assert "'gamma'" in caught.value.message and "alpha, beta, tiny-llama-test" in caught.value.message
    assert caught.value.code == "model_not_found"


def test_an_unknown_model_on_kaitos_chat_is_404_with_detail(adapter_server):
    answer = httpx.post(f"{adapter_server}/chat", json={"prompt": "Hi", "model": "gamma"})
    assert answer.status_code == 404
    assert "alpha, beta, tiny-llama-test" in answer.json()["detail"]


def test_empty_messages_are_400(client, adapter_server):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="alpha", messages=[], max_tokens=2)
    assert "messages is empty" in caught.value.message
    answer = httpx.post(f"{adapter_server}/chat", json={"messages": []})
    assert answer.status_code == 400 and "messages is empty" in answer.json()["detail"]


def test_max_tokens_over_the_cap_is_400_naming_the_cap(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=65)
    assert "cap of 64" in caught.value.message
    assert caught.value.param == "max_tokens"


def test_a_prompt_longer_than_the_context_is_400_with_both_lengths(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="alpha", prompt=LONG_TEXT, max_tokens=2)
    message = caught.value.message
    assert "the model's context is 512 tokens" in message
    prompt_tokens = int(message.split("the prompt is ")[1].split(" tokens")[0])
    assert prompt_tokens > 512
    assert caught.value.code == "context_length_exceeded"


def test_a_prompt_that_leaves_no_room_for_max_tokens_is_400(client):
    prompt = " ".join(["water"] * 500)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="alpha", prompt=prompt, max_tokens=60)
    assert "asks for 60 more" in caught.value.message and "context is 512 tokens" in caught.value.message


def test_a_prompt_longer_than_the_context_on_kaitos_chat_is_400(adapter_server):
    answer = httpx.post(f"{adapter_server}/chat", json={"prompt": LONG_TEXT})
    assert answer.status_code == 400 and "context is 512 tokens" in answer.json()["detail"]


def test_a_body_over_the_limit_is_413(adapter_server):
    body = {"model": "alpha", "messages": [{"role": "user", "content": "x" * 100_000}]}
    answer = httpx.post(f"{adapter_server}/v1/chat/completions", json=body)
    assert answer.status_code == 413
    assert "limit of 65536 bytes" in openai_error(answer)["message"]


def test_a_chunked_body_over_the_limit_is_413(adapter_server):
    def chunks():
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    answer = httpx.post(f"{adapter_server}/chat", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert "limit of 65536 bytes" in answer.json()["detail"]


def test_malformed_json_is_400_on_v1_and_422_on_kaitos_chat(adapter_server):
    broken = b'{"model": "alpha", "messages": ['
    answer = httpx.post(f"{adapter_server}/v1/chat/completions", content=broken,
                        headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "not valid JSON" in openai_error(answer)["message"]
    answer = httpx.post(f"{adapter_server}/chat", content=broken, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and "not valid JSON" in answer.json()["detail"]


def test_a_field_of_the_wrong_type_is_400_naming_it(adapter_server):
    answer = httpx.post(f"{adapter_server}/v1/chat/completions",
                        json={"model": "alpha", "messages": QUESTION, "temperature": "hot"})
    assert answer.status_code == 400 and openai_error(answer)["param"] == "temperature"


def test_kaitos_chat_without_a_prompt_is_400_in_kaitos_words(adapter_server):
    answer = httpx.post(f"{adapter_server}/chat", json={"generate_kwargs": {"max_length": 20}})
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("Text generation parameter prompt required")


def test_kaitos_max_length_shorter_than_the_prompt_is_400(adapter_server):
    answer = httpx.post(f"{adapter_server}/chat", json={"prompt": "one two three four five six",
                                                        "generate_kwargs": {"max_length": 2}})
    assert answer.status_code == 400 and "counts the prompt too" in answer.json()["detail"]


def test_tools_are_refused_rather_than_ignored(client):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=2, tools=[tool])
    assert caught.value.param == "tools"


def test_an_unknown_path_is_404(adapter_server):
    assert httpx.get(f"{adapter_server}/v1/nothing").status_code == 404


# -- bearer token ---------------------------------------------------------------------------------------

KEY = "s3cret-token-value"


@pytest.fixture(scope="module")
def locked_server(tiny_model_dir, lora_adapters):
    with running_server(tiny_config(tiny_model_dir, {"alpha": lora_adapters["alpha"]}, api_key=KEY)) as url:
        yield url


def test_without_the_token_the_openai_routes_answer_401(locked_server):
    client = openai.OpenAI(base_url=f"{locked_server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=2)
    answer = httpx.get(f"{locked_server}/v1/models")
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert openai_error(answer)["code"] == "invalid_api_key"


def test_without_the_token_kaitos_chat_answers_401(locked_server):
    answer = httpx.post(f"{locked_server}/chat", json={"prompt": "Hi"})
    assert answer.status_code == 401 and "Bearer" in answer.json()["detail"]


def test_with_the_token_every_route_answers(locked_server):
    client = openai.OpenAI(base_url=f"{locked_server}/v1", api_key=KEY, max_retries=0)
    assert client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=2).choices
    answer = httpx.post(f"{locked_server}/chat", json={"prompt": "Hi", "generate_kwargs": {"max_length": 8}},
                        headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200


def test_health_and_ready_stay_open_without_the_token(locked_server):
    assert httpx.get(f"{locked_server}/health").status_code == 200
    assert httpx.get(f"{locked_server}/ready").status_code == 200


def test_the_token_is_never_logged(locked_server, caplog):
    caplog.set_level(logging.DEBUG)
    httpx.post(f"{locked_server}/chat", json={"prompt": "Hi"}, headers={"Authorization": "Bearer nope"})
    httpx.post(f"{locked_server}/chat", json={"prompt": "Hi", "generate_kwargs": {"max_length": 8}},
               headers={"Authorization": f"Bearer {KEY}"})
    assert KEY not in caplog.text
    assert KEY not in repr(tiny_config(None, api_key=KEY))


# -- while the model loads ------------------------------------------------------------------------------


def test_health_answers_while_the_model_loads_and_ready_waits_for_it(tiny_model_dir):
    from kairo.serving.models import load_models

    release = threading.Event()

    def slow_load(config):
        release.wait(30)
        return load_models(config)

    with started_server(tiny_config(tiny_model_dir), load=slow_load) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        assert httpx.get(f"{server.url}/ready").status_code == 503
        early = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": QUESTION})
        assert early.status_code == 503 and "still loading" in openai_error(early)["message"]
        release.set()
        with httpx.Client() as http:
            for _ in range(200):
                if http.get(f"{server.url}/ready").status_code == 200:
                    break
                threading.Event().wait(0.05)
        assert httpx.post(f"{server.url}/chat", json={"prompt": "Hi", "generate_kwargs": {"max_length": 8}}
                          ).status_code == 200


def test_an_adapter_trained_on_another_preset_stops_the_server_with_exit_code_2(tiny_model_dir, lora_adapters,
                                                                                 tmp_path):
    import json
    import shutil

    adapter = shutil.copytree(lora_adapters["alpha"], tmp_path / "other")
    (adapter / "kairo.json").write_text(json.dumps({"preset": "phi-4", "method": "lora"}))
    with started_server(tiny_config(tiny_model_dir, {"other": adapter})) as server:
        for _ in range(400):
            if server.fatal:
                break
            threading.Event().wait(0.05)
        assert server.fatal == [2]
        ready = httpx.get(f"{server.url}/ready")
        assert ready.status_code == 503 and "trained on preset 'phi-4'" in ready.json()["detail"]
