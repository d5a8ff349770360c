"""`kairo-step deploy`: serve the adapter — a Deployment and a Service for the workspace, or a local server.

In a cluster: declares the adapter (by digest) in the workspace's adapters ConfigMap, server-side applies
the inference Deployment (which mounts it by name) and a Service named after the workspace on port 80,
and waits until every pod reports the new digest on /health. When only the adapter changed the pods do not
roll: their servers switch in place; the base model, the image or the resources roll them. A failed switch
or rollout puts the previous adapter back and fails the step. It records the deployed adapter on the
Service's annotations (what `deployed`, `kairo history` and `kairo rollback` read). Locally (`--local` or
KAIRO_LOCAL=1): starts `kairo-step serve` on 127.0.0.1 in the background watching `state/adapters.json`, or
switches the one already running, and records it in `state/deployed.json`. Output: `service-url`.

An inference workspace deploys its adapters instead (`--adapter NAME=REF`, `--adapter-volume NAME=VOLUMESOURCE`,
repeatable, with `--strength NAME=WEIGHT` for the combined adapter): each is served by its name, declared in
the same ConfigMap (an image by its pinned digest, pulled by the server; a volume adapter mounted as it is and
declared by its path, each with its strength), so a new digest, a new strength or an adapter added or removed
switches in place (the server makes `combined_adapter` again beside the old one). With image adapters needing
different pull secrets or schemes, or vLLM, the adapters are in the pod template instead (an init container pulls
each) and a change rolls the pods (kairo.manifests.inference `switches_in_place` says why).
Locally each is read from the folder its pull task filled (`WORKDIR/adapters/NAME`).

RBAC in the workspace's namespace: deployments get/create/patch, services get/create/patch, configmaps
get/create/patch, pods list, pods/proxy get, events list, and get on kaito.sh workspaces (for the
ownerReference).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kairo import contract, exitcodes, stepkit
from kairo.oci.access import registry_access

PUSH_SECRET = contract.PUSH_SECRET_FILE  # where pods mount imagePushSecret (docs/steps.md)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True, help="workspace name: the Deployment and Service get it")
    parser.add_argument("--namespace", default="default", help="namespace of the workspace")
    parser.add_argument("--preset", required=True, help="the base model preset")
    parser.add_argument("--adapter-ref", default="", help="the pushed adapter, registry/repo@sha256:… (push's `ref`)")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=REF",
                        help="an inference workspace's image adapter, pinned by digest (pull-adapter's `ref`)")
    parser.add_argument("--adapter-volume", action="append", default=[], metavar="NAME=VOLUMESOURCE",
                        help="an inference workspace's adapter on a volume: a VolumeSource as JSON")
    parser.add_argument("--adapter-pull-secret", action="append", default=[], metavar="NAME=SECRET",
                        help="dockerconfigjson Secret the adapter NAME is pulled with")
    parser.add_argument("--strength", action="append", default=[], metavar="NAME=WEIGHT",
                        help="serve the adapters also weighted into combined_adapter (Kaito's transformers runtime)")
    parser.add_argument("--max-model-len", type=int, help="cap the served context length (vllm.max-model-len)")
    parser.add_argument("--runtime", choices=["", "transformers", "vllm"], default="",
                        help="the kaito.sh/runtime annotation: vllm deploys vLLM's OpenAI server (in a cluster), "
                             "anything else kairo's server")
    parser.add_argument("--adapters-json", default="", help="instead of --adapter…: Kaito's inference.adapters as JSON "
                                                            "(the generic template's `adapters` parameter)")
    parser.add_argument("--pinned", default="", help="with --adapters-json: NAME → pinned ref, JSON (pull-adapters' refs)")
    parser.add_argument("--instance-type", default="", help="GPU instance type; the pod requests all its GPUs")
    parser.add_argument("--gpus", type=int, help="GPUs per replica (default: the instance type's, else 1; 0 = CPU)")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="a node label the pods must land on (the workspace's labelSelector); repeatable, "
                             "or several as KEY=VALUE,KEY=VALUE")
    parser.add_argument("--replicas", type=int, default=1, help="replicas (the kairo.sh/serve-replicas annotation)")
    parser.add_argument("--api-key-secret", default="", help="Secret whose key 'api-key' the server requires")
    parser.add_argument("--api-key-file", help="local mode: that Secret's key, mounted; the local server requires it "
                                               "(the Deployment mounts the Secret itself)")
    parser.add_argument("--pull-secret", default="", help="dockerconfigjson Secret to pull the adapter with")
    parser.add_argument("--adapter-tag", default="", help="the adapter's immutable tag (push's `tag`), for `kairo history`")
    parser.add_argument("--dataset-digest", default="", help="digest of the data the adapter was trained on")
    parser.add_argument("--eval-loss", default="", help="the adapter's eval loss, recorded for `kairo history`")
    parser.add_argument("--workflow", default="", help="the workflow deploying it, recorded for `kairo history`")
    parser.add_argument("--moving-tag", default="", help="once deployed, point this tag at the adapter (output.image's)")
    parser.add_argument("--push-secret-file", help=f"dockerconfigjson allowed to move the tag (default: {PUSH_SECRET} "
                                                   "when mounted)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for the rollout (default: cluster config)")
    stepkit.add_common_flags(parser, kubeconfig=True, cluster_config=True, outputs=True,
                             workdir="work volume (local mode; default: $KAIRO_WORKDIR or /kairo/work)",
                             local="start the server on this machine instead")
    parser.add_argument("--port", type=int, help="local mode: the port (default: a free one)")
    return parser


log = stepkit.logger("deploy")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    # The generic template passes the labelSelector as one KEY=VALUE,KEY=VALUE value (label values hold no comma).
    args.label = [pair for value in args.label for pair in value.split(",") if pair]
    from kairo.atomic import write_output
    from kairo.cluster import load_cluster_config
    from kairo.manifests.inference import DeployedAdapter, adapter_digest, now_rfc3339
    from kairo.oci.reference import ReferenceError, parse_reference
    from kairo.presets import get_instance_type, get_preset

    problems = _check(args)
    try:
        get_preset(args.preset)
    except KeyError as err:
        problems.append(f"--preset: {err.args[0]}")
    gpus = args.gpus
    if args.instance_type and gpus is None:
        try:
            gpus = get_instance_type(args.instance_type).gpu.count
        except KeyError as err:
            problems.append(f"--instance-type: {err.args[0]}")
    local = stepkit.is_local(args)
    served, served_problems = _served_adapters(args)
    problems += served_problems
    if bool(served) == bool(args.adapter_ref):
        problems.append("--adapter-ref: give the tuned adapter, or an inference workspace's --adapter/--adapter-volume "
                        "— one of the two")
    ref = None
    if not local and args.adapter_ref:
        try:
            ref = parse_reference(args.adapter_ref)
            if not ref.digest:
                problems.append(f"--adapter-ref: '{args.adapter_ref}' names no digest — deploy pulls the adapter by "
                                "digest (pass push's `ref` output, registry/repo@sha256:…)")
        except ReferenceError as err:
            problems.append(f"--adapter-ref: '{args.adapter_ref}': {err}")
    if problems:
        log("\n  ".join(["bad input:", *problems]))
        return exitcodes.BAD_INPUT
    cluster = load_cluster_config(args.cluster_config)
    adapter = DeployedAdapter(
        ref=args.adapter_ref or " ".join(f"{a['name']}={a.get('ref') or 'volume'}" for a in served), digest=adapter_digest(args.adapter_ref), tag=args.adapter_tag or ((ref.tag or "") if ref else ""),
        dataset_digest=args.dataset_digest, eval_loss=args.eval_loss, deployed_at=now_rfc3339(),
        workflow=args.workflow,
    )
    timeout = args.timeout if args.timeout is not None else cluster.timeouts.rolloutSeconds
    if local:
        code, url = _deploy_locally(args, adapter, timeout, served)
    else:
        # how the inference pod's init container reaches the adapter's registry, by the one rule
        plain_http = bool(args.adapter_ref) and registry_access(args.adapter_ref, cluster).plain_http
        for entry in served:
            if entry.get("ref"):
                entry["plain_http"] = registry_access(entry["ref"], cluster).plain_http
        code, url = _deploy_to_cluster(args, adapter, cluster, 1 if gpus is None else gpus, plain_http, timeout,
                                       served)
    if code == exitcodes.OK and args.moving_tag:
        code = _move_tag(args, cluster, local)
    if code == exitcodes.OK:
        write_output("service-url", url, stepkit.outputs(args))
        print(url)
    return code


def _move_tag(args: argparse.Namespace, cluster, local: bool) -> int:
    """Point the moving tag at the deployed adapter: only a deployed adapter ever carries it (issue 9)."""
    from kairo.clients import oci

    # A missing file means no credentials: the generic template mounts an optional Secret (docs/steps.md).
    auth = next((f for f in (args.push_secret_file, PUSH_SECRET) if f and Path(f).is_file()), None)
    try:
        moved = oci.tag(args.adapter_ref, args.moving_tag,
                        registry_access(args.adapter_ref, cluster, auth_file=auth, local=local))
    except oci.RegistryError as err:
        log(f"the adapter is deployed, but the tag '{args.moving_tag}' could not be moved: {err}")
        return err.exit_code
    log(f"moved the tag: {moved}")
    return exitcodes.OK


def _served_adapters(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """An inference workspace's adapters from --adapter, --adapter-volume and --adapter-pull-secret, in order."""
    import json

    served: list[dict] = []
    problems: list[str] = []
    if args.adapters_json:
        problems += _from_kaito_adapters(args)
    for flag, values in (("--adapter", args.adapter), ("--adapter-volume", args.adapter_volume)):
        for value in values:
            name, sep, rest = value.partition("=")
            if not sep or not name or not rest:
                problems.append(f"{flag}: '{value}' — expected NAME=…")
            elif flag == "--adapter":
                served.append({"name": name, "ref": rest})
            else:
                try:
                    volume = json.loads(rest)
                except ValueError as err:
                    problems.append(f"{flag}: '{value}' — the VolumeSource is not JSON: {err}")
                    continue
                served.append({"name": name, "volume": volume})
    names = [a["name"] for a in served]
    if len(set(names)) != len(names):
        problems.append(f"--adapter: names given twice among {', '.join(names)}")
    for value in args.adapter_pull_secret:
        name, _, secret = value.partition("=")
        entry = next((a for a in served if a["name"] == name and a.get("ref")), None)
        if entry is None or not secret:
            problems.append(f"--adapter-pull-secret: '{value}' — expected NAME=SECRET for an --adapter")
        else:
            entry["pull_secret"] = secret
    for value in args.strength:
        if value.partition("=")[0] not in names:
            problems.append(f"--strength: '{value}' — expected NAME=WEIGHT for a served adapter")
    return served, problems


