"""The provision step with the azure provisioner: the real Azure SDK against the local ARM server, the
nodes in the Kubernetes emulator."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kairo.cluster import Taint
from kairo.manifests.nodes import NodeRequest, agent_pool_body, agent_pool_name
from kairo.steps import provision
from tests.fixtures.outputs import step_outputs

A100 = "Standard_NC24ads_A100_v4"
REQUEST = NodeRequest("phi-3-tuning", "team-a", A100, 1, {"apps": "phi-3"})
POOL = agent_pool_name("team-a", "phi-3-tuning")


@pytest.fixture
def run(arm_identity, kubeconfig, tmp_path):
    """Run the step against the ARM server and the emulator; (exit code, outputs)."""

    def run(*flags: str, node_timeout: int = 5, **azure) -> tuple[int, dict[str, str]]:
        config = tmp_path / "cluster.yaml"
        config.write_text(yaml.safe_dump({"provisioner": {
            "kind": "azure", "azure": arm_identity.settings(**azure), "nodeReadyTimeoutSeconds": node_timeout}}))
        out = tmp_path / "outputs"
        code = provision.main([
            "--workspace", "phi-3-tuning", "--namespace", "team-a", "--preset", "phi-3-mini-4k-instruct",
            "--method", "qlora", "--instance-type", A100, "--label", "apps=phi-3",
            "--cluster-config", str(config), "--outputs", str(out), *flags])
        return code, step_outputs(out)

    return run


def pool_props(**changes) -> dict:
    props = agent_pool_body(REQUEST, Taint())["properties"]
    props.update(changes)
    return props


def test_creates_the_pool_then_waits_for_its_node(run, arm_identity, gpu_nodes):
    gpu_nodes.join_later(0.3, "aks-gpu-0", REQUEST.node_labels)
    code, outputs = run()
    assert code == 0
    assert outputs == {"nodes": "aks-gpu-0", "node-pool": POOL, "provisioner": "azure"}
    props = arm_identity.pools[POOL]["properties"]
    assert props["vmSize"] == A100 and props["count"] == 1 and props["mode"] == "User"
    assert props["nodeLabels"]["kairo.sh/workspace"] == "phi-3-tuning" and props["nodeLabels"]["apps"] == "phi-3"
    assert props["nodeTaints"] == ["sku=gpu:NoSchedule"] and props["tags"]["kairo.sh_managed"] == "true"
    assert props["provisioningState"] == "Succeeded"


def test_reuses_a_pool_with_the_same_spec(run, arm_identity, gpu_nodes, capsys):
    arm_identity.add_pool(POOL, pool_props())
    gpu_nodes.join("aks-gpu-0", REQUEST.node_labels)
    code, _ = run()
    assert code == 0
    assert arm_identity.requests("PUT") == []
    assert "reusing it" in capsys.readouterr().err


def test_scales_a_pool_whose_count_differs(run, arm_identity, gpu_nodes, capsys):
    arm_identity.add_pool(POOL, pool_props(count=1))
    gpu_nodes.join("aks-gpu-0", REQUEST.node_labels)
    gpu_nodes.join("aks-gpu-1", REQUEST.node_labels)
    code, outputs = run("--count", "2")
    assert code == 0 and outputs["nodes"] == "aks-gpu-0,aks-gpu-1"
    [put] = arm_identity.requests("PUT")
    assert put.body["properties"]["count"] == 2
    assert "count 1 → 2" in capsys.readouterr().err


def test_refuses_a_pool_of_another_vm_size_and_says_what_to_do(run, arm_identity, capsys):
    arm_identity.add_pool(POOL, pool_props(vmSize="Standard_NC6s_v3"))
    code, outputs = run()
    assert code == 2 and outputs == {}
    assert arm_identity.requests("PUT") == []
    err = capsys.readouterr().err
    assert "cannot change a pool's VM size" in err and "az aks nodepool delete" in err


def test_a_quota_error_is_the_users_to_fix(run, arm_identity, capsys):
    arm_identity.fail_next("PUT", 400, "QuotaExceeded", "exceeding approved NCADSA100v4 Family vCPUs quota")
    code, _ = run()
    assert code == 2
    assert "ARM QuotaExceeded" in capsys.readouterr().err


def test_throttling_beyond_the_patience_of_one_attempt_is_transient(run, arm_identity, capsys):
    arm_identity.fail_next("GET", 429, "TooManyRequests", "too many requests", Retry_After="300")
    code, _ = run()
    assert code == 75
    assert "asked to wait 300 s" in capsys.readouterr().err


def test_a_failed_operation_without_capacity_is_transient(run, arm_identity, capsys):
    arm_identity.operations_finish = "Failed"
    arm_identity.operation_error = {"code": "AllocationFailed", "message": "Allocation failed for A100"}
    code, _ = run()
    assert code == 75
    assert "ARM AllocationFailed" in capsys.readouterr().err


def test_an_operation_past_its_timeout_is_transient(run, arm_identity, capsys):
    arm_identity.operations_finish = "never"
    code, _ = run(operationTimeoutSeconds=1)
    assert code == 75
    assert "did not finish within 1 s" in capsys.readouterr().err


def test_nodes_without_gpus_time_out_pointing_at_the_device_plugin(run, gpu_nodes, capsys):
    gpu_nodes.join("aks-gpu-0", REQUEST.node_labels, gpus=0)
    code, _ = run(node_timeout=1)
    assert code == 75
    err = capsys.readouterr().err
    assert "gave up waiting for 1 GPU node after 1 s" in err and "NVIDIA device plugin" in err


def test_the_step_runs_as_kairo_step_with_the_same_flags(arm_identity, kubeconfig, gpu_nodes, tmp_path: Path):
    from kairo.step import main as kairo_step

    gpu_nodes.join("aks-gpu-0", REQUEST.node_labels)
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({"provisioner": {"kind": "azure", "azure": arm_identity.settings()}}))
    code = kairo_step(["provision", "--workspace", "phi-3-tuning", "--namespace", "team-a", "--preset",
                       "phi-3-mini-4k-instruct", "--method", "qlora", "--instance-type", A100, "--label",
                       "apps=phi-3", "--cluster-config", str(config), "--outputs", str(tmp_path / "o")])
    assert code == 0 and (tmp_path / "o" / "node-pool").read_text() == POOL


def test_the_bearer_token_never_reaches_the_log(run, arm_identity, capsys, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="azure")
    arm_identity.fail_next("PUT", 400, "QuotaExceeded", "quota")
    run()
    assert arm_identity.tokens_issued >= 1 and "Authorization" in caplog.text  # the headers were logged…
    assert arm_identity.token not in capsys.readouterr().err + caplog.text  # …with the token redacted
