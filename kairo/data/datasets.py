"""Turn dataset rows of any accepted shape into chat `messages`, and decide the train/eval split.

Pure functions over rows (no files, no network): `detect_shape` looks at a file's columns and the
DatasetConfig column mapping, `Normaliser.add` turns one row into `[{role, content}, …]` or counts it
as dropped with a reason, `split_sizes`/`split_order` follow Kaito's DatasetConfig semantics
(`train_test_split: 0.8` = 80 % of the rows train, the rest evaluate).
"""

from __future__ import annotations

import math
import random
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kairo.data.message_trees import is_message_tree
from kairo.data.turns import Drop, cell_text, content_text, parse_turns, tidy

CONVERSATION_COLUMNS = ("messages", "conversations", "conversation", "contents")
# (shape, user columns: the first required, the rest optional, assistant column): the first whose columns
# are all there wins, so the more specific pairs come first.
PAIRS = (
    ("prompt-completion", ("prompt",), "completion"),
    ("alpaca", ("instruction", "input"), "output"),
    ("dolly", ("instruction", "context"), "response"),
    ("question-answer", ("question",), "answer"),
    ("question-response", ("question",), "response"),  # OpenOrca (with system_prompt)
    ("query-response", ("query",), "response"),  # MetaMathQA
    ("prompt-response", ("prompt",), "response"),
    ("input-output", ("input",), "output"),
    ("problem-solution", ("problem",), "solution"),
    ("preference", ("prompt",), "chosen"),  # TRL preference rows: the chosen answer is learned
)
TREE_COLUMN = "messages"  # where a walked message tree's turns are put
DEFAULT_RESPONSE_COLUMN = "text"  # Kaito's DatasetConfig default
ACCEPTED_SHAPES = (
    "messages, conversations or contents (a list of {role, content} as OpenAI writes it, {from, value} as "
    "ShareGPT does, or {role, parts} as Gemini does); prompt + completion (text or lists of turns); "
    "instruction + input + output (Alpaca); instruction + context + response (Dolly); question + answer; "
    "question/query/prompt + response; input + output; problem + solution; chosen (+ prompt) of preference "
    "data; OpenAssistant message trees (message_id, parent_id, role, text); text"
)
MAPPING_HINT = (
    "or name your columns in the training config: DatasetConfig.messages_column, or instruction_column "
    "(+ context_column) + response_column, or response_column alone for plain text"
)
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # role markers and turn separators a chat template adds


class DatasetError(Exception):
    """The dataset cannot be used as it is; the message says what was found and what is accepted."""


@dataclass(frozen=True)
class Shape:
    """Where a row's turns come from: a conversation column, or user/assistant (and system) columns."""

    name: str
    conversation: str | None = None
    user: tuple[str, ...] = ()
    assistant: str | None = None
    system: str | None = None

    def describe(self) -> str:
        used = [c for c in (self.conversation, *self.user, self.assistant) if c]
        return f"{self.name} ({', '.join(used)})"


@dataclass(frozen=True)
class Mapping:
    """The DatasetConfig column mapping (Kaito's keys), only what the user set."""

    messages_column: str | None = None
    instruction_column: str | None = None
    context_column: str | None = None
    response_column: str | None = None

    @classmethod
    def from_config(cls, config: Any) -> Mapping:
        """From a `kairo.training.config.DatasetSection`: response_column counts only when set by the user."""
        if config is None:
            return cls()
        response = config.response_column if "response_column" in config.model_fields_set else None
        return cls(config.messages_column, config.instruction_column, config.context_column, response)


