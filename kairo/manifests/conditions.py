"""The Workspace status a Kaito user reads: conditions ResourceReady, InferenceReady, WorkspaceSucceeded.

Pure builders: given the status a Workspace has and what just happened in the workflow, the status
patch to send. The `workspace-status` step sends it; `kairo status` reads it back.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

RESOURCE_READY = "ResourceReady"
INFERENCE_READY = "InferenceReady"
WORKSPACE_SUCCEEDED = "WorkspaceSucceeded"
CONDITION_TYPES = (RESOURCE_READY, INFERENCE_READY, WORKSPACE_SUCCEEDED)

# What happened, as the pipelines tell the step: after provision, after deploy + smoke, at the end.
Event = Literal["started", "resource-ready", "inference-ready", "finished"]
EVENTS: tuple[str, ...] = ("started", "resource-ready", "inference-ready", "finished")

# Which condition a failed step makes False, besides WorkspaceSucceeded.
STEP_CONDITION = {"provision": RESOURCE_READY, "pull-adapter": INFERENCE_READY, "deploy": INFERENCE_READY,
                  "smoke": INFERENCE_READY}
# The generic template's first task (`kairo-step workspace`): it writes its own InvalidSpec condition.
VALIDATION_STEP = "workspace"
INVALID_SPEC = "InvalidSpec"
# Tasks that only write this status: their own failure says nothing about the run.
STATUS_TEMPLATE = "workspace-status"
MESSAGE_LIMIT = 2000  # a condition message is for people; the full log is in the workflow


def condition(
    kind: str, status: str, reason: str, message: str, now: str, generation: int | None = None
) -> dict[str, Any]:
    """One condition shaped like metav1.Condition (what Kaito's controller writes)."""
    out: dict[str, Any] = {
        "type": kind, "status": status, "reason": reason,
        "message": _shorten(message), "lastTransitionTime": now,
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def set_condition(conditions: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """`conditions` with `new` in place of its type; the transition time stays when the status did not change."""
    out, replaced = [], False
    for old in conditions:
        if old.get("type") != new["type"]:
            out.append(old)
            continue
        if old.get("status") == new["status"] and old.get("lastTransitionTime"):
            new = {**new, "lastTransitionTime": old["lastTransitionTime"]}
        out.append(new)
        replaced = True
    if not replaced:
        out.append(new)
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(out, key=lambda c: order.get(c.get("type", ""), len(order)))


def condition_status(status: dict[str, Any] | None, kind: str) -> str:
    """'True', 'False' or 'Unknown' as the status says; '' when the condition is not there."""
    for item in (status or {}).get("conditions") or []:
        if item.get("type") == kind:
            return str(item.get("status", ""))
    return ""


def failed_step(failures: str) -> tuple[str, str]:
    """The step that failed and its message, from Argo's `{{workflow.failures}}` (a JSON list of nodes)."""
    try:
        nodes = json.loads(failures) if failures else []
    except ValueError:
        return "", failures
    if not isinstance(nodes, list):
        return "", ""
    # Retries show as `train(0)`; the DAG's own node has no pod. Prefer a node that ran a pod.
    candidates = [n for n in nodes if isinstance(n, dict) and n.get("templateName") != STATUS_TEMPLATE]
    candidates.sort(key=lambda n: 0 if n.get("podName") else 1)
    for node in candidates:
        name = re.sub(r"\(\d+\)$", "", str(node.get("displayName") or node.get("templateName") or ""))
        if name:
            return name, str(node.get("message") or "")
    return "", ""


def status_patch(
    current: dict[str, Any] | None,
    event: str,
    now: str,
    generation: int | None = None,
    workflow: str = "",
    workflow_status: str = "",
    failures: str = "",
    message: str = "",
    adapter_digest: str = "",
    endpoint: str = "",
) -> dict[str, Any]:
    """The new `status` of a Workspace after `event` (a merge patch body for the status subresource)."""
    current = current or {}
    conditions = list(current.get("conditions") or [])
    present = {c.get("type") for c in conditions}

    def put(kind: str, status: str, reason: str, text: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, condition(kind, status, reason, text, now, generation))

    patch: dict[str, Any] = {}
    if event == "started":
        # A retraining run leaves a serving inference alone: only missing conditions start as Unknown.
        if RESOURCE_READY not in present:
            put(RESOURCE_READY, "Unknown", "Provisioning", "waiting for GPU nodes")
        if INFERENCE_READY not in present:
            put(INFERENCE_READY, "Unknown", "Pending", "the adapter is not deployed yet")
        put(WORKSPACE_SUCCEEDED, "Unknown", "WorkflowRunning", message or f"workflow {workflow} is running")
        patch["state"] = "Running"
        patch["failedStep"] = None
    elif event == "resource-ready":
        put(RESOURCE_READY, "True", "ResourcesReady", message or "the GPU nodes are ready")
    elif event == "inference-ready":
        where = f" at {endpoint}" if endpoint else ""
        put(INFERENCE_READY, "True", "InferenceServiceReady",
            message or f"adapter {adapter_digest or '(unknown digest)'} answers{where}")
    elif event == "finished":
        if workflow_status == "Succeeded":
            put(WORKSPACE_SUCCEEDED, "True", "WorkflowSucceeded", message or f"workflow {workflow} succeeded")
            patch["state"] = "Succeeded"
        else:
            step, why = failed_step(failures)
            if step == VALIDATION_STEP and _invalid_spec_of(current, generation):
                # The validation already said what is wrong with the spec; Argo would only add "exit code 2".
                return {"state": "Failed", "failedStep": step, **({"workflow": workflow} if workflow else {})}
            reason = f"{_camel(step)}Failed" if step else "WorkflowFailed"
            text = f"step '{step}' failed: {why}" if step else (message or f"workflow {workflow} {workflow_status}")
            failed_condition = STEP_CONDITION.get(re.sub(r"-\d+$", "", step))  # pull-adapter-N: one task per adapter
            if failed_condition:
                put(failed_condition, "False", reason, text)
            put(WORKSPACE_SUCCEEDED, "False", reason, text)
            patch["state"] = "Failed"
            patch["failedStep"] = step or None
    else:
        raise ValueError(f"unknown event '{event}' — one of {', '.join(EVENTS)}")
    patch["conditions"] = conditions
    if workflow:
        patch["workflow"] = workflow
    if adapter_digest:
        patch["adapterDigest"] = adapter_digest
    if endpoint:
        patch["endpoint"] = endpoint
    return patch


def invalid_spec_patch(
    current: dict[str, Any] | None, problems: list[str], now: str, generation: int | None = None, workflow: str = "",
) -> dict[str, Any]:
    """The status of a Workspace whose spec kairo.spec refuses: WorkspaceSucceeded False, reason InvalidSpec."""
    count = len(problems)
    text = f"{count} problem{'s' if count != 1 else ''} in the Workspace spec: " + "; ".join(problems)
    conditions = set_condition(list((current or {}).get("conditions") or []),
                               condition(WORKSPACE_SUCCEEDED, "False", INVALID_SPEC, text, now, generation))
    patch: dict[str, Any] = {"conditions": conditions, "state": "Failed", "failedStep": VALIDATION_STEP}
    if workflow:
        patch["workflow"] = workflow
    return patch


def _invalid_spec_of(status: dict[str, Any] | None, generation: int | None) -> bool:
    """True when the status already says this generation of the spec is invalid."""
    for item in (status or {}).get("conditions") or []:
        if item.get("type") == WORKSPACE_SUCCEEDED:
            return (item.get("reason") == INVALID_SPEC and item.get("status") == "False"
                    and item.get("observedGeneration") == generation)
    return False


def _camel(step: str) -> str:
    # Condition reasons are CamelCase identifiers (metav1.Condition allows letters, digits, '_', ',' and ':').
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", step) if part) or "Step"


def _shorten(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"
