"""Roll out a workspace's inference: apply its Deployment and Service, wait, record the adapter.

Shared by the `deploy` step and `kairo rollback`. Manifests come from `kairo.manifests.inference`; this module
only sends them, watches the Deployment's status and, when the rollout fails, says why from the pods'
state and events.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from kairo.clients import kube
from kairo.manifests import inference as inf
from kairo.manifests.adapters import served_digests

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class RolloutFailed(Exception):
    """The Deployment did not become available in time; `details` says what its pods were doing."""

    def __init__(self, message: str, details: list[str]):
        super().__init__(message)
        self.details = details

    def render(self) -> str:
        return "\n".join([str(self), *(f"  {line}" for line in self.details)])


@dataclass(frozen=True)
class Deployed:
    """The outcome of a successful rollout."""

    adapter: inf.DeployedAdapter
    url: str
    message: str


def current_record(
    api: client.ApiClient, workspace: str, namespace: str
) -> tuple[inf.DeployedAdapter | None, list[inf.DeployedAdapter]]:
    """What the workspace's Service records as deployed now, and the history (empty when no Service)."""
    service = kube.get(api, "v1", "Service", workspace, namespace)
    return inf.read_record(((service or {}).get("metadata") or {}).get("annotations"))


def deployed_spec(api: client.ApiClient, workspace: str, namespace: str) -> inf.InferenceSpec | None:
    """The inputs the workspace's Deployment was built from, when kairo built it."""
    deployment = kube.get(api, "apps/v1", "Deployment", workspace, namespace)
    text = (((deployment or {}).get("metadata") or {}).get("annotations") or {}).get(inf.DEPLOY_SPEC)
    return inf.InferenceSpec.from_json(text) if text else None


def roll_out(
    api: client.ApiClient,
    spec: inf.InferenceSpec,
    adapter: inf.DeployedAdapter,
    owner: dict[str, Any] | None = None,
    timeout: float = 1800,
    log: Log = _stderr,
) -> Deployed:
    """Declare the adapter(s) in the workspace's ConfigMap, apply the Deployment and Service, wait until every pod
    serves each declared digest, then record it on the Service.

    The pods roll only when their template changes (base model, image, resources: the adapters are not in it);
    when only the adapters changed, the running servers switch in place. Where they cannot
    (`inf.switches_in_place`: vLLM, mixed pull secrets) the adapters are in the template and roll it; with strengths
    deploy waits for combined_adapter's digest too (made again in place). A failed rollout or switch puts
    the previous adapter (and Deployment) back when there was one, and raises RolloutFailed: the record only
    ever names an adapter that served.
    """
    if spec.adapters and not adapter.adapters:  # an inference workspace: the history keeps its set, to roll back to
        adapter = dataclasses.replace(adapter, adapters=spec.adapter_set(),
                                      digest=adapter.digest or inf.adapter_set_digest(spec.adapter_set()))
    service = kube.get(api, "v1", "Service", spec.workspace, spec.namespace)
    annotations = ((service or {}).get("metadata") or {}).get("annotations") or {}
    _, history = inf.read_record(annotations)
    kept = {k: v for k, v in annotations.items() if k in inf.RECORD_KEYS}
    previous = deployed_spec(api, spec.workspace, spec.namespace)
    deployment = inf.build_deployment(spec, owner)
    # a Deployment an earlier kairo laid out otherwise (pullers, the adapters in its arguments) rolls though the
    # previous spec built again today gives the same template: its pods change, and the rollout is waited for
    rolls = previous is None or inf.pod_template_changes(inf.build_deployment(previous, owner), deployment) \
        or inf.layout_changes(kube.get(api, "apps/v1", "Deployment", spec.workspace, spec.namespace), deployment)
    in_place = inf.switches_in_place(spec)
    deadline = time.monotonic() + timeout
    # Server-side apply drops fields its manager stops sending, so the Service keeps its record for now.
    kube.apply(api, inf.build_service(spec, owner, kept))
    if in_place:
        kube.apply(api, inf.build_adapters(spec, owner))
    kube.apply(api, deployment)
    how = "the pods roll" if rolls else "only the adapter changed: the running servers switch, no pod restarts"
    log(f"applied {spec.namespace}/{spec.workspace} (adapter {spec.adapter_ref or 'of the inference workspace'}); {how}")
    served = ""
    try:
        state = wait_for_rollout(api, spec.workspace, spec.namespace, timeout, log) if rolls else None
        if in_place:
            wanted = served_digests(inf.declared_adapters(spec))  # with strengths, combined_adapter's too
            before = served_digests(inf.declared_adapters(previous)) \
                if previous is not None and inf.switches_in_place(previous) else {}
            served = wait_for_adapter(api, spec, wanted, max(deadline - time.monotonic(), 1.0), log,
                                      gone=frozenset(before) - wanted.keys())
    except RolloutFailed as failed:
        if previous is not None and previous != spec:
            if in_place and inf.switches_in_place(previous):
                kube.apply(api, inf.build_adapters(previous, owner))
            if rolls:
                kube.apply(api, inf.build_deployment(previous, owner))
            back = previous.adapter_ref or ", ".join(f"{a.name} {a.digest or a.path}"
                                                     for a in inf.declared_adapters(previous))
            failed.details.append(f"put the previous adapter back: {back}")
        raise
    kube.apply(api, inf.build_service(spec, owner, inf.record_annotations(adapter, history)))
    return Deployed(adapter, inf.service_url(spec.workspace, spec.namespace), state.message if state else served)