def detect_shape(columns: Sequence[str], mapping: Mapping = Mapping(), source: str = "the dataset") -> Shape:
    """The shape of a file from its column names; the user's column mapping wins over guessing."""
    by_lower = {c.lower(): c for c in columns}

    def find(*names: str) -> str | None:
        return next((by_lower[n] for n in names if n in by_lower), None)

    def given(setting: str, name: str) -> str:
        # Kaito's own examples write `Context`/`Response`; a column that differs only in case is the one meant.
        found = name if name in columns else by_lower.get(name.lower())
        if found:
            return found
        raise DatasetError(
            f"{source}: DatasetConfig.{setting} is '{name}' but there is no such column — columns found: "
            f"{_show_columns(columns)}"
        )

    # Optional columns are looked up by name in every row, so JSON rows that omit them are fine.
    system = find("system", "system_prompt", "systeminstruction") or "system"
    if mapping.messages_column:
        return Shape("messages", conversation=given("messages_column", mapping.messages_column), system=system)
    if mapping.instruction_column or mapping.context_column:
        user = tuple(
            given(setting, name)
            for setting, name in (
                ("instruction_column", mapping.instruction_column),
                ("context_column", mapping.context_column),
            )
            if name
        )
        response = given("response_column", mapping.response_column or DEFAULT_RESPONSE_COLUMN)
        return Shape("columns", user=user, assistant=response, system=system)
    # response_column: text copied from Kaito's template onto a dataset without a text column means "the default".
    if mapping.response_column and (mapping.response_column != DEFAULT_RESPONSE_COLUMN or find("text")):
        return Shape("text", assistant=given("response_column", mapping.response_column), system=system)

    conversation = find(*CONVERSATION_COLUMNS)
    if conversation:
        return Shape("messages", conversation=conversation, system=system)
    for name, (first, *optional), answer in PAIRS:
        if find(first) and find(answer):
            user = (find(first), *(find(c) or c for c in optional))
            return Shape(name, user=user, assistant=find(answer), system=system)  # type: ignore[arg-type]
    if find("chosen"):
        return Shape("preference", conversation=find("chosen"))
    if is_message_tree(columns):
        # Read by the download step tree by tree (kairo.data.message_trees), not row by row.
        return Shape("message-tree", conversation=TREE_COLUMN)
    text = find("text")
    if text:
        return Shape("text", assistant=text, system=system)
    if not columns:
        raise DatasetError(f"{source}: no columns found — is it empty?")
    raise DatasetError(
        f"{source}: no known dataset shape in the columns {_show_columns(columns)} — accepted: "
        f"{ACCEPTED_SHAPES}; {MAPPING_HINT}"
    )


def _show_columns(columns: Sequence[str]) -> str:
    shown = ", ".join(f"'{c}'" for c in list(columns)[:20])
    more = f", … ({len(columns)} in all)" if len(columns) > 20 else ""
    return f"[{shown}{more}]"


def to_messages(row: Any, shape: Shape) -> list[dict[str, str]]:
    """One row as chat messages; raises Drop with the reason when the row is unusable."""
    if not isinstance(row, dict):
        raise Drop(f"not an object (a {type(row).__name__})")
    system = content_text(row.get(shape.system)) if shape.system else ""
    messages = [{"role": "system", "content": system}] if system else []
    if shape.conversation:
        conversation = parse_turns(row.get(shape.conversation))
        if conversation and conversation[0]["role"] == "system":
            messages = []  # the conversation's own system turn wins over a system column
        return tidy(messages + conversation)
    first = row.get(shape.user[0]) if shape.user else None
    answer = row.get(shape.assistant)
    if isinstance(first, list | tuple) or isinstance(answer, list | tuple):
        # TRL's conversational prompt/completion (and preference) rows: each side is a list of turns.
        prompt = _side(first, "user", shape.user[0]) if shape.user else []
        return tidy(messages + prompt + _side(answer, "assistant", shape.assistant or ""))
    parts = [cell_text(row.get(c), c) for c in shape.user]
    if shape.user and not parts[0]:
        raise Drop(f"empty {shape.user[0]}")
    user = "\n\n".join(p for p in parts if p)
    if user:
        messages.append({"role": "user", "content": user})
    return messages + _side(answer, "assistant", shape.assistant or "")


def _side(value: Any, role: str, column: str) -> list[dict[str, str]]:
    """One side of a prompt/answer row: a list of turns, or text that becomes one turn of `role`."""
    if isinstance(value, list | tuple):
        return parse_turns(value)
    said = cell_text(value, column)
    if not said:
        raise Drop(f"empty {column}")
    return [{"role": role, "content": said}]


