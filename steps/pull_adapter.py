"""`kairo-step pull-adapter REF DIR`: fetch a kairo adapter into DIR — the inference pod's init container.

REF names the adapter by tag or by digest (`registry/repo@sha256:…`, what push outputs as `ref`), or an OCI
image layout on disk (`/path@sha256:…`). Every blob is checked against its digest, DIR is replaced whole
(temp folder, then rename), and anything but a kairo adapter (`application/vnd.kairo.adapter.v1`) is refused.
Exit codes: 2 for a wrong reference, credentials or artifact; 75 when the registry does not answer.
"""

from __future__ import annotations

import argparse
import logging
import sys

from kairo import exitcodes, stepkit


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step pull-adapter", description=__doc__.split("\n\n")[0])
    parser.add_argument("ref", metavar="REF", help="the adapter: registry/repo:tag, registry/repo@sha256:…, or a layout")
    parser.add_argument("dir", metavar="DIR", help="folder to fill with the adapter's files (replaced whole)")
    parser.add_argument("--pull-secret-file", help="dockerconfigjson to authenticate with (mounted file)")
    parser.add_argument("--plain-http", action="store_true", help="talk HTTP, not HTTPS (else: the cluster config)")
    parser.add_argument("--retries", type=int, help="attempts after the first (default: registry.retries)")
    stepkit.add_common_flags(parser, cluster_config=True)
    return parser


log = stepkit.logger("pull-adapter")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="pull-adapter: %(message)s")
    return stepkit.run_step("pull-adapter", _pull, args, registry=True)


def _pull(args: argparse.Namespace) -> int:
    from kairo.clients import oci
    from kairo.cluster import load_cluster_config

    access = oci.registry_access(args.ref, load_cluster_config(args.cluster_config), auth_file=args.pull_secret_file,
                                 local=stepkit.is_local(args), plain_http=args.plain_http, retries=args.retries)
    folder = oci.pull_adapter(args.ref, args.dir, access)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    log(f"{args.ref} → {folder} ({', '.join(files)})")
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
