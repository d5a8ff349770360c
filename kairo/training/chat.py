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
An assistant turn with `weight: 0` (OpenAI's fine-tuning format) is context only: none of its tokens is learned.
`kairo.training.tokenize` does this work in batches; `kairo.training.tokencache` keeps the result.
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


def parse_line(line: bytes | str, where: str) -> list[dict[str, Any]] | Problem:
    """One normalised JSONL row's messages, or the Problem with it."""
    try:
        messages = json.loads(line)["messages"]
    except (ValueError, KeyError, TypeError):
        return Problem(where, "expected a JSON object with 'messages'")
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
        and m.get("weight", 1) in (0, 1) for m in messages
    ):
        return Problem(where, "messages must be a list of {role: system|user|assistant, content: text[, weight: 0|1]}")
    return messages


def read_conversations(path: str | Path) -> list[list[dict[str, Any]]]:
    """The `messages` of every row of a normalised JSONL file (data/train.jsonl or data/eval.jsonl)."""
    rows: list[list[dict[str, Any]]] = []
    problems: list[Problem] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parsed = parse_line(line, f"{Path(path).name}:{number}")
            if isinstance(parsed, Problem):
                problems.append(parsed)
            else:
                rows.append(parsed)
        if problems:
            raise InvalidInput(problems[:10], str(path))
    return rows


def tokenize_conversation(tokenizer: Any, messages: list[dict[str, Any]], max_length: int) -> tuple[Example, bool]:
    """One conversation as an Example with assistant-only labels, cut to `max_length`; True when cut.

    Raises what the chat template raises. Datasets go through `tokenize_dataset` (or, from a file,
    `kairo.training.tokenize.tokenize_file`), which batch the same work.
    """
    from kairo.training.render import Renderer, assistant_spans
    from kairo.training.tokenize import encode, labels_for

    text, spans = assistant_spans(Renderer(tokenizer), messages)
    ((ids, starts),) = encode(tokenizer, [text])
    labels = labels_for(ids, starts, spans, len(text))
    return Example(ids[:max_length].tolist(), labels[:max_length].tolist()), len(ids) > max_length


def tokenize_dataset(tokenizer: Any, conversations: list[list[dict[str, Any]]], max_length: int) -> Tokenized:
    """Tokenize every conversation; rows whose template fails or that keep no assistant token are dropped."""
    from kairo.training.tokenize import tokenize_conversations

    chunk = tokenize_conversations(tokenizer, conversations, max_length)
    examples = [Example(ids.tolist(), labels.tolist()) for ids, labels in chunk.examples()]
    return Tokenized(examples, chunk.truncated, chunk.dropped, chunk.first_problem)
