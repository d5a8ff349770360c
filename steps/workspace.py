"""`kairo-step workspace`: the generic template's first task — the workspace checked, the train pod sized.

`--source resource` (what the Argo Events Sensor passes when a Workspace is applied): reads the Workspace
object NAME in NAMESPACE through the Kubernetes API, with the ConfigMap its tuning (or inference) section
names, and validates both
with kairo.spec. A Workspace with problems gets them in its own status (condition WorkspaceSucceeded False,
reason InvalidSpec, the problems in the message) and the run stops at once with exit 2.
`--source parameters` (`argo submit --from workflowtemplate/kairo-tuning -p …`): reads nothing; checks the
preset and the sizes given.

Outputs `gpus`, `cpu`, `memory`: what train, evaluate and gpu-check request (kairo.sizing). `auto` (the
template's default) means computed: every GPU of the instance type, the preset's CPU and memory held under
the machine; a value given as a parameter is kept as given.

RBAC in the workspace's namespace: get on kaito.sh workspaces and on configmaps, patch on workspaces/status.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from kairo import exitcodes, stepkit
from kairo.atomic import write_output
from kairo.stepkit import StepFailed

AUTO = "auto"
SOURCES = ("parameters", "resource")
RUNTIMES = ("", "transformers", "vllm")  # kaito.sh/runtime's values; deploy takes the same


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step workspace", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True, help="the workspace's name (the Workspace object's, with resource)")
    parser.add_argument("--namespace", default="default", help="its namespace")
    parser.add_argument("--source", choices=SOURCES, default="parameters",
                        help="resource: read and validate the Workspace object; parameters: the flags below as given")
    parser.add_argument("--preset", default="", help="parameters: the preset")
    parser.add_argument("--method", default="", help="parameters: lora or qlora")
    parser.add_argument("--instance-type", default="", help="parameters: the GPU machine size (sizes `auto`)")
    parser.add_argument("--gpus", default=AUTO, help="GPUs the train pod requests, or auto")
    parser.add_argument("--cpu", default=AUTO, help="CPU the train pod requests, or auto")
    parser.add_argument("--memory", default=AUTO, help="memory the train pod requests, or auto")
    parser.add_argument("--runtime", default="", help="parameters: Kaito's kaito.sh/runtime, vllm or transformers "
                                                      "(checked here, before a GPU node is asked for)")
    parser.add_argument("--workflow", default="", help="the workflow's name ({{workflow.name}}), kept in the status")
    stepkit.add_common_flags(parser, cluster_config="cluster config YAML (default: $KAIRO_CLUSTER_CONFIG or the mount)",
                             kubeconfig=True, outputs=True)
    return parser


log = stepkit.logger("workspace")


class Refused(StepFailed):
    """The workspace cannot run as written (exit 2)."""


def main(argv: list[str] | None = None) -> int:
    return stepkit.run_step("workspace", size_train_pod, make_parser().parse_args(argv))


def size_train_pod(args: argparse.Namespace) -> int:
    """Read and check the workspace (object or parameters), then write the train pod's size as outputs."""
    from kairo.cluster import load_cluster_config

    cluster = load_cluster_config(args.cluster_config)
    if args.source == "resource":
        preset, instance_type = from_resource(args, cluster)
    else:
        preset, instance_type = from_parameters(args)
    size = sized(args, preset, instance_type)
    for name, value in (("gpus", size.gpus), ("cpu", size.cpu), ("memory", size.memory)):
        write_output(name, str(value), stepkit.outputs(args))
    log(f"{args.namespace}/{args.workspace}: the train pod requests {size.gpus} GPU(s), {size.cpu} CPU, "
        f"{size.memory} memory")
    return exitcodes.OK


def from_parameters(args: argparse.Namespace) -> tuple[Any, Any]:
    """The preset and instance type the parameters name (an instance type kairo does not know sizes to 1 GPU)."""
    from kairo.presets import get_instance_type, get_preset

    if args.runtime not in RUNTIMES:
        raise Refused(f"runtime: '{args.runtime}' — Kaito's runtimes are 'vllm' and 'transformers' (or leave it empty)")
    try:
        preset = get_preset(args.preset)
    except KeyError as err:
        raise Refused(f"preset: {err.args[0]}") from None
    if not preset.supports_tuning:
        raise Refused(f"preset: '{preset.name}' cannot be tuned (`kairo presets` lists those that can)")
    if args.method and args.method.lower() not in preset.tuning.methods:
        raise Refused(f"method: '{args.method}' — {preset.name} tunes with {', '.join(preset.tuning.methods)}")
    instance_type = None
    if args.instance_type:
        try:
            instance_type = get_instance_type(args.instance_type)
        except KeyError:
            log(f"instance type {args.instance_type} is not in kairo's catalogue: sizing for 1 GPU and the "
                "preset's CPU and memory (give -p gpus=… to say otherwise)")
    return preset, instance_type


