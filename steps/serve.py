"""`kairo-step serve`: the inference server — a base model and its LoRA adapters behind Kaito's `/chat`
and the OpenAI API (`/v1/chat/completions`, `/v1/completions`, `/v1/models`), with `/health`, `/ready`
and Prometheus `/metrics`. The same program as `kairo serve`.

Exit codes: SIGTERM/SIGINT stop it gracefully (the process then ends by that signal), 2 bad flags / an adapter or model that cannot be loaded, 75 a pull or download
that may pass on a retry.
"""

from __future__ import annotations

import argparse
import sys

from kairo.serving.options import add_arguments, config_from_args


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step serve", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    config = config_from_args(args)  # InvalidInput → exit 2 with every mistake listed
    from kairo.serving.server import run

    return run(config)


if __name__ == "__main__":
    sys.exit(main())
