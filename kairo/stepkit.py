"""What every step shares: the common flags, a log line named after the step, and the exit-code boundary.

docs/steps.md's "Common rules" is the contract kept here: `--workdir` (default `$KAIRO_WORKDIR`, else
`/kairo/work`), `--outputs` (`$KAIRO_OUTPUTS`, else `/tmp/outputs`), `--cluster-config`, `--kubeconfig`,
and local mode by `--local` or `KAIRO_LOCAL=1`. A flag given an empty value counts as not given. Each step
adds only the flags it uses, with its own help text where it has something of its own to say.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kairo import contract, exitcodes
from kairo.problems import InvalidInput

if TYPE_CHECKING:
    from kairo.presets import Preset

DEFAULT_WORKDIR = contract.WORKDIR
DEFAULT_OUTPUTS = contract.OUTPUTS

HELP = {
    "workdir": "work volume (default: $KAIRO_WORKDIR or /kairo/work)",
    "outputs": "folder for output parameters (default: $KAIRO_OUTPUTS or /tmp/outputs)",
    "cluster_config": "cluster config YAML (default: $KAIRO_CLUSTER_CONFIG)",
    "kubeconfig": "kubeconfig file (default: in-cluster credentials, else KUBECONFIG)",
    "local": "on this machine instead of a cluster (or KAIRO_LOCAL=1)",
}


def add_common_flags(parser: argparse.ArgumentParser, *, workdir: bool | str = False, outputs: bool | str = False,
                     cluster_config: bool | str = False, kubeconfig: bool | str = False,
                     local: bool | str = False) -> None:
    """Add the common flags a step uses: True gives a flag its usual help, a string the step's own help."""
    def help_for(name: str, given: bool | str) -> str:
        return given if isinstance(given, str) else HELP[name]

    if workdir:
        parser.add_argument("--workdir", help=help_for("workdir", workdir))
    if outputs:
        parser.add_argument("--outputs", help=help_for("outputs", outputs))
    if cluster_config:
        parser.add_argument("--cluster-config", help=help_for("cluster_config", cluster_config))
    if kubeconfig:
        parser.add_argument("--kubeconfig", help=help_for("kubeconfig", kubeconfig))
    if local:
        parser.add_argument("--local", action="store_true", help=help_for("local", local))


def workdir(args: argparse.Namespace) -> Path:
    """The work volume: --workdir, else $KAIRO_WORKDIR, else /kairo/work."""
    return Path(getattr(args, "workdir", None) or os.environ.get("KAIRO_WORKDIR") or DEFAULT_WORKDIR)


def outputs(args: argparse.Namespace) -> Path:
    """The folder for output parameters and artifacts: --outputs, else $KAIRO_OUTPUTS, else /tmp/outputs."""
    return Path(getattr(args, "outputs", None) or os.environ.get("KAIRO_OUTPUTS") or DEFAULT_OUTPUTS)


def is_local(args: argparse.Namespace) -> bool:
    """A run on this machine: --local, or KAIRO_LOCAL=1 (what `kairo run --local` sets for every step)."""
    return bool(getattr(args, "local", False)) or os.environ.get("KAIRO_LOCAL") == "1"


def mounted_secret(path: str | None, image: str, log: Callable[[str], None]) -> str | None:
    """The pull secret file to use for `image`: `path`, or None (no credentials) when it is not there.

    The generic template mounts its pull secrets optionally: a Secret that does not exist means a public image.
    """
    if path and not Path(path).exists():
        log(f"no pull secret at {path}; pulling {image} without credentials")
        return None
    return path or None


def logger(step: str) -> Callable[[str], None]:
    """A `log(message)` writing `step: message` to stderr, the form of every step's log lines."""
    def log(message: str) -> None:
        print(f"{step}: {message}", file=sys.stderr, flush=True)

    return log


class StepFailed(Exception):
    """A failure whose exit code was decided where it happened (2 the user's to fix, 75 worth a retry, 1)."""

    def __init__(self, message: str, code: int = exitcodes.BAD_INPUT):
        super().__init__(message)
        self.code = code


def preset(name: str) -> Preset:
    """The preset called `name`; StepFailed (exit 2) naming the close ones when there is none."""
    from kairo.presets import get_preset

    try:
        return get_preset(name)
    except KeyError as err:
        raise StepFailed(str(err.args[0])) from None


def run_step(step: str, body: Callable[[argparse.Namespace], int], args: argparse.Namespace, *,
             registry: bool = False) -> int:
    """Run `body(args)`; bad input exits 2 and a StepFailed with its own code, each with a line saying why.

    `registry=True` for a step whose work is oras-py's: it may end a failure with SystemExit or any other
    exception, and the step still ends with a message and a code (a RegistryError's own; 75 for SystemExit
    and OSError, which a retry may get past; else 1).
    """
    log = logger(step)
    try:
        return body(args)
    except InvalidInput as err:
        log(err.render())
        return exitcodes.BAD_INPUT
    except StepFailed as err:
        log(str(err))
        return err.code
    except KeyboardInterrupt:
        raise
    except BaseException as err:
        if not registry:
            raise
        # A RegistryError decided its own code where it happened; read it without importing the client, which
        # lives a layer above (docs/architecture.md).
        code = getattr(err, "exit_code", None)
        if isinstance(code, int) and not isinstance(err, SystemExit):
            log(str(err))
            return code
        log(f"failed unexpectedly: {type(err).__name__}: {err}")
        return exitcodes.TRANSIENT if isinstance(err, (SystemExit, OSError)) else exitcodes.FAILED