def _from_kaito_adapters(args: argparse.Namespace) -> list[str]:
    """--adapters-json (Kaito's inference.adapters) and --pinned, turned into --adapter, --adapter-volume,
    --adapter-pull-secret and --strength flags: an image pinned by the digest its pull resolved."""
    import json

    try:
        adapters = json.loads(args.adapters_json)
        pinned = json.loads(args.pinned or "{}")
    except ValueError as err:
        return [f"--adapters-json/--pinned: not JSON: {err}"]
    if not isinstance(adapters, list) or not isinstance(pinned, dict):
        return ["--adapters-json takes a list (Kaito's inference.adapters), --pinned a mapping"]
    for entry in adapters:
        source = (entry.get("source") or {}) if isinstance(entry, dict) else {}
        name = source.get("name", "")
        volume = source.get("volumeSource") or source.get("volume")
        if volume:
            args.adapter_volume.append(f"{name}={json.dumps(volume, sort_keys=True)}")
        else:
            args.adapter.append(f"{name}={pinned.get(name) or source.get('image', '')}")
            if source.get("imagePullSecrets"):
                args.adapter_pull_secret.append(f"{name}={source['imagePullSecrets'][0]}")
        if entry.get("strength") is not None:
            args.strength.append(f"{name}={entry['strength']}")
    return []


