"""GPU nodes as plain data: the AKS agent pool and the Karpenter NodeClaims a workspace asks for, and the
judgement of whether the nodes that joined are usable (Ready, with `nvidia.com/gpu` allocatable).

Everything here is pure — values in, dicts and verdicts out — so it is tested by value; the provision
and cleanup steps send it with `kairo.clients.azure` and `kairo.clients.kube`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from kairo.cluster import NodeClassRef, Taint
from kairo.presets import InstanceType, Preset, get_instance_type

GPU = "nvidia.com/gpu"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # set by NVIDIA GPU feature discovery, in MiB per GPU
WORKSPACE_LABEL = "kairo.sh/workspace"
NAMESPACE_LABEL = "kairo.sh/workspace-namespace"
MANAGED_LABEL = "kairo.sh/managed"  # on NodeClaims kairo made
# Azure tag names may not contain '/' (ARM answers InvalidTagNameCharacters), so the tags that mark a
# pool kairo made spell the label keys with '_' — as Karpenter's Azure provider does (karpenter.sh_nodepool).
MANAGED_TAG = "kairo.sh_managed"
WORKSPACE_TAG = "kairo.sh_workspace"
AGENT_POOL_LABEL = "kubernetes.azure.com/agentpool"  # AKS puts it on every node of a pool
POOL_PREFIX = "kairo"
POOL_NAME_LIMIT = 12  # AKS: Linux pools, lowercase letters and digits, starting with a letter


def _short_hash(namespace: str, workspace: str, length: int) -> str:
    return hashlib.sha256(f"{namespace}/{workspace}".encode()).hexdigest()[:length]


# -- what the workspace asks for --------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRequest:
    """The GPU nodes one workspace needs, as the provision step's flags say."""

    workspace: str
    namespace: str
    instance_type: str = ""
    count: int = 1
    labels: dict[str, str] = field(default_factory=dict)
    preferred_nodes: tuple[str, ...] = ()

    @property
    def catalogue_entry(self) -> InstanceType | None:
        if not self.instance_type:
            return None
        try:
            return get_instance_type(self.instance_type)
        except KeyError:
            return None

    @property
    def gpus_per_node(self) -> int:
        """GPUs each node must offer: all of the instance type's (1 when the type is not in the catalogue)."""
        entry = self.catalogue_entry
        return entry.gpu.count if entry else 1

    @property
    def node_labels(self) -> dict[str, str]:
        """Labels kairo puts on the nodes it makes: the labelSelector's, plus which workspace they serve."""
        return {**self.labels, WORKSPACE_LABEL: self.workspace, NAMESPACE_LABEL: self.namespace}


def parse_labels(pairs: list[str]) -> dict[str, str]:
    """`KEY=VALUE` flags as a dict; ValueError naming the bad one."""
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--label '{pair}' — expected KEY=VALUE, e.g. --label apps=phi-3")
        labels[key] = value
    return labels


def selector(labels: dict[str, str]) -> str:
    """A Kubernetes label selector string (`a=b,c=d`)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def carries(obj: dict[str, Any], labels: dict[str, str]) -> bool:
    """True when the object's labels include every one of `labels`."""
    own = (obj.get("metadata") or {}).get("labels") or {}
    return all(own.get(k) == v for k, v in labels.items())


# -- azure: the agent pool ----------------------------------------------------------------------------


def agent_pool_name(namespace: str, workspace: str) -> str:
    """The workspace's AKS agent pool: stable, unique per namespace/name, within AKS's naming rules."""
    return POOL_PREFIX + _short_hash(namespace, workspace, POOL_NAME_LIMIT - len(POOL_PREFIX))


def taint_string(taint: Taint) -> str:
    """A taint as AKS writes it: `key=value:Effect`."""
    return f"{taint.key}={taint.value}:{taint.effect}"


def agent_pool_body(request: NodeRequest, taint: Taint) -> dict[str, Any]:
    """The ARM body of the workspace's agent pool (camelCase under `properties`)."""
    return {
        "properties": {
            "vmSize": request.instance_type,
            "count": request.count,
            "mode": "User",
            "osType": "Linux",
            "type": "VirtualMachineScaleSets",
            "nodeLabels": request.node_labels,
            "nodeTaints": [taint_string(taint)],
            "tags": {MANAGED_TAG: "true", WORKSPACE_TAG: f"{request.namespace}/{request.workspace}"},
        }
    }


def pool_is_managed(pool: dict[str, Any]) -> bool:
    """True when kairo created this pool (it carries kairo's tag)."""
    tags = (pool.get("properties") or {}).get("tags") or pool.get("tags") or {}
    return str(tags.get(MANAGED_TAG, "")).lower() == "true"


