"""The workspace-status step writes Kaito's conditions into a Workspace object held by the emulator."""

from __future__ import annotations

import json

from kairo import exitcodes
from kairo.clients import kube as k
from kairo.manifests import conditions as c
from kairo.steps import workspace_status

NS = "ml"
NAME = "workspace-tuning-phi-3"
WORKFLOW = "kairo-tuning-x7k2p"
DIGEST = "sha256:" + "e" * 64


def make_workspace(kube, version: str = "kaito.sh/v1beta1") -> None:
    k.create(kube.api, {"apiVersion": version, "kind": "Workspace",
                        "metadata": {"name": NAME, "namespace": NS, "uid": "u-1", "generation": 3},
                        "resource": {"instanceType": "Standard_NC6s_v3"}})


def step(kubeconfig, event: str, *extra: str) -> int:
    return workspace_status.main(["--workspace", NAME, "--namespace", NS, "--event", event, "--workflow", WORKFLOW,
                                  "--kubeconfig", str(kubeconfig), *extra])


def status_of(kube, version: str = "kaito.sh/v1beta1") -> dict:
    return k.get(kube.api, version, "Workspace", NAME, NS).get("status") or {}


def columns(status: dict) -> tuple[str, str, str]:
    return tuple(c.condition_status(status, kind) for kind in c.CONDITION_TYPES)


def test_a_run_goes_resource_ready_then_inference_ready_then_succeeded(kube, kubeconfig):
    make_workspace(kube)
    assert step(kubeconfig, "started") == exitcodes.OK
    assert columns(status_of(kube)) == ("Unknown", "Unknown", "Unknown")
    assert status_of(kube)["state"] == "Running"
    assert step(kubeconfig, "resource-ready", "--message", "node aks-gpu-1 is ready") == exitcodes.OK
    assert columns(status_of(kube)) == ("True", "Unknown", "Unknown")
    assert step(kubeconfig, "inference-ready", "--adapter-digest", DIGEST,
                "--endpoint", "http://workspace-tuning-phi-3.ml.svc.cluster.local") == exitcodes.OK
    assert columns(status_of(kube)) == ("True", "True", "Unknown")
    assert step(kubeconfig, "finished", "--workflow-status", "Succeeded") == exitcodes.OK
    status = status_of(kube)
    assert columns(status) == ("True", "True", "True")
    assert status["state"] == "Succeeded"
    assert status["workflow"] == WORKFLOW
    assert status["adapterDigest"] == DIGEST
    assert status["endpoint"] == "http://workspace-tuning-phi-3.ml.svc.cluster.local"
    ready = next(x for x in status["conditions"] if x["type"] == "ResourceReady")
    assert ready["reason"] == "ResourcesReady" and ready["message"] == "node aks-gpu-1 is ready"
    assert ready["observedGeneration"] == 3 and ready["lastTransitionTime"].endswith("Z")


def failures(step_name: str, message: str) -> str:
    """Argo's {{workflow.failures}}: the DAG node and the retried pod node of the failed step."""
    return json.dumps([
        {"displayName": WORKFLOW, "message": "child failed", "templateName": "tuning", "phase": "Failed"},
        {"displayName": f"{step_name}(1)", "message": message, "templateName": step_name, "phase": "Failed",
         "podName": f"{WORKFLOW}-{step_name}-123"},
    ])


def test_a_failed_deploy_makes_inference_ready_false_naming_the_step(kube, kubeconfig):
    make_workspace(kube)
    step(kubeconfig, "started")
    step(kubeconfig, "resource-ready")
    assert step(kubeconfig, "finished", "--workflow-status", "Failed",
                "--failures", failures("deploy", "ImagePullBackOff on pull-adapter")) == exitcodes.OK
    status = status_of(kube)
    assert columns(status) == ("True", "False", "False")
    inference = next(x for x in status["conditions"] if x["type"] == "InferenceReady")
    assert inference["reason"] == "DeployFailed"
    assert inference["message"] == "step 'deploy' failed: ImagePullBackOff on pull-adapter"
    assert status["state"] == "Failed" and status["failedStep"] == "deploy"


def test_a_failed_provision_makes_resource_ready_false(kube, kubeconfig):
    make_workspace(kube, "kaito.sh/v1alpha1")
    step(kubeconfig, "started")
    step(kubeconfig, "finished", "--workflow-status", "Error", "--failures", failures("provision", "quota exceeded"))
    status = status_of(kube, "kaito.sh/v1alpha1")
    assert columns(status) == ("False", "Unknown", "False")
    succeeded = next(x for x in status["conditions"] if x["type"] == "WorkspaceSucceeded")
    assert succeeded["reason"] == "ProvisionFailed" and "quota exceeded" in succeeded["message"]


