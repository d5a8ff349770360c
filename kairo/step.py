"""`kairo-step NAME …`: run one pipeline step, the program an Argo task's container runs."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys

import kairo.steps
from kairo import exitcodes
from kairo.problems import InvalidInput


def step_names() -> list[str]:
    """Every step, as `kairo-step` spells it (dashes)."""
    return sorted(
        m.name.replace("_", "-") for m in pkgutil.iter_modules(kairo.steps.__path__) if not m.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: kairo-step NAME [ARGS…]\n\nsteps: " + ", ".join(step_names()))
        return 0 if argv else exitcodes.BAD_INPUT
    name, rest = argv[0], argv[1:]
    module_name = f"kairo.steps.{name.replace('-', '_')}"
    if name.startswith("_") or importlib.util.find_spec(module_name) is None:
        print(f"kairo-step: unknown step '{name}' — steps: {', '.join(step_names())}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    module = importlib.import_module(module_name)
    try:
        return int(module.main(rest) or 0)
    except InvalidInput as err:
        print(err.render(), file=sys.stderr)
        return exitcodes.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
