"""A conversation cell as chat turns: role names, content parts, and the text forms conversations are kept in.

OpenAI's `{role, content}`, ShareGPT's `{from, value}`, Gemini's `{role, parts}`, Capybara's `{input, output}`
exchanges, JSON (or pandas' Python repr) in a CSV cell, and Anthropic's "\\n\\nHuman: …\\n\\nAssistant: …"
transcripts all become `[{role: system|user|assistant, content: text}, …]`; an OpenAI-format answer with
`weight: 0` keeps `"weight": 0` (it is context, not learned: kairo.training.chat). A row that cannot raises `Drop`
with the reason the download step counts.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

# Role names seen in the wild, mapped onto the three roles chat templates know.
ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "prompter": "user",  # OpenAssistant
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bot": "assistant",
    "ai": "assistant",
    "model": "assistant",  # Gemini
}
# Where a turn keeps its text, in the order looked at.
CONTENT_KEYS = ("content", "value", "text", "parts")
# Keys of a content part that carry media: such a part has no place in text tuning.
MEDIA_KEYS = ("image", "image_url", "audio", "input_audio", "video", "file", "inlineData", "inline_data",
              "fileData", "file_data")
# Anthropic's HH-RLHF keeps a conversation as one text: "\n\nHuman: …\n\nAssistant: …".
TRANSCRIPT = re.compile(r"(?:^|\n\n)(Human|Assistant): ?")
TRANSCRIPT_ROLES = {"Human": "user", "Assistant": "assistant"}


class Drop(Exception):
    """A row that cannot become a conversation; the reason is counted, the row skipped."""


def cell_text(value: Any, column: str) -> str:
    """A cell as text: '' for missing, NaN or blank; numbers written out; anything else drops the row."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value if value.strip() else ""
    if isinstance(value, bool | int | float):
        return str(value)
    raise Drop(f"{column} is not text (a {type(value).__name__})")


def parse_turns(value: Any) -> list[dict[str, str]]:
    """A conversation cell as turns, in order; empty system turns are left out."""
    if isinstance(value, str):
        value = _from_text(value)
    if not isinstance(value, list | tuple) or not value:
        raise Drop("empty conversation" if not value else f"conversation is not a list (a {type(value).__name__})")
    messages = []
    for turn in value:
        if not isinstance(turn, dict):
            raise Drop("a turn that is not an object")
        if "input" in turn and "output" in turn and "role" not in turn:
            # Capybara-style turns hold one exchange each.
            messages += [{"role": "user", "content": _required(turn["input"])},
                         {"role": "assistant", "content": _required(turn["output"])}]
            continue
        # Parquet gives every turn every field of its struct, None where unused: take the one that is set.
        role = turn.get("role") if turn.get("role") is not None else turn.get("from")
        if role is None:
            raise Drop("a turn without role or from")
        if turn.get("tool_calls") or turn.get("function_call"):
            raise Drop("a turn with tool calls (function calling is not supported)")
        mapped = ROLES.get(str(role).strip().lower())
        if mapped is None:
            raise Drop(f"unknown role '{role}'")
        said = content_text(next((turn[k] for k in CONTENT_KEYS if turn.get(k) is not None), None))
        if not said and mapped == "system":
            continue  # an empty system prompt says nothing; the rest of the conversation stands
        if not said:
            raise Drop("empty content")
        message = {"role": mapped, "content": said}
        if mapped == "assistant" and turn.get("weight") is not None:
            # OpenAI's fine-tuning format: weight 0 marks an answer to show the model, not to learn.
            if turn["weight"] not in (0, 1):
                raise Drop("weight is not 0 or 1")
            if turn["weight"] == 0:
                message["weight"] = 0
        messages.append(message)
    return messages


def tidy(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation as chat templates take it: turns alternate, a user speaks first, an answer ends it.

    Two turns of one role in a row are joined (Mistral's and Llama 2's templates refuse them; two answers
    joined are learned unless both had `weight: 0`); an assistant
    greeting before the first question is left out, as FastChat does with ShareGPT. A conversation that ends
    on a question nobody answered (a cut-off chat) is dropped, as is one with no answer at all.
    """
    joined: list[dict[str, Any]] = []
    for message in messages:
        if joined and joined[-1]["role"] == message["role"]:
            merged: dict[str, Any] = {"role": message["role"],
                                      "content": f"{joined[-1]['content']}\n\n{message['content']}"}
            if joined[-1].get("weight") == 0 and message.get("weight") == 0:  # learned if either part was
                merged["weight"] = 0
            joined[-1] = merged
        else:
            joined.append(message)
    first_user = next((i for i, m in enumerate(joined) if m["role"] == "user"), None)
    if first_user is not None:
        joined = [m for i, m in enumerate(joined) if i >= first_user or m["role"] != "assistant"]
    if not any(m["role"] == "assistant" for m in joined):
        raise Drop("no assistant turn")
    if joined[-1]["role"] != "assistant":
        raise Drop("no assistant turn at the end")
    return joined


def content_text(content: Any) -> str:
    """A turn's content as text: content parts (OpenAI's {type: text}, Gemini's {text}, strings) are joined."""
    if isinstance(content, dict):  # Gemini's systemInstruction: {role, parts}
        content = next((content[k] for k in CONTENT_KEYS if content.get(k) is not None), None)
    if isinstance(content, list | tuple):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif (isinstance(part, dict) and part.get("type", "text") in ("text", "input_text", "output_text")
                  and isinstance(part.get("text"), str | None) and not any(part.get(k) is not None for k in MEDIA_KEYS)):
                texts.append(part.get("text") or "")
            else:
                raise Drop("non-text content (image, audio, …)")
        content = "".join(texts)
    return cell_text(content, "content")


def _required(value: Any) -> str:
    said = content_text(value)
    if not said:
        raise Drop("empty content")
    return said


def _from_text(value: str) -> Any:
    stripped = value.strip()
    try:
        return json.loads(stripped)  # CSV cells hold conversations as JSON text
    except (ValueError, RecursionError):
        pass
    if stripped.startswith("["):
        try:
            # pandas' to_csv writes a list of dicts as Python's repr: single quotes, None, True.
            return ast.literal_eval(stripped)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    pieces = TRANSCRIPT.split(value)
    if len(pieces) > 2 and not pieces[0].strip():
        return [{"role": TRANSCRIPT_ROLES[who], "content": said.strip()}
                for who, said in zip(pieces[1::2], pieces[2::2], strict=True)]
    raise Drop("conversation is text that is not JSON")
