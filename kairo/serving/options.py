"""The server's options: the flags `kairo serve` and `kairo-step serve` share, parsed into a ServerConfig.

Nothing heavy is imported here, so `--help` and flag mistakes answer at once.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from kairo.problems import InvalidInput, Problem, show
from kairo.spec.inference import COMBINED_ADAPTER  # Kaito's name for the weighted adapter

API_KEY_ENV = "KAIRO_API_KEY"
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")  # Kaito's adapter names are DNS subdomains
# Kaito's transformers runtime combines by SVD unless told otherwise (inference_api.py, ModelConfig.combination_type).
COMBINATION_TYPES = ("svd", "linear", "cat", "ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd",
                     "dare_ties_svd", "magnitude_prune", "magnitude_prune_svd")


@dataclass(frozen=True)
class AdapterSource:
    """One `--adapter NAME=DIR|REF`: the name clients put in `model`, and where the weights are.

    REF is a registry reference (`registry/repo:tag`, `…@sha256:…`) or an OCI layout on disk (`/path@sha256:…`).
    """

    name: str
    path: Path | None = None  # a local folder holding the PEFT files
    ref: str = ""  # an OCI reference pulled at start-up
    digest: str = ""  # sha256:… of the weights, reported by /health and /v1/models (a reference's own by default)
    from_file: bool = False  # declared by the adapters file (which may drop it later), not by an --adapter flag
    strength: float | None = None  # the adapters file's weight for it in COMBINED_ADAPTER (--strength's otherwise)

    def __post_init__(self) -> None:
        if not self.digest and "@sha256:" in self.ref:
            object.__setattr__(self, "digest", self.ref.rsplit("@", 1)[1])

    def describe(self) -> str:
        return str(self.path) if self.path is not None else self.ref


@dataclass(frozen=True)
class ServerConfig:
    """Everything the inference server is started with."""

    preset: str
    model_dir: Path | None = None
    adapters: tuple[AdapterSource, ...] = ()
    host: str = "127.0.0.1"
    port: int = 5000
    api_key: str = field(default="", repr=False)  # never printed
    device: str = "auto"  # auto | cpu | cuda
    quantize: str = "auto"  # auto | none | 4bit
    max_tokens_cap: int = 1024  # the most new tokens one request may ask for
    default_max_tokens: int = 256  # new tokens when a chat request names none
    max_request_tokens: int = 65536  # the most tokens (prompts and new, every row) one request may ask for
    max_batch_size: int = 32
    batch_wait_ms: float = 20.0  # how long the first request of a batch waits for company
    mixed_batches: str = "stacked"  # stacked | peft: how rows of different adapters share a generate call
    max_body_bytes: int = 4 * 1024 * 1024
    cache_dir: Path | None = None  # where pulled adapters and built models are kept
    pull_secret_file: Path | None = None
    plain_http: bool = False
    token_file: Path | None = None
    adapters_file: Path | None = None  # the mounted ConfigMap declaring the served adapters, watched for changes
    watch_interval_s: float = 1.0  # how often the adapters file is read again
    # --strength NAME=WEIGHT: the adapters are also served weighted into COMBINED_ADAPTER, as Kaito's transformers
    # runtime serves them (an adapter given no strength weighs 1.0, Kaito's default).
    strengths: tuple[tuple[str, float], ...] = ()
    combination_type: str = "svd"
    max_model_len: int | None = None  # caps the preset's context length (Kaito's vllm.max-model-len)

    @property
    def weights(self) -> dict[str, float]:
        """Each adapter's weight in the combined adapter; empty when no strength was given (no combination)."""
        given = dict(self.strengths) | {a.name: a.strength for a in self.adapters if a.strength is not None}
        return {a.name: given.get(a.name, 1.0) for a in self.adapters} if given else {}

    @property
    def default_model(self) -> str:
        """The model a request gets when it names none: the combined adapter, else the first, else the base."""
        if self.weights:
            return COMBINED_ADAPTER
        return self.adapters[0].name if self.adapters else self.preset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve flags, identical for `kairo serve` and `kairo-step serve`."""
    parser.add_argument("--preset", required=True, help="the base model preset, e.g. phi-3-mini-4k-instruct")
    parser.add_argument("--model-dir", help="a folder holding the base model (default: fetched for the preset)")
    parser.add_argument(
        "--adapter", action="append", default=[], metavar="NAME=DIR|REF",
        help="an adapter to serve under NAME, from a folder or an OCI reference (oci://REF to say so; Kaito's image "
             "layout and earlier kairo artifacts are read); repeatable, the first is the default",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    parser.add_argument(
        "--api-key-file", metavar="FILE",
        help=f"require this bearer token (file content); env {API_KEY_ENV} works too. /health and /ready stay open",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the model runs")
    parser.add_argument(
        "--quantize", choices=["auto", "none", "4bit"], default="auto",
        help="load the base in 4-bit NF4 (auto: when an adapter was trained with qlora, as it was trained)",
    )
    parser.add_argument("--max-tokens-cap", type=int, default=1024, help="most new tokens one request may ask for")
    parser.add_argument("--default-max-tokens", type=int, default=256,
                        help="new tokens for a chat request that names no max_tokens")
    parser.add_argument("--max-request-tokens", type=int, default=65536,
                        help="most tokens one request may ask for: every prompt × n, its tokens plus max_tokens")
    parser.add_argument("--max-batch-size", type=int, default=32, help="most requests run in one generate call")
    parser.add_argument("--batch-wait-ms", type=float, default=20.0,
                        help="how long a request waits for others to share its batch (milliseconds)")
    parser.add_argument("--mixed-batches", choices=["stacked", "peft"], default="stacked",
                        help="how rows for different adapters share a generate call: the adapters' LoRA weights "
                             "stacked per layer, or PEFT's own adapter_names= path (slower; for comparison)")
    parser.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="largest request body accepted")
    parser.add_argument("--cache-dir", help="where pulled adapters and built models are kept "
                                            "(default: $KAIRO_CACHE or ~/.cache/kairo)")
    parser.add_argument("--pull-secret-file", metavar="FILE", help="dockerconfigjson to pull adapter references with")
    parser.add_argument("--plain-http", action="store_true", help="pull adapter references over plain HTTP")
    parser.add_argument("--token-file", metavar="FILE", help="Hugging Face token for gated base models")
    parser.add_argument("--adapters-file", metavar="FILE",
                        help="a JSON document declaring the adapters to serve (the mounted ConfigMap); watched: "
                             "a newly named adapter is loaded beside the running one and switched to without a restart")
    parser.add_argument("--watch-interval", type=float, default=1.0, help="seconds between reads of --adapters-file")

    parser.add_argument("--strength", action="append", default=[], metavar="NAME=WEIGHT",
                        help=f"serve the adapters also weighted into '{COMBINED_ADAPTER}' (the default model), as "
                             "Kaito's transformers runtime does; WEIGHT from 0 to 1, 1.0 for an adapter not named")
    parser.add_argument("--combination-type", choices=COMBINATION_TYPES, default="svd",
                        help="how PEFT combines the weighted adapters (default svd, as Kaito's runtime)")
    parser.add_argument("--max-model-len", type=int, help="cap the context length (Kaito's vllm.max-model-len)")


OCI_SCHEME = "oci://"


def parse_adapter(text: str, index: int = 0) -> AdapterSource:
    """`NAME=DIR`, `NAME=REF` or `NAME=oci://REF` → AdapterSource; InvalidInput says what is wrong with it."""
    where = f"--adapter[{index}]"
    name, sep, value = text.partition("=")
    if not sep or not value:
        raise InvalidInput([Problem(where, f"{show(text)} — expected NAME=DIR or NAME=REF, e.g. my-adapter=/adapters/a")])
    if not _ADAPTER_NAME.match(name):
        raise InvalidInput([Problem(where, f"adapter name {show(name)} — use letters, digits, '-' and '_' "
                                           "(at most 63, starting with a letter or digit)")])
    if value.startswith(OCI_SCHEME):  # `NAME=oci://REF` says outright that REF is an image, never a folder
        value = value[len(OCI_SCHEME):]
        if not value:
            raise InvalidInput([Problem(where, f"{show(text)} — oci:// names no image, e.g. oci://ghcr.io/me/adapter:v1")])
        if value.startswith(("/", ".")):
            return AdapterSource(name, ref=value)
        return AdapterSource(name, ref=_checked_reference(value, where))
    path = Path(value).expanduser()
    if (path / "adapter_config.json").is_file():
        return AdapterSource(name, path=path)
    if value.startswith(("/", ".")) and ("@" in value or ":" in path.name or (path / "oci-layout").is_file()):
        return AdapterSource(name, ref=value)  # an OCI image layout on disk (`push` writes one offline)
    if path.is_dir() or value.startswith(("/", ".", "~")):
        return AdapterSource(name, path=path)
    return AdapterSource(name, ref=_checked_reference(value, where))


def _checked_reference(value: str, where: str) -> str:
    from kairo.oci.reference import ReferenceError, parse_reference

    try:
        parse_reference(value)
    except ReferenceError as err:
        raise InvalidInput([Problem(where, f"{show(value)} is neither a folder nor an OCI reference ({err})")]) from err
    return value


def read_api_key(path: str | None) -> str:
    """The bearer token from `--api-key-file`, else from $KAIRO_API_KEY, else '' (no token required)."""
    if path:
        try:
            key = Path(path).read_text().strip()
        except OSError as err:
            raise InvalidInput([Problem("--api-key-file", f"cannot read {show(path)}: {err.strerror}")]) from err
        if not key:
            raise InvalidInput([Problem("--api-key-file", f"{show(path)} is empty — put the token in it")])
        return key
    return os.environ.get(API_KEY_ENV, "").strip()


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Check the parsed flags and build the ServerConfig; InvalidInput lists every mistake at once."""
    from kairo.presets import get_preset

    problems: list[Problem] = []
    try:
        get_preset(args.preset)
    except KeyError as err:
        problems.append(Problem("--preset", str(err.args[0])))
    given: list[tuple[int, AdapterSource]] = []  # with its place on the command line, for the messages
    for i, text in enumerate(args.adapter):
        try:
            given.append((i, parse_adapter(text, i)))
        except InvalidInput as err:
            problems += err.problems
    if args.adapters_file:
        try:
            given += [(len(given) + i, a) for i, a in enumerate(adapters_from_file(Path(args.adapters_file)))]
        except InvalidInput as err:
            problems += err.problems
    adapters = [a for _, a in given]
    names = [a.name for a in adapters]
    for n, (i, adapter) in enumerate(given):
        if adapter.name in names[:n]:
            problems.append(Problem(f"--adapter[{i}]", f"the name {show(adapter.name)} is used twice"))
        if adapter.name == args.preset:
            problems.append(Problem(f"--adapter[{i}]", f"{show(adapter.name)} is the preset's name, which "
                                                       "addresses the base model — pick another"))
        if adapter.path is not None and not (adapter.path / "adapter_config.json").is_file():
            problems.append(Problem(f"--adapter[{i}]", f"{show(str(adapter.path))} holds no adapter_config.json "
                                                       "— point it at a folder PEFT saved"))
    strengths = _strengths(args.strength, set(names), problems, any(a.strength is not None for a in adapters))
    model_dir = Path(args.model_dir).expanduser() if args.model_dir else None
    if model_dir is not None and not (model_dir / "config.json").is_file():
        problems.append(Problem("--model-dir", f"{show(str(model_dir))} holds no config.json — run fetch-model "
                                               "or leave --model-dir out to fetch the preset"))
    for flag, value, least in (("--port", args.port, 0), ("--max-tokens-cap", args.max_tokens_cap, 1),
                               ("--default-max-tokens", args.default_max_tokens, 1),
                               ("--max-request-tokens", args.max_request_tokens, 2),
                               ("--max-batch-size", args.max_batch_size, 1), ("--max-body-bytes", args.max_body_bytes, 1),
                               ("--batch-wait-ms", args.batch_wait_ms, 0),
                               ("--max-model-len", 1 if args.max_model_len is None else args.max_model_len, 1)):
        if value < least:
            problems.append(Problem(flag, f"{value} — must be at least {least}"))
    api_key = ""
    try:
        api_key = read_api_key(args.api_key_file)
    except InvalidInput as err:
        problems += err.problems
    if problems:
        raise InvalidInput(problems)
    cache = args.cache_dir or os.environ.get("KAIRO_CACHE") or Path.home() / ".cache" / "kairo"
    return ServerConfig(
        preset=args.preset, model_dir=model_dir, adapters=tuple(adapters), host=args.host, port=args.port,
        api_key=api_key, device=args.device, quantize=args.quantize, max_tokens_cap=args.max_tokens_cap,
        default_max_tokens=min(args.default_max_tokens, args.max_tokens_cap), max_batch_size=args.max_batch_size,
        max_request_tokens=args.max_request_tokens,
        batch_wait_ms=args.batch_wait_ms, mixed_batches=args.mixed_batches, max_body_bytes=args.max_body_bytes, cache_dir=Path(cache),
        pull_secret_file=Path(args.pull_secret_file) if args.pull_secret_file else None,
        plain_http=args.plain_http, token_file=Path(args.token_file) if args.token_file else None,
        adapters_file=Path(args.adapters_file) if args.adapters_file else None,
        watch_interval_s=max(args.watch_interval, 0.05),
        strengths=strengths, combination_type=args.combination_type, max_model_len=args.max_model_len,
    )