def _check(args: argparse.Namespace) -> list[str]:
    import re

    problems = []
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", args.workspace):
        problems.append(f"--workspace: '{args.workspace}' is not a DNS-1123 label (lowercase, digits, '-', ≤ 63)")
    for label in args.label:
        if "=" not in label or not label.split("=", 1)[0]:
            problems.append(f"--label: '{label}' — expected KEY=VALUE")
    if not 1 <= args.replicas <= 999:
        problems.append(f"--replicas: {args.replicas} — a whole number from 1 to 999")
    if args.gpus is not None and args.gpus < 0:
        problems.append(f"--gpus: {args.gpus} — 0 or more")
    return problems


def _deploy_to_cluster(args, adapter, cluster, gpus: int, plain_http: bool, timeout: float,
                       served: list[dict]) -> tuple[int, str]:
    ranks: dict[str, int] = {}
    if args.runtime == "vllm":
        ranks, problems = _vllm_ranks(args, served)
        if problems:
            log("\n  ".join(["vLLM would refuse the adapter:", *problems]))
            return exitcodes.BAD_INPUT, ""
    from kairo.clients import kube
    from kairo.clients.rollout import RolloutFailed, roll_out
    from kairo.clients.workspaces import get_workspace
    from kairo.manifests.inference import InferenceSpec, owner_reference

    spec = InferenceSpec.for_cluster(
        cluster, workspace=args.workspace, namespace=args.namespace, preset=args.preset, adapter_ref=args.adapter_ref,
        gpus=gpus, node_labels=dict(label.split("=", 1) for label in args.label),
        instance_type=args.instance_type, replicas=args.replicas, api_key_secret=args.api_key_secret,
        pull_secret=args.pull_secret, plain_http=plain_http, adapters=served, runtime=args.runtime if
        args.runtime == "vllm" else "", lora_ranks=ranks,
        strengths=dict(value.split("=", 1) for value in args.strength), max_model_len=args.max_model_len or 0,
    )
    try:
        api = kube.api_client(args.kubeconfig)
        # Owned by the Workspace object when there is one: deleting it deletes the inference (issue 12).
        owner = owner_reference(get_workspace(api, args.workspace, args.namespace))
        done = roll_out(api, spec, adapter, owner, timeout)
    except RolloutFailed as err:
        log(err.render())
        log("the adapter was not deployed; the lines above say what the pods were doing")
        return exitcodes.FAILED, ""
    except kube.KubeError as err:
        log(str(err))
        return (exitcodes.TRANSIENT if err.transient else exitcodes.FAILED), ""
    log(f"adapter {adapter.digest} serves at {done.url} ({done.message})")
    return exitcodes.OK, done.url


