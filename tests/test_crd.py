"""The Workspace CRD: generated from kairo.spec, shaped like Kaito's, installed by the chart on request."""

from __future__ import annotations

import shutil

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from kairo.manifests.crd import PRINTER_COLUMNS, build_workspace_crd, workspace_schema
from kairo.spec import parse_workspace_text
from tests.fixtures.argo_schema import make_strict
from tests.fixtures.helm import CHART, find, one, render_chart, without_helper_keys
from tests.fixtures.workspaces import KAITO_PVC_EXAMPLE

# Kaito's inference example and its tuning example with a dataset image (docs: examples/fine-tuning).
KAITO_IMAGE_EXAMPLE = """\
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-tuning-falcon
  annotations:
    kairo.sh/ephemeral-node: "true"
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector:
    matchLabels:
      app: tuning-falcon
    matchExpressions:
      - key: kubernetes.azure.com/agentpool
        operator: In
        values: [gpu]
tuning:
  preset:
    name: falcon-7b-instruct
  method: qlora
  config: my-qlora-config
  input:
    image: myregistry.azurecr.io/datasets/dolly:v1
    imagePullSecrets: [pull-secret]
  output:
    image: myregistry.azurecr.io/adapters/falcon:0.0.1
    imagePushSecret: push-secret
"""

KAITO_INFERENCE_EXAMPLE = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: workspace-phi-3-mini
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector:
    matchLabels:
      apps: phi-3
inference:
  preset:
    name: phi-3-mini-4k-instruct
  adapters:
    - source:
        name: kubernetes-adapter
        image: myregistry.azurecr.io/adapters/phi-3:0.0.1
      strength: "1.0"
"""

STATUS = {"conditions": [
    {"type": "ResourceReady", "status": "True", "reason": "NodesReady", "message": "1 node",
     "lastTransitionTime": "2025-01-01T00:00:00Z"},
    {"type": "WorkspaceSucceeded", "status": "Unknown", "reason": "WorkflowRunning", "message": "running",
     "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 2}],
    "workflow": "workspace-tuning-phi-3-x7k2q", "adapterDigest": "sha256:" + "a" * 64}


def validator():
    """The schema as the API server applies it to `kubectl apply` (strict field validation): unknown keys refused."""
    return jsonschema.Draft7Validator(make_strict(workspace_schema()))


def workspace(text):
    return parse_workspace_text(text).workspace


def structural_problems(node, path="openAPIV3Schema"):
    """What breaks Kubernetes' structural-schema rules (every node typed, no unions, no forbidden keywords)."""
    problems = []
    if not isinstance(node, dict):
        return [f"{path}: not a mapping"]
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    for keyword in ("anyOf", "oneOf", "allOf", "$ref", "default", "title", "nullable"):
        if keyword in node:
            problems.append(f"{path}: {keyword}")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    if "items" in node:
        problems += structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}{{}}")
    return problems


def test_the_crd_is_a_valid_kubernetes_object_with_a_structural_schema():
    crd = build_workspace_crd()
    kubernetes_validate.validate(crd, "1.33", strict=True)
    for version in crd["spec"]["versions"]:
        assert structural_problems(version["schema"]["openAPIV3Schema"]) == []


def test_the_schema_comes_from_kairo_spec():
    properties = workspace_schema()["properties"]
    assert set(properties) == {"apiVersion", "kind", "metadata", "resource", "tuning", "inference", "status"}
    assert properties["metadata"] == {"type": "object"}
    tuning = properties["tuning"]["properties"]
    assert set(tuning) == {"preset", "method", "config", "input", "output"}
    assert tuning["method"]["description"] == "lora or qlora"
    assert properties["resource"]["properties"]["labelSelector"]["properties"]["matchLabels"] == {
        "type": "object", "additionalProperties": {"type": "string"}, "description": "Labels GPU nodes must carry"}


def test_volume_sources_pod_templates_and_status_keep_unknown_fields_as_kaito_does():
    properties = workspace_schema()["properties"]
    for side in ("input", "output"):
        volume = properties["tuning"]["properties"][side]["properties"]["volumeSource"]
        assert volume == {"type": "object", "description": volume["description"],
                          "x-kubernetes-preserve-unknown-fields": True}
    # inference is typed as Kaito's InferenceSpec (api/v1beta1/workspace_types.go); what Kaito leaves open stays open.
    inference = properties["inference"]["properties"]
    assert {"preset", "adapters", "config", "template"} <= set(inference)
    assert inference["template"]["x-kubernetes-preserve-unknown-fields"] is True
    adapter_source = inference["adapters"]["items"]["properties"]["source"]["properties"]
    assert adapter_source["volumeSource"]["x-kubernetes-preserve-unknown-fields"] is True
    assert inference["adapters"]["items"]["properties"]["strength"]["type"] == "string"
    assert properties["status"]["x-kubernetes-preserve-unknown-fields"] is True


