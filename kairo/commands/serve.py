"""`kairo serve`: run the inference server on this machine (the program `kairo-step serve` runs in a pod)."""

from __future__ import annotations

import argparse

from kairo.serving.options import add_arguments, config_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve", help="serve a base model and adapters: Kaito's /chat and the OpenAI API",
        description="Serve a preset's base model with LoRA adapters. Kaito's POST /chat, OpenAI's "
                    "/v1/chat/completions, /v1/completions and /v1/models, /health, /ready and /metrics.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from kairo.serving.server import run as serve

    return serve(config)
