"""`kairo-step push`: publish the trained adapter — one OCI artifact in a registry, or a copy on a volume.

`--image REF`: ORAS push of `<workdir>/adapter/` (artifact type `application/vnd.kairo.adapter.v1`), tagged
with the immutable tag `YYYYMMDD-<12 hex of the digest>`; the moving tag of REF is set by deploy. Pushing the
same adapter again gives the same digest. `--volume-path DIR`: an atomic copy to `DIR/<tag>/`, the digest
computed the same way. Local mode (`--local` or KAIRO_LOCAL=1): when the registry of REF does not answer,
the artifact goes into an OCI image layout at `<workdir>/outputs/oci/` instead, and the log says so.
Outputs: `digest`, `ref` (`registry/repo@sha256:…`, or the copy's path), `tag`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from kairo import exitcodes


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step push", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--image", help="repository to push to, registry/repo[:tag] (tuning.output.image)")
    where.add_argument("--volume-path", help="folder to copy the adapter into instead (tuning.output.volumeSource)")
    parser.add_argument("--push-secret-file", help="dockerconfigjson of tuning.output.imagePushSecret (mounted file)")
    parser.add_argument("--plain-http", action="store_true", help="talk HTTP, not HTTPS (else: the cluster config)")
    parser.add_argument("--annotation", action="append", default=[], metavar="KEY=VALUE",
                        help="a manifest annotation, added to those from kairo.json (wins over them); repeatable")
    parser.add_argument("--retries", type=int, help="attempts after the first (default: registry.retries)")
    parser.add_argument("--retry-wait", type=float, default=1.0, help="seconds before the first retry; doubles")
    parser.add_argument("--workdir", help="work volume (default: $KAIRO_WORKDIR or /kairo/work)")
    parser.add_argument("--outputs", help="folder for output parameters (default: $KAIRO_OUTPUTS or /tmp/outputs)")
    parser.add_argument("--cluster-config", help="cluster config YAML (default: $KAIRO_CLUSTER_CONFIG)")
    parser.add_argument("--local", action="store_true", help="on one machine: fall back to an OCI layout on disk")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    annotations, problems = {}, []
    for item in args.annotation:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--annotation: '{item}' — expected KEY=VALUE")
        annotations[key.strip()] = value
    if args.retries is not None and args.retries < 0:
        problems.append(f"--retries: {args.retries} — 0 or more")
    if problems:
        print("push: " + "\n  ".join(["bad input:", *problems]), file=sys.stderr)
        return exitcodes.BAD_INPUT
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="push: %(message)s")
    try:
        return _push(args, annotations)
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # oras-py may raise SystemExit; the step still ends with a message and a code
        from kairo.clients.oci import RegistryError

        if isinstance(err, RegistryError):
            print(f"push: {err}", file=sys.stderr)
            return err.exit_code
        print(f"push: failed unexpectedly: {type(err).__name__}: {err}", file=sys.stderr)
        return exitcodes.TRANSIENT if isinstance(err, (SystemExit, OSError)) else exitcodes.FAILED


def _push(args: argparse.Namespace, annotations: dict[str, str]) -> int:
    from kairo.atomic import write_output
    from kairo.clients import oci
    from kairo.cluster import load_cluster_config

    workdir = Path(args.workdir or os.environ.get("KAIRO_WORKDIR") or "/kairo/work")
    adapter_dir = workdir / "adapter"
    cluster = load_cluster_config(args.cluster_config)
    local = args.local or os.environ.get("KAIRO_LOCAL") == "1" or cluster.local
    if args.volume_path:
        result = _copy_to_volume(adapter_dir, Path(args.volume_path), annotations)
    else:
        reference = oci.parse(args.image)
        plain_http = args.plain_http or oci.is_plain_http(reference.registry, cluster, local=local)
        if local and not oci.registry_answers(reference, plain_http=plain_http):
            layout = workdir / "outputs" / "oci"
            result = oci.write_local_layout(adapter_dir, layout, annotations)
            print(f"push: registry {reference.registry} does not answer — wrote the adapter to the OCI layout "
                  f"{layout} instead (local mode)", file=sys.stderr)
        else:
            if reference.tag:
                print(f"push: the tag '{reference.tag}' of --image is moved by deploy once the adapter is deployed; "
                      "this push sets the immutable tag only", file=sys.stderr)
            retries = cluster.registry.retries if args.retries is None else args.retries
            result = oci.push_adapter(adapter_dir, reference, auth_file=args.push_secret_file, plain_http=plain_http,
                                      annotations=annotations, retries=retries, retry_wait=args.retry_wait)
            print(f"push: pushed {reference.name}:{result.tag} ({result.digest})", file=sys.stderr)
    for note in result.notes:
        print(f"push: note: {note}", file=sys.stderr)
    for name in ("digest", "ref", "tag"):
        write_output(name, getattr(result, name), args.outputs)
    print(result.digest)
    return exitcodes.OK


def _copy_to_volume(adapter_dir: Path, volume: Path, annotations: dict[str, str]):
    """Copy the adapter into `volume/<tag>/` (temp folder, then rename: the volume root may be a mount point)."""
    from kairo import artifact
    from kairo.atomic import staged_dir
    from kairo.clients.oci import PushResult, UnsafeContent

    try:
        described = artifact.adapter_artifact(adapter_dir, annotations)
    except artifact.AdapterFolderError as err:
        raise UnsafeContent(str(err)) from None
    if not volume.is_dir():
        raise UnsafeContent(f"--volume-path: {volume} is not a folder — is tuning.output.volumeSource mounted?")
    target = volume / described.tag
    with staged_dir(target) as staged:
        artifact.copy_adapter(described, staged)
        # The manifest the digest is of; hidden, so pushing this copy again gives the same digest.
        (staged / ".oci-manifest.json").write_bytes(described.manifest)
    print(f"push: copied the adapter to {target} (digest {described.digest})", file=sys.stderr)
    return PushResult(described.digest, str(target), described.tag, "volume", described.notes)


if __name__ == "__main__":
    sys.exit(main())
