"""Rows of every accepted shape become chat messages; unusable rows are counted; the split follows Kaito."""

from __future__ import annotations

import pytest

from kairo.data.datasets import (
    DatasetError,
    Mapping,
    Normaliser,
    detect_shape,
    split_order,
    split_sizes,
    to_messages,
)
from kairo.training.config import parse_training_config

QA = [{"role": "user", "content": "What is the capital of France?"},
      {"role": "assistant", "content": "The capital of France is Paris."}]


def normalise(row: dict, mapping: Mapping = Mapping()) -> list[dict[str, str]]:
    return to_messages(row, detect_shape(list(row), mapping))


def dataset_config(**keys):
    return parse_training_config({"training_config": {"DatasetConfig": keys}}).DatasetConfig


def test_openai_messages_pass_through():
    assert normalise({"messages": QA}) == QA


def test_conversations_column_with_sharegpt_turns():
    row = {"conversations": [{"from": "system", "value": "Be brief."},
                             {"from": "human", "value": "What is the capital of France?"},
                             {"from": "gpt", "value": "Paris."}]}
    assert normalise(row) == [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "What is the capital of France?"},
                              {"role": "assistant", "content": "Paris."}]


def test_a_conversation_stored_as_json_text_in_a_csv_cell():
    import json

    assert normalise({"messages": json.dumps(QA)}) == QA


def test_openai_content_parts_are_joined():
    row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                        {"role": "assistant", "content": "Hello."}]}
    assert normalise(row)[0]["content"] == "Hi there"


def test_prompt_completion():
    assert normalise({"prompt": "2 + 2 =", "completion": "4"}) == [
        {"role": "user", "content": "2 + 2 ="}, {"role": "assistant", "content": "4"}]


def test_alpaca_with_and_without_input():
    with_input = normalise({"instruction": "Translate to French.", "input": "cat", "output": "chat"})
    assert with_input[0] == {"role": "user", "content": "Translate to French.\n\ncat"}
    without = normalise({"instruction": "Name a colour.", "input": "", "output": "Blue."})
    assert without == [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]


def test_alpaca_rows_that_leave_out_input_still_use_it_when_present():
    shape = detect_shape(["instruction", "output"])
    assert to_messages({"instruction": "Add.", "input": "2 and 3", "output": "5"}, shape)[0]["content"] == "Add.\n\n2 and 3"


def test_dolly():
    row = {"instruction": "Who wrote it?", "context": "Hamlet is a play.", "response": "Shakespeare.",
           "category": "closed_qa"}
    assert normalise(row) == [{"role": "user", "content": "Who wrote it?\n\nHamlet is a play."},
                              {"role": "assistant", "content": "Shakespeare."}]


def test_question_answer_with_numbers_and_a_system_column():
    row = {"system": "Answer with a number.", "Question": "How many legs has a spider?", "Answer": 8}
    assert normalise(row) == [{"role": "system", "content": "Answer with a number."},
                              {"role": "user", "content": "How many legs has a spider?"},
                              {"role": "assistant", "content": "8"}]


def test_plain_text_becomes_one_assistant_turn():
    assert normalise({"text": "Once upon a time."}) == [{"role": "assistant", "content": "Once upon a time."}]


def test_structured_columns_win_over_a_text_column():
    # tatsu-lab/alpaca carries a pre-formatted `text` beside the columns; the columns keep the turns apart.
    assert detect_shape(["instruction", "input", "output", "text"]).name == "alpaca"


def test_the_column_mapping_from_the_config_is_used():
    mapping = Mapping.from_config(dataset_config(instruction_column="q", context_column="doc", response_column="a"))
    row = {"q": "Summarise.", "doc": "A long text.", "a": "Short.", "text": "ignored"}
    assert normalise(row, mapping) == [{"role": "user", "content": "Summarise.\n\nA long text."},
                                       {"role": "assistant", "content": "Short."}]


def test_messages_column_from_the_config():
    mapping = Mapping.from_config(dataset_config(messages_column="chat"))
    assert normalise({"chat": QA, "id": 1}, mapping) == QA


def test_response_column_alone_names_a_text_column():
    mapping = Mapping.from_config(dataset_config(response_column="body"))
    assert normalise({"title": "t", "body": "Some prose."}, mapping) == [{"role": "assistant", "content": "Some prose."}]


def test_kaito_default_response_column_does_not_override_detection():
    assert Mapping.from_config(dataset_config(train_test_split=1)) == Mapping()


def test_a_mapped_column_that_is_missing_is_named():
    mapping = Mapping.from_config(dataset_config(messages_column="chat"))
    with pytest.raises(DatasetError) as caught:
        detect_shape(["messages", "id"], mapping, "train.jsonl")
    assert str(caught.value) == (
        "train.jsonl: DatasetConfig.messages_column is 'chat' but there is no such column — columns found: "
        "['messages', 'id']"
    )


def test_an_unknown_shape_lists_the_columns_found_and_the_shapes_accepted():
    with pytest.raises(DatasetError) as caught:
        detect_shape(["title", "body"], source="https://example.com/data.csv")
    message = str(caught.value)
    assert message.startswith("https://example.com/data.csv: no known dataset shape in the columns ['title', 'body']")
    for shape in ("messages", "ShareGPT", "prompt + completion", "Alpaca", "Dolly", "question + answer", "text"):
        assert shape in message
    assert "DatasetConfig.messages_column" in message


