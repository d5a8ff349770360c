"""A JobSet as `kairo run --local` runs it: each pod a local process, with the environment JobSet gives it.

What JobSet (kubernetes-sigs/jobset) and the Job controller do on a cluster, done here for the one shape
kairo creates (pipelines/distributed.py): every replicated Job's `parallelism` indexed pods start at once;
a pod sees the labels and annotations JobSet and the Job controller put on it (jobset name, replicated
job, job index, restart attempt, `batch.kubernetes.io/job-completion-index`) through its `fieldRef` env,
plus `JOB_COMPLETION_INDEX`; `$(VAR)` in command and args is expanded as the kubelet expands it; the
headless Service's host names (`<jobset>-<job>-<i>-<j>.<subdomain>`) are 127.0.0.1, each port a free
one here. A pod that fails makes the whole set restart (`failurePolicy.maxRestarts` times, JobSet's
`Recreate`), every other pod stopped first; the set completes when every pod exits 0.
"""

from __future__ import annotations

import re
import secrets
import socket
import string
from dataclasses import dataclass, field
from typing import Any

from kairo.local.mounts import Unsupported

JOBSET_LABELS = "jobset.sigs.k8s.io"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
_FIELD = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass
class LocalPod:
    """One pod of the set: its host name, its metadata as JobSet writes it, and its container."""

    hostname: str
    labels: dict[str, str]
    annotations: dict[str, str]
    container: dict[str, Any]
    volumes: list[dict[str, Any]] = field(default_factory=list)


def check_jobset(obj: dict[str, Any], where: str) -> None:
    """Refuse a created object this runner cannot stand in for."""
    if obj.get("kind") != "JobSet":
        hint = (" — a TrainJob runs on a cluster's Kubeflow Trainer; locally kairo runs the JobSet engine (cluster "
                "config training.engine: jobset)") if obj.get("kind") == "TrainJob" else ""
        raise Unsupported(f"{where}: the local runner creates JobSets only, not a {obj.get('kind')}{hint}")
    for job in (obj.get("spec") or {}).get("replicatedJobs") or []:
        pod = job["template"]["spec"]["template"]["spec"]
        if len(pod.get("containers") or []) != 1 or pod.get("initContainers"):
            raise Unsupported(f"{where}: replicated job {job.get('name')}: locally a pod runs one container")


def name_of(obj: dict[str, Any]) -> str:
    """The JobSet's name; a generateName gets five characters, as the API server adds them."""
    meta = obj.get("metadata") or {}
    if meta.get("name"):
        return str(meta["name"])
    alphabet = string.ascii_lowercase + string.digits
    return str(meta.get("generateName", "jobset-")) + "".join(secrets.choice(alphabet) for _ in range(5))


def pods(obj: dict[str, Any], name: str, restart: int) -> list[LocalPod]:
    """Every pod of the JobSet `name` in restart attempt `restart`, in order (replicated job, job, index)."""
    spec = obj.get("spec") or {}
    subdomain = ((spec.get("network") or {}).get("subdomain")) or name
    found = []
    for job in spec.get("replicatedJobs") or []:
        template = job["template"]["spec"]
        for job_index in range(int(job.get("replicas", 1))):
            for index in range(int(template.get("parallelism", 1))):
                host = f"{name}-{job['name']}-{job_index}-{index}"
                labels = {f"{JOBSET_LABELS}/jobset-name": name, f"{JOBSET_LABELS}/replicatedjob-name": job["name"],
                          f"{JOBSET_LABELS}/job-index": str(job_index), f"{JOBSET_LABELS}/restart-attempt": str(restart),
                          **((template["template"].get("metadata") or {}).get("labels") or {})}
                annotations = {**labels, COMPLETION_INDEX: str(index)}
                pod_spec = template["template"]["spec"]
                found.append(LocalPod(f"{host}.{subdomain}", labels, annotations, pod_spec["containers"][0],
                                      pod_spec.get("volumes") or []))
    return found


def free_ports(ports: set[str]) -> dict[str, str]:
    """A free port on 127.0.0.1 for each port a pod's address names."""
    chosen = {}
    for port in sorted(ports):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            chosen[port] = str(sock.getsockname()[1])
    return chosen


def hosts_to_loopback(text: str, hosts: list[str], ports: dict[str, str]) -> str:
    """`<pod>.<subdomain>[:port]` → `127.0.0.1[:free port]`: the headless Service's names, on this machine."""
    for host in hosts:
        text = re.sub(re.escape(host) + r"(?::(\d+))?",
                      lambda m: "127.0.0.1" + (f":{ports.get(m.group(1), m.group(1))}" if m.group(1) else ""), text)
    return text


def ports_named(texts: list[str], hosts: list[str]) -> set[str]:
    return {m.group(1) for text in texts for host in hosts
            for m in re.finditer(re.escape(host) + r":(\d+)", text)}


def environment(pod: LocalPod) -> dict[str, str]:
    """The container's env as the kubelet builds it: values, `fieldRef`s to the pod's metadata, `$(VAR)` expanded."""
    env = {"JOB_COMPLETION_INDEX": pod.annotations[COMPLETION_INDEX]}  # the Job controller adds it to every pod
    for item in pod.container.get("env") or []:
        if "value" in item or "valueFrom" not in item:
            env[item["name"]] = expand(str(item.get("value", "")), env)
            continue
        path = ((item["valueFrom"].get("fieldRef") or {}).get("fieldPath")) or ""
        match = _FIELD.fullmatch(path)
        if match:
            source = pod.labels if match.group(1) == "labels" else pod.annotations
            env[item["name"]] = source.get(match.group(2), "")
        elif path in ("metadata.name", "spec.hostname"):
            env[item["name"]] = pod.hostname.split(".")[0]
        else:
            raise Unsupported(f"env {item['name']}: valueFrom {item['valueFrom']} is not known locally")
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: a defined variable's value, an undefined one left as written, `$$` → `$`."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(replace, text)
