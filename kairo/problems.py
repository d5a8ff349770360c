"""Problems found in user input: each names the field, the value and what is allowed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Problem:
    """One mistake (or warning) in a file the user wrote, located by its field path."""

    path: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = self.path or "(file)"
        return f"{where}: {self.message}"


class InvalidInput(Exception):
    """Raised with every problem found, so the user can fix them all in one go."""

    def __init__(self, problems: list[Problem], source: str = ""):
        self.problems = [p for p in problems if p.severity == "error"]
        self.warnings = [p for p in problems if p.severity == "warning"]
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.source}: " if self.source else ""
        count = len(self.problems)
        lines = [f"{head}{count} problem{'s' if count != 1 else ''} found"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def path_of(loc: tuple[str | int, ...]) -> str:
    """Render a pydantic/JSON location as the dotted path a YAML author reads: `a.b[1].c`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def show(value: object, limit: int = 80) -> str:
    """Quote a user value for an error message, shortened when long."""
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= limit else text[: limit - 1] + "…'"
