"""The teardown a deleted Workspace gets: cleanup waits for Kubernetes to remove the inference it owned, then
releases the nodes (KMock's emulator; Karpenter NodeClaims as the nodes kairo made)."""

from __future__ import annotations

import threading
import time

import yaml

from kairo import exitcodes
from kairo.clients import kube as k
from kairo.steps import cleanup

NS = "team-a"
NAME = "phi-3-tuning"
KARPENTER = {"provisioner": {"kind": "karpenter"}}


def teardown(tmp_path, kubeconfig, *flags: str) -> tuple[int, str]:
    """`cleanup` as the chart's teardown workflow runs it."""
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(KARPENTER))
    out = tmp_path / "outputs"
    code = cleanup.main(["--workspace", NAME, "--namespace", NS, "--ephemeral", "true", "--workspace-deleted",
                         "--cluster-config", str(config), "--kubeconfig", str(kubeconfig), "--outputs", str(out),
                         *flags])
    return code, (out / "outcome").read_text()


def inference(kube, owned: bool = True) -> None:
    """The workspace's inference Deployment, owned by its (now deleted) Workspace object or not."""
    meta = {"name": NAME, "namespace": NS, "labels": {"kairo.sh/workspace": NAME}}
    if owned:
        meta["ownerReferences"] = [{"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "name": NAME,
                                    "uid": "u-1", "controller": True, "blockOwnerDeletion": True}]
    k.create(kube.api, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                                 "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": []}}}})


def nodeclaim(kube) -> None:
    k.create(kube.api, {"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "metadata": {"name": f"{NAME}-0", "labels": {
        "kairo.sh/workspace": NAME, "kairo.sh/workspace-namespace": NS, "kairo.sh/managed": "true"}}, "spec": {}})


def nodeclaims(kube) -> list[str]:
    return [c["metadata"]["name"] for c in kube.objects("karpenter.sh/v1/nodeclaims")]


def test_teardown_waits_for_the_garbage_collector_then_releases_the_nodes(kube, kubeconfig, tmp_path, capsys):
    nodeclaim(kube)
    inference(kube)
    # The garbage collector, a little late: the Deployment goes a second after teardown started.
    collector = threading.Timer(1.0, lambda: k.delete(kube.api, "apps/v1", "Deployment", NAME, NS))
    collector.start()
    started = time.monotonic()
    try:
        code, outcome = teardown(tmp_path, kubeconfig, "--gc-wait-seconds", "20")
    finally:
        collector.cancel()
    assert code == exitcodes.OK, outcome
    assert 0.9 <= time.monotonic() - started < 15
    assert outcome == f"released NodeClaim {NAME}-0" and nodeclaims(kube) == []
    assert "waiting for Kubernetes to remove Deployment team-a/phi-3-tuning" in capsys.readouterr().err


def test_a_deployment_that_does_not_go_in_time_keeps_the_nodes_and_asks_for_a_retry(kube, kubeconfig, tmp_path):
    nodeclaim(kube)
    inference(kube)
    code, outcome = teardown(tmp_path, kubeconfig, "--gc-wait-seconds", "0.3")
    assert code == exitcodes.TRANSIENT
    assert "still exists 0.3s after its Workspace was deleted" in outcome
    assert nodeclaims(kube) == [f"{NAME}-0"]


def test_a_deployment_the_workspace_does_not_own_is_not_waited_for_and_keeps_the_nodes(kube, kubeconfig, tmp_path):
    nodeclaim(kube)
    inference(kube, owned=False)
    started = time.monotonic()
    code, outcome = teardown(tmp_path, kubeconfig, "--gc-wait-seconds", "30")
    assert code == exitcodes.OK and time.monotonic() - started < 5
    assert outcome == f"kept the GPU nodes: inference Deployment {NS}/{NAME} runs on them"
    assert nodeclaims(kube) == [f"{NAME}-0"]


def test_without_an_inference_deployment_the_nodes_go_at_once(kube, kubeconfig, tmp_path):
    nodeclaim(kube)
    code, outcome = teardown(tmp_path, kubeconfig)
    assert code == exitcodes.OK and nodeclaims(kube) == []
