"""kairo.manifests.nodes by value: pool names and bodies, NodeClaims, plans, and the verdict on nodes."""

from __future__ import annotations

import re

import pytest

from kairo.cluster import NodeClassRef, Taint
from kairo.manifests.nodes import (
    NodeRequest,
    PoolConflict,
    agent_pool_body,
    agent_pool_name,
    judge_nodes,
    node_memory_problem,
    nodeclaim_manifest,
    nodeclaim_name,
    nodeclaim_problems,
    nodeclaim_requests,
    parse_labels,
    plan_pool,
)
from kairo.presets import get_preset
from tests.fixtures.nodes import node_manifest

REQUEST = NodeRequest("phi-3-tuning", "team-a", "Standard_NC24ads_A100_v4", 1, {"apps": "phi-3"})


def existing_pool(**properties) -> dict:
    body = agent_pool_body(REQUEST, Taint())
    body["properties"].update({"provisioningState": "Succeeded", **properties})
    return body


# -- names ----------------------------------------------------------------------------------------------


def test_pool_name_follows_aks_rules_for_linux_pools():
    for namespace, workspace in [("default", "a"), ("team-a", "x" * 63), ("n", "Workspace-With-Dashes")]:
        assert re.fullmatch(r"[a-z][a-z0-9]{0,11}", agent_pool_name(namespace, workspace))


def test_pool_name_is_stable_and_differs_per_namespace_and_workspace():
    assert agent_pool_name("team-a", "demo") == agent_pool_name("team-a", "demo")
    assert agent_pool_name("team-a", "demo") != agent_pool_name("team-b", "demo")
    assert agent_pool_name("team-a", "demo") != agent_pool_name("team-a", "demo2")


def test_nodeclaim_names_are_dns_labels_even_for_long_workspace_names():
    name = nodeclaim_name("ns", "w" * 63, 12)
    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    assert nodeclaim_name("a", "demo", 0) != nodeclaim_name("b", "demo", 0)


def test_labels_flags_parse_and_a_bad_one_is_named():
    assert parse_labels(["apps=phi-3", "tier=gpu"]) == {"apps": "phi-3", "tier": "gpu"}
    with pytest.raises(ValueError, match="--label 'apps'"):
        parse_labels(["apps"])


# -- the agent pool body and plan -----------------------------------------------------------------------


def test_agent_pool_body_carries_size_count_labels_taint_mode_and_tag():
    props = agent_pool_body(REQUEST, Taint(key="sku", value="gpu", effect="NoSchedule"))["properties"]
    assert props["vmSize"] == "Standard_NC24ads_A100_v4" and props["count"] == 1 and props["mode"] == "User"
    assert props["nodeLabels"] == {"apps": "phi-3", "kairo.sh/workspace": "phi-3-tuning",
                                   "kairo.sh/workspace-namespace": "team-a"}
    assert props["nodeTaints"] == ["sku=gpu:NoSchedule"]
    assert props["tags"]["kairo.sh_managed"] == "true"


def test_azure_tag_names_avoid_the_characters_arm_refuses():
    tags = agent_pool_body(REQUEST, Taint())["properties"]["tags"]
    assert not any(set(key) & set('<>%&\\?/') for key in tags)


def test_plan_creates_a_missing_pool_and_reuses_an_identical_one():
    wanted = agent_pool_body(REQUEST, Taint())
    assert plan_pool("p", None, wanted, "c").action == "create"
    assert plan_pool("p", existing_pool(), wanted, "c").action == "reuse"


def test_plan_scales_when_only_the_count_differs():
    plan = plan_pool("p", existing_pool(count=3), agent_pool_body(REQUEST, Taint()), "c")
    assert plan.action == "update" and plan.changes == ("count 3 → 1",)


def test_plan_refuses_a_different_vm_size_and_says_what_to_do():
    with pytest.raises(PoolConflict, match="cannot change a pool's VM size.*Standard_NC6s_v3.*delete the pool"):
        plan_pool("p", existing_pool(vmSize="Standard_NC6s_v3"), agent_pool_body(REQUEST, Taint()), "c")