def test_two_versions_served_v1beta1_stored_with_a_status_subresource():
    versions = build_workspace_crd()["spec"]["versions"]
    assert [(v["name"], v["served"], v["storage"]) for v in versions] == [
        ("v1alpha1", True, False), ("v1beta1", True, True)]
    assert all(v["subresources"] == {"status": {}} for v in versions)


def test_names_and_printer_columns_are_kaitos():
    crd = build_workspace_crd()
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == "workspaces.kaito.sh" and crd["spec"]["scope"] == "Namespaced"
    assert (names["kind"], names["plural"], names["shortNames"]) == ("Workspace", "workspaces", ["wk", "wks"])
    for version in crd["spec"]["versions"]:
        columns = version["additionalPrinterColumns"]
        # the seed's `kubectl get workspace`: NAME INSTANCE RESOURCEREADY INFERENCEREADY WORKSPACEREADY AGE
        assert [c["name"].upper() for c in columns] == [
            "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]
        assert [(c["name"], c["type"], c["jsonPath"]) for c in columns] == list(PRINTER_COLUMNS)


@pytest.mark.parametrize("name, text", [
    ("the seed's phi-3 example", None),
    ("Kaito's PVC example", KAITO_PVC_EXAMPLE),
    ("a dataset image with pull secrets", KAITO_IMAGE_EXAMPLE),
    ("Kaito's inference workspace", KAITO_INFERENCE_EXAMPLE),
])
def test_kaito_examples_validate_against_the_schema(name, text, examples):
    text = text or (examples / "tuning-phi-3.yaml").read_text()
    errors = list(validator().iter_errors(workspace(text)))
    assert errors == [], f"{name}: {[e.message for e in errors]}"


def test_a_workspace_with_status_written_by_the_steps_validates():
    ws = workspace(KAITO_PVC_EXAMPLE) | {"status": STATUS}
    assert list(validator().iter_errors(ws)) == []


def test_a_misspelt_field_or_a_bad_condition_is_refused():
    ws = workspace(KAITO_PVC_EXAMPLE)
    ws["tuning"]["methd"] = ws["tuning"].pop("method")
    assert ["'methd' was unexpected"] == [e.message.split(" (")[-1].rstrip(")") for e in validator().iter_errors(ws)]
    bad = workspace(KAITO_PVC_EXAMPLE) | {"status": {"conditions": [{**STATUS["conditions"][0], "status": "Yes"}]}}
    assert any("'Yes' is not one of" in e.message for e in validator().iter_errors(bad))


# -- in the chart --------------------------------------------------------------------------------------------


def test_the_chart_installs_the_crd_only_when_asked(chart_defaults):
    assert find(chart_defaults, "CustomResourceDefinition") == []
    objects = render_chart({"workspaceCRD": {"install": True}})
    crd = without_helper_keys(one(objects, "CustomResourceDefinition", "workspaces.kaito.sh"))
    kubernetes_validate.validate(crd, "1.33", strict=True)
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert crd["spec"] == build_workspace_crd()["spec"]


def ownership_chart(tmp_path, existing):
    """A chart with kairo's real helpers and one template asking them about `existing` (as `lookup` would give)."""
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    shutil.copy(CHART / "templates" / "_helpers.tpl", chart / "templates" / "_helpers.tpl")
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "check.yaml").write_text(
        '{{- include "kairo.refuseForeignCRD" (dict "existing" .Values.existing "release" .Release '
        '"name" "workspaces.kaito.sh") }}\nkind: ConfigMap\napiVersion: v1\nmetadata: {name: passed}\n')
    with helm_python.Chart.load(chart) as loaded:
        return loaded.render({"existing": existing}, name="kairo", namespace="ml")


def test_the_chart_refuses_to_take_over_kaitos_crd(tmp_path):
    kaito = {"metadata": {"name": "workspaces.kaito.sh", "annotations": {"meta.helm.sh/release-name": "kaito-workspace",
                                                                         "meta.helm.sh/release-namespace": "kaito"}}}
    with pytest.raises(helm_python.HelmRenderError, match="belongs to release kaito/kaito-workspace.*workspaceCRD.install=false"):
        ownership_chart(tmp_path, kaito)
    with pytest.raises(helm_python.HelmRenderError, match="another installer"):
        ownership_chart(tmp_path, {"metadata": {"name": "workspaces.kaito.sh"}})


def test_the_chart_updates_a_crd_it_owns_and_installs_one_that_is_missing(tmp_path):
    ours = {"metadata": {"annotations": {"meta.helm.sh/release-name": "kairo", "meta.helm.sh/release-namespace": "ml"}}}
    assert "passed" in ownership_chart(tmp_path, ours)["probe/templates/check.yaml"]
    assert "passed" in ownership_chart(tmp_path / "again", None)["probe/templates/check.yaml"]


def test_the_committed_crd_file_is_what_kairo_crd_builds():
    committed = yaml.safe_load((CHART / "files" / "crds" / "workspaces.kaito.sh.yaml").read_text())
    assert committed == build_workspace_crd()
