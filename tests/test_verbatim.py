"""Which chat templates write each content as it is: the shipped ones, and the ways a template can look into one."""

from __future__ import annotations

import pytest
from transformers.utils import chat_template_utils as ctu

from kairo.training.verbatim import writes_contents_verbatim
from tests.test_tokenize import TEMPLATES


def verbatim(source: str) -> bool:
    return writes_contents_verbatim(ctu._compile_jinja_template(source).environment, source)


@pytest.mark.parametrize(("name", "expected"), [
    ("default", True), ("tiny-llama-test", True), ("phi-3", True), ("falcon", True),
    ("llama-3.1", False),  # trims each content, reads messages[0]
    ("mistral", False), ("qwen2.5", False),  # read messages[0] / messages[-1] outside the loop
])
def test_shipped_templates(name, expected):
    assert verbatim(TEMPLATES[name]) is expected


LOOP = "{%% for message in messages %%}%s{%% endfor %%}"


@pytest.mark.parametrize("body", [
    "{{ message['content'] | trim }}",
    "{{ message.content.strip() }}",
    "{% if message['content'] == 'x' %}y{% endif %}{{ message['content'] }}",
    "{% if message['content'] is string %}{{ message['content'] }}{% endif %}",
    "{% set c = message['content'] %}{{ c }}",
    "{% filter upper %}{{ message['content'] }}{% endfilter %}",
    "{% set block %}{{ message['content'] }}{% endset %}{{ block | trim }}",
    "{{ message | tojson }}",
    "{{ message.get('content') }}",
    "{{ message['content'] * 2 }}",
    "{{ strftime_now('%d') + message['content'] }}",
])
def test_a_template_that_looks_into_a_content_is_not_verbatim(body):
    assert not verbatim(LOOP % body)


def test_a_macro_or_a_second_reading_of_the_messages_is_not_verbatim():
    assert not verbatim("{% macro m(x) %}{{ x | trim }}{% endmacro %}" + LOOP % "{{ m(message['content']) }}")
    assert not verbatim("{{ messages[0]['content'] }}" + LOOP % "{{ message['content'] }}")


def test_contents_joined_to_strings_and_written_are_verbatim():
    assert verbatim(LOOP % "{{ '<|' + message['role'] + '|>' + message['content'] ~ '\\n' }}")
    assert verbatim(LOOP % "{% generation %}{{ message['content'] }}{% endgeneration %}")