def adapters_from_file(path: Path) -> list[AdapterSource]:
    """The adapters the document at `path` declares (kairo.manifests.adapters); InvalidInput when unreadable."""
    from kairo.manifests.adapters import BadDeclaration, read_adapters_document

    try:
        declared = read_adapters_document(path.read_text())
    except OSError as err:
        raise InvalidInput([Problem("--adapters-file", f"cannot read {show(str(path))}: {err.strerror}")]) from err
    except BadDeclaration as err:
        raise InvalidInput([Problem("--adapters-file", f"{show(str(path))}: {err}")]) from err
    return [source_of(a.name, a.ref, a.path, a.digest, from_file=True, strength=a.strength) for a in declared]


def source_of(name: str, ref: str = "", path: str = "", digest: str = "", from_file: bool = False,
              strength: float | None = None) -> AdapterSource:
    """An AdapterSource for a declared adapter: a folder, or a reference (a registry's, or a layout on disk)."""
    if path:
        return AdapterSource(name, path=Path(path), digest=digest, from_file=from_file, strength=strength)
    return AdapterSource(name, ref=ref, digest=digest, from_file=from_file, strength=strength)


def _strengths(pairs: list[str], names: set[str], problems: list[Problem],
               in_file: bool = False) -> tuple[tuple[str, float], ...]:
    """`--strength NAME=WEIGHT` for served adapters, WEIGHT in [0, 1] (Kaito's rule); `in_file`: the adapters file
    gives strengths too."""
    found: dict[str, float] = {}
    for i, pair in enumerate(pairs):
        name, sep, text = pair.partition("=")
        where = f"--strength[{i}]"
        try:
            weight = float(text)
        except ValueError:
            weight = float("nan")
        if not sep or name not in names:
            problems.append(Problem(where, f"{show(pair)} — expected NAME=WEIGHT for an adapter given with --adapter"))
        elif not 0 <= weight <= 1:
            problems.append(Problem(where, f"{show(text)} — a number from 0 to 1"))
        else:
            found[name] = weight
    if COMBINED_ADAPTER in names and (found or in_file):
        problems.append(Problem("--adapter", f"'{COMBINED_ADAPTER}' names the combined adapter — rename that adapter"))
    return tuple(found.items())
