"""Conversations → training tokens: which chat template applies, and which tokens the loss sees.

The chat template is, in this order: `ModelConfig.chat_template` from the training config (inline Jinja or
a file), the model's own (its tokenizer files), the preset's (`presets/chat_templates/<name>.jinja`), or
kairo's documented default, `presets/chat_templates/default.jinja`:

    <s>### System:\\n…\\n### User:\\n…\\n### Assistant:\\n…</s>\\n

(`bos_token` first, each turn headed `### Role:`, an assistant turn closed by the tokenizer's
`eos_token` so generation stops where a turn ends). A model without a template never crashes training.

Only assistant turns are learned: every other token gets the label -100. The assistant spans are found by
rendering the conversation up to each assistant turn, so this works with any template that renders a
conversation's beginning the same way whether or not it continues — no `{% generation %}` markers needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kairo.presets import HERE as PRESETS_DIR
from kairo.presets import Preset, chat_template_path
from kairo.problems import InvalidInput, Problem, show

IGNORE = -100  # the label the loss skips
DEFAULT_TEMPLATE_PATH = PRESETS_DIR / "chat_templates" / "default.jinja"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    """One tokenized conversation: labels are the input ids on assistant turns and -100 elsewhere."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


@dataclass
class Tokenized:
    """Examples made from a dataset, and what happened to the rows that did not make it."""

    examples: list[Example]
    truncated: int = 0
    dropped: int = 0
    first_problem: str = ""


def resolve_chat_template(tokenizer: Any, preset: Preset, configured: str | None = None,
                          config_dir: Path | None = None) -> str:
    """Give `tokenizer` a chat template (see the module docstring for the order); say where it came from.

    `configured` is ModelConfig.chat_template: Jinja itself, or a file name beside the config (`config_dir`).
    """
    if configured:
        if "{{" in configured or "{%" in configured:
            tokenizer.chat_template = configured
            return "the training config's ModelConfig.chat_template"
        path = (config_dir or Path.cwd()) / Path(configured).name
        if not path.is_file():
            raise InvalidInput([Problem("training_config.ModelConfig.chat_template",
                                        f"{show(configured)} is neither a Jinja template nor a file that exists")])
        tokenizer.chat_template = path.read_text()
        return f"the training config's ModelConfig.chat_template ({path.name})"
    if getattr(tokenizer, "chat_template", None):
        return "the model's own"
    preset_template = chat_template_path(preset)
    if preset_template is not None and preset_template.is_file():
        tokenizer.chat_template = preset_template.read_text()
        return f"the preset's ({preset_template.name}) — the model ships none"
    tokenizer.chat_template = DEFAULT_TEMPLATE_PATH.read_text()
    return "kairo's default (presets/chat_templates/default.jinja) — neither the model nor the preset has one"


def read_conversations(path: str | Path) -> list[list[dict[str, str]]]:
    """The `messages` of every row of a normalised JSONL file (data/train.jsonl or data/eval.jsonl)."""
    rows: list[list[dict[str, str]]] = []
    problems: list[Problem] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                messages = json.loads(line)["messages"]
            except (ValueError, KeyError, TypeError):
                problems.append(Problem(f"{Path(path).name}:{number}", "expected a JSON object with 'messages'"))
                continue
            if not isinstance(messages, list) or not all(
                isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages
            ):
                problems.append(Problem(f"{Path(path).name}:{number}",
                                        "messages must be a list of {role: system|user|assistant, content: text}"))
                continue
            rows.append(messages)
        if problems:
            raise InvalidInput(problems[:10], str(path))
    return rows


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns (end token included)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[tuple[int, int]] = []
    searched = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        if i and text.startswith(upto) and upto.startswith(before):
            spans.append((len(before), len(upto)))
            continue
        # A template that renders a conversation's start differently: find the answer's text itself.
        start = text.find(message["content"], searched)
        if start < 0:
            continue
        spans.append((start, start + len(message["content"])))
        searched = start + len(message["content"])
    return text, spans


def tokenize_conversation(tokenizer: Any, messages: list[dict[str, str]], max_length: int) -> tuple[Example, bool]:
    """One conversation as an Example with assistant-only labels, cut to `max_length`; True when cut."""
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoded["input_ids"])
    labels = [IGNORE] * len(ids)
    for k, (start, _end) in enumerate(encoded["offset_mapping"]):
        if any(a <= start < b for a, b in spans):
            labels[k] = ids[k]
    # The first token is never a target: packed after another example it would be predicted from that one.
    if labels:
        labels[0] = IGNORE
    truncated = len(ids) > max_length
    return Example(ids[:max_length], labels[:max_length]), truncated


def tokenize_dataset(tokenizer: Any, conversations: list[list[dict[str, str]]], max_length: int) -> Tokenized:
    """Tokenize every conversation; rows whose template fails or that keep no assistant token are dropped."""
    result = Tokenized(examples=[])
    for number, messages in enumerate(conversations, start=1):
        try:
            example, cut = tokenize_conversation(tokenizer, messages, max_length)
        except Exception as err:  # a template error (e.g. roles that must alternate) is the data's problem
            result.dropped += 1
            result.first_problem = result.first_problem or f"row {number}: the chat template refused it: {err}"
            continue
        if example.trained_tokens == 0:
            result.dropped += 1
            result.first_problem = result.first_problem or (
                f"row {number}: no assistant tokens left within max_length {max_length}"
                if cut else f"row {number}: no assistant turn")
            continue
        result.truncated += cut
        result.examples.append(example)
    return result
