"""`kairo-step smoke`: ask the deployed service one question through each API it promises, Kaito's
`POST /chat` (the body Kaito's docs show) and OpenAI's `POST /v1/chat/completions`, and fail unless both
answer 200 with an answer in the expected shape. Prints both answers. Output: `chat-answer`.

Exit codes: 0 both answered, 1 one answered wrongly (its status and body are printed), 2 bad flags,
75 the service did not answer at all (not listening, or still loading after --wait seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kairo import exitcodes, stepkit

API_KEY_ENV = "KAIRO_API_KEY"
DEFAULT_PROMPT = "What is the capital of France?"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the service, e.g. http://my-workspace.default.svc")
    parser.add_argument("--model", default="", help="the adapter or base model to ask (default: the server's)")
    parser.add_argument("--api-key-file", help=f"bearer token file (env {API_KEY_ENV} works too)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the question to ask")
    parser.add_argument("--max-tokens", type=int, default=32, help="new tokens for the OpenAI request")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one request may take")
    parser.add_argument("--wait", type=float, default=60,
                        help="seconds to keep trying while the service is not listening or still loading")
    parser.add_argument("--openai-only", action="store_true",
                        help="ask only /v1/chat/completions (vLLM serves no Kaito /chat, nor does Kaito's vLLM runtime)")
    parser.add_argument("--runtime", default="", help="the kaito.sh/runtime annotation: vllm means --openai-only")
    stepkit.add_common_flags(parser, outputs=True)
    return parser


log = stepkit.logger("smoke")


@dataclass
class Answer:
    """What the service said: the HTTP status (0 when it did not answer), the body, and the JSON in it."""

    status: int
    body: str
    data: Any = None


class NoAnswer(Exception):
    """The service did not answer (refused, unreachable, timed out, or still loading)."""


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from kairo.atomic import write_output

    try:
        key = _api_key(args.api_key_file)
    except OSError as err:
        log(f"--api-key-file {args.api_key_file}: {err.strerror}")
        return exitcodes.BAD_INPUT
    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        log(f"--url '{args.url}' — give an http:// or https:// URL")
        return exitcodes.BAD_INPUT
    model = {"model": args.model} if args.model else {}
    checks = [
        ("POST /chat", f"{url}/chat", {"prompt": args.prompt, **model}, _kaito_result),
        ("POST /v1/chat/completions", f"{url}/v1/chat/completions",
         {**model, "messages": [{"role": "user", "content": args.prompt}], "max_tokens": args.max_tokens},
         _openai_content),
    ]
    if args.openai_only or args.runtime == "vllm":
        checks = checks[1:]
    answers: list[str] = []
    deadline = time.monotonic() + args.wait
    for label, endpoint, body, read in checks:
        try:
            answer = _post(endpoint, body, key, args.timeout, deadline)
        except NoAnswer as err:
            log(f"{label}: the service did not answer: {err}")
            return exitcodes.TRANSIENT
        text = read(answer.data) if answer.status == 200 else None
        if text is None:
            log(f"{label} failed with HTTP {answer.status}: {answer.body[:2000]}")
            return exitcodes.FAILED
        print(f"{label} → {text}")
        answers.append(text)
    write_output("chat-answer", answers[0], stepkit.outputs(args))
    log(f"{url} answered {'both' if len(checks) == 2 else 'the OpenAI API'}")
    return exitcodes.OK


def _post(url: str, body: dict[str, Any], key: str, timeout: float, deadline: float) -> Answer:
    """POST `body`; keeps trying until `deadline` while nothing listens or the model is still loading."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    wait = 1.0
    while True:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 — http(s) checked above
                answer = Answer(response.status, response.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as err:
            answer = Answer(err.code, err.read().decode("utf-8", "replace"))
            if err.code != 503:
                return _parsed(answer)
            problem = f"HTTP 503: {answer.body[:500]}"
        except (urllib.error.URLError, OSError) as err:
            problem = str(getattr(err, "reason", err))
        else:
            return _parsed(answer)
        if time.monotonic() + wait > deadline:
            raise NoAnswer(problem)
        time.sleep(wait)
        wait = min(wait * 2, 10)


def _parsed(answer: Answer) -> Answer:
    try:
        answer.data = json.loads(answer.body)
    except ValueError:
        answer.data = None
    return answer


def _kaito_result(data: Any) -> str | None:
    result = data.get("Result") if isinstance(data, dict) else None
    return result if isinstance(result, str) else None


def _openai_content(data: Any) -> str | None:
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def _api_key(path: str | None) -> str:
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(API_KEY_ENV, "").strip()


if __name__ == "__main__":
    sys.exit(main())
