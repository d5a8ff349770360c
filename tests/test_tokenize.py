"""The batched tokenizer gives exactly the ids and labels of the per-example one, on every template kairo ships.

The reference is kairo's tokenization before it was batched (tests/fixtures/reference_tokenize.py, frozen).
Each case compares every example's token ids and labels, and the counts of rows cut and dropped with the
first problem's wording, on the conversations the other tests use (tests/test_chat.py, every dataset shape
in tests/test_dataset_shapes.py, the shipped example data) and on the awkward ones below.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from kairo.presets import HERE as PRESETS_DIR
from kairo.training import tinymodel
from kairo.training.chat import IGNORE, tokenize_conversation, tokenize_dataset
from kairo.training.tokenize import merge, tokenize_file
from tests.fixtures import reference_tokenize as reference
from tests.test_chat import CHAT
from tests.test_dataset_shapes import HUB

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"
TEMPLATES = {
    "default": (PRESETS_DIR / "chat_templates" / "default.jinja").read_text(),
    "mistral": (PRESETS_DIR / "chat_templates" / "mistral.jinja").read_text(),
    "tiny-llama-test": tinymodel.CHAT_TEMPLATE,
    "phi-3": (FIXTURE_TEMPLATES / "phi-3.jinja").read_text(),
    "llama-3.1": (FIXTURE_TEMPLATES / "llama-3.1.jinja").read_text(),
    "qwen2.5": (FIXTURE_TEMPLATES / "qwen2.5.jinja").read_text(),
    "falcon": (FIXTURE_TEMPLATES / "falcon.jinja").read_text(),
}
# The control tokens those templates write, added to the tokenizer as the real models have them.
CONTROL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "[INST]", "[/INST]"]

S, U, A = "system", "user", "assistant"


def turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


AWKWARD = [
    [turn(U, "  Paris?  "), turn(A, "  Paris.  \n")],  # whitespace a template may trim (Llama's does)
    [turn(U, "Say Paris."), turn(A, "Paris.")],  # the answer's text also in the question (found by search)
    [turn(U, "Emoji? 🇫🇷 ñ 東京"), turn(A, "Oui 🇫🇷 — café, 東京 ß\u0301")],  # characters of 2 and 4 bytes
    [turn(U, "Write <|end|> and <s>"), turn(A, "<|end|> <s> [INST] <|im_end|>")],  # control tokens as text
    [turn(U, "tell me " * 80), turn(A, "no")],  # cut before its answer: dropped
    [turn(U, "Only a question?")],  # no answer: dropped
    [turn(S, "Only a system prompt.")],
    [],  # the template refuses an empty conversation: dropped with its words
    [turn(A, "I speak first."), turn(U, "Fine."), turn(A, "Good.")],
    [turn(U, "a"), turn(U, "b"), turn(A, "c"), turn(A, "d")],  # roles that do not alternate
    [turn(S, "Be terse."), turn(U, "1+1?"), turn(A, "2"), turn(U, "2+2?"), turn(A, "4"), turn(U, "3+3?"),
     turn(A, "6")],
    [turn(U, "\n\n"), turn(A, "\n")],
    [turn(U, "x"), turn(A, "")],  # an empty answer
]


def conversations() -> list[list[dict[str, str]]]:
    rows = [CHAT, CHAT[1:3], CHAT[:3]] + [case[3] for case in HUB.values()] + AWKWARD
    with open(ROOT / "examples" / "data" / "instructions.jsonl") as handle:
        rows += [json.loads(line)["messages"] for line in handle][:60]
    rng = random.Random(0)  # multi-turn conversations of mixed lengths, some past max_length
    words = tinymodel.corpus()[:400]
    for _ in range(40):
        rows.append([turn(S, rng.choice(words))] * rng.randint(0, 1) + [
            m for _ in range(rng.randint(1, 4))
            for m in (turn(U, " ".join(rng.sample(words, rng.randint(1, 6)))),
                      turn(A, " ".join(rng.sample(words, rng.randint(1, 12)))))])
    return rows


@pytest.fixture(scope="module")
def base_tokenizer():
    return tinymodel.build_tokenizer()


@pytest.fixture(params=["tiny tokenizer", "with control tokens"], scope="module")
def tokenizer_kind(request, base_tokenizer):
    tokenizer = base_tokenizer
    if request.param == "with control tokens":
        tokenizer = tinymodel.build_tokenizer()
        tokenizer.add_special_tokens({"additional_special_tokens": CONTROL_TOKENS})
    return tokenizer


def with_template(tokenizer, name: str):
    tokenizer.chat_template = TEMPLATES[name]
    return tokenizer


def as_lists(examples) -> list[tuple[list[int], list[int]]]:
    return [(list(e.input_ids), list(e.labels)) for e in examples]


@pytest.mark.parametrize("max_length", [512, 160])
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_batched_ids_and_labels_equal_the_per_example_ones(tokenizer_kind, template, max_length):
    tokenizer = with_template(tokenizer_kind, template)
    rows = conversations()
    expected = reference.tokenize_dataset(tokenizer, rows, max_length)
    got = tokenize_dataset(tokenizer, rows, max_length)
    assert len(got.examples) == len(expected["examples"]) > 0
    for number, (new, old) in enumerate(zip(as_lists(got.examples), expected["examples"], strict=True)):
        assert new == old, f"example {number} differs with the {template} template"
    assert (got.truncated, got.dropped, got.first_problem) == (
        expected["truncated"], expected["dropped"], expected["first_problem"])


@pytest.mark.parametrize("template", ["default", "phi-3", "llama-3.1"])
def test_a_file_tokenized_by_two_processes_equals_the_per_example_result(tmp_path, base_tokenizer, template):
    tokenizer = with_template(base_tokenizer, template)
    rows = conversations() * 6  # several chunks, so the pool's order matters
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    expected = reference.tokenize_dataset(tokenizer, rows, 64)
    got = merge(list(tokenize_file(tokenizer, path, 64, processes=2)))
    assert [(i.tolist(), j.tolist()) for i, j in got.examples()] == expected["examples"]
    assert (got.truncated, got.dropped) == (expected["truncated"], expected["dropped"])
    # A file's rows are numbered by their line: the same row numbers as the list's, one row a line.
    assert got.first_problem == expected["first_problem"]


def test_one_conversation_alone_is_tokenized_the_same(base_tokenizer):
    tokenizer = with_template(base_tokenizer, "tiny-llama-test")
    example, cut = tokenize_conversation(tokenizer, CHAT, 512)
    ids, labels, was_cut = reference.tokenize_conversation(tokenizer, CHAT, 512)
    assert (example.input_ids, example.labels, cut) == (ids, labels, was_cut)
    assert any(label != IGNORE for label in example.labels)


# ── OpenAI's fine-tuning format: an answer with weight 0 is shown to the model, never learned ──
WEIGHTED = [turn(U, "What is the capital of France?"), {**turn(A, "Lyon."), "weight": 0},
            turn(U, "Are you sure?"), {**turn(A, "Paris."), "weight": 1}]


def learned(tokenizer, example) -> str:
    return tokenizer.decode([t for t in example.labels if t != IGNORE])


def test_an_answer_with_weight_0_is_in_the_tokens_but_not_in_the_labels(base_tokenizer):
    tokenizer = with_template(base_tokenizer, "tiny-llama-test")
    example, _ = tokenize_conversation(tokenizer, WEIGHTED, 512)
    assert learned(tokenizer, example) == "Paris.<|end|>\n"
    assert "Lyon." in tokenizer.decode(example.input_ids)
    unweighted = [{k: v for k, v in m.items() if k != "weight"} for m in WEIGHTED]
    ids, labels, _ = reference.tokenize_conversation(tokenizer, unweighted, 512)
    assert example.input_ids == ids  # the same tokens; only Lyon's labels are gone
    assert sum(t != IGNORE for t in example.labels) < sum(t != IGNORE for t in labels)


def test_a_conversation_whose_answers_all_have_weight_0_is_dropped_saying_so(base_tokenizer):
    tokenizer = with_template(base_tokenizer, "default")
    result = tokenize_dataset(tokenizer, [WEIGHTED[:2], CHAT], 512)
    assert len(result.examples) == 1 and result.dropped == 1
    assert result.first_problem == "row 1: every assistant turn has weight 0"


def test_download_keeps_weight_0_from_an_openai_fine_tuning_file(http, tmp_path, monkeypatch):
    from kairo import exitcodes
    from tests.fixtures.http import jsonl_bytes
    from tests.test_download import Run

    monkeypatch.delenv("KAIRO_LOCAL", raising=False)
    monkeypatch.delenv("KAIRO_CLUSTER_CONFIG", raising=False)
    run = Run(tmp_path)
    rows = [{"messages": [turn(S, "Be brief."), *WEIGHTED]}] * 5
    assert run("--url", http.serve("ft.jsonl", jsonl_bytes(rows))) == exitcodes.OK
    messages = run.rows()[0]["messages"]
    assert [m.get("weight") for m in messages] == [None, None, 0, None, None]
    bad = [{"messages": [turn(U, "Hi"), {**turn(A, "Hello"), "weight": 0.5}]}] * 5
    assert run("--url", http.serve("bad.jsonl", jsonl_bytes(bad))) != exitcodes.OK