def from_resource(args: argparse.Namespace, cluster: Any) -> tuple[Any, Any]:
    """The Workspace object, validated; its problems written into its status before Refused is raised."""
    from kairo.spec import check_workspace
    from kairo.spec.inference import CONFIG_KEY

    api, found, config_name, config_map = read_workspace(args)
    checked = check_workspace(found, cluster, others=[config_map] if config_map else [])
    problems = [str(p) for p in checked.errors]
    if config_name and config_map is None:
        section, key = ("tuning", "training_config.yaml") if found.get("tuning") else ("inference", CONFIG_KEY)
        problems.append(f"{section}.config: ConfigMap '{config_name}' does not exist in namespace {args.namespace} — "
                        f"create it (key {key}) or leave {section}.config out for the default")
    tuning = checked.workspace is not None and checked.workspace.tuning is not None
    if tuning and checked.workspace.node_count > 1:  # the generic template trains on one node
        problems.append(f"resource.count: {checked.workspace.node_count} — a run on several nodes is rendered for its "
                        "workspace (`kairo submit FILE`: its train task creates a JobSet); the kairo-tuning template "
                        "that applied Workspaces run trains on one node")
    if tuning and checked.workspace.tuning.input and checked.workspace.tuning.input.urlsSecret:
        problems.append("tuning.input.urlsSecret: read by the workflow `kairo submit FILE` renders for its workspace; "
                        "the kairo-tuning template that applied Workspaces run takes its URLs as a parameter — "
                        "submit the file with kairo, or give the URLs in tuning.input.urls")
    for warning in checked.warnings:
        if not (config_name and warning.path == "tuning.config"):  # not "pass --config FILE": it was looked up
            log(f"warning: {warning}")
    if problems:
        write_invalid(api, args, found, problems)
        raise Refused(f"{args.namespace}/{args.workspace} is not valid — {len(problems)} problem(s), also in its "
                      "status:\n  - " + "\n  - ".join(problems))
    assert checked.workspace is not None
    return checked.workspace.preset, checked.workspace.instance_type


def read_workspace(args: argparse.Namespace) -> tuple[Any, dict[str, Any], str, dict[str, Any] | None]:
    """(API client, the Workspace object, the ConfigMap its tuning.config names or '', that ConfigMap or None).

    Kaito's default templates (qlora-params-template…) are kairo's own copies: only another name is looked up.
    """
    from kairo.clients import kube
    from kairo.clients.workspaces import get_workspace
    from kairo.training.config import DEFAULT_TEMPLATES

    try:
        api = kube.api_client(args.kubeconfig)
        found = get_workspace(api, args.workspace, args.namespace)
        if found is None:
            raise Refused(f"no Workspace object {args.namespace}/{args.workspace}: --source resource reads it "
                          "(deleted since the run was submitted? else submit with -p source=parameters)")
        section = found.get("tuning") or found.get("inference")  # an inference workspace's inference_config.yaml
        name = str((section.get("config") if isinstance(section, dict) else "") or "")
        if not _is_name(name) or name in DEFAULT_TEMPLATES.values():
            name = ""  # none, a default, or a bad name kairo.spec reports
        config_map = kube.get(api, "v1", "ConfigMap", name, args.namespace) if name else None
    except kube.KubeError as err:
        code = exitcodes.TRANSIENT if err.transient else exitcodes.FAILED
        raise StepFailed(f"cannot read {args.namespace}/{args.workspace}: {err}", code) from None
    return api, found, name, config_map


def write_invalid(api: Any, args: argparse.Namespace, found: dict[str, Any], problems: list[str]) -> None:
    """Put the problems into the Workspace's status; a failure to write is logged, not raised (the run stops anyway)."""
    from kairo.clients import kube
    from kairo.clients.workspaces import update_status
    from kairo.manifests.conditions import invalid_spec_patch
    from kairo.manifests.inference import now_rfc3339

    def change(workspace: dict[str, Any]) -> dict[str, Any]:
        generation = (workspace.get("metadata") or {}).get("generation")
        return invalid_spec_patch(workspace.get("status"), problems, now_rfc3339(), generation, args.workflow)

    try:
        update_status(api, args.workspace, args.namespace, change)
    except kube.KubeError as err:
        log(f"the problems could not be written into the status of {args.namespace}/{args.workspace}: {err}")


def sized(args: argparse.Namespace, preset: Any, instance_type: Any) -> Any:
    """The train pod's size: computed where `auto`, else the value given, checked."""
    from kairo.sizing import PodSize, cpu_millicores, memory_mebibytes, train_pod_size

    computed = train_pod_size(preset, instance_type)
    problems = []
    gpus = computed.gpus
    if args.gpus != AUTO:
        if args.gpus.isdigit():
            gpus = int(args.gpus)
        else:
            problems.append(f"gpus: '{args.gpus}' — a whole number of GPUs, or auto")
    for name, value, check in (("cpu", args.cpu, cpu_millicores), ("memory", args.memory, memory_mebibytes)):
        if value != AUTO:
            try:
                check(value)
            except ValueError as err:
                problems.append(f"{name}: {err}")
    if problems:
        raise Refused("the train pod's size: " + "; ".join(problems))
    return PodSize(gpus, computed.cpu if args.cpu == AUTO else args.cpu,
                   computed.memory if args.memory == AUTO else args.memory)


def _is_name(name: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name or "")) and len(name) <= 253


if __name__ == "__main__":
    sys.exit(main())