def _vllm_ranks(args, served: list[dict]) -> tuple[dict[str, int], list[str]]:
    """Each adapter's LoRA rank from its adapter_config.json in the work volume, and what vLLM would refuse."""
    import json

    from kairo.manifests import vllm

    workdir = stepkit.workdir(args)
    folders = {a["name"]: workdir / "adapters" / a["name"] for a in served} or {args.workspace: workdir / "adapter"}
    ranks: dict[str, int] = {}
    problems: list[str] = []
    for name, folder in folders.items():
        try:
            config = json.loads((folder / "adapter_config.json").read_text())
        except (OSError, ValueError):
            log(f"{name}: no adapter_config.json at {folder}; --max-lora-rank assumes vLLM's default, 16")
            continue
        problems += vllm.adapter_problems(name, config)
        if isinstance(config.get("r"), int):
            ranks[name] = config["r"]
    return ranks, problems


def _deploy_locally(args, adapter, timeout: float, served: list[dict]) -> tuple[int, str]:
    """Serve the adapter(s) on this machine: switch the running server to them, or start one (the first deploy,
    or the base model or the server's settings changed). The server reads `state/adapters.json` (the local
    ConfigMap) and watches it."""
    from kairo.local import server as local_server
    from kairo.manifests.adapters import DeclaredAdapter, adapters_document
    from kairo.manifests.inference import DeployedAdapter, adapter_digest, with_entry

    strengths = {name: float(weight) for name, weight in (value.split("=", 1) for value in args.strength)}

    workdir = stepkit.workdir(args).resolve()
    model_dir = workdir / "model" / args.preset
    # the tuned adapter under the workspace's name, or each of an inference workspace's where its pull task put it
    folders = {a["name"]: workdir / "adapters" / a["name"] for a in served} or {args.workspace: workdir / "adapter"}
    for name, folder in folders.items():
        if not folder.is_dir():
            log(f"no adapter at {folder} — run train (or push's volume copy), or pull-adapter for '{name}', first")
            return exitcodes.BAD_INPUT, ""
    if args.runtime == "vllm":
        log("kaito.sh/runtime: vllm — vLLM runs in a cluster only (no build for this machine); kairo's server serves "
            "the same OpenAI API here")
    digests = {a["name"]: adapter_digest(a.get("ref", "")) for a in served} or {args.workspace: adapter.digest}
    declared = []
    for name, folder in folders.items():
        digest = digests.get(name) or _folder_digest(folder)
        # A copy per digest: the next training rewrites adapter/ while this one is served.
        snapshot = _snapshot(folder, local_server.state_dir(workdir) / "adapters" / name, digest)
        declared.append(DeclaredAdapter(name, path=str(snapshot), digest=digest, strength=strengths.get(name)))
    document = adapters_document(declared)
    settings = _server_settings(args, model_dir)
    if isinstance(settings, int):
        return settings, ""
    before = local_server.read_deployed(workdir) or {}
    pid = local_server.running(workdir)
    url = before.get("url", "")
    if pid is not None and url and before.get("server") == settings:  # strengths too: the file carries them
        code = _switch_locally(url, pid, declared, document, workdir, timeout)
        if code != exitcodes.OK:
            return code, ""
    else:
        if local_server.stop(workdir):
            log("stopped the server the previous deploy started")
        code, url, pid = _start_locally(args, settings, document, workdir, timeout)
        if code != exitcodes.OK:
            return code, ""
    history = [DeployedAdapter.from_dict(e) for e in before.get("history", []) if isinstance(e, dict) and e.get("ref")]
    local_server.write_deployed(workdir, {
        "url": url, "pid": pid, "server": settings, "adapters_file": str(local_server.adapters_path(workdir)),
        "current": adapter.to_dict(), "history": [e.to_dict() for e in with_entry(history, adapter)],
    })
    for entry in declared:
        _prune_snapshots(Path(entry.path))
    log(f"ready at {url}, serving " + ", ".join(f"{a.name} {a.digest}" for a in declared))
    return exitcodes.OK, url


