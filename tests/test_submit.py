"""`kairo submit` and `kairo schedule`: the requests the Argo Server receives, and objects in the Kubernetes emulator."""

from __future__ import annotations

import yaml

from kairo.cli import main
from kairo.cluster import ClusterConfig
from kairo.pipelines import build_workflow
from kairo.spec import load_workspace
from tests.fixtures.workspaces import KAITO_PVC_EXAMPLE

TOKEN = "tok-3f9a1c-never-print-me"


def submit(capsys, *argv) -> tuple[int, str, str]:
    code = main([*map(str, argv)])
    out = capsys.readouterr()
    assert TOKEN not in out.out and TOKEN not in out.err
    return code, out.out, out.err


def nodes(*rows) -> dict:
    """Argo's status.nodes: (displayName, type, phase[, message]) rows."""
    found = {}
    for i, (display, kind, phase, *message) in enumerate(rows):
        node = {"id": f"wf-{i}", "name": f"wf.{display}", "displayName": display, "type": kind, "phase": phase}
        found[node["id"]] = {**node, **({"message": message[0]} if message else {})}
    return found


def pvc_file(tmp_path):
    path = tmp_path / "pvc.yaml"
    path.write_text(KAITO_PVC_EXAMPLE)
    return path


def test_submit_posts_the_workflow_to_the_argo_server_api(capsys, examples, argo_server, monkeypatch):
    monkeypatch.setenv("ARGO_TOKEN", TOKEN)
    argo_server.token = TOKEN
    code, out, _ = submit(capsys, "submit", examples / "tuning-phi-3.yaml", "--argo-server", argo_server.url)
    assert code == 0
    [request] = argo_server.requests
    assert (request.method, request.path) == ("POST", "/api/v1/workflows/argo")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    workspace, _, _ = load_workspace(examples / "tuning-phi-3.yaml")
    assert request.body == {"workflow": build_workflow(workspace, ClusterConfig())}
    assert "workflow argo/workspace-tuning-phi-3-x7k2q submitted" in out
    assert f"{argo_server.url}/workflows/argo/workspace-tuning-phi-3-x7k2q" in out


def test_submit_goes_to_the_namespace_asked_for(capsys, examples, argo_server):
    code, out, _ = submit(capsys, "submit", examples / "tuning-phi-3.yaml", "--argo-server", argo_server.url,
                          "--namespace", "team-a")
    assert code == 0 and argo_server.requests[0].path == "/api/v1/workflows/team-a"
    assert argo_server.requests[0].body["workflow"]["metadata"]["namespace"] == "team-a"


def test_a_refused_token_is_reported_without_showing_it(capsys, examples, argo_server, monkeypatch):
    monkeypatch.setenv("ARGO_TOKEN", TOKEN)
    argo_server.token = "another-token"
    code, _, err = submit(capsys, "submit", examples / "tuning-phi-3.yaml", "--argo-server", argo_server.url)
    assert code == 1 and "401" in err and "token not valid" in err


def test_submit_needs_an_argo_server_or_kubernetes(capsys, examples, monkeypatch):
    monkeypatch.delenv("ARGO_SERVER", raising=False)
    code, _, err = submit(capsys, "submit", examples / "tuning-phi-3.yaml")
    assert code == 2 and "--argo-server" in err and "--via kubernetes" in err


def test_wait_follows_the_steps_and_succeeds(capsys, examples, argo_server):
    argo_server.statuses = [
        {"phase": "Running", "nodes": nodes(("provision", "Pod", "Running"))},
        {"phase": "Running", "nodes": nodes(("provision", "Pod", "Succeeded"), ("train", "Pod", "Running"))},
        {"phase": "Succeeded", "nodes": nodes(("provision", "Pod", "Succeeded"), ("train", "Pod", "Succeeded"))},
    ]
    code, out, _ = submit(capsys, "submit", examples / "tuning-phi-3.yaml", "--argo-server", argo_server.url,
                          "--wait", "--poll-seconds", "0.01")
    assert code == 0
    assert out.index("provision: Running") < out.index("provision: Succeeded") < out.index("train: Succeeded")
    assert "succeeded" in out.splitlines()[-1]
    assert [r.path for r in argo_server.received("GET")][0] == "/api/v1/workflows/argo/workspace-tuning-phi-3-x7k2q"


def test_wait_exits_non_zero_naming_the_failed_step(capsys, examples, argo_server):
    argo_server.statuses = [{"phase": "Failed", "message": "child failed", "nodes": nodes(
        ("train", "Retry", "Failed"), ("train(0)", "Pod", "Error", "pod deleted"),
        ("train(1)", "Pod", "Failed", "training_config.LoraConfig.r: 0 — must be at least 1"),
        ("cleanup", "Pod", "Succeeded"))}]
    code, _, err = submit(capsys, "submit", examples / "tuning-phi-3.yaml", "--argo-server", argo_server.url,
                          "--wait", "--poll-seconds", "0.01")
    assert code == 1
    assert [line for line in err.splitlines() if "warning:" not in line] == [
        "step train failed: training_config.LoraConfig.r: 0 — must be at least 1"]