def test_a_failed_training_leaves_resource_ready_alone(kube, kubeconfig):
    make_workspace(kube)
    step(kubeconfig, "started")
    step(kubeconfig, "resource-ready")
    step(kubeconfig, "finished", "--workflow-status", "Failed", "--failures", failures("train", "CUDA out of memory"))
    status = status_of(kube)
    assert columns(status) == ("True", "Unknown", "False")
    assert status["failedStep"] == "train"


def test_retraining_keeps_a_serving_inference_ready(kube, kubeconfig):
    make_workspace(kube)
    for event in ("started", "resource-ready", "inference-ready"):
        step(kubeconfig, event)
    step(kubeconfig, "finished", "--workflow-status", "Succeeded")
    assert step(kubeconfig, "started") == exitcodes.OK
    assert columns(status_of(kube)) == ("True", "True", "Unknown")


def test_without_a_workspace_object_there_is_nothing_to_update(kube, kubeconfig, capsys):
    assert step(kubeconfig, "started") == exitcodes.OK
    assert "nothing to update" in capsys.readouterr().err
    assert kube.objects("kaito.sh/v1beta1/workspaces", NS) == []


def test_finished_needs_the_workflow_status(kube, kubeconfig):
    make_workspace(kube)
    assert step(kubeconfig, "finished") == exitcodes.BAD_INPUT


def test_an_unchanged_condition_keeps_its_transition_time():
    first = c.condition("ResourceReady", "True", "ResourcesReady", "ready", "2026-01-01T00:00:00Z")
    again = c.condition("ResourceReady", "True", "ResourcesReady", "still ready", "2026-01-02T00:00:00Z")
    flipped = c.condition("ResourceReady", "False", "ProvisionFailed", "gone", "2026-01-03T00:00:00Z")
    kept = c.set_condition([first], again)
    assert kept[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z" and kept[0]["message"] == "still ready"
    assert c.set_condition(kept, flipped)[0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"


def test_failed_step_reads_argo_failures():
    assert c.failed_step(failures("smoke", "POST /chat answered 500")) == ("smoke", "POST /chat answered 500")
    assert c.failed_step("") == ("", "")
    assert c.failed_step("not json") == ("", "not json")


def test_a_local_run_has_nothing_to_update(monkeypatch, capsys):
    monkeypatch.setenv("KAIRO_LOCAL", "1")
    assert workspace_status.main(["--workspace", NAME, "--event", "started"]) == exitcodes.OK
    assert "local run" in capsys.readouterr().err


def test_an_api_that_does_not_answer_never_fails_the_run(tmp_path, capsys):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {}}], "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}]}))
    code = step(kubeconfig, "resource-ready", "--retries", "2", "--retry-wait", "0.01")
    assert code == exitcodes.OK
    err = capsys.readouterr().err
    assert err.count("trying again") == 2
    assert "was not written" in err and "the run goes on without it" in err


def test_a_refusal_is_logged_and_the_run_goes_on(kube, kubeconfig, capsys):
    make_workspace(kube)
    kube.emulator["patch", f"/apis/kaito.sh/v1beta1/namespaces/{NS}/workspaces/{NAME}/status"] << 403
    assert step(kubeconfig, "started") == exitcodes.OK
    assert "was not written (Kubernetes API 403" in capsys.readouterr().err


def test_a_failed_status_task_is_not_taken_for_the_failed_step():
    nodes = json.loads(failures("train", "CUDA out of memory"))
    nodes.insert(0, {"displayName": "started", "message": "pod failed to start", "templateName": "workspace-status",
                     "phase": "Error", "podName": f"{WORKFLOW}-started-1"})
    assert c.failed_step(json.dumps(nodes)) == ("train", "CUDA out of memory")


def test_a_failed_adapter_pull_of_an_inference_workspace_makes_inference_ready_false(kube, kubeconfig):
    make_workspace(kube)
    step(kubeconfig, "started")
    step(kubeconfig, "resource-ready")
    step(kubeconfig, "finished", "--workflow-status", "Failed",
         "--failures", failures("pull-adapter-1", "resolve myregistry/a:1: not found (HTTP 404)"))
    status = status_of(kube)
    assert columns(status) == ("True", "False", "False")
    inference = next(x for x in status["conditions"] if x["type"] == "InferenceReady")
    assert inference["reason"] == "PullAdapter1Failed" and "not found" in inference["message"]
