"""The deploy and deployed steps against KMock's Kubernetes emulator, with the official client.

The emulator has no Deployment controller: a thread in each test plays it, reporting status the way
the real one does, so the rollout waiting is exercised against the status it would read.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from kairo import exitcodes
from kairo.clients import kube as k
from kairo.clients.rollout import RolloutFailed, wait_for_rollout
from kairo.manifests import inference as inf
from kairo.steps import deploy, deployed
from tests.fixtures.inference_pods import InferencePods
from tests.fixtures.outputs import step_outputs

NS = "ml"
NAME = "phi3"
FIRST = "registry.example.com/team/phi3-adapter@sha256:" + "1" * 64
SECOND = "registry.example.com/team/phi3-adapter@sha256:" + "2" * 64
READY = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}


def play_controller(kube, statuses: list[dict], every: float = 0.15, name: str = NAME) -> threading.Thread:
    """Once the Deployment exists, report each status in turn, as the Deployment controller would; its pods
    serve what the ConfigMap declares (tests.fixtures.inference_pods)."""
    if not hasattr(kube, "pods"):
        kube.pods = InferencePods(kube, name, NS)

    def run() -> None:
        deadline = time.monotonic() + 10
        while k.get(kube.api, "apps/v1", "Deployment", name, NS) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        for status in statuses:
            time.sleep(every)
            k.merge_patch(kube.api, "apps/v1", "Deployment", name, {"status": status}, NS, subresource="status")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run_deploy(kubeconfig: Path, tmp_path: Path, ref: str = FIRST, *extra: str) -> int:
    return deploy.main([
        "--workspace", NAME, "--namespace", NS, "--preset", "tiny-llama-test", "--adapter-ref", ref,
        "--instance-type", "Standard_NC6s_v3", "--label", "app=phi3", "--dataset-digest", "sha256:" + "d" * 64,
        "--eval-loss", "1.25", "--workflow", "kairo-tuning-abc12", "--timeout", "10",
        "--kubeconfig", str(kubeconfig), "--outputs", str(tmp_path / "out"), *extra,
    ])


def outputs(tmp_path: Path) -> dict[str, str]:
    return step_outputs(tmp_path / "out")


def test_deploy_creates_the_deployment_and_service_and_outputs_the_url(kube, kubeconfig, tmp_path):
    play_controller(kube, [READY])
    assert run_deploy(kubeconfig, tmp_path) == exitcodes.OK
    assert [d["metadata"]["name"] for d in kube.objects("apps/v1/deployments", NS)] == [NAME]
    services = kube.objects("v1/services", NS)
    assert [(s["metadata"]["name"], s["spec"]["ports"][0]["port"]) for s in services] == [(NAME, 80)]
    assert outputs(tmp_path)["service-url"] == "http://phi3.ml.svc.cluster.local"


def test_applying_the_same_manifests_twice_changes_nothing(kube):
    spec = inf.InferenceSpec(NAME, NS, "tiny-llama-test", FIRST)
    for manifest in (inf.build_deployment(spec), inf.build_service(spec)):
        first = k.apply(kube.api, manifest)
        second = k.apply(kube.api, manifest)
        assert first == second
    assert len(kube.objects("apps/v1/deployments", NS)) == 1 and len(kube.objects("v1/services", NS)) == 1


def test_deploying_the_same_adapter_again_leaves_the_deployment_as_it_was(kube, kubeconfig, tmp_path):
    play_controller(kube, [READY])
    assert run_deploy(kubeconfig, tmp_path) == exitcodes.OK
    before = k.get(kube.api, "apps/v1", "Deployment", NAME, NS)
    assert run_deploy(kubeconfig, tmp_path) == exitcodes.OK
    after = k.get(kube.api, "apps/v1", "Deployment", NAME, NS)
    assert after == before
    _, history = inf.read_record(k.get(kube.api, "v1", "Service", NAME, NS)["metadata"]["annotations"])
    assert [e.ref for e in history] == [FIRST]


def test_rollout_waiting_follows_the_deployment_status(kube):
    k.apply(kube.api, inf.build_deployment(inf.InferenceSpec(NAME, NS, "tiny-llama-test", FIRST, replicas=2)))
    k.merge_patch(kube.api, "apps/v1", "Deployment", NAME, {"metadata": {"generation": 2}}, NS)
    reported = [
        {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 0, "availableReplicas": 2},
        {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1},
        {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1},
        {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
    ]
    controller = play_controller(kube, reported, every=0.3)
    said: list[str] = []
    state = wait_for_rollout(kube.api, NAME, NS, timeout=10, log=said.append)
    assert not controller.is_alive()  # it returned only after the last status was reported
    assert state.done
    # Polling may skip a short-lived status, but what it saw comes in the controller's order.
    expected = ["waiting for the Deployment controller to see the new spec", "1 of 2 replicas updated",
                "1 of 2 updated replicas available", "2 of 2 replicas available"]
    seen = [line.split(": ", 1)[1] for line in said]
    assert seen[0] == expected[0] and seen[-1] == expected[-1]
    assert seen == [m for m in expected if m in seen]


def test_rollout_timeout_names_what_the_pods_are_waiting_for(kube):
    k.apply(kube.api, inf.build_deployment(inf.InferenceSpec(NAME, NS, "tiny-llama-test", FIRST, replicas=2)))
    labels = inf.labels(inf.InferenceSpec(NAME, NS, "tiny-llama-test", FIRST))
    k.create(kube.api, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "phi3-a", "namespace": NS,
                                                                         "labels": labels},
                        "status": {"phase": "Pending", "initContainerStatuses": [{"name": "pull-adapter", "state": {
                            "waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}})
    k.create(kube.api, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "phi3-b", "namespace": NS,
                                                                         "labels": labels},
                        "status": {"phase": "Pending", "conditions": [{
                            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}})
    k.create(kube.api, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "someone-else", "namespace": NS},
                        "status": {"phase": "Pending"}})
    k.create(kube.api, {"apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": "FailedScheduling",
                        "message": "no GPU left", "metadata": {"name": "phi3-b.1", "namespace": NS},
                        "involvedObject": {"kind": "Pod", "name": "phi3-b"}})
    started = time.monotonic()
    try:
        wait_for_rollout(kube.api, NAME, NS, timeout=0.5, log=lambda _: None)
    except RolloutFailed as err:
        text = err.render()
    else:
        raise AssertionError("the rollout cannot have succeeded")
    assert time.monotonic() - started < 5
    assert "not available after 0.5s" in text
    assert "pod phi3-a: init container pull-adapter waiting: ImagePullBackOff: Back-off pulling image" in text
    assert "pod phi3-b: Unschedulable: 0/3 nodes are available" in text
    assert "event phi3-b: FailedScheduling: no GPU left" in text
    assert "someone-else" not in text


def test_a_crashing_server_fails_the_step_and_says_why(kube, kubeconfig, tmp_path, capsys):
    labels = inf.labels(inf.InferenceSpec(NAME, NS, "tiny-llama-test", FIRST))
    k.create(kube.api, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "phi3-x", "namespace": NS,
                                                                         "labels": labels},
                        "status": {"phase": "Running", "containerStatuses": [{"name": "serve", "restartCount": 4,
                                   "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]}})
    assert run_deploy(kubeconfig, tmp_path, FIRST, "--timeout", "0.5") == exitcodes.FAILED
    err = capsys.readouterr().err
    assert "container serve waiting: CrashLoopBackOff: back-off 40s (restarted 4×)" in err
    assert not (tmp_path / "out" / "service-url").exists()
    assert inf.ADAPTER_REF not in (k.get(kube.api, "v1", "Service", NAME, NS)["metadata"].get("annotations") or {})


def test_a_failed_rollout_puts_the_previous_adapter_back(kube, kubeconfig, tmp_path):
    play_controller(kube, [READY])
    assert run_deploy(kubeconfig, tmp_path, FIRST) == exitcodes.OK
    k.merge_patch(kube.api, "apps/v1", "Deployment", NAME,
                  {"metadata": {"generation": 2}, "status": {"observedGeneration": 1}}, NS)
    # another GPU count changes the pods' resources: the Deployment rolls, and that rollout never ends
    assert run_deploy(kubeconfig, tmp_path, SECOND, "--gpus", "2", "--timeout", "0.5") == exitcodes.FAILED
    deployment = k.get(kube.api, "apps/v1", "Deployment", NAME, NS)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert declared_digest(kube) == inf.adapter_digest(FIRST)
    current, _ = inf.read_record(k.get(kube.api, "v1", "Service", NAME, NS)["metadata"]["annotations"])
    assert current.ref == FIRST


def declared_digest(kube) -> str:
    from kairo.manifests.adapters import configmap_name, declared_in

    (adapter,) = declared_in(k.get(kube.api, "v1", "ConfigMap", configmap_name(NAME), NS))
    return adapter.digest


def test_a_new_adapter_switches_the_running_pods_without_rolling_the_deployment(kube, kubeconfig, tmp_path, capsys):
    play_controller(kube, [READY])
    assert run_deploy(kubeconfig, tmp_path, FIRST) == exitcodes.OK
    before = k.get(kube.api, "apps/v1", "Deployment", NAME, NS)
    assert run_deploy(kubeconfig, tmp_path, SECOND) == exitcodes.OK
    after = k.get(kube.api, "apps/v1", "Deployment", NAME, NS)
    assert after["spec"] == before["spec"]  # the pod template is the same: nothing rolled
    assert kube.pods.restarts == 0 and kube.pods.serving == inf.adapter_digest(SECOND)
    assert declared_digest(kube) == inf.adapter_digest(SECOND)
    assert after["metadata"]["annotations"][inf.ADAPTER_REF] == SECOND  # what rollback rebuilds from
    current, history = inf.read_record(k.get(kube.api, "v1", "Service", NAME, NS)["metadata"]["annotations"])
    assert current.ref == SECOND and [e.ref for e in history] == [SECOND, FIRST]
    err = capsys.readouterr().err
    assert "only the adapter changed: the running servers switch" in err and "1 pod(s) serve sha256:2222" in err


def test_a_failed_switch_fails_the_step_clearly_and_keeps_the_old_adapter(kube, kubeconfig, tmp_path, capsys):
    play_controller(kube, [READY])
    kube.pods.refuse.add(inf.adapter_digest(SECOND))
    assert run_deploy(kubeconfig, tmp_path, FIRST) == exitcodes.OK
    capsys.readouterr()
    assert run_deploy(kubeconfig, tmp_path, SECOND) == exitcodes.FAILED
    err = capsys.readouterr().err
    assert f"could not switch {NAME} to {inf.adapter_digest(SECOND)}; it keeps serving {inf.adapter_digest(FIRST)}" in err
    assert "does not answer" in err and f"put the previous adapter back: {FIRST}" in err
    assert declared_digest(kube) == inf.adapter_digest(FIRST)  # declared again: a restarted pod serves it too
    current, _ = inf.read_record(k.get(kube.api, "v1", "Service", NAME, NS)["metadata"]["annotations"])
    assert current.ref == FIRST and kube.pods.serving == inf.adapter_digest(FIRST)
    assert not (tmp_path / "out" / "service-url").read_text() == ""  # the first deploy's output stays


def test_a_new_base_model_rolls_the_deployment(kube, kubeconfig, tmp_path):
    play_controller(kube, [READY])
    assert run_deploy(kubeconfig, tmp_path, FIRST) == exitcodes.OK
    before = k.get(kube.api, "apps/v1", "Deployment", NAME, NS)["spec"]["template"]
    assert run_deploy(kubeconfig, tmp_path, SECOND, "--gpus", "2") == exitcodes.OK
    after = k.get(kube.api, "apps/v1", "Deployment", NAME, NS)["spec"]["template"]
    assert after != before
    deadline = time.monotonic() + 5
    while kube.pods.restarts == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kube.pods.restarts == 1 and declared_digest(kube) == inf.adapter_digest(SECOND)


def test_deployed_objects_are_owned_by_the_workspace_object(kube, kubeconfig, tmp_path):
    k.create(kube.api, {"apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace",
                        "metadata": {"name": NAME, "namespace": NS, "uid": "7f0c-11ee"}})
    play_controller(kube, [READY])
    assert run_deploy(kubeconfig, tmp_path) == exitcodes.OK
    for obj in (k.get(kube.api, "apps/v1", "Deployment", NAME, NS), k.get(kube.api, "v1", "Service", NAME, NS)):
        assert obj["metadata"]["ownerReferences"] == [{
            "apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "name": NAME, "uid": "7f0c-11ee",
            "controller": True, "blockOwnerDeletion": False}]


def test_without_a_workspace_object_nothing_owns_the_deployment(kube, kubeconfig, tmp_path):
    play_controller(kube, [READY])
    assert run_deploy(kubeconfig, tmp_path) == exitcodes.OK
    assert "ownerReferences" not in k.get(kube.api, "apps/v1", "Deployment", NAME, NS)["metadata"]


def test_plain_http_registries_from_the_cluster_config_reach_the_server(kube, kubeconfig, tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text("registry:\n  plainHttp: [registry.example.com]\n")
    play_controller(kube, [READY])
    assert run_deploy(kubeconfig, tmp_path, FIRST, "--cluster-config", str(config), "--pull-secret", "acr") == 0
    serve = k.get(kube.api, "apps/v1", "Deployment", NAME, NS)["spec"]["template"]["spec"]["containers"][0]
    assert "--plain-http" in serve["args"] and "--pull-secret-file" in serve["args"]


def test_deploy_refuses_an_adapter_without_a_digest(kube, kubeconfig, tmp_path, capsys):
    assert run_deploy(kubeconfig, tmp_path, "registry.example.com/team/phi3-adapter:0.0.1") == exitcodes.BAD_INPUT
    assert "names no digest" in capsys.readouterr().err
    assert kube.objects("apps/v1/deployments", NS) == []


def test_unreachable_api_is_transient(tmp_path):
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: c, cluster: "
                      "{server: 'http://127.0.0.1:9'}}]\nusers: [{name: u, user: {}}]\n"
                      "contexts: [{name: c, context: {cluster: c, user: u}}]\n")
    assert run_deploy(config, tmp_path) == exitcodes.TRANSIENT


def test_deployed_outputs_what_the_service_records(kube, kubeconfig, tmp_path):
    play_controller(kube, [READY])
    assert run_deploy(kubeconfig, tmp_path) == exitcodes.OK
    out = tmp_path / "deployed"
    assert deployed.main(["--workspace", NAME, "--namespace", NS, "--kubeconfig", str(kubeconfig),
                          "--outputs", str(out)]) == exitcodes.OK
    assert (out / "adapter-ref").read_text() == FIRST
    assert (out / "dataset-digest").read_text() == "sha256:" + "d" * 64
    assert (out / "eval-loss").read_text() == "1.25"


def test_deployed_outputs_are_empty_when_nothing_is_deployed(kube, kubeconfig, tmp_path):
    out = tmp_path / "deployed"
    assert deployed.main(["--workspace", NAME, "--namespace", NS, "--kubeconfig", str(kubeconfig),
                          "--outputs", str(out)]) == exitcodes.OK
    assert step_outputs(out) == {"adapter-ref": "", "dataset-digest": "", "eval-loss": ""}


def test_several_labels_in_one_flag_become_the_pods_node_affinity(kube, kubeconfig, tmp_path):
    play_controller(kube, [READY])
    code = deploy.main([
        "--workspace", NAME, "--namespace", NS, "--preset", "tiny-llama-test", "--adapter-ref", FIRST,
        "--label", "app=phi3,pool=gpu", "--timeout", "10", "--kubeconfig", str(kubeconfig),
        "--outputs", str(tmp_path / "out")])
    assert code == exitcodes.OK
    (deployment,) = kube.objects("apps/v1/deployments", NS)
    terms = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"] == [{"key": "app", "operator": "In", "values": ["phi3"]},
                                           {"key": "pool", "operator": "In", "values": ["gpu"]}]