def wait_for_adapter(api: client.ApiClient, spec: inf.InferenceSpec, wanted: dict[str, str], timeout: float,
                     log: Log = _stderr, gone: frozenset[str] = frozenset()) -> str:
    """Wait until every ready pod of the workspace reports each name of `wanted` with its digest on /health (a
    name declared without one — a volume adapter — only served), and none of `gone` (read through the API
    server's pod proxy, so it works from a laptop too); RolloutFailed when a pod says a switch failed, or in time."""
    deadline = time.monotonic() + timeout
    said = ""
    what = ", ".join(f"{n} {d}".strip() for n, d in wanted.items())
    if list(wanted) == [spec.workspace]:  # the tuned adapter: its digest says it
        what = wanted[spec.workspace]
    while True:
        pods = [p for p in _pods(api, spec.workspace, spec.namespace) if _ready(p)]
        serving: dict[str, str] = {}
        done = bool(pods)
        for pod in pods:
            name = pod["metadata"]["name"]
            health = _health(api, name, spec.namespace)
            reported = health.get("adapters") or {}
            serving[name] = ", ".join(f"{n} {reported[n] or '(no digest)'}" for n in wanted if n in reported) \
                or "nothing yet"
            switch = health.get("switch") or {}
            asked = switch.get("wanted") or {}
            failed = [n for n, d in wanted.items() if d and asked.get(n) == d and reported.get(n) != d]
            if switch.get("error") and failed:
                raise RolloutFailed(f"pod {name} could not switch {failed[0]} to {wanted[failed[0]]}; it keeps "
                                    f"serving {reported.get(failed[0]) or 'nothing'}: {switch['error']}", [])
            done = done and all(n in reported and (not d or reported[n] == d) for n, d in wanted.items()) \
                and not gone & reported.keys()
        if done:
            message = f"{len(pods)} pod(s) serve {what}"
            log(message)
            return message
        if time.monotonic() >= deadline:
            where = "; ".join(f"{k} serves {v}" for k, v in sorted(serving.items())) or "no pod is ready"
            raise RolloutFailed(f"the pods of {spec.namespace}/{spec.workspace} did not report {what} after "
                                f"{timeout:g}s ({where})", diagnose(api, spec.workspace, spec.namespace))
        now = "; ".join(f"{k}: {v}" for k, v in sorted(serving.items())) or "no pod ready"
        if now != said:
            log(f"waiting for the pods to serve {what} (the kubelet updates a mounted ConfigMap within about a "
                f"minute): {now}")
            said = now
        time.sleep(min(1.0, max(deadline - time.monotonic(), 0.01)))


def _ready(pod: dict[str, Any]) -> bool:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    return not meta.get("deletionTimestamp") and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _health(api: client.ApiClient, pod: str, namespace: str) -> dict[str, Any]:
    """The pod's /health through the API server's proxy; {} when it does not answer (yet)."""
    try:
        return kube.request(api, "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}:{inf.SERVE_PORT}/proxy/health",
                            timeout=10)
    except kube.KubeError:
        return {}


