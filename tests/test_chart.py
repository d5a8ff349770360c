"""The kairo chart, rendered by the real Helm engine: what it installs, with default and full values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml

from kairo import __version__
from kairo.cluster import load_cluster_config
from kairo.images import image_for_step
from kairo.training.config import parse_training_config
from tests.fixtures.argo_schema import check_argo_object
from tests.fixtures.helm import CHART, NAMESPACE, find, one, render_chart, rendered_text, without_helper_keys

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
ARGO_KINDS = ("WorkflowTemplate", "Workflow", "CronWorkflow")
CUSTOM_KINDS = ARGO_KINDS + ("EventSource", "Sensor")
KUBERNETES_VERSION = "1.33"


def scenario(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


# -- every scenario renders, lints and validates -----------------------------------------------------------


def test_there_are_scenario_files_and_full_values_among_them():
    assert len(SCENARIOS) >= 4
    assert CHART / "ci" / "full-values.yaml" in SCENARIOS


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_lint_is_clean(path):
    report = helm_python.lint(CHART, scenario(path), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert problems == []


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_kubernetes_object_passes_kubernetes_validate(path):
    objects = [o for o in render_chart(scenario(path)) if o["kind"] not in CUSTOM_KINDS]
    assert len(objects) >= 10
    for obj in objects:
        kubernetes_validate.validate(without_helper_keys(obj), KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_argo_object_passes_the_strict_argo_check(path):
    objects = [o for o in render_chart(scenario(path)) if o["kind"] in ARGO_KINDS]
    assert objects
    for obj in objects:
        assert check_argo_object(without_helper_keys(obj)) == [], obj["metadata"]["name"]


def test_defaults_install_the_template_rbac_and_configuration(chart_defaults):
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in chart_defaults)
    assert kinds == sorted([
        ("WorkflowTemplate", "kairo-tuning"), ("WorkflowTemplate", "kairo-inference"),
        ("ServiceAccount", "kairo-workflow"), ("ServiceAccount", "kairo-provision"), ("ServiceAccount", "kairo-deploy"),
        ("Role", "kairo-executor"), ("Role", "kairo-provision"), ("Role", "kairo-deploy"), ("Role", "kairo-train"),
        ("RoleBinding", "kairo-executor"), ("RoleBinding", "kairo-provision"), ("RoleBinding", "kairo-deploy"),
        ("RoleBinding", "kairo-train"),
        ("ClusterRole", f"kairo-provision-{NAMESPACE}"), ("ClusterRoleBinding", f"kairo-provision-{NAMESPACE}"),
        ("ConfigMap", "kairo-cluster"), ("ConfigMap", "kairo-presets"),
        ("ConfigMap", "lora-params-template"), ("ConfigMap", "qlora-params-template"),
    ])
    assert all(o["metadata"].get("namespace", NAMESPACE) == NAMESPACE for o in chart_defaults)


def test_full_values_add_crons_the_crd_events_and_the_artifact_repository(chart_full):
    names = {(o["kind"], o["metadata"]["name"]) for o in chart_full}
    assert {("CronWorkflow", "phi-3-nightly"), ("CronWorkflow", "qwen-weekly"),
            ("CustomResourceDefinition", "workspaces.kaito.sh"), ("EventSource", "kairo-workspaces"),
            ("Sensor", "kairo-tuning"), ("Sensor", "kairo-inference"), ("Sensor", "kairo-teardown"),
            ("ServiceAccount", "kairo-events"),
            ("ConfigMap", "kairo-artifacts")} <= names


# -- RBAC ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_no_role_grants_a_wildcard(path):
    roles = [o for o in render_chart(scenario(path)) if o["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("verbs", "resources", "apiGroups"):
                assert "*" not in rule.get(key, []), (role["metadata"]["name"], rule)


def rules_of(objects, kind, name):
    return {(group, resource): set(rule["verbs"])
            for rule in one(objects, kind, name)["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"]}


def bound_roles(objects, account):
    out = set()
    for binding in find(objects, "RoleBinding") + find(objects, "ClusterRoleBinding"):
        if any(s["name"] == account for s in binding["subjects"]):
            out.add((binding["roleRef"]["kind"], binding["roleRef"]["name"]))
    return out


def test_the_workflow_account_gets_only_what_argos_executor_and_a_multi_node_train_task_need(chart_defaults):
    assert bound_roles(chart_defaults, "kairo-workflow") == {("Role", "kairo-executor"), ("Role", "kairo-train")}
    assert rules_of(chart_defaults, "Role", "kairo-executor") == {
        ("argoproj.io", "workflowtaskresults"): {"create", "patch"}, ("", "pods"): {"get", "patch"}}
    assert rules_of(chart_defaults, "Role", "kairo-train") == {
        ("jobset.x-k8s.io", "jobsets"): {"create", "get", "list", "watch", "patch"},
        ("trainer.kubeflow.org", "trainjobs"): {"create", "get", "list", "watch"}}


def test_deploy_may_touch_deployments_services_and_workspace_status_in_its_namespace_only(chart_defaults):
    assert bound_roles(chart_defaults, "kairo-deploy") == {("Role", "kairo-executor"), ("Role", "kairo-deploy")}
    rules = rules_of(chart_defaults, "Role", "kairo-deploy")
    assert rules[("apps", "deployments")] >= {"get", "create", "patch"}
    assert rules[("", "services")] >= {"get", "create", "patch"}
    assert rules[("kaito.sh", "workspaces/status")] == {"get", "patch"}
    assert rules[("kaito.sh", "workspaces")] == {"get"}
    # the `workspace` step validates the tuning ConfigMap a Workspace names; deploy writes the adapters ConfigMap
    assert rules[("", "configmaps")] == {"get", "create", "patch"}
    assert rules[("", "pods/proxy")] == {"get"}  # deploy reads each inference pod's /health for the served digest
    assert not any("delete" in verbs for verbs in rules.values())


def test_provision_reads_nodes_cluster_wide_and_manages_nodeclaims_only_with_karpenter(chart_defaults):
    name = f"kairo-provision-{NAMESPACE}"
    assert bound_roles(chart_defaults, "kairo-provision") == {
        ("Role", "kairo-executor"), ("Role", "kairo-provision"), ("ClusterRole", name)}
    assert rules_of(chart_defaults, "ClusterRole", name) == {("", "nodes"): {"get", "list"}}
    karpenter = render_chart(scenario(CHART / "ci" / "karpenter-values.yaml"))
    assert rules_of(karpenter, "ClusterRole", name)[("karpenter.sh", "nodeclaims")] == {"get", "list", "create", "delete"}


def test_workload_identity_annotates_the_provision_account_only():
    objects = render_chart(scenario(CHART / "ci" / "azure-values.yaml"))
    annotations = {o["metadata"]["name"]: o["metadata"].get("annotations", {}) for o in find(objects, "ServiceAccount")}
    assert annotations["kairo-provision"] == {"azure.workload.identity/client-id": "11111111-1111-1111-1111-111111111111"}
    assert annotations["kairo-deploy"] == {} and annotations["kairo-workflow"] == {}


# -- the cluster config, presets and Kaito's default ConfigMaps --------------------------------------------


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_the_cluster_config_loads_with_kairos_own_loader(path, tmp_path):
    configmap = one(render_chart(scenario(path)), "ConfigMap", "kairo-cluster")
    (tmp_path / "cluster.yaml").write_text(configmap["data"]["cluster.yaml"])
    config = load_cluster_config(tmp_path / "cluster.yaml")
    assert config.argo.namespace == NAMESPACE and config.argo.serviceAccount == "kairo-workflow"


def test_the_cluster_config_follows_the_values(tmp_path):
    objects = render_chart(scenario(CHART / "ci" / "full-values.yaml"))
    (tmp_path / "cluster.yaml").write_text(one(objects, "ConfigMap", "kairo-cluster")["data"]["cluster.yaml"])
    config = load_cluster_config(tmp_path / "cluster.yaml")
    assert config.provisioner.kind == "azure"
    assert (config.provisioner.azure.resourceGroup, config.provisioner.azure.clusterName) == ("ml-rg", "ml-aks")
    assert config.registry.plainHttp == ["registry.kairo.svc:5000"]
    assert (config.images.repository, config.images.tag) == ("registry.example.com/kairo/", "0.1.0")
    assert config.storage.storageClassName == "fast-ssd"
    assert config.argo.artifactRepositoryRef == "minio"
    assert (config.limits.maxRows, config.timeouts.trainSeconds) == (1_000_000, 86400)  # clusterConfig merged last


def test_the_presets_configmap_mounted_as_a_folder_gives_every_preset(chart_defaults, tmp_path, monkeypatch):
    from kairo import presets

    data = one(chart_defaults, "ConfigMap", "kairo-presets")["data"]
    sources = sorted((ROOT / "presets" / "models").glob("*.yaml"))
    assert sorted(data) == [p.name for p in sources]
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setenv("KAIRO_PRESETS_DIR", str(tmp_path))
    assert set(presets.all_presets()) == {yaml.safe_load(p.read_text())["name"] for p in sources}


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_kaitos_default_tuning_configmaps_hold_kairos_templates(chart_defaults, method, tmp_path):
    configmap = one(chart_defaults, "ConfigMap", f"{method}-params-template")
    text = configmap["data"]["training_config.yaml"]
    assert text == (ROOT / "presets" / "training" / f"{method}-params-template.yaml").read_text()
    config = parse_training_config(configmap, f"ConfigMap {method}-params-template")
    assert config.LoraConfig.r == 8 and config.LoraConfig.lora_alpha == 8


def test_qlora_params_template_has_kaitos_qlora_defaults(chart_defaults):
    data = yaml.safe_load(one(chart_defaults, "ConfigMap", "qlora-params-template")["data"]["training_config.yaml"])
    section = data["training_config"]
    assert section["QuantizationConfig"] == {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                             "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_use_double_quant": True}
    assert section["LoraConfig"] == {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0}
    assert section["TrainingArguments"]["save_strategy"] == "no"
    assert section["TrainingArguments"]["per_device_train_batch_size"] == 1
    assert section["DatasetConfig"] == {"shuffle_dataset": True, "train_test_split": 1}


def test_configmaps_can_be_switched_off():
    objects = render_chart({"presets": {"enabled": False}, "trainingTemplates": {"enabled": False}})
    assert [o["metadata"]["name"] for o in find(objects, "ConfigMap")] == ["kairo-cluster"]


# -- the WorkflowTemplate ------------------------------------------------------------------------------------


def containers(template):
    return [t for t in template["spec"]["templates"] if "container" in t]


def test_every_step_in_the_template_runs_in_its_own_image_from_the_values(chart_full):
    template = one(chart_full, "WorkflowTemplate", "kairo-tuning")
    steps = set()
    for t in containers(template):
        command = t["container"]["command"]
        assert command[0] == "kairo-step"
        step = command[1]
        steps.add(step)
        assert t["container"]["image"] == f"registry.example.com/kairo/{image_for_step(step).name}:0.1.0"
        assert t["container"]["imagePullPolicy"] == "IfNotPresent"
    assert {"provision", "download", "fetch-model", "train", "push", "deploy", "smoke", "cleanup"} <= steps


def test_default_images_use_the_chart_version(chart_defaults):
    template = one(chart_defaults, "WorkflowTemplate", "kairo-tuning")
    images = {t["container"]["image"] for t in containers(template)}
    assert f"ghcr.io/kairo-project/kairo-train:{__version__}" in images


def test_cluster_values_reach_the_template():
    objects = render_chart(scenario(CHART / "ci" / "karpenter-values.yaml") | {
        "images": {"pullPolicy": "Always"}, "workVolume": {"storageClassName": "fast-ssd"},
        "artifactRepository": {"key": "minio"}})
    spec = one(objects, "WorkflowTemplate", "kairo-tuning")["spec"]
    tolerations = [t["tolerations"] for t in spec["templates"] if t.get("tolerations")]
    assert tolerations and all(t == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "true",
                                      "effect": "NoSchedule"}] for t in tolerations)
    assert {t["container"]["imagePullPolicy"] for t in containers({"spec": spec})} == {"Always"}
    assert {c["spec"]["storageClassName"] for c in spec["volumeClaimTemplates"]} == {"fast-ssd"}
    assert spec["artifactRepositoryRef"] == {"configMap": "artifact-repositories", "key": "minio"}


def test_the_template_runs_as_kairo_workflow(chart_defaults):
    assert one(chart_defaults, "WorkflowTemplate", "kairo-tuning")["spec"]["serviceAccountName"] == "kairo-workflow"


# -- CronWorkflows -------------------------------------------------------------------------------------------


def test_cron_workflows_submit_kairo_tuning_with_their_parameters(chart_full):
    nightly = one(chart_full, "CronWorkflow", "phi-3-nightly")["spec"]
    assert nightly["schedules"] == ["0 2 * * *"] and nightly["timezone"] == "Europe/Paris"
    assert nightly["concurrencyPolicy"] == "Forbid"
    assert nightly["workflowSpec"]["workflowTemplateRef"] == {"name": "kairo-tuning"}
    params = {p["name"]: p["value"] for p in nightly["workflowSpec"]["arguments"]["parameters"]}
    assert params["preset"] == "phi-3-mini-4k-instruct" and params["count"] == "1"
    weekly = one(chart_full, "CronWorkflow", "qwen-weekly")["spec"]
    assert weekly["schedules"] == ["0 3 * * 1", "0 3 * * 4"] and weekly["concurrencyPolicy"] == "Replace"


def test_cron_parameters_are_kairo_tuning_parameters(chart_full):
    known = {p["name"] for p in one(chart_full, "WorkflowTemplate", "kairo-tuning")["spec"]["arguments"]["parameters"]}
    for cron in find(chart_full, "CronWorkflow"):
        given = {p["name"] for p in cron["spec"]["workflowSpec"]["arguments"]["parameters"]}
        assert given <= known, given - known


# -- values, schema, notes -----------------------------------------------------------------------------------


def test_every_value_is_documented_with_a_comment_above_it():
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z][\w-]*:", line):
            above = lines[i - 1].strip() if i else ""
            if not above.startswith("# --"):
                undocumented.append(line.strip())
    assert undocumented == []


def test_the_schema_refuses_a_misspelt_value():
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values(scenario(CHART / "ci" / "full-values.yaml")))
        with pytest.raises(helm_python.HelmValuesError, match="imagez|additional"):
            chart.validate_schema(chart.merge_values({"images": {"imagez": "x"}}))
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema(chart.merge_values({"provisioner": {"kind": "gke"}}))


def test_the_schema_is_json_schema_and_covers_every_top_level_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


def test_notes_tell_how_to_submit_the_first_run():
    notes = rendered_text()["kairo/templates/NOTES.txt"]
    assert f"argo submit -n {NAMESPACE} --from workflowtemplate/kairo-tuning" in notes
    assert "workspaceCRD.install=false" in notes


def test_the_chart_version_is_kairos_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == __version__