class PoolConflict(ValueError):
    """The existing pool cannot become what the workspace asks for."""


@dataclass(frozen=True)
class PoolPlan:
    """What to do with the agent pool: `create`, `reuse`, `update` (with what changes), or nothing while `busy`."""

    action: str
    changes: tuple[str, ...] = ()

    def describe(self, name: str) -> str:
        if self.action == "create":
            return f"creating agent pool '{name}'"
        if self.action == "reuse":
            return f"agent pool '{name}' already has this spec: reusing it"
        if self.action == "busy":
            return f"agent pool '{name}' is busy ({self.changes[0]}, from an earlier attempt): try again when it settles"
        return f"updating agent pool '{name}': {', '.join(self.changes)}"


BUSY_STATES = ("Creating", "Updating", "Scaling", "Upgrading", "Starting", "Stopping", "Deleting")


def plan_pool(name: str, existing: dict[str, Any] | None, wanted: dict[str, Any], where: str) -> PoolPlan:
    """Compare the pool that exists with the one wanted; PoolConflict when only a person can resolve it."""
    if existing is None:
        return PoolPlan("create")
    have, want = existing.get("properties") or {}, wanted["properties"]
    if not pool_is_managed(existing):
        raise PoolConflict(
            f"agent pool '{name}' exists in {where} but kairo did not create it (no tag {MANAGED_TAG}=true): "
            "kairo will not change it — delete or rename that pool, or run this workspace under another name"
        )
    if str(have.get("vmSize", "")).lower() != want["vmSize"].lower():
        raise PoolConflict(
            f"agent pool '{name}' in {where} has vmSize {have.get('vmSize')}, but resource.instanceType is "
            f"{want['vmSize']}: AKS cannot change a pool's VM size — set resource.instanceType back to "
            f"{have.get('vmSize')}, or delete the pool (az aks nodepool delete --name {name} …) and run again"
        )
    state = str(have.get("provisioningState", ""))
    if state == "Deleting":
        raise PoolConflict(f"agent pool '{name}' in {where} is being deleted: run again once it is gone")
    changes = []
    if have.get("count") != want["count"]:
        changes.append(f"count {have.get('count')} → {want['count']}")
    if (have.get("nodeLabels") or {}) != want["nodeLabels"]:
        changes.append("node labels")
    if sorted(have.get("nodeTaints") or []) != sorted(want["nodeTaints"]):
        changes.append("node taints")
    if changes:
        return PoolPlan("update", tuple(changes))
    if state in BUSY_STATES:
        return PoolPlan("busy", (state,))
    if state == "Failed":
        return PoolPlan("update", ("retrying after provisioningState Failed",))
    return PoolPlan("reuse")


# -- karpenter: NodeClaims ----------------------------------------------------------------------------


def nodeclaim_name(namespace: str, workspace: str, index: int) -> str:
    """The name of the workspace's index-th NodeClaim (cluster-scoped, so the namespace is in the hash)."""
    suffix = f"-{_short_hash(namespace, workspace, 6)}-{index}"
    return f"kairo-{workspace[: 63 - len('kairo-') - len(suffix)].rstrip('-')}{suffix}"


def nodeclaim_manifest(
    request: NodeRequest, index: int, node_class: NodeClassRef, taint: Taint, requests: dict[str, str]
) -> dict[str, Any]:
    """A `karpenter.sh/v1` NodeClaim for one of the workspace's nodes."""
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {
            "name": nodeclaim_name(request.namespace, request.workspace, index),
            # Karpenter copies these onto the Node, which is how the pods (and the wait) find it.
            "labels": {**request.node_labels, MANAGED_LABEL: "true"},
        },
        "spec": {
            "requirements": [
                {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [request.instance_type]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            ],
            "taints": [{"key": taint.key, "value": taint.value, "effect": taint.effect}],
            "nodeClassRef": {"group": node_class.group, "kind": node_class.kind, "name": node_class.name},
            "resources": {"requests": dict(requests)},
        },
    }


def nodeclaim_requests(preset: Preset | None, gpus: int) -> dict[str, str]:
    """What the node must hold: the train pod's CPU and memory, and the GPUs."""
    requests = {GPU: str(gpus)}
    if preset is not None and preset.tuning is not None:
        requests.update(cpu=preset.tuning.resources.cpu, memory=preset.tuning.resources.memory)
    return requests