def wait_for_rollout(
    api: client.ApiClient, name: str, namespace: str, timeout: float, log: Log = _stderr
) -> inf.Rollout:
    """Poll the Deployment until its rollout is done; RolloutFailed with the pods' state when it is not."""
    deadline = time.monotonic() + timeout
    pause, said, problems_said = 0.2, "", ""
    while True:
        deployment = kube.get(api, "apps/v1", "Deployment", name, namespace)
        if deployment is None:
            raise RolloutFailed(f"Deployment {namespace}/{name} disappeared during the rollout", [])
        state = inf.rollout_state(deployment)
        if state.done:
            log(f"rollout of {namespace}/{name} done: {state.message}")
            return state
        if state.failed or time.monotonic() >= deadline:
            why = state.message if state.failed else f"not available after {timeout:g}s ({state.message})"
            raise RolloutFailed(f"the rollout of Deployment {namespace}/{name} failed: {why}",
                                diagnose(api, name, namespace))
        if state.message != said:
            log(f"waiting for {namespace}/{name}: {state.message}")
            said = state.message
        problems = "; ".join(_pod_lines(api, name, namespace))
        if problems and problems != problems_said:
            log(f"pods of {namespace}/{name}: {problems}")
            problems_said = problems
        time.sleep(min(pause, max(deadline - time.monotonic(), 0.01)))
        pause = min(pause * 1.5, 5.0)


def diagnose(api: client.ApiClient, name: str, namespace: str, events: int = 10) -> list[str]:
    """Lines saying what the workspace's pods are doing, then their latest warning events."""
    lines = _pod_lines(api, name, namespace) or ["no pods were created (see the ReplicaSet's events)"]
    involved = {name} | {p["metadata"]["name"] for p in _pods(api, name, namespace)}
    found: list[dict[str, Any]] = []
    for obj_name in sorted(involved):
        try:
            found += kube.list_objects(api, "v1", "Event", namespace, field_selector=f"involvedObject.name={obj_name}")
        except kube.KubeError:
            break  # events are a courtesy; the pods' state is already there
    # The selector is sent, and applied again here: a server may ignore it.
    found = [e for e in found if (e.get("involvedObject") or {}).get("name") in involved]
    unique = {e.get("metadata", {}).get("name"): e for e in found}.values()
    warnings = [e for e in unique if e.get("type") != "Normal"]
    warnings.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    for event in warnings[-events:]:
        target = (event.get("involvedObject") or {}).get("name", "")
        lines.append(f"event {target}: {event.get('reason', '')}: {event.get('message', '')}".rstrip(": "))
    return lines


def _pods(api: client.ApiClient, name: str, namespace: str) -> list[dict[str, Any]]:
    wanted = inf.selector_labels(name)
    selector = ",".join(f"{k}={v}" for k, v in wanted.items())
    pods = kube.list_objects(api, "v1", "Pod", namespace, label_selector=selector)
    return [p for p in pods if wanted.items() <= ((p.get("metadata") or {}).get("labels") or {}).items()]


def _pod_lines(api: client.ApiClient, name: str, namespace: str) -> list[str]:
    return [line for pod in _pods(api, name, namespace) for line in describe_pod(pod)]


def describe_pod(pod: dict[str, Any]) -> list[str]:
    """What keeps a pod from serving: unschedulable, an image that cannot be pulled, a crashing container…"""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    lines = []
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            lines.append(f"pod {name}: {cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}".rstrip(": "))
    for key, role in (("initContainerStatuses", "init container"), ("containerStatuses", "container")):
        for container in status.get(key) or []:
            state = container.get("state") or {}
            restarts = container.get("restartCount") or 0
            again = f" (restarted {restarts}×)" if restarts else ""
            where = f"pod {name}: {role} {container.get('name', '?')}"
            if "waiting" in state and (state["waiting"] or {}).get("reason") not in (None, "PodInitializing"):
                waiting = state["waiting"]
                lines.append(f"{where} waiting: {waiting.get('reason')}: {waiting.get('message', '')}"
                             .rstrip(": ") + again)
            elif "terminated" in state and (state["terminated"] or {}).get("exitCode", 0) != 0:
                ended = state["terminated"]
                lines.append(f"{where} exited {ended.get('exitCode')}: {ended.get('reason', '')} "
                             f"{ended.get('message', '')}".rstrip() + again)
            elif restarts:
                last = (container.get("lastState") or {}).get("terminated") or {}
                lines.append(f"{where} restarted {restarts}×, last exit {last.get('exitCode', '?')} "
                             f"{last.get('reason', '')}".rstrip())
    if not lines and status.get("phase") not in (None, "Running", "Succeeded"):
        lines.append(f"pod {name}: {status.get('phase')}")
    return lines
