"""`kairo-step push`: publish the trained adapter — one OCI artifact in a registry, or a copy on a volume.

`--image REF`: push of `<workdir>/adapter/` as an OCI image in Kaito's layout (its files under `data/` in
one reproducible tar+gzip layer, an image config with `rootfs.diff_ids`, `sh.kaito.model.name`), tagged
with the immutable tag `YYYYMMDD-<12 hex of the digest>`; the moving tag of REF is set by deploy. Pushing the
same adapter again gives the same digest. `--volume-path DIR`: an atomic copy to `DIR/<tag>/`, the digest
computed the same way. Local mode (`--local` or KAIRO_LOCAL=1): when the registry of REF does not answer,
the artifact goes into an OCI image layout at `<workdir>/outputs/oci/` instead, and the log says so.
Outputs: `digest`, `ref` (`registry/repo@sha256:…`, or the copy's path), `tag`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kairo import exitcodes, stepkit


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
    stepkit.add_common_flags(parser, workdir=True, outputs=True, cluster_config=True,
                             local="on one machine: fall back to an OCI layout on disk")
    return parser


log = stepkit.logger("push")


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
        log("\n  ".join(["bad input:", *problems]))
        return exitcodes.BAD_INPUT
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="push: %(message)s")
    return stepkit.run_step("push", lambda parsed: _push(parsed, annotations), args, registry=True)


def _push(args: argparse.Namespace, annotations: dict[str, str]) -> int:
    from kairo.atomic import write_output
    from kairo.clients import oci
    from kairo.cluster import load_cluster_config

    workdir = stepkit.workdir(args)
    adapter_dir = workdir / "adapter"
    cluster = load_cluster_config(args.cluster_config)
    local = stepkit.is_local(args) or cluster.local
    if args.volume_path:
        result = _copy_to_volume(adapter_dir, Path(args.volume_path), annotations)
    else:
        reference = oci.parse(args.image)
        access = oci.registry_access(reference, cluster, auth_file=args.push_secret_file, local=local,
                                     plain_http=args.plain_http, retries=args.retries, retry_wait=args.retry_wait)
        if local and not oci.registry_answers(reference, access):
            layout = workdir / "outputs" / "oci"
            result = oci.write_local_layout(adapter_dir, layout, annotations)
            log(f"registry {reference.registry} does not answer — wrote the adapter to the OCI layout {layout} "
                "instead (local mode)")
        else:
            if reference.tag:
                log(f"the tag '{reference.tag}' of --image is moved by deploy once the adapter is deployed; this "
                    "push sets the immutable tag only")
            result = oci.push_adapter(adapter_dir, reference, access, annotations=annotations)
            log(f"pushed {reference.name}:{result.tag} ({result.digest})")
    for note in result.notes:
        log(f"note: {note}")
    for name in ("digest", "ref", "tag"):
        write_output(name, getattr(result, name), stepkit.outputs(args))
    print(result.digest)
    return exitcodes.OK


def _copy_to_volume(adapter_dir: Path, volume: Path, annotations: dict[str, str]):
    """Copy the adapter into `volume/<tag>/` (temp folder, then rename: the volume root may be a mount point)."""
    import tempfile

    from kairo.atomic import staged_dir
    from kairo.clients.oci import PushResult, UnsafeContent
    from kairo.oci import artifact

    try:
        with tempfile.TemporaryDirectory(prefix="kairo-push-") as scratch:  # the layer, only measured here
            described = artifact.adapter_artifact(adapter_dir, annotations, scratch=scratch)
    except artifact.AdapterFolderError as err:
        raise UnsafeContent(str(err)) from None
    if not volume.is_dir():
        raise UnsafeContent(f"--volume-path: {volume} is not a folder — is tuning.output.volumeSource mounted?")
    target = volume / described.tag
    with staged_dir(target) as staged:
        artifact.copy_adapter(described, staged)
        # The manifest the digest is of; hidden, so pushing this copy again gives the same digest.
        (staged / ".oci-manifest.json").write_bytes(described.manifest)
    log(f"copied the adapter to {target} (digest {described.digest})")
    return PushResult(described.digest, str(target), described.tag, "volume", described.notes)


if __name__ == "__main__":
    sys.exit(main())
