"""`kairo-step pull-adapter REF DIR`: fetch an adapter into DIR — the inference pod's init container.

REF names the adapter by tag or by digest (`registry/repo@sha256:…`, what push outputs as `ref`), or an OCI
image layout on disk (`/path@sha256:…`). Every blob is checked against its digest, DIR is replaced whole
(temp folder, then rename). Read: an image in Kaito's layout (the files under `/data`, as Kaito's puller takes
them — kairo's pushes and Kaito's tuning output alike) and the artifact of earlier kairo versions
(`application/vnd.kairo.adapter.v1`); anything else is refused.
A tag is resolved to its digest first and the adapter pulled by that digest, so what was pulled is exactly
what the outputs name (`digest`, and `ref` = `registry/repo@sha256:…`, which the Deployment then pins; `refs`
the same as {DIR's name: ref}). `--adapters-json` pulls every image adapter of Kaito's `inference.adapters`
into `--into/NAME` instead (the generic template's one pull task; `refs` maps each name to its pinned ref).

REF may also be a folder holding a PEFT adapter (`adapter_config.json`): an inference workspace's adapter on a
volume, copied into DIR (outputs empty: a folder has no digest).
Exit codes: 2 for a wrong reference, credentials or artifact; 75 when the registry does not answer.
"""

from __future__ import annotations

import argparse
import logging
import sys

from kairo import exitcodes, stepkit


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step pull-adapter", description=__doc__.split("\n\n")[0])
    parser.add_argument("ref", metavar="REF", nargs="?", default="",
                        help="the adapter: registry/repo:tag, registry/repo@sha256:…, a layout, or a PEFT folder")
    parser.add_argument("dir", metavar="DIR", nargs="?", default="",
                        help="folder to fill with the adapter's files (replaced whole)")
    parser.add_argument("--adapters-json", help="instead of REF DIR: Kaito's inference.adapters as JSON; every image "
                                                "adapter is pulled into --into/NAME (output `refs`: NAME → pinned ref)")
    parser.add_argument("--into", help="with --adapters-json: the folder holding one folder per adapter")
    parser.add_argument("--pull-secret-file", help="dockerconfigjson to authenticate with (mounted file)")
    parser.add_argument("--plain-http", action="store_true", help="talk HTTP, not HTTPS (else: the cluster config)")
    parser.add_argument("--retries", type=int, help="attempts after the first (default: registry.retries)")
    stepkit.add_common_flags(parser, cluster_config=True, outputs="write `digest` and `ref` (pinned) here")
    return parser


log = stepkit.logger("pull-adapter")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="pull-adapter: %(message)s")
    return stepkit.run_step("pull-adapter", _pull, args, registry=True)


def _pull(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from kairo.atomic import write_output

    if args.adapters_json is not None:
        return _pull_all(args)
    if not args.ref or not args.dir:
        log("give REF and DIR, or --adapters-json and --into")
        return exitcodes.BAD_INPUT

    source = Path(args.ref)
    if args.ref.startswith(("/", ".")) and source.is_dir() and not (source / "oci-layout").is_file():
        folder, digest, pinned = _copy_folder(source, Path(args.dir)), "", ""
        if folder is None:
            return exitcodes.BAD_INPUT
    else:
        folder, digest, pinned = _pull_image(args)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    log(f"{args.ref} → {folder} ({', '.join(files)})")
    if args.outputs:
        write_output("digest", digest, args.outputs)
        write_output("ref", pinned, args.outputs)
        write_output("refs", json.dumps({Path(args.dir).name: pinned} if pinned else {}), args.outputs)
    return exitcodes.OK


def _pull_all(args: argparse.Namespace) -> int:
    """Every image adapter of Kaito's `inference.adapters` (JSON) into --into/NAME; `refs` names what was pulled."""
    import json
    from pathlib import Path

    from kairo.atomic import write_output

    try:
        adapters = json.loads(args.adapters_json or "[]")
    except ValueError as err:
        log(f"--adapters-json: not JSON: {err}")
        return exitcodes.BAD_INPUT
    if not isinstance(adapters, list) or not args.into:
        log("--adapters-json takes a list (Kaito's inference.adapters) and needs --into")
        return exitcodes.BAD_INPUT
    # the generic template mounts an optional Secret: a missing file means anonymous
    if args.pull_secret_file and not Path(args.pull_secret_file).is_file():
        args.pull_secret_file = None
    pinned: dict[str, str] = {}
    for entry in adapters:
        source = (entry or {}).get("source") or {} if isinstance(entry, dict) else {}
        name, image = source.get("name", ""), source.get("image", "")
        if not image:
            log(f"{name or '?'}: not an image (a volume adapter is mounted into the inference pod as it is)")
            continue
        args.ref, args.dir = image, str(Path(args.into) / name)
        folder, _, pinned[name] = _pull_image(args)
        log(f"{name}: {image} → {pinned[name]} ({folder})")
    if args.outputs:  # one task for them all: no single digest
        write_output("digest", "", args.outputs)
        write_output("ref", "", args.outputs)
        write_output("refs", json.dumps(pinned, sort_keys=True), args.outputs)
    return exitcodes.OK


def _pull_image(args: argparse.Namespace):
    from kairo.clients import oci
    from kairo.cluster import load_cluster_config

    access = oci.registry_access(args.ref, load_cluster_config(args.cluster_config), auth_file=args.pull_secret_file,
                                 local=stepkit.is_local(args), plain_http=args.plain_http, retries=args.retries)
    digest = oci.resolve(args.ref, access)
    pinned = _pinned(args.ref, digest)
    return oci.pull_adapter(pinned, args.dir, access), digest, pinned


def _pinned(ref: str, digest: str) -> str:
    """`ref` naming exactly `digest`: `registry/repo@sha256:…`, or a layout's `/path@sha256:…`."""
    from kairo.oci.reference import parse_reference

    if ref.startswith(("/", ".")):
        path = ref.split("@", 1)[0]
        head, sep, name = path.rpartition("/")
        return f"{head}{sep}{name.split(':', 1)[0]}@{digest}"
    return str(parse_reference(ref).with_digest(digest))


def _copy_folder(source, dest):
    """An adapter on a volume: checked to be a PEFT adapter, then copied into `dest` (replaced whole)."""
    import shutil

    from kairo.atomic import staged_dir

    if not (source / "adapter_config.json").is_file():
        found = ", ".join(sorted(p.name for p in source.iterdir())[:10]) or "nothing"
        log(f"{source} holds no adapter_config.json (found: {found}) — the volume must hold the PEFT files at its "
            "root, as Kaito mounts it at /mnt/adapter/<name>")
        return None
    with staged_dir(dest) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, symlinks=False)
    return dest


if __name__ == "__main__":
    sys.exit(main())
