"""`kairo rollback WORKSPACE --to DIGEST|TAG`: serve a previously deployed adapter again.

The target is looked up in the workspace's history (`kairo history`): a digest, a unique digest
prefix, or a tag. The Deployment is rebuilt from the inputs it was last deployed with, only the
adapter changed; the rollout is waited for and the rollback recorded in the history. An inference
workspace goes back to an adapter set its history kept (each entry records the adapters and
strengths, named by the set's digest): the ConfigMap declares them again and the servers switch.
"""

from __future__ import annotations

import argparse
import re
import sys

from kairo.commands._common import add_cluster_config, cluster_from
from kairo.commands._kube import add_kube_args, api_from
from kairo.commands.history import short
from kairo.manifests.inference import DeployedAdapter, NotInHistory, find_in_history, now_rfc3339


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("rollback", help="redeploy an adapter the workspace served before")
    add_kube_args(parser)
    parser.add_argument("--to", required=True, metavar="DIGEST|TAG", help="the adapter to go back to (`kairo history`)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for the rollout (default: cluster config)")
    parser.add_argument("--moving-tag", metavar="TAG", help="also point this tag (output.image's) back at the adapter")
    parser.add_argument("--push-secret-file", metavar="FILE",
                        help="with --moving-tag: a dockerconfigjson allowed to push to the adapter's repository")
    add_cluster_config(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kairo.clients import kube
    from kairo.clients.rollout import RolloutFailed, current_record, deployed_spec, roll_out
    from kairo.clients.workspaces import get_workspace
    from kairo.manifests.inference import owner_reference

    cluster = cluster_from(args)
    where = f"{args.namespace}/{args.workspace}"
    try:
        api = api_from(args)
        spec = deployed_spec(api, args.workspace, args.namespace)
        if spec is None:
            print(f"kairo rollback: no inference Deployment made by kairo for {where}", file=sys.stderr)
            return 1
        current, history = current_record(api, args.workspace, args.namespace)
        try:
            target = find_in_history(history, args.to)
        except NotInHistory as err:
            target = _any_digest(spec.adapter_ref, args.to)
            if target is None:
                print(f"kairo rollback: --to {err}", file=sys.stderr)
                return 2
            print(f"kairo rollback: {args.to} was never deployed here; its eval figures are unknown", file=sys.stderr)
        if spec.adapters and not target.adapters:
            print(f"kairo rollback: {where} serves an inference workspace's adapters, and {args.to} names no "
                  "adapter set its history kept (deploys before kairo recorded sets) — deploy it again instead",
                  file=sys.stderr)
            return 2
        if current is not None and current.digest == target.digest:
            print(f"kairo rollback: {where} already serves {short(target.digest)}; nothing to roll back")
            return _move_tag(args, target.ref, cluster) if args.moving_tag else 0
        record = DeployedAdapter(
            ref=target.ref, digest=target.digest, tag=target.tag, dataset_digest=target.dataset_digest,
            eval_loss=target.eval_loss, deployed_at=now_rfc3339(),
            note=f"rollback from {short(current.digest)}" if current else "rollback", adapters=target.adapters,
        )
        owner = owner_reference(get_workspace(api, args.workspace, args.namespace))
        timeout = args.timeout if args.timeout is not None else cluster.timeouts.rolloutSeconds
        # an inference workspace goes back to its adapter set (and strengths), the tuned one to its adapter
        wanted = spec.with_adapter_set(target.adapters) if target.adapters else spec.with_adapter(target.ref)
        done = roll_out(api, wanted, record, owner, timeout)
    except RolloutFailed as err:
        print(f"kairo rollback: {err.render()}", file=sys.stderr)
        return 1
    except kube.KubeError as err:
        print(f"kairo rollback: {err}", file=sys.stderr)
        return 1
    loss = f" (eval loss {target.eval_loss})" if target.eval_loss else ""
    print(f"rolled back {where} to {short(target.digest)}{loss}; it serves at {done.url}")
    return _move_tag(args, target.ref, cluster) if args.moving_tag else 0


def _move_tag(args: argparse.Namespace, ref: str, cluster) -> int:
    from kairo.clients import oci

    try:
        moved = oci.tag(ref, args.moving_tag, oci.registry_access(ref, cluster, auth_file=args.push_secret_file))
    except oci.RegistryError as err:
        print(f"kairo rollback: the adapter serves, but the tag '{args.moving_tag}' could not be moved: {err}",
              file=sys.stderr)
        return 1
    print(f"moved the tag: {moved}")
    return 0


def _any_digest(current_ref: str, wanted: str) -> DeployedAdapter | None:
    """A full digest not in the history still names an adapter in the same repository."""
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", wanted):
        return None
    repository = current_ref.split("@", 1)[0]
    return DeployedAdapter(ref=f"{repository}@{wanted}", digest=wanted)
