"""Chat templates and assistant-only labels, checked on the tiny model's real tokens."""

from __future__ import annotations

import json

import pytest

from kairo.presets import get_preset
from kairo.problems import InvalidInput
from kairo.training.chat import (
    IGNORE,
    read_conversations,
    resolve_chat_template,
    tokenize_conversation,
    tokenize_dataset,
)

CHAT = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
]


@pytest.fixture
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def learned_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t in example.labels if t != IGNORE])


def test_only_the_assistant_turns_are_learned(tokenizer):
    example, cut = tokenize_conversation(tokenizer, CHAT, max_length=512)
    assert not cut
    assert learned_text(tokenizer, example) == "Paris.<|end|>\nRome.<|end|>\n"
    prompt_ids = tokenizer(tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True),
                           add_special_tokens=False)["input_ids"]
    assert example.input_ids[: len(prompt_ids)] == prompt_ids
    assert set(example.labels[: len(prompt_ids)]) == {IGNORE}


def test_labels_are_the_input_tokens_where_they_are_learned(tokenizer):
    example, _ = tokenize_conversation(tokenizer, CHAT, max_length=512)
    assert len(example.labels) == len(example.input_ids)
    assert all(label in (IGNORE, token) for label, token in zip(example.labels, example.input_ids, strict=True))


def test_a_long_conversation_is_cut_and_one_without_answers_left_is_dropped(tokenizer):
    long = [{"role": "user", "content": "tell me " * 100}, {"role": "assistant", "content": "no"}]
    result = tokenize_dataset(tokenizer, [CHAT, long], max_length=40)
    assert len(result.examples) == 1 and result.dropped == 1
    assert "no assistant tokens left within max_length 40" in result.first_problem
    cut, was_cut = tokenize_conversation(tokenizer, CHAT, max_length=30)
    assert was_cut and len(cut) == 30


def test_a_conversation_the_template_refuses_is_dropped_and_counted(tokenizer):
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    result = tokenize_dataset(tokenizer, [CHAT, CHAT[1:3]], max_length=128)
    assert len(result.examples) == 1 and result.dropped == 1
    assert "row 1: the chat template refused it: no system role" in result.first_problem


def test_the_models_own_template_comes_before_the_presets(tokenizer):
    own = tokenizer.chat_template
    assert resolve_chat_template(tokenizer, get_preset("mistral-7b")) == "the model's own"
    assert tokenizer.chat_template == own


def test_a_model_without_a_template_gets_the_presets(tokenizer):
    tokenizer.chat_template = None
    source = resolve_chat_template(tokenizer, get_preset("mistral-7b"))
    assert "mistral.jinja" in source
    text = tokenizer.apply_chat_template(CHAT[:3], tokenize=False)
    assert text == "<s>[INST] Answer in one word.\n\nWhat is the capital of France? [/INST]Paris.<|end|>"


def test_without_any_template_the_documented_default_applies_and_masks_the_same_way(tokenizer):
    tokenizer.chat_template = None
    source = resolve_chat_template(tokenizer, get_preset("tiny-llama-test"))
    assert source.startswith("kairo's default")
    assert tokenizer.apply_chat_template(CHAT[1:3], tokenize=False) == (
        "<s>### User:\nWhat is the capital of France?\n### Assistant:\nParis.<|end|>\n")
    example, _ = tokenize_conversation(tokenizer, CHAT, max_length=512)
    assert learned_text(tokenizer, example) == "Paris.<|end|>\nRome.<|end|>\n"


def test_the_configs_template_wins_inline_or_as_a_file_beside_it(tokenizer, tmp_path):
    inline = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    assert "ModelConfig.chat_template" in resolve_chat_template(tokenizer, get_preset("tiny-llama-test"), inline)
    assert tokenizer.chat_template == inline
    (tmp_path / "template.jinja").write_text("{{ messages[0]['content'] }}")
    resolve_chat_template(tokenizer, get_preset("tiny-llama-test"), "template.jinja", tmp_path)
    assert tokenizer.chat_template == "{{ messages[0]['content'] }}"
    with pytest.raises(InvalidInput, match="ModelConfig.chat_template"):
        resolve_chat_template(tokenizer, get_preset("tiny-llama-test"), "missing.jinja", tmp_path)


def test_reading_data_names_the_line_that_is_wrong(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"messages": CHAT}) + "\n" + json.dumps({"messages": [{"role": "robot"}]}) + "\n")
    with pytest.raises(InvalidInput, match="train.jsonl:2"):
        read_conversations(path)
    path.write_text(json.dumps({"messages": CHAT}) + "\n\n")
    assert read_conversations(path) == [CHAT]
