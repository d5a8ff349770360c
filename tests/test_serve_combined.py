"""Adapters with strengths: served weighted into `combined_adapter` as Kaito's transformers runtime does
(PEFT's add_weighted_adapter, SVD), while each adapter still answers by its own name."""

from __future__ import annotations

import argparse

import openai
import pytest

from kairo.problems import InvalidInput
from kairo.serving.options import COMBINED_ADAPTER, add_arguments, config_from_args
from tests.fixtures.server import alone, running_server, tiny_config

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEIGHTS = {"alpha": 0.7, "beta": 0.3}


def kaitos_way(model_dir, adapters, weights, max_new_tokens: int) -> str:
    """What Kaito's transformers runtime answers: the adapters loaded, add_weighted_adapter(svd), that one set."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    names = list(weights)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapters[names[0]],
                                      adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(adapters[name], adapter_name=name)
    model.add_weighted_adapter(names, [weights[n] for n in names], adapter_name="combined_adapter",
                               combination_type="svd")
    model.set_adapter("combined_adapter")
    inputs = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def client(tiny_model_dir, lora_adapters):
    config = tiny_config(tiny_model_dir, lora_adapters, strengths=(("alpha", 0.7), ("beta", 0.3)))
    with running_server(config) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def ask(client, model: str | None = None) -> str:
    extra = {"model": model} if model else {"model": ""}
    answer = client.chat.completions.create(messages=QUESTION, max_tokens=6, temperature=0, **extra)
    return answer.choices[0].message.content


def test_the_combined_adapter_is_listed_first_beside_each_adapter_and_the_base(client):
    assert [m.id for m in client.models.list().data] == [COMBINED_ADAPTER, "alpha", "beta", "tiny-llama-test"]


def test_the_combined_adapter_answers_as_kaitos_runtime_weighs_the_adapters(client, tiny_model_dir, lora_adapters):
    assert ask(client, COMBINED_ADAPTER) == kaitos_way(tiny_model_dir, lora_adapters, WEIGHTS, 6)


def test_a_request_naming_no_model_gets_the_combined_adapter_as_in_kaito(client):
    assert ask(client) == ask(client, COMBINED_ADAPTER)


def test_each_adapter_still_answers_by_its_name_as_it_does_alone(client, tiny_model_dir, lora_adapters):
    for name in ("alpha", "beta"):
        assert ask(client, name) == alone(tiny_model_dir, lora_adapters[name], QUESTION, 6)


def _parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(["--preset", "tiny-llama-test", *argv]))


def test_an_adapter_given_no_strength_weighs_one_as_in_kaito(lora_adapters):
    config = _parse("--adapter", f"alpha={lora_adapters['alpha']}", "--adapter", f"beta={lora_adapters['beta']}",
                    "--strength", "alpha=0.25")
    assert config.weights == {"alpha": 0.25, "beta": 1.0}
    assert config.default_model == COMBINED_ADAPTER


@pytest.mark.parametrize(("flag", "words"), [("alpha=1.5", "from 0 to 1"), ("gamma=0.5", "given with --adapter"),
                                             ("alpha", "NAME=WEIGHT")])
def test_a_strength_out_of_range_or_for_no_adapter_is_refused(lora_adapters, flag, words):
    with pytest.raises(InvalidInput) as err:
        _parse("--adapter", f"alpha={lora_adapters['alpha']}", "--strength", flag)
    assert words in str(err.value.problems[0])
