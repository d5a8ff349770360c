"""The provision step with the karpenter provisioner: NodeClaims and Nodes in KMock's emulator."""

from __future__ import annotations

import pytest
import yaml

from kairo.clients import kube as k
from kairo.manifests.nodes import NodeRequest, nodeclaim_name
from kairo.steps import provision
from tests.fixtures.outputs import step_outputs

A100 = "Standard_NC24ads_A100_v4"
REQUEST = NodeRequest("phi-3-tuning", "team-a", A100, 2, {"apps": "phi-3"})


@pytest.fixture
def run(kubeconfig, tmp_path):
    def run(*flags: str, count: int = 2, instance_type: str = A100, node_timeout: int = 5) -> tuple[int, dict]:
        config = tmp_path / "cluster.yaml"
        config.write_text(yaml.safe_dump({"provisioner": {
            "kind": "karpenter", "nodeReadyTimeoutSeconds": node_timeout,
            "karpenter": {"nodeClassRef": {"name": "gpu"}}}}))
        out = tmp_path / "outputs"
        code = provision.main([
            "--workspace", "phi-3-tuning", "--namespace", "team-a", "--preset", "phi-3-mini-4k-instruct",
            "--method", "qlora", "--instance-type", instance_type, "--count", str(count), "--label", "apps=phi-3",
            "--cluster-config", str(config), "--outputs", str(out), *flags])
        return code, step_outputs(out)

    return run


def claims(kube) -> dict[str, dict]:
    return {c["metadata"]["name"]: c for c in kube.objects("karpenter.sh/v1/nodeclaims")}


def test_creates_one_nodeclaim_per_node_and_waits_for_the_nodes(run, kube, gpu_nodes):
    gpu_nodes.join_later(0.2, "gpu-a", REQUEST.node_labels)
    gpu_nodes.join_later(0.4, "gpu-b", REQUEST.node_labels)
    code, outputs = run()
    assert code == 0
    names = [nodeclaim_name("team-a", "phi-3-tuning", i) for i in range(2)]
    assert sorted(claims(kube)) == sorted(names)
    assert outputs == {"nodes": "gpu-a,gpu-b", "node-pool": ",".join(names), "provisioner": "karpenter"}
    claim = claims(kube)[names[0]]
    assert claim["spec"]["requirements"][0] == {"key": "node.kubernetes.io/instance-type", "operator": "In",
                                                "values": [A100]}
    assert claim["spec"]["nodeClassRef"]["name"] == "gpu"
    assert claim["metadata"]["labels"]["apps"] == "phi-3"


def test_running_again_reuses_the_nodeclaims(run, kube, gpu_nodes):
    gpu_nodes.join("gpu-a", REQUEST.node_labels)
    gpu_nodes.join("gpu-b", REQUEST.node_labels)
    assert run()[0] == 0
    creates = len(kube.requests("post"))
    assert run()[0] == 0
    assert len(kube.requests("post")) == creates and len(claims(kube)) == 2


def test_a_lower_count_deletes_the_extra_nodeclaim(run, kube, gpu_nodes):
    gpu_nodes.join("gpu-a", REQUEST.node_labels)
    gpu_nodes.join("gpu-b", REQUEST.node_labels)
    assert run()[0] == 0
    assert run(count=1)[0] == 0
    assert list(claims(kube)) == [nodeclaim_name("team-a", "phi-3-tuning", 0)]


def test_a_nodeclaim_for_another_machine_is_refused_with_what_to_do(run, kube, capsys):
    assert run(node_timeout=1, count=1)[0] == 75  # the claim is made; no node comes
    code, _ = run(count=1, instance_type="Standard_NC6s_v3")
    assert code == 2
    assert "kubectl delete nodeclaim" in capsys.readouterr().err


def test_no_node_in_time_names_what_karpenter_reports(run, kube, capsys):
    name = nodeclaim_name("team-a", "phi-3-tuning", 0)
    k.create(kube.api, {"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "metadata": {
        "name": name, "labels": {**REQUEST.node_labels, "kairo.sh/managed": "true"}},
        "spec": {"requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [A100]}]},
        "status": {"conditions": [{"type": "Launched", "status": "False", "reason": "InsufficientCapacityError",
                                   "message": "no A100 capacity in westeurope"}]}})
    code, outputs = run(count=1, node_timeout=1)
    assert code == 75 and outputs == {}
    err = capsys.readouterr().err
    assert "no node labelled" in err and "has joined the cluster yet" in err
    assert f"NodeClaim {name}: Launched=False (InsufficientCapacityError" in err


def test_a_node_that_stays_not_ready_is_named(run, gpu_nodes, capsys):
    gpu_nodes.join("gpu-a", REQUEST.node_labels, ready=False)
    code, _ = run(count=1, node_timeout=1)
    assert code == 75
    assert "node gpu-a is not Ready (KubeletNotReady" in capsys.readouterr().err


def test_the_wait_ends_when_a_node_is_marked_ready_with_gpus(run, gpu_nodes):
    import threading

    gpu_nodes.join("gpu-a", REQUEST.node_labels, ready=False, gpus=0)
    timer = threading.Timer(0.3, gpu_nodes.mark_ready, ("gpu-a",))
    timer.start()
    try:
        code, outputs = run(count=1)
    finally:
        timer.cancel()
    assert code == 0 and outputs["nodes"] == "gpu-a"


def test_nodes_of_another_workspace_do_not_count(run, gpu_nodes, capsys):
    gpu_nodes.join("other", {**REQUEST.node_labels, "kairo.sh/workspace-namespace": "team-b"})
    code, _ = run(count=1, node_timeout=1)
    assert code == 75
    assert "no node labelled" in capsys.readouterr().err
