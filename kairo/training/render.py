"""A chat template rendered as `apply_chat_template(tokenize=False)` renders it, and its assistant spans.

`Renderer` compiles the template once (transformers' own compiled template and arguments, without
`apply_chat_template`'s per-call checks and copies). `assistant_spans` is the rule of `kairo.training.chat`:
an assistant turn's span is found by rendering the conversation up to that turn, with and without it.
`Shapes` gives the same spans rendering each conversation shape once (see its docstring).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kairo.training.verbatim import writes_contents_verbatim


class Renderer:
    """The tokenizer's chat template, compiled once, rendered as `apply_chat_template(tokenize=False)` renders it."""

    def __init__(self, tokenizer: Any):
        from transformers.utils import chat_template_utils as ctu

        self._compiled = ctu._compile_jinja_template(tokenizer.get_chat_template())
        self._kwargs = ctu._plain_template_data(dict(tokenizer.special_tokens_map))
        self._shapes = Shapes(self, writes_contents_verbatim(self._compiled.environment, tokenizer.get_chat_template()))

    def spans(self, messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
        """`assistant_spans(self, messages)`, rendered once per conversation shape (see `Shapes`)."""
        return self._shapes.spans(messages)

    def __call__(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        if not messages:  # apply_chat_template's own refusal, word for word
            raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
        return self._compiled.render(messages=messages, tools=None, documents=None,
                                     add_generation_prompt=add_generation_prompt, **self._kwargs)


def assistant_spans(render: Callable[..., str], messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns with a weight (end token included)."""
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    text = render(plain)

    def rendered(i: int, add_generation_prompt: bool) -> str:
        if i == len(plain) and not add_generation_prompt:
            return text  # the whole conversation: rendered already
        return render(plain[:i], add_generation_prompt=add_generation_prompt)

    return _spans(messages, text, rendered)


MARK_OPEN, MARK_CLOSE = "\ue000", "\ue001"  # private-use characters around a placeholder's number
CHECKED_PER_SHAPE = 3  # conversations of each shape whose every prefix is rendered for real before trusting it


class Shapes:
    """`assistant_spans`, rendered once per conversation shape (its sequence of roles) instead of per conversation.

    A shape's renders (the whole conversation and each prefix `assistant_spans` needs) are made with each
    message's content replaced by a placeholder; a conversation of that shape is then its contents put in
    the placeholders' places, and the spans follow from those strings exactly as `assistant_spans` finds them.
    That holds for templates that write content as it is; so every conversation's whole text is still
    rendered for real and compared (unless `kairo.training.verbatim` read from the template that it writes
    contents as they are), the first conversations of each shape have every prefix compared too, and
    anything that differs (a template that trims or tests the content, a content holding the placeholder
    characters, an error) goes through `assistant_spans` itself.
    """

    def __init__(self, render: Callable[..., str], verbatim: bool = False):
        self.render = render
        self.verbatim = verbatim  # the template writes contents as they are (kairo.training.verbatim)
        self.shapes: dict[tuple[str, ...], Any] = {}
        self.checked: dict[tuple[str, ...], int] = {}

    def spans(self, messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
        roles = tuple(m["role"] for m in messages)
        contents = [m["content"] for m in messages]
        shape = self.shapes.get(roles, False)
        if shape is False:
            shape = self.shapes[roles] = self._shape(roles)
        if shape is None or any(MARK_OPEN in c for c in contents):
            return assistant_spans(self.render, messages)
        full, prefixes, lengths = shape
        text = _fill(full, contents)
        trusted = self.verbatim and self.checked.get(roles, 0) >= CHECKED_PER_SHAPE
        plain = [] if trusted else [{"role": m["role"], "content": m["content"]} for m in messages]
        if not trusted and self.render(plain) != text:
            return assistant_spans(self.render, messages)
        if lengths is not None and self.checked.get(roles, 0) >= CHECKED_PER_SHAPE:
            return text, _spans_by_length(messages, text, contents, lengths)
        filled = {key: _fill(pieces, contents) for key, pieces in prefixes.items()}
        if self.checked.get(roles, 0) < CHECKED_PER_SHAPE:
            real = {(i, agp): self.render(plain[:i], add_generation_prompt=agp) for i, agp in prefixes}
            if real != filled:
                self.shapes[roles] = None
                return assistant_spans(self.render, messages)
            self.checked[roles] = self.checked.get(roles, 0) + 1
        return _spans(messages, text, lambda i, agp: text if i == len(messages) and not agp else filled[(i, agp)])

    def _shape(self, roles: tuple[str, ...]) -> Any:
        """The shape's renders as (literal, placeholder number) pieces, or None when placeholders do not survive."""
        probe = [{"role": role, "content": f"{MARK_OPEN}{j}{MARK_CLOSE}"} for j, role in enumerate(roles)]
        try:
            full = _pieces(self.render(probe), len(roles))
            prefixes = {}
            for i, role in enumerate(roles):
                if role != "assistant":
                    continue
                if i + 1 < len(roles):
                    prefixes[(i + 1, False)] = _pieces(self.render(probe[: i + 1]), i + 1)
                if i:
                    prefixes[(i, True)] = _pieces(self.render(probe[:i], add_generation_prompt=True), i)
        except Exception:  # roles the template refuses: assistant_spans raises the template's own words
            return None
        if full is None or any(p is None for p in prefixes.values()):
            return None
        # A prefix whose literals are the whole render's own, up to where it ends, is a prefix of it whatever the
        # contents: its length is then all `assistant_spans` needs of it.
        lengths = {key: (sum(len(literal) for literal, _ in pieces), len(pieces) - 1) for key, pieces in prefixes.items()
                   if _leads(pieces, full)}
        return full, prefixes, (lengths if len(lengths) == len(prefixes) else None)


def _pieces(rendered: str, count: int) -> list[tuple[str, int]] | None:
    """A render of placeholders split into (literal before, placeholder number) pairs, then (tail, -1)."""
    pieces: list[tuple[str, int]] = []
    at = 0
    for j in range(count):
        mark = f"{MARK_OPEN}{j}{MARK_CLOSE}"
        found = rendered.find(mark, at)
        if found < 0 or rendered.count(mark) != 1:
            return None
        pieces.append((rendered[at:found], j))
        at = found + len(mark)
    tail = rendered[at:]
    if MARK_OPEN in tail or any(MARK_OPEN in literal for literal, _ in pieces):
        return None
    return [*pieces, (tail, -1)]


def _leads(pieces: list[tuple[str, int]], full: list[tuple[str, int]]) -> bool:
    """Whether a render of the first placeholders is, piece by piece, the start of the whole render."""
    count = len(pieces) - 1
    return [p[0] for p in pieces[:count]] == [f[0] for f in full[:count]] and full[count][0].startswith(pieces[-1][0])


def _spans_by_length(messages: list[dict[str, Any]], text: str, contents: list[str],
                     lengths: dict[tuple[int, bool], tuple[int, int]]) -> list[tuple[int, int]]:
    """`_spans`, when every prefix is known to start the text: only the prefixes' lengths are needed."""
    sums = [0]
    for content in contents:
        sums.append(sums[-1] + len(content))

    def bounds(i: int) -> tuple[int, int] | None:
        literal, count = lengths[(i, True)]
        before = literal + sums[count]
        if i + 1 == len(messages):
            upto = len(text)
        else:
            literal, count = lengths[(i + 1, False)]
            upto = literal + sums[count]
        return (before, upto) if before <= upto else None  # both start the text: the shorter starts the longer

    return _spans_by(messages, text, bounds)


def _fill(pieces: list[tuple[str, int]], contents: list[str]) -> str:
    return "".join(literal + (contents[j] if j >= 0 else "") for literal, j in pieces)


def _spans(messages: list[dict[str, Any]], text: str,
           rendered: Callable[[int, bool], str]) -> tuple[str, list[tuple[int, int]]]:
    """`assistant_spans`' rule, given the renders of the prefixes (`rendered(i, add_generation_prompt)`)."""
    def bounds(i: int) -> tuple[int, int] | None:
        upto, before = rendered(i + 1, False), rendered(i, True)
        return (len(before), len(upto)) if text.startswith(upto) and upto.startswith(before) else None

    return text, _spans_by(messages, text, bounds)


def _spans_by(messages: list[dict[str, Any]], text: str,
              bounds: Callable[[int], tuple[int, int] | None]) -> list[tuple[int, int]]:
    """Each weighted assistant turn's span: `bounds(i)` (the renders before and up to turn i > 0, when the
    text starts with both), else where its content is found in the text."""
    spans: list[tuple[int, int]] = []
    searched = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        span = bounds(i) if i else None
        if span is not None:
            spans.append(span)
            continue
        # A template that renders a conversation's start differently: find the answer's text itself.
        start = text.find(message["content"], searched)
        if start < 0:
            continue
        spans.append((start, start + len(message["content"])))
        searched = start + len(message["content"])
    return spans