def test_via_kubernetes_creates_the_pvcs_then_the_workflow(capsys, tmp_path, kube, kubeconfig):
    code, out, err = submit(capsys, "submit", pvc_file(tmp_path), "--via", "kubernetes", "--kubeconfig", kubeconfig,
                            "--namespace", "default")
    assert code == 0, err
    claims = {c["metadata"]["name"] for c in kube.objects("v1/persistentvolumeclaims", "default")}
    assert claims == {"pvc-azurefile-input", "pvc-azurefile-output"}
    [workflow] = kube.objects("argoproj.io/v1alpha1/workflows", "default")
    assert workflow["metadata"]["labels"]["kairo.sh/workspace"] == "workspace-tuning-phi-3-pvc"
    assert workflow["spec"]["entrypoint"] == "tuning"
    assert f"workflow default/{workflow['metadata']['name']} submitted" in out


def test_via_kubernetes_leaves_an_existing_pvc_alone(capsys, tmp_path, kube, kubeconfig):
    from kairo.clients.kube import create

    existing = yaml.safe_load(KAITO_PVC_EXAMPLE.split("---\n")[0])
    existing["metadata"]["namespace"] = "default"
    existing["spec"]["resources"]["requests"]["storage"] = "50Gi"
    create(kube.api, existing)
    code, _, err = submit(capsys, "submit", pvc_file(tmp_path), "--via", "kubernetes", "--kubeconfig", kubeconfig,
                          "--namespace", "default")
    assert code == 0, err
    claims = {c["metadata"]["name"]: c for c in kube.objects("v1/persistentvolumeclaims", "default")}
    assert claims["pvc-azurefile-input"]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert "pvc-azurefile-output" in claims


def test_via_the_argo_server_the_pvcs_still_go_through_kubernetes(capsys, tmp_path, argo_server, kube, kubeconfig):
    code, out, err = submit(capsys, "submit", pvc_file(tmp_path), "--argo-server", argo_server.url, "--kubeconfig",
                            kubeconfig, "--namespace", "default")
    assert code == 0, err
    assert len(kube.objects("v1/persistentvolumeclaims", "default")) == 2
    assert [r.path for r in argo_server.requests] == ["/api/v1/workflows/default"]
    assert "applied PersistentVolumeClaim/pvc-azurefile-input" in out


def test_schedule_creates_then_replaces_the_cronworkflow_on_the_argo_server(capsys, examples, argo_server):
    args = ["schedule", examples / "tuning-phi-3.yaml", "--cron", "0 3 * * 1", "--timezone", "Europe/Paris",
            "--argo-server", argo_server.url]
    code, out, _ = submit(capsys, *args)
    assert code == 0
    post = argo_server.received("POST")[0]
    assert post.path == "/api/v1/cron-workflows/argo"
    cron = post.body["cronWorkflow"]
    assert cron["spec"]["schedules"] == ["0 3 * * 1"] and cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert "cronworkflow argo/workspace-tuning-phi-3 scheduled: '0 3 * * 1' (Europe/Paris)" in out
    assert f"{argo_server.url}/cron-workflows/argo/workspace-tuning-phi-3" in out
    code, _, _ = submit(capsys, *args[:3], "0 4 * * 2", *args[4:])
    assert code == 0
    put = argo_server.received("PUT")[0]
    assert put.path == "/api/v1/cron-workflows/argo/workspace-tuning-phi-3"
    assert put.body["cronWorkflow"]["metadata"]["resourceVersion"] == "1"
    assert argo_server.cron_workflows[("argo", "workspace-tuning-phi-3")]["spec"]["schedules"] == ["0 4 * * 2"]


def test_schedule_via_kubernetes_applies_the_cronworkflow(capsys, examples, kube, kubeconfig):
    code, _, err = submit(capsys, "schedule", examples / "tuning-phi-3.yaml", "--cron", "@daily", "--via",
                          "kubernetes", "--kubeconfig", kubeconfig, "--namespace", "default")
    assert code == 0, err
    [cron] = kube.objects("argoproj.io/v1alpha1/cronworkflows", "default")
    assert cron["spec"]["schedules"] == ["@daily"] and cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_a_gpu_pod_that_never_scheduled_is_named_with_what_to_check(capsys, examples, argo_server):
    argo_server.statuses = [{"phase": "Failed", "nodes": nodes(("gpu-check", "Pod", "Failed", "timeout"),
                                                                ("cleanup", "Pod", "Succeeded"))}]
    code, _, err = submit(capsys, "submit", examples / "tuning-phi-3.yaml", "--argo-server", argo_server.url,
                          "--wait", "--poll-seconds", "0.01")
    assert code == 1
    assert "step gpu-check failed: timeout — no node could start a pod with train's GPUs" in err