def conversation_form(row: Any, shape: Shape) -> str:
    """'sharegpt' when a conversation's turns use from/value, else the shape's name."""
    if shape.conversation and isinstance(row, dict):
        turns = row.get(shape.conversation)
        if isinstance(turns, list | tuple) and turns and isinstance(turns[0], dict) and turns[0].get("from"):
            return "sharegpt"
    return shape.name


@dataclass
class Normaliser:
    """Counts rows as they are normalised and enforces the row limits and the drop threshold."""

    max_rows: int
    max_row_chars: int
    max_dropped_fraction: float
    rows: int = 0
    kept: int = 0
    tokens: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    first_drop: dict[str, str] = field(default_factory=dict)

    def add(self, row: Any, shape: Shape, where: str) -> list[dict[str, str]] | None:
        """The row as messages, or None when it is dropped; raises DatasetError past a limit."""
        self._count()
        try:
            messages = to_messages(row, shape)
        except Drop as reason:
            self.drop(str(reason), where)
            return None
        chars = sum(len(m["content"]) for m in messages)
        if chars > self.max_row_chars:
            raise DatasetError(
                f"{where} has {chars:,} characters — more than limits.maxRowChars ({self.max_row_chars:,}) in "
                "the cluster config; shorten or remove that row, or raise the limit"
            )
        self.kept += 1
        self.tokens += math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)
        return messages

    def add_unreadable(self, reason: str, where: str) -> None:
        """Count a row that could not even be parsed (a broken JSON line) as read and dropped."""
        self._count()
        self.drop(reason, where)

    def drop(self, reason: str, where: str) -> None:
        """Count a row that cannot be used."""
        self.dropped[reason] += 1
        self.first_drop.setdefault(reason, where)

    def _count(self) -> None:
        self.rows += 1
        if self.rows > self.max_rows:
            raise DatasetError(
                f"the dataset has more than {self.max_rows:,} rows — limits.maxRows in the cluster config "
                "(stopped reading at that point)"
            )

    def check(self) -> None:
        """Fail when nothing is usable, or more rows were dropped than the cluster config allows."""
        lost = sum(self.dropped.values())
        if self.rows == 0:
            raise DatasetError("the dataset is empty: no rows were found in any file")
        if self.kept == 0:
            raise DatasetError(f"no usable rows: all {self.rows:,} were dropped — {self.drop_summary()}")
        if lost / self.rows > self.max_dropped_fraction:
            raise DatasetError(
                f"{lost:,} of {self.rows:,} rows ({lost / self.rows:.1%}) were dropped, more than "
                f"limits.maxDroppedFraction ({self.max_dropped_fraction:.1%}) in the cluster config — "
                f"{self.drop_summary()}"
            )

    def drop_summary(self) -> str:
        """Why rows were dropped, most common first, each with the first place it happened."""
        return "; ".join(
            f"{reason}: {count:,} (first at {self.first_drop[reason]})" for reason, count in self.dropped.most_common(5)
        )


def split_sizes(rows: int, train_share: float) -> tuple[int, int]:
    """(train, eval) row counts for Kaito's `train_test_split` (the share that trains; 1 = no eval)."""
    if train_share >= 1 or rows < 2:
        return rows, 0
    # Hugging Face's train_test_split rounds the test share up; round() keeps 0.2 * 5 from becoming 1.0000001.
    evaluate = math.ceil(round((1 - train_share) * rows, 9))
    evaluate = min(max(evaluate, 1), rows - 1)
    return rows - evaluate, evaluate


def split_order(rows: int, shuffle: bool, seed: int) -> Sequence[int]:
    """The order rows are written in: shuffled with `seed` (the same every run), or as read."""
    if not shuffle:
        return range(rows)
    order = array("q", range(rows))  # 8 bytes a row: ten million rows cost 80 MB, not a list's 400
    random.Random(seed).shuffle(order)
    return order