def test_half_a_shape_is_not_a_shape():
    with pytest.raises(DatasetError, match=r"columns \['instruction'\]"):
        detect_shape(["instruction"])


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"messages": [{"role": "tool", "content": "42"}, {"role": "assistant", "content": "ok"}]}, "unknown role 'tool'"),
        ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "ok"}]}, "empty content"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
        ({"messages": [{"role": "system", "content": None}]}, "no assistant turn"),
        ({"messages": []}, "empty conversation"),
        ({"messages": [{"speaker": "user", "text": "hi"}]}, "a turn without role or from"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]},
                       {"role": "assistant", "content": "a cat"}]}, "non-text content (image, audio, …)"),
    ],
)
def test_unusable_conversations_are_dropped_with_a_reason(row, reason):
    counter = Normaliser(max_rows=10, max_row_chars=1000, max_dropped_fraction=1.0)
    assert counter.add(row, detect_shape(["messages"]), "row 1 of a.jsonl") is None
    assert counter.dropped == {reason: 1}


def test_an_empty_answer_is_dropped():
    counter = Normaliser(max_rows=10, max_row_chars=1000, max_dropped_fraction=1.0)
    assert counter.add({"question": "Why?", "answer": None}, detect_shape(["question", "answer"]), "row 1") is None
    assert counter.dropped == {"empty answer": 1}


def test_dropping_more_than_the_threshold_fails_with_the_reasons():
    counter = Normaliser(max_rows=100, max_row_chars=1000, max_dropped_fraction=0.1)
    shape = detect_shape(["messages"])
    for i in range(8):
        counter.add({"messages": QA}, shape, f"row {i + 1} of a.jsonl")
    counter.add({"messages": [{"role": "tool", "content": "x"}]}, shape, "row 9 of a.jsonl")
    counter.add({"messages": [{"role": "tool", "content": "x"}]}, shape, "row 10 of a.jsonl")
    with pytest.raises(DatasetError) as caught:
        counter.check()
    assert str(caught.value) == (
        "2 of 10 rows (20.0%) were dropped, more than limits.maxDroppedFraction (10.0%) in the cluster config — "
        "unknown role 'tool': 2 (first at row 9 of a.jsonl)"
    )


def test_dropping_up_to_the_threshold_passes():
    counter = Normaliser(max_rows=100, max_row_chars=1000, max_dropped_fraction=0.1)
    shape = detect_shape(["messages"])
    for i in range(9):
        counter.add({"messages": QA}, shape, f"row {i}")
    counter.add({"messages": []}, shape, "row 10")
    counter.check()
    assert (counter.kept, sum(counter.dropped.values())) == (9, 1)


def test_no_rows_at_all_is_an_error():
    with pytest.raises(DatasetError, match="the dataset is empty"):
        Normaliser(max_rows=10, max_row_chars=10, max_dropped_fraction=0.5).check()


def test_the_row_limit_stops_reading():
    counter = Normaliser(max_rows=2, max_row_chars=1000, max_dropped_fraction=0.1)
    shape = detect_shape(["messages"])
    counter.add({"messages": QA}, shape, "row 1")
    counter.add({"messages": QA}, shape, "row 2")
    with pytest.raises(DatasetError, match=r"more than 2 rows — limits.maxRows"):
        counter.add({"messages": QA}, shape, "row 3")


def test_a_row_longer_than_the_limit_is_named():
    counter = Normaliser(max_rows=10, max_row_chars=50, max_dropped_fraction=0.1)
    with pytest.raises(DatasetError) as caught:
        counter.add({"text": "x" * 51}, detect_shape(["text"]), "row 7 of big.jsonl")
    assert str(caught.value).startswith("row 7 of big.jsonl has 51 characters — more than limits.maxRowChars (50)")


def test_tokens_are_estimated_at_four_characters_each_plus_turn_markers():
    counter = Normaliser(max_rows=10, max_row_chars=1000, max_dropped_fraction=0.1)
    counter.add({"question": "q" * 40, "answer": "a" * 40}, detect_shape(["question", "answer"]), "row 1")
    assert counter.tokens == 10 + 10 + 2 * 4


@pytest.mark.parametrize(
    ("rows", "share", "expected"),
    [(10, 0.8, (8, 2)), (5, 0.8, (4, 1)), (3, 0.9, (2, 1)), (1, 0.5, (1, 0)), (10, 1.0, (10, 0)), (7, 0.5, (3, 4))],
)
def test_train_test_split_is_the_share_that_trains(rows, share, expected):
    assert split_sizes(rows, share) == expected


def test_shuffling_is_the_same_every_run_and_changes_with_the_seed():
    assert list(split_order(20, True, 42)) == list(split_order(20, True, 42))
    assert list(split_order(20, True, 42)) != list(split_order(20, True, 7))
    assert sorted(split_order(20, True, 42)) == list(range(20))
    assert list(split_order(5, False, 42)) == [0, 1, 2, 3, 4]