def _server_settings(args, model_dir: Path) -> list[str] | int:
    """The server's flags but its adapters and port: a server started with others is replaced, not switched."""
    settings = ["--preset", args.preset]
    if model_dir.is_dir():  # fetch-model filled it; without it the server builds or fetches the preset itself
        settings += ["--model-dir", str(model_dir)]
    # the strengths are in the adapters file (a change switches in place); a combination served or not is fixed at start
    settings += ["--combination-type", "svd"] if args.strength else []
    settings += ["--max-model-len", str(args.max_model_len)] if args.max_model_len else []
    key_file = Path(args.api_key_file) if args.api_key_file else None
    if args.api_key_secret and (key_file is None or not key_file.is_file()):
        log(f"kairo.sh/api-key-secret names '{args.api_key_secret}', but its key is not here "
            f"({key_file or 'no --api-key-file'}): a local server would answer without it — map the Secret "
            f"(kairo run --secret {args.api_key_secret}=FOLDER, the folder holding a file 'api-key')")
        return exitcodes.BAD_INPUT
    if key_file is not None and key_file.is_file():  # the local server asks for the same bearer token
        settings += ["--api-key-file", str(key_file.resolve())]
    return settings


def _start_locally(args, settings: list[str], document: str, workdir: Path, timeout: float) -> tuple[int, str, int]:
    from kairo.atomic import write_text
    from kairo.local import server as local_server

    adapters_file = write_text(local_server.adapters_path(workdir), document)
    port = args.port or local_server.free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "kairo.step", "serve", *settings, "--adapters-file", str(adapters_file),
               "--watch-interval", "0.2", "--host", "127.0.0.1", "--port", str(port)]
    pid = local_server.start(command, workdir)
    log(f"started the server (pid {pid}, log {local_server.log_path(workdir)})")
    try:
        local_server.wait_ready(url, pid, timeout, workdir)
    except local_server.ServerFailed as err:
        local_server.stop(workdir)
        log(str(err))
        return exitcodes.FAILED, "", pid
    return exitcodes.OK, url, pid


def _switch_locally(url: str, pid: int, declared: list, document: str, workdir: Path, timeout: float) -> int:
    """Declare the new adapter(s) to the running server and wait until it serves them; a failed switch leaves
    the adapter serving before in place (declared again, so a restart serves it too)."""
    import time

    from kairo.atomic import write_text
    from kairo.local import server as local_server
    from kairo.manifests.adapters import served_digests

    path = local_server.adapters_path(workdir)
    previous = path.read_text() if path.is_file() else ""
    write_text(path, document)
    names = ", ".join(f"{a.name} {a.digest}" for a in declared)
    log(f"switching the running server (pid {pid}) to {names}, without a restart")
    deadline = time.monotonic() + timeout
    try:  # with strengths, combined_adapter's digest too (weighed again in place)
        for name, digest in served_digests(declared).items():
            local_server.wait_serving(url, name, digest, max(deadline - time.monotonic(), 1.0), pid)
    except local_server.ServerFailed as err:
        if previous:
            write_text(path, previous)
        log(f"{err}\nthe adapter deployed before keeps serving at {url}; the end of the server's log:\n"
            f"{local_server.log_tail(workdir, 15)}")
        return exitcodes.FAILED
    return exitcodes.OK


def _folder_digest(folder: Path) -> str:
    """sha256 over the adapter's files (names and contents), for an adapter deployed without a pushed digest."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return f"sha256:{h.hexdigest()}"


def _snapshot(adapter_dir: Path, root: Path, digest: str) -> Path:
    import shutil

    from kairo.atomic import staged_dir

    target = root / digest.removeprefix("sha256:")[:16]
    if not (target / "adapter_config.json").is_file():
        with staged_dir(target) as tmp:
            shutil.copytree(adapter_dir, tmp, dirs_exist_ok=True)
    return target


def _prune_snapshots(current: Path, keep: int = 2) -> None:
    """Keep the served snapshot and the one before (a rollback's); the server holds no older one in memory."""
    import shutil

    others = sorted((p for p in current.parent.iterdir() if p.is_dir() and p != current and not p.name.startswith(".")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[keep - 1:]:
        shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
