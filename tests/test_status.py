"""`kairo status`: Kaito's columns from a workflow and objects held in KMock's emulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from kairo.cli import main
from kairo.clients import kube as k

NS = "ml"
NAME = "workspace-tuning-phi-3"
HEADER = ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]


def ago(**delta) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def workflow(name: str, phase: str, steps: dict[str, str], created: str, namespace: str = "argo",
             workspace_ns: str = NS) -> dict:
    nodes = {f"{name}-{i}": {"id": f"{name}-{i}", "displayName": step, "type": "Pod", "phase": step_phase}
             for i, (step, step_phase) in enumerate(steps.items())}
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created,
                     "labels": {"kairo.sh/workspace": NAME, "kairo.sh/namespace": workspace_ns}},
        "spec": {"arguments": {"parameters": [{"name": "instance-type", "value": "Standard_NC6s_v3"}]}},
        "status": {"phase": phase, "nodes": nodes},
    }


def inference(kube, available: int) -> None:
    k.create(kube.api, {"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": NAME, "namespace": NS, "creationTimestamp": ago(minutes=5)},
                        "spec": {"replicas": 1}, "status": {"replicas": 1, "availableReplicas": available}})
    k.create(kube.api, {"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": NAME, "namespace": NS, "annotations": {"kairo.sh/adapter-ref": "acr.io/phi@sha256:" + "a" * 64}},
        "spec": {"ports": [{"port": 80}]}})


@pytest.fixture
def status(kubeconfig, tmp_path, capsys):
    config = tmp_path / "cluster.yaml"
    config.write_text("argo:\n  uiUrl: https://argo.example.com/\n")

    def run(*extra: str) -> tuple[int, str, str]:
        code = main(["status", NAME, "-n", NS, "--kubeconfig", str(kubeconfig), "--cluster-config", str(config),
                     *extra])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()[:2]]


def test_status_prints_kaitos_columns_while_the_workflow_runs(kube, status):
    k.create(kube.api, workflow("kairo-tuning-x7k2p", "Running", {"provision": "Succeeded", "train": "Running"},
                                ago(seconds=30)))
    code, out, _ = status()
    assert code == 0
    header, row = rows(out)
    assert header == HEADER
    assert row[:5] == [NAME, "Standard_NC6s_v3", "True", "Unknown", "Unknown"]
    assert row[5].endswith("s")
    assert "workflow:  kairo-tuning-x7k2p (Running)" in out
    assert "argo ui:   https://argo.example.com/workflows/argo/kairo-tuning-x7k2p" in out


def test_status_after_a_successful_run_shows_the_endpoint(kube, status):
    k.create(kube.api, workflow("kairo-tuning-x7k2p", "Succeeded",
                                {"provision": "Succeeded", "deploy": "Succeeded", "smoke": "Succeeded"}, ago(hours=2)))
    inference(kube, available=1)
    code, out, _ = status()
    assert rows(out)[1] == [NAME, "Standard_NC6s_v3", "True", "True", "True", "120m"]
    assert "endpoint:  http://workspace-tuning-phi-3.ml.svc.cluster.local" in out
    assert "adapter:   acr.io/phi@sha256:" in out


def test_a_failed_deploy_shows_inference_not_ready(kube, status):
    k.create(kube.api, workflow("kairo-tuning-x7k2p", "Failed",
                                {"provision": "Succeeded", "deploy": "Failed", "smoke": "Omitted"}, ago(days=3)))
    inference(kube, available=0)
    _, out, _ = status()
    assert rows(out)[1] == [NAME, "Standard_NC6s_v3", "True", "False", "False", "3d"]


def test_the_latest_workflow_of_this_namespace_counts(kube, status):
    k.create(kube.api, workflow("kairo-tuning-old", "Failed", {"provision": "Failed"}, ago(days=2)))
    k.create(kube.api, workflow("kairo-tuning-new", "Running", {"provision": "Running"}, ago(minutes=1)))
    k.create(kube.api, workflow("kairo-tuning-other", "Succeeded", {"provision": "Succeeded"}, ago(seconds=5),
                                workspace_ns="someone-else"))
    _, out, _ = status()
    assert rows(out)[1][2:5] == ["Unknown", "Unknown", "Unknown"]
    assert "workflow:  kairo-tuning-new (Running)" in out


def test_the_workspace_objects_conditions_come_first(kube, status):
    k.create(kube.api, {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                        "metadata": {"name": NAME, "namespace": NS, "creationTimestamp": ago(minutes=7)},
                        "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
                        "status": {"workflow": "kairo-tuning-abc", "conditions": [
                            {"type": "ResourceReady", "status": "True"},
                            {"type": "InferenceReady", "status": "False", "reason": "SmokeFailed"},
                            {"type": "WorkspaceSucceeded", "status": "False"}]}})
    k.create(kube.api, workflow("kairo-tuning-abc", "Running", {"provision": "Running"}, ago(minutes=6)))
    _, out, _ = status()
    assert rows(out)[1] == [NAME, "Standard_NC24ads_A100_v4", "True", "False", "False", "7m"]


def test_json_output_for_scripts(kube, status):
    k.create(kube.api, workflow("kairo-tuning-x7k2p", "Succeeded",
                                {"provision": "Succeeded", "deploy": "Succeeded", "smoke": "Succeeded"}, ago(hours=1)))
    inference(kube, available=1)
    code, out, _ = status("-o", "json")
    view = json.loads(out)
    assert code == 0
    assert {key: view[key] for key in ("name", "instance", "resourceReady", "inferenceReady", "workspaceReady")} == {
        "name": NAME, "instance": "Standard_NC6s_v3", "resourceReady": "True", "inferenceReady": "True",
        "workspaceReady": "True"}
    assert view["workflow"] == {"name": "kairo-tuning-x7k2p", "namespace": "argo", "phase": "Succeeded",
                                "url": "https://argo.example.com/workflows/argo/kairo-tuning-x7k2p"}
    assert view["endpoint"] == "http://workspace-tuning-phi-3.ml.svc.cluster.local"


def test_an_unknown_workspace_says_what_was_looked_for(kube, status):
    code, out, err = status()
    assert code == 1 and out == ""
    assert "nothing found for workspace 'workspace-tuning-phi-3' in namespace 'ml'" in err
