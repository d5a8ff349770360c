"""The provision step with the existing provisioner: it checks the nodes and never creates anything."""

from __future__ import annotations

import pytest
import yaml

from kairo.steps import provision
from tests.fixtures.outputs import step_outputs

LABELS = {"apps": "phi-3"}
A100_NODE = {**LABELS, "node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4"}


@pytest.fixture
def run(kubeconfig, tmp_path):
    def run(*flags: str, node_timeout: int = 5, labels: bool = True) -> tuple[int, dict]:
        config = tmp_path / "cluster.yaml"
        config.write_text(yaml.safe_dump({"provisioner": {"kind": "existing",
                                                          "nodeReadyTimeoutSeconds": node_timeout}}))
        out = tmp_path / "outputs"
        code = provision.main([
            "--workspace", "phi-3-tuning", "--namespace", "team-a", "--preset", "phi-3-mini-4k-instruct",
            "--method", "lora", *(["--label", "apps=phi-3"] if labels else []),
            "--cluster-config", str(config), "--outputs", str(out), *flags])
        return code, step_outputs(out)

    return run


def test_a_labelled_ready_gpu_node_is_used_and_nothing_is_created(run, kube, gpu_nodes):
    gpu_nodes.join("gpu-a", A100_NODE)
    gpu_nodes.join("cpu-a", {"apps": "web"}, gpus=0)
    posts = len(kube.requests("post"))
    code, outputs = run()
    assert code == 0
    assert outputs == {"nodes": "gpu-a", "node-pool": "", "provisioner": "existing"}
    assert len(kube.requests("post")) == posts and kube.objects("karpenter.sh/v1/nodeclaims") == []


def test_no_matching_node_is_refused_at_once(run, gpu_nodes, capsys):
    gpu_nodes.join("cpu-a", {"apps": "web"}, gpus=0)
    code, _ = run(node_timeout=60)
    assert code == 2
    assert "no node carries the labels apps=phi-3" in capsys.readouterr().err


def test_a_preferred_node_that_does_not_exist_is_named(run, gpu_nodes, capsys):
    gpu_nodes.join("gpu-a", A100_NODE)
    code, _ = run("--preferred-node", "gpu-z")
    assert code == 2
    assert "node 'gpu-z' does not exist" in capsys.readouterr().err


def test_a_preferred_node_is_used_when_it_carries_the_labels(run, gpu_nodes):
    gpu_nodes.join("gpu-a", A100_NODE)
    gpu_nodes.join("gpu-b", A100_NODE)
    code, outputs = run("--preferred-node", "gpu-b")
    assert code == 0 and outputs["nodes"] == "gpu-b"


def test_a_node_too_small_for_the_preset_is_refused_with_numbers(run, gpu_nodes, capsys):
    gpu_nodes.join("t4", {**LABELS, "node.kubernetes.io/instance-type": "Standard_NC4as_T4_v3"})
    code, _ = run()
    assert code == 2
    assert "node t4 has 1 GPU(s) of 16 GiB; phi-3-mini-4k-instruct with lora needs 18 GiB" in capsys.readouterr().err


def test_a_node_that_is_not_ready_times_out_with_its_reason(run, gpu_nodes, capsys):
    gpu_nodes.join("gpu-a", A100_NODE, ready=False)
    code, _ = run(node_timeout=1)
    assert code == 75
    assert "node gpu-a is not Ready" in capsys.readouterr().err


def test_a_node_without_the_device_plugin_times_out_saying_so(run, gpu_nodes, capsys):
    gpu_nodes.join("gpu-a", A100_NODE, gpus=0)
    code, _ = run(node_timeout=1)
    assert code == 75
    assert "NVIDIA device plugin" in capsys.readouterr().err


def test_without_labels_or_preferred_nodes_it_says_what_it_needs(run, capsys):
    code, _ = run(labels=False)
    assert code == 2
    assert "resource.labelSelector.matchLabels is empty" in capsys.readouterr().err


def test_several_labels_in_one_flag_as_the_generic_template_passes_them(run, gpu_nodes):
    gpu_nodes.join("gpu-a", {**A100_NODE, "pool": "tuning"})
    gpu_nodes.join("gpu-b", A100_NODE)  # lacks pool=tuning
    code, outputs = run("--label", "apps=phi-3,pool=tuning", labels=False)
    assert code == 0 and outputs["nodes"] == "gpu-a"