def nodeclaim_is_managed(claim: dict[str, Any]) -> bool:
    return ((claim.get("metadata") or {}).get("labels") or {}).get(MANAGED_LABEL) == "true"


def nodeclaim_instance_types(claim: dict[str, Any]) -> list[str]:
    for requirement in (claim.get("spec") or {}).get("requirements") or []:
        if requirement.get("key") == INSTANCE_TYPE_LABEL:
            return list(requirement.get("values") or [])
    return []


def nodeclaim_problems(claims: list[dict[str, Any]]) -> list[str]:
    """What Karpenter reports as wrong with the claims (a condition False with a reason), in words."""
    problems = []
    for claim in claims:
        for condition in (claim.get("status") or {}).get("conditions") or []:
            if condition.get("status") == "False" and (condition.get("reason") or condition.get("message")):
                detail = ": ".join(x for x in (condition.get("reason"), condition.get("message")) if x)
                problems.append(f"NodeClaim {claim['metadata']['name']}: {condition.get('type')}=False ({detail})")
    return problems


# -- judging nodes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeState:
    """What matters about one node: is it Ready, and how many GPUs can pods have."""

    name: str
    ready: bool
    why_not_ready: str
    gpus: int


def node_state(node: dict[str, Any]) -> NodeState:
    status = node.get("status") or {}
    ready, why = False, "no Ready condition reported yet"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
            why = ": ".join(x for x in (condition.get("reason"), condition.get("message")) if x) or "Ready=False"
    gpus = _quantity((status.get("allocatable") or {}).get(GPU, "0"))
    return NodeState(node["metadata"]["name"], ready, "" if ready else why, gpus)


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


@dataclass(frozen=True)
class Verdict:
    """The nodes that are usable now and, while fewer than needed, what is missing in words."""

    usable: tuple[str, ...]
    missing: str

    @property
    def done(self) -> bool:
        return not self.missing


def judge_nodes(nodes: list[dict[str, Any]], count: int, gpus_per_node: int, described: str) -> Verdict:
    """Are `count` of these nodes Ready with `gpus_per_node` GPUs allocatable? If not, say which is missing."""
    states = sorted((node_state(n) for n in nodes), key=lambda s: s.name)
    usable = tuple(s.name for s in states if s.ready and s.gpus >= gpus_per_node)
    if len(usable) >= count:
        return Verdict(usable[:count], "")
    if not states:
        return Verdict((), f"no node {described} has joined the cluster yet")
    problems = []
    for s in states:
        if not s.ready:
            problems.append(f"node {s.name} is not Ready ({s.why_not_ready})")
        elif s.gpus == 0:
            problems.append(
                f"node {s.name} is Ready but has no {GPU} allocatable — is the NVIDIA device plugin "
                "(or the GPU operator) running on it?"
            )
        elif s.gpus < gpus_per_node:
            problems.append(f"node {s.name} has {s.gpus} {GPU} allocatable, the workspace needs {gpus_per_node}")
    have = f"{len(usable)} of {count} node{'s' if count != 1 else ''} {described} usable"
    if len(states) < count:
        problems.append(f"{len(states)} of {count} nodes have joined")
    return Verdict(usable, f"{have}: " + "; ".join(problems))


def node_memory_problem(node: dict[str, Any], preset: Preset, method: str) -> str | None:
    """Why an existing node cannot hold the preset's training, when its labels tell its GPU memory."""
    if preset.tuning is None:
        return f"preset {preset.name} cannot be tuned"
    labels = (node.get("metadata") or {}).get("labels") or {}
    name = node["metadata"]["name"]
    needed, per_gpu_needed = preset.memory_needed_gib(method), preset.tuning.min_gpu_memory_gib
    try:
        entry = get_instance_type(labels[INSTANCE_TYPE_LABEL])
        per_gpu, gpus = entry.gpu.memory_gib, entry.gpu.count
    except KeyError:
        if GPU_MEMORY_LABEL not in labels or not re.fullmatch(r"\d+", labels[GPU_MEMORY_LABEL]):
            return None  # its GPU memory is unknown: the train step will find out
        per_gpu, gpus = int(labels[GPU_MEMORY_LABEL]) / 1024, max(node_state(node).gpus, 1)
    if per_gpu * gpus < needed or per_gpu < per_gpu_needed:
        return (
            f"node {name} has {gpus} GPU(s) of {per_gpu:g} GiB; {preset.name} with {method} needs {needed:g} GiB "
            f"in all and at least {per_gpu_needed:g} GiB on one GPU — label bigger GPU nodes, or pick a smaller preset"
        )
    return None