def test_plan_refuses_a_pool_kairo_did_not_create():
    with pytest.raises(PoolConflict, match="kairo did not create it"):
        plan_pool("p", existing_pool(tags={}), agent_pool_body(REQUEST, Taint()), "c")


def test_plan_waits_for_a_busy_pool_and_retries_a_failed_one():
    wanted = agent_pool_body(REQUEST, Taint())
    assert plan_pool("p", existing_pool(provisioningState="Creating"), wanted, "c").action == "busy"
    assert plan_pool("p", existing_pool(provisioningState="Failed"), wanted, "c").action == "update"


# -- NodeClaims ----------------------------------------------------------------------------------------


def test_nodeclaim_asks_for_the_instance_type_with_labels_taint_class_and_requests():
    preset = get_preset("phi-3-mini-4k-instruct")
    claim = nodeclaim_manifest(REQUEST, 0, NodeClassRef(name="gpu"), Taint(), nodeclaim_requests(preset, 1))
    assert claim["apiVersion"] == "karpenter.sh/v1" and claim["kind"] == "NodeClaim"
    assert {"key": "node.kubernetes.io/instance-type", "operator": "In",
            "values": ["Standard_NC24ads_A100_v4"]} in claim["spec"]["requirements"]
    labels = claim["metadata"]["labels"]
    assert labels["apps"] == "phi-3" and labels["kairo.sh/workspace"] == "phi-3-tuning"
    assert labels["kairo.sh/managed"] == "true"
    assert claim["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert claim["spec"]["nodeClassRef"] == {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "gpu"}
    assert claim["spec"]["resources"]["requests"] == {"nvidia.com/gpu": "1", "cpu": "3", "memory": "20Gi"}


def test_nodeclaim_problems_quote_karpenters_failed_conditions():
    claim = {"metadata": {"name": "c"}, "status": {"conditions": [
        {"type": "Launched", "status": "False", "reason": "InsufficientCapacity", "message": "no A100 in zone 1"},
        {"type": "Ready", "status": "Unknown"}]}}
    assert nodeclaim_problems([claim]) == ["NodeClaim c: Launched=False (InsufficientCapacity: no A100 in zone 1)"]


# -- judging nodes -------------------------------------------------------------------------------------


def test_ready_nodes_with_gpus_are_usable():
    verdict = judge_nodes([node_manifest("n2", {}), node_manifest("n1", {})], 2, 1, "x")
    assert verdict.done and verdict.usable == ("n1", "n2")


def test_no_node_says_none_has_joined():
    assert "no node labelled a=b has joined" in judge_nodes([], 1, 1, "labelled a=b").missing


def test_a_node_not_ready_is_named_with_its_reason():
    missing = judge_nodes([node_manifest("n1", {}, ready=False)], 1, 1, "x").missing
    assert "node n1 is not Ready (KubeletNotReady" in missing


def test_a_ready_node_without_gpus_points_at_the_device_plugin():
    missing = judge_nodes([node_manifest("n1", {}, gpus=0)], 1, 1, "x").missing
    assert "no nvidia.com/gpu allocatable" in missing and "device plugin" in missing


def test_too_few_gpus_and_too_few_nodes_are_counted():
    missing = judge_nodes([node_manifest("n1", {}, gpus=1)], 2, 2, "x").missing
    assert "n1 has 1 nvidia.com/gpu allocatable, the workspace needs 2" in missing
    assert "1 of 2 nodes have joined" in missing


def test_existing_node_too_small_for_the_preset_is_explained():
    small = node_manifest("t4", {"node.kubernetes.io/instance-type": "Standard_NC4as_T4_v3"})
    big = node_manifest("a100", {"node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4"})
    unknown = node_manifest("mystery", {})
    preset = get_preset("phi-3-mini-4k-instruct")
    assert "node t4 has 1 GPU(s) of 16 GiB" in node_memory_problem(small, preset, "lora")
    assert node_memory_problem(big, preset, "lora") is None
    assert node_memory_problem(unknown, preset, "lora") is None  # memory unknown: train finds out
