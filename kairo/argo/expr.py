"""A small, safe evaluator for the expressions Argo puts in `when`, `depends` and `retryStrategy.expression`.

Only what kairo's own workflows use: literals (strings, numbers, true/false), names with dots
(`lastRetry.exitCode`, `tasks.a.Succeeded`), comparison (`== != < <= > >=`), regex match (`=~`,
`matches`), `&& || !` and the words `and or not`, `+` (strings join, numbers add), parentheses, and the
functions `asInt`, `asFloat`, `string` and `replace(text, old, new)`. Anything else raises ExpressionError —
the local runner (and kairo's checks) refuse what they do not understand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?)
      | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op>==|!=|<=|>=|=~|&&|\|\||[<>!(),+])
      | (?P<name>[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_][A-Za-z0-9_\-]*)*)
    )""",
    re.VERBOSE,
)
_WORD_OPS = {"and": "&&", "or": "||", "not": "!", "matches": "=~"}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "asInt": lambda v: int(float(v)),
    "asFloat": lambda v: float(v),
    "string": lambda v: str(v),
    "replace": lambda text, old, new: str(text).replace(str(old), str(new)),  # expr-lang's builtin
}


class ExpressionError(ValueError):
    """An expression the local runner cannot evaluate."""


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ExpressionError(f"cannot read expression {text!r} at {text[pos:pos + 20]!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "name" and value in _WORD_OPS:
            kind, value = "op", _WORD_OPS[value]
        tokens.append((kind, value))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], names: Mapping[str, Any] | Callable[[str], Any]):
        self.tokens = tokens
        self.pos = 0
        self.lookup = names if callable(names) else (lambda n: _lookup(names, n))

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ExpressionError(f"expected {value or 'a value'}, found {token[1] if token else 'the end'}")
        self.pos += 1
        return token

    def parse(self) -> Any:
        value = self.or_expr()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return value

    def or_expr(self) -> Any:
        value = self.and_expr()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.and_expr()
            value = _truthy(value) or _truthy(right)
        return value

    def and_expr(self) -> Any:
        value = self.not_expr()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.not_expr()
            value = _truthy(value) and _truthy(right)
        return value

    def not_expr(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not _truthy(self.not_expr())
        return self.comparison()

    def comparison(self) -> Any:
        left = self.sum()
        token = self.peek()
        if token and token[0] == "op" and token[1] in ("==", "!=", "<", "<=", ">", ">=", "=~"):
            self.take()
            right = self.sum()
            return _compare(token[1], left, right)
        return left

    def sum(self) -> Any:
        value = self.atom()
        while self.peek() == ("op", "+"):
            self.take()
            right = self.atom()
            if isinstance(value, str) != isinstance(right, str):
                raise ExpressionError(f"cannot add {value!r} and {right!r}")
            value = value + right
        return value

    def atom(self) -> Any:
        kind, value = self.take()
        if kind == "number":
            return float(value) if "." in value else int(value)
        if kind == "string":
            return bytes(value[1:-1], "utf-8").decode("unicode_escape")
        if kind == "op" and value == "(":
            inner = self.or_expr()
            self.take(")")
            return inner
        if kind == "name":
            if self.peek() == ("op", "("):
                if value not in _FUNCTIONS:
                    raise ExpressionError(f"unknown function {value}()")
                self.take("(")
                args = [self.or_expr()]
                while self.peek() == ("op", ","):
                    self.take()
                    args.append(self.or_expr())
                self.take(")")
                try:
                    return _FUNCTIONS[value](*args)
                except (TypeError, ValueError) as err:
                    raise ExpressionError(f"{value}({', '.join(map(repr, args))}): {err}") from None
            if value in ("true", "false"):
                return value == "true"
            return self.lookup(value)
        raise ExpressionError(f"unexpected {value!r}")


def _lookup(names: Mapping[str, Any], dotted: str) -> Any:
    if dotted in names:
        return names[dotted]
    raise ExpressionError(f"unknown name {dotted!r}")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "=~":
        return re.search(str(right), str(left)) is not None
    if isinstance(left, (int, float)) != isinstance(right, (int, float)):
        # Argo compares substituted strings: '2' == 2 holds, as in govaluate after substitution
        try:
            left, right = float(left), float(right)
        except (TypeError, ValueError):
            left, right = str(left), str(right)
    ops = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
           "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
    try:
        return ops[op](left, right)
    except TypeError as err:
        raise ExpressionError(f"cannot compare {left!r} {op} {right!r}") from err


def evaluate(text: str, names: Mapping[str, Any] | Callable[[str], Any] | None = None) -> Any:
    """Evaluate `text` with `names` (a mapping of dotted names, or a function resolving one)."""
    return _Parser(tokenize(text), names or {}).parse()


def evaluate_bool(text: str, names: Mapping[str, Any] | Callable[[str], Any] | None = None) -> bool:
    return _truthy(evaluate(text, names))
