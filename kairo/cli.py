"""`kairo`: the user's command line. Each subcommand lives in its own module under kairo.commands."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import kairo.commands
from kairo import __version__
from kairo.problems import InvalidInput


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kairo",
        description="Fine-tune LLMs Kaito-style, every run an Argo Workflow. Start with `kairo validate FILE`.",
    )
    parser.add_argument("--version", action="version", version=f"kairo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(kairo.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"kairo.commands.{info.name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 failed, 2 bad input)."""
    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InvalidInput as err:
        print(err.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `kairo presets | head`: the reader left; say nothing more, and keep Python's exit flush quiet too.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
