"""The inference server as real clients drive it: the `openai` client with the parameters people pass, Kaito's
bodies as Kaito's own server documents them, and raw HTTP mistakes — each answered, or refused with a 4xx
that says why (never a 500)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(adapter_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{adapter_server}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def greedy(client: openai.OpenAI, messages=QUESTION, **kwargs) -> str:
    reply = client.chat.completions.create(model="alpha", messages=messages, temperature=0,
                                           **{"max_tokens": 6, **kwargs})
    return reply.choices[0].message.content


# -- the openai client: chat completions ----------------------------------------------------------------


def test_a_chat_completion_carries_every_field_the_client_reads(client):
    reply = client.chat.completions.create(model="beta", messages=QUESTION, max_tokens=3, user="user-42")
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert isinstance(reply.created, int) and reply.created > 0
    assert reply.model == "beta"
    [choice] = reply.choices
    assert choice.index == 0 and choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 3
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_a_system_message_and_several_turns_are_laid_out_by_the_chat_template(client):
    turns = [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello"}, *QUESTION]
    reply = client.chat.completions.create(model="alpha", messages=turns, max_tokens=3, temperature=0)
    alone = client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=3, temperature=0)
    assert reply.usage.prompt_tokens > alone.usage.prompt_tokens


def test_content_given_as_text_parts_is_answered_as_the_same_text(client):
    parts = [{"type": "text", "text": "What is the capital"}, {"type": "text", "text": " of France?"}]
    assert greedy(client, [{"role": "user", "content": parts}]) == greedy(client)


def test_an_image_part_is_refused_with_400(client):
    image = {"type": "image_url", "image_url": {"url": "http://example.invalid/a.png"}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": [image]}], max_tokens=2)
    assert "image_url" in caught.value.message


def test_max_completion_tokens_limits_the_answer_like_max_tokens(client):
    reply = client.chat.completions.create(model="alpha", messages=QUESTION, max_completion_tokens=2, temperature=0)
    assert reply.usage.completion_tokens <= 2
    assert reply.choices[0].message.content == greedy(client, max_tokens=2)


def test_the_same_seed_samples_the_same_answer(client):
    def sample() -> str:
        return client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=6, temperature=0.9,
                                              top_p=0.95, seed=1234).choices[0].message.content

    assert sample() == sample()


def test_n_choices_with_a_seed_differ_and_the_first_is_the_single_answer(client):
    asked = {"model": "alpha", "messages": QUESTION, "max_tokens": 6, "temperature": 1.0, "seed": 7}
    reply = client.chat.completions.create(n=3, **asked)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    texts = [c.message.content for c in reply.choices]
    assert len(set(texts)) > 1, texts
    assert texts[0] == client.chat.completions.create(**asked).choices[0].message.content
    assert 3 <= reply.usage.completion_tokens <= 3 * 6  # usage counts every choice


def test_n_streamed_choices_each_end_with_a_finish_reason(client):
    chunks = list(client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=3, n=2, stream=True))
    finished = sorted(c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason)
    assert finished == [0, 1]


def test_n_over_the_limit_is_400_naming_n(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=2, n=50)
    assert caught.value.param == "n"


def test_a_stop_string_or_list_ends_the_answer_before_it(client):
    text = greedy(client, max_tokens=10)
    stop = text[len(text) // 2:][:2]
    assert stop.strip(), f"the tiny model's answer {text!r} has no usable middle"
    for given in (stop, [stop, "never-appears"]):
        reply = client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=10, temperature=0,
                                               stop=given)
        assert reply.choices[0].message.content == text[: text.find(stop)]
        assert reply.choices[0].finish_reason == "stop"


def test_frequency_and_presence_penalties_steer_away_from_repeated_tokens(client, tokenizer):
    plain = client.completions.create(model="alpha", prompt="Hi", max_tokens=12, temperature=0).choices[0].text
    ids = tokenizer(plain, add_special_tokens=False)["input_ids"]
    assert len(set(ids)) < len(ids), f"the tiny model's answer {plain!r} repeats no token"
    for penalty in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}):
        steered = client.completions.create(model="alpha", prompt="Hi", max_tokens=12, temperature=0, **penalty)
        assert steered.choices[0].text != plain, penalty


def test_penalties_outside_minus_2_to_2_are_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=2, frequency_penalty=2.5)
    assert caught.value.param == "frequency_penalty"


def test_logit_bias_of_100_makes_the_model_say_only_that_token(client, tokenizer):
    token = tokenizer("water", add_special_tokens=False)["input_ids"][-1]
    reply = client.completions.create(model="alpha", prompt="Hi", max_tokens=4, temperature=0,
                                      logit_bias={str(token): 100})
    assert reply.choices[0].text == tokenizer.decode([token] * 4)


def test_logit_bias_on_a_token_outside_the_vocabulary_is_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=2, logit_bias={"99999999": 5})
    assert caught.value.param == "logit_bias" and "vocabulary" in caught.value.message


def test_a_stream_with_include_usage_ends_with_a_usage_chunk(client):
    chunks = list(client.completions.create(model="alpha", prompt="Hello", max_tokens=3, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])


def test_unsupported_settings_are_400_naming_them(client):
    for kwargs in ({"logprobs": True}, {"response_format": {"type": "json_object"}}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=2, **kwargs)
        assert caught.value.param == next(iter(kwargs)) and "not supported" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="alpha", prompt="Hi", max_tokens=2, suffix="end.")
    assert caught.value.param == "suffix"


# -- the openai client: completions and models ----------------------------------------------------------


def test_a_prompt_of_token_ids_is_completed_as_its_text(client, tokenizer):
    text = "The capital of France is"
    ids = tokenizer(text)["input_ids"]
    by_text = client.completions.create(model="alpha", prompt=text, max_tokens=5, temperature=0)
    by_ids = client.completions.create(model="alpha", prompt=ids, max_tokens=5, temperature=0)
    batch = client.completions.create(model="alpha", prompt=[ids, ids], max_tokens=5, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert [c.text for c in batch.choices] == [by_text.choices[0].text] * 2


def test_a_prompt_that_is_neither_text_nor_token_ids_is_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="alpha", prompt=[{"text": "Hi"}], max_tokens=2)
    assert "list of token ids" in caught.value.message


def test_models_retrieve_returns_an_adapter_and_the_base(client):
    adapter = client.models.retrieve("beta")
    assert (adapter.id, adapter.object, adapter.owned_by) == ("beta", "model", "kairo")
    assert client.models.retrieve("tiny-llama-test").id == "tiny-llama-test"


def test_retrieving_an_unknown_model_is_404_listing_the_models(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gamma")
    assert "alpha, beta, tiny-llama-test" in caught.value.message


def test_a_seed_beyond_64_bits_is_400_not_500(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="alpha", messages=QUESTION, max_tokens=2, seed=2**70)
    assert caught.value.param == "seed"


# -- Kaito's bodies -------------------------------------------------------------------------------------

# Kaito's GenerateKwargs at its defaults (pad/eos ids from the tokenizer), as its /docs examples send them;
# the server caps the new tokens (64 in these tests).
KAITO_GENERATE_KWARGS = {"max_length": 200, "min_length": 0, "do_sample": True, "early_stopping": False,
                         "num_beams": 1, "temperature": 1.0, "top_k": 10, "top_p": 1, "typical_p": 1,
                         "repetition_penalty": 1, "pad_token_id": 0, "eos_token_id": 2}


def chat(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/chat", json=body, timeout=60)


def test_kaitos_documented_text_generation_example_is_answered(adapter_server):
    body = {"prompt": "Tell me a joke", "return_full_text": True, "clean_up_tokenization_spaces": False,
            "prefix": None, "handle_long_generation": None, "generate_kwargs": KAITO_GENERATE_KWARGS}
    answer = chat(adapter_server, body)
    assert answer.status_code == 200, answer.text
    assert list(answer.json()) == ["Result"] and answer.json()["Result"].startswith("Tell me a joke")


def test_kaitos_documented_conversation_example_is_answered(adapter_server):
    body = {"messages": [{"role": "user", "content": "What is your favourite condiment?"},
                         {"role": "assistant", "content": "A squeeze of fresh lemon juice."},
                         {"role": "user", "content": "Do you have mayonnaise recipes?"}],
            "return_full_text": True, "clean_up_tokenization_spaces": False, "prefix": None,
            "handle_long_generation": None, "generate_kwargs": KAITO_GENERATE_KWARGS}
    answer = chat(adapter_server, body)
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["Result"], str)


def test_kaitos_older_generate_kwargs_left_at_their_defaults_are_accepted(adapter_server):
    older = {**KAITO_GENERATE_KWARGS, "num_beam_groups": 1, "diversity_penalty": 0.0, "length_penalty": 1,
             "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None,
             "num_return_sequences": 1, "output_scores": False, "return_dict_in_generate": False,
             "forced_bos_token_id": None, "forced_eos_token_id": None, "remove_invalid_values": None}
    answer = chat(adapter_server, {"prompt": "Tell me a joke", "generate_kwargs": older})
    assert answer.status_code == 200, answer.text


def test_a_generate_kwarg_the_server_would_ignore_is_refused_naming_it(adapter_server):
    answer = chat(adapter_server, {"prompt": "Hi", "generate_kwargs": {"max_length": 8, "num_beam_groups": 2,
                                                                       "num_beams": 2}})
    assert answer.status_code == 422, answer.text
    assert "num_beam_groups=2" in answer.json()["detail"]


def test_a_bad_generation_setting_at_the_top_level_is_422_naming_it(adapter_server):
    answer = chat(adapter_server, {"prompt": "Hi", "max_length": 8, "temperature": "hot"})
    assert answer.status_code == 422 and answer.json()["detail"].startswith("temperature:")


def test_handle_long_generation_other_than_hole_is_422(adapter_server):
    answer = chat(adapter_server, {"prompt": "Hi", "handle_long_generation": "truncate"})
    assert answer.status_code == 422 and "handle_long_generation" in answer.json()["detail"]


def test_out_of_range_kaito_values_are_422_never_500(adapter_server):
    for kwargs in ({"top_p": 0}, {"temperature": -1}, {"num_beams": 0}, {"max_length": "long"},
                   {"seed": 2**70}, {"top_k": -1}):
        answer = chat(adapter_server, {"prompt": "Hi", "generate_kwargs": {"max_length": 8, **kwargs}})
        assert answer.status_code == 422, (kwargs, answer.text)
        assert answer.json()["detail"].startswith("generate_kwargs."), answer.text


def test_num_return_sequences_joins_the_answers_as_kaito_does(adapter_server):
    body = {"prompt": "Tell me a joke", "generate_kwargs": {"max_new_tokens": 3, "num_return_sequences": 2}}
    answer = chat(adapter_server, body)
    assert answer.status_code == 200, answer.text
    result = answer.json()["Result"]
    assert result.startswith("Tell me a joke") and result.count("Tell me a joke") >= 2


def test_num_return_sequences_without_sampling_is_400(adapter_server):
    body = {"prompt": "Hi", "generate_kwargs": {"max_new_tokens": 3, "num_return_sequences": 2, "do_sample": False}}
    answer = chat(adapter_server, body)
    assert answer.status_code == 400 and "sampling" in answer.json()["detail"]


def test_stop_strings_end_kaitos_result_before_them(adapter_server):
    body = {"prompt": "Hello", "return_full_text": False, "generate_kwargs": {"do_sample": False, "max_new_tokens": 10}}
    text = chat(adapter_server, body).json()["Result"]
    stop = text[len(text) // 2:][:2]
    assert stop.strip(), f"the tiny model's answer {text!r} has no usable middle"
    body["generate_kwargs"]["stop_strings"] = [stop]
    assert chat(adapter_server, body).json()["Result"] == text[: text.find(stop)]


def test_kaitos_newer_body_on_v1_completions_gets_kaitos_result(adapter_server):
    body = {"prompt": "Tell me a joke", "max_length": 20, "temperature": 0.7, "top_p": 0.9,
            "return_full_text": True, "clean_up_tokenization_spaces": False, "additional_param": "Example value"}
    answer = httpx.post(f"{adapter_server}/v1/completions", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert list(answer.json()) == ["Result"] and answer.json()["Result"].startswith("Tell me a joke")


def test_kaitos_health_answers_get_and_head(adapter_server):
    health = httpx.get(f"{adapter_server}/health").json()
    assert health["status"] == "Healthy" and health["adapters"] == {"alpha": "", "beta": ""}  # folders: no digest
    assert httpx.head(f"{adapter_server}/health").status_code == 200


def test_kaitos_v1_metrics_reports_the_cpu_without_a_gpu(adapter_server):
    answer = httpx.get(f"{adapter_server}/v1/metrics", timeout=30)
    assert answer.status_code == 200, answer.text
    cpu = answer.json()["cpu_info"]
    assert answer.json()["gpu_info"] is None
    assert cpu["total_cores"] >= 1 and cpu["memory"]["total"].endswith(" GB")


# -- raw HTTP mistakes ----------------------------------------------------------------------------------


def test_json_sent_as_text_plain_is_4xx_asking_for_the_json_content_type(adapter_server):
    body = json.dumps({"messages": QUESTION, "max_tokens": 2})
    for path, status in (("/v1/chat/completions", 400), ("/chat", 422)):
        answer = httpx.post(f"{adapter_server}{path}", content=body, headers={"Content-Type": "text/plain"})
        assert answer.status_code == status
        assert "Content-Type: application/json" in answer.text and "text/plain" in answer.text


def test_a_curl_form_body_is_4xx_asking_for_the_json_content_type(adapter_server):
    answer = httpx.post(f"{adapter_server}/chat", content=b'{"prompt":"Hi"}',
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 422
    assert "Content-Type: application/json" in answer.json()["detail"]


def test_a_request_without_a_body_is_4xx_saying_so(adapter_server):
    openai_answer = httpx.post(f"{adapter_server}/v1/completions", headers={"Content-Type": "application/json"})
    assert openai_answer.status_code == 400 and "no body" in openai_answer.json()["error"]["message"]
    kaito_answer = httpx.post(f"{adapter_server}/chat")
    assert kaito_answer.status_code == 422 and "no body" in kaito_answer.json()["detail"]


def test_json_that_is_not_an_object_is_4xx(adapter_server):
    for path in ("/v1/chat/completions", "/chat"):
        answer = httpx.post(f"{adapter_server}{path}", json=["Hi"])
        assert 400 <= answer.status_code < 500 and "must be a JSON object" in answer.text


def test_nan_and_infinity_are_4xx(adapter_server):
    headers = {"Content-Type": "application/json"}
    answer = httpx.post(f"{adapter_server}/v1/chat/completions", headers=headers,
                        content=b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}')
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "temperature"
    answer = httpx.post(f"{adapter_server}/chat", headers=headers,
                        content=b'{"prompt": "Hi", "generate_kwargs": {"temperature": Infinity}}')
    assert answer.status_code == 422
