"""Argo Events: applying a Workspace submits kairo-tuning (an inference one kairo-inference), deleting one a teardown.

The EventSource and Sensors are checked against Argo Events' own JSON schema made strict; the Workflows
they submit against Argo's strict CRD schema; and the Sensor's parameter templates are run by the real
Helm engine (the same Go text/template and sprig functions Argo Events uses) over a Workspace event.
"""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path

import helm_python
import jsonschema
import pytest
import yaml

from kairo.images import IMAGE_UID
from tests.fixtures.argo_schema import ROOT, check_argo_object, make_strict
from tests.fixtures.helm import CHART, NAMESPACE, find, one, without_helper_keys
from tests.fixtures.workspaces import KAITO_PVC_EXAMPLE

EVENTS_KINDS = ("EventSource", "Sensor")
MAPPING = yaml.safe_load((CHART / "files" / "events" / "workspace-parameters.yaml").read_text())
INFERENCE_MAPPING = yaml.safe_load((CHART / "files" / "events" / "inference-parameters.yaml").read_text())


def events_schema_path() -> Path:
    for folder in (ROOT / "tests" / "schemas", ROOT / "shared" / "schemas", ROOT.parent / "shared" / "schemas"):
        if (folder / "argo-events.schema.json").is_file():
            return folder / "argo-events.schema.json"
    raise FileNotFoundError("argo-events.schema.json is not in shared/schemas beside or above the repository")


@cache
def events_validator(kind: str) -> jsonschema.Draft7Validator:
    definitions = make_strict(json.loads(events_schema_path().read_text())["definitions"])
    return jsonschema.Draft7Validator({"$ref": f"#/definitions/io.argoproj.events.v1alpha1.{kind}",
                                       "definitions": definitions})


def events_problems(obj: dict) -> list[str]:
    errors = sorted(events_validator(obj["kind"]).iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in errors]


def triggers(chart, sensor):
    return one(chart, "Sensor", sensor)["spec"]["triggers"]


def submitted(trigger) -> dict:
    return trigger["template"]["argoWorkflow"]["source"]["resource"]


# -- the objects ---------------------------------------------------------------------------------------------


def test_events_are_off_by_default(chart_defaults):
    assert [o for o in chart_defaults if o["kind"] in EVENTS_KINDS] == []
    assert find(chart_defaults, "ServiceAccount", "kairo-events") == []


def test_event_source_and_sensors_pass_argo_events_strict_schema(chart_full):
    objects = [o for o in chart_full if o["kind"] in EVENTS_KINDS]
    assert sorted(o["metadata"]["name"] for o in objects) == ["kairo-inference", "kairo-teardown", "kairo-tuning",
                                                              "kairo-workspaces"]
    for obj in objects:
        assert events_problems(without_helper_keys(obj)) == [], obj["metadata"]["name"]


def test_the_strict_schema_catches_a_misspelt_field(chart_full):
    source = without_helper_keys(one(chart_full, "EventSource", "kairo-workspaces"))
    source["spec"]["resource"]["workspace-added"]["eventType"] = ["ADD"]
    assert any("eventType" in p for p in events_problems(source))


def test_the_event_source_watches_tuning_and_inference_workspaces_apart_in_the_release_namespace(chart_full):
    resources = one(chart_full, "EventSource", "kairo-workspaces")["spec"]["resource"]
    assert {name: r["eventTypes"] for name, r in resources.items()} == {
        "workspace-added": ["ADD"], "workspace-updated": ["UPDATE"], "inference-added": ["ADD"],
        "inference-updated": ["UPDATE"], "workspace-deleted": ["DELETE"]}
    for name, r in resources.items():
        assert (r["group"], r["version"], r["resource"], r["namespace"]) == ("kaito.sh", "v1beta1", "workspaces", NAMESPACE)
        section = "inference" if name.startswith("inference") else "tuning"
        if name != "workspace-deleted":  # deleting either kind releases its nodes
            assert r["filter"]["fields"] == [{"key": section, "operation": "==", "value": ""}], name
    assert "fields" not in resources["workspace-deleted"]["filter"]
    # A restarted EventSource lists every Workspace as added: only those created after it started count.
    assert resources["workspace-added"]["filter"]["afterStart"] is True
    assert resources["inference-added"]["filter"]["afterStart"] is True


def test_only_a_spec_change_retriggers_tuning(chart_full):
    updated = [d for d in one(chart_full, "Sensor", "kairo-tuning")["spec"]["dependencies"]
               if d["eventName"] == "workspace-updated"]
    assert updated[0]["filters"]["exprs"] == [{"expr": "generation != previous", "fields": [
        {"name": "generation", "path": "body.metadata.generation"},
        {"name": "previous", "path": "oldBody.metadata.generation"}]}]


def test_the_sensor_submits_kairo_tuning_in_the_release_namespace(chart_full):
    tune = triggers(chart_full, "kairo-tuning")
    assert [t["template"]["conditions"] for t in tune] == ["workspace-added", "workspace-updated"]
    for trigger in tune:
        workflow = submitted(trigger)
        assert trigger["template"]["argoWorkflow"]["operation"] == "submit"
        assert workflow["spec"]["workflowTemplateRef"] == {"name": "kairo-tuning"}
        assert workflow["metadata"]["namespace"] == NAMESPACE


def test_every_mapped_parameter_lands_on_its_own_template_parameter(chart_full):
    template_params = [p["name"] for p in one(chart_full, "WorkflowTemplate", "kairo-tuning")["spec"]["arguments"]["parameters"]]
    assert set(MAPPING) <= set(template_params)
    for trigger in triggers(chart_full, "kairo-tuning"):
        names = [p["name"] for p in submitted(trigger)["spec"]["arguments"]["parameters"]]
        assert sorted(names) == sorted(MAPPING)
        by_dest = {p["dest"]: p["src"] for p in trigger["template"]["argoWorkflow"]["parameters"]}
        for index, name in enumerate(names):
            src = by_dest[f"spec.arguments.parameters.{index}.value"]
            assert src["dataTemplate"] == MAPPING[name]
            assert src["dependencyName"] == trigger["template"]["conditions"]
        assert by_dest[r"metadata.labels.kairo\.sh/workspace"]["dataKey"] == "body.metadata.name"


def test_the_submitted_workflows_pass_the_strict_argo_check(chart_full):
    workflows = [submitted(t) for sensor in ("kairo-tuning", "kairo-inference", "kairo-teardown")
                 for t in triggers(chart_full, sensor)]
    assert len(workflows) == 5
    for workflow in workflows:
        assert check_argo_object(workflow) == []


def test_deleting_a_workspace_runs_cleanup_with_ephemeral_true_as_kairo_provision(chart_full):
    (trigger,) = triggers(chart_full, "kairo-teardown")
    workflow = submitted(trigger)
    assert workflow["spec"]["serviceAccountName"] == "kairo-provision"
    (template,) = workflow["spec"]["templates"]
    container = template["container"]
    assert container["image"] == "registry.example.com/kairo/kairo-provision:0.1.0"
    assert container["command"] == ["kairo-step"]
    assert container["args"] == ["cleanup", "--workspace", "{{workflow.parameters.workspace}}",
                                 "--namespace", "{{workflow.namespace}}", "--ephemeral", "true", "--workspace-deleted"]
    # cleanup exits 75 while the garbage collector has not removed the inference yet: that is retried
    assert template["retryStrategy"]["retryPolicy"] == "Always"
    assert template["retryStrategy"]["expression"] == "asInt(lastRetry.exitCode) != 2"
    security = workflow["spec"]["securityContext"]
    assert security["runAsUser"] == security["runAsGroup"] == IMAGE_UID
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/kairo/cluster.yaml", "/tmp"}
    params = trigger["template"]["argoWorkflow"]["parameters"]
    assert {"src": {"dependencyName": "workspace-deleted", "dataKey": "body.metadata.name"},
            "dest": "spec.arguments.parameters.0.value"} in params


def test_the_events_account_may_watch_workspaces_and_submit_workflows_only(chart_full):
    rules = one(chart_full, "Role", "kairo-events")["rules"]
    assert {(g, r): set(rule["verbs"]) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]} == {
        ("kaito.sh", "workspaces"): {"get", "list", "watch"},
        ("argoproj.io", "workflows"): {"create", "get", "list"},
        ("argoproj.io", "workflowtemplates"): {"get", "list"}}


# -- the parameter templates, run by the real Go template engine ------------------------------------------


@pytest.fixture(scope="module")
def evaluate(tmp_path_factory):
    """Run the Sensor's dataTemplates over a resource event the way Argo Events does (.Input = event data)."""
    chart = tmp_path_factory.mktemp("events") / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "out.yaml").write_text(
        "{{- range $name, $template := .Values.templates }}\n"
        '{{ $name }}: {{ tpl $template (dict "Input" $.Values.event "Template" $.Template) | toJson }}\n'
        "{{- end }}\n")

    def run(body: dict, event_type: str = "ADD", mapping: dict | None = None) -> dict:
        event = {"type": event_type, "body": body, "group": "kaito.sh", "version": "v1beta1", "resource": "workspaces"}
        with helm_python.Chart.load(chart) as loaded:
            out = loaded.render({"templates": mapping or MAPPING, "event": event}, name="probe", namespace=NAMESPACE)
        return yaml.safe_load(out["probe/templates/out.yaml"])

    yield run
    shutil.rmtree(chart, ignore_errors=True)


def test_the_seeds_workspace_becomes_kairo_tuning_parameters(evaluate, examples):
    body = yaml.safe_load((examples / "tuning-phi-3.yaml").read_text())
    body["metadata"] |= {"namespace": NAMESPACE, "generation": 1, "annotations": {"kairo.sh/ephemeral-node": "true"}}
    params = evaluate(body)
    assert params == {
        "workspace": "workspace-tuning-phi-3",
        "preset": "phi-3-mini-128k-instruct",
        "method": "qlora",
        "dataset-urls": body["tuning"]["input"]["urls"][0],
        "dataset-image": "",
        "output-image": "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1",
        "instance-type": "Standard_NC6s_v3",
        "count": "",
        "labels": "app=tuning-phi-3",
        "config": "qlora-params-template",
        "push-secret": "ACR_REGISTRY_SECRET_HERE",
        "pull-secret": "",
        "model-access-secret": "",
        "model-image": "",
        "model-pull-secret": "",
        "ephemeral": "true",
        "eval-margin": "",
        "source": "resource",
        "runtime": "",
    }


def test_the_sensors_workflows_read_the_workspace_object_and_size_the_pods_from_it(chart_full):
    template = {p["name"]: p for p in one(chart_full, "WorkflowTemplate", "kairo-tuning")["spec"]["arguments"][
        "parameters"]}
    for trigger in triggers(chart_full, "kairo-tuning"):
        given = {p["name"]: p["value"] for p in submitted(trigger)["spec"]["arguments"]["parameters"]}
        by_dest = {p["dest"]: p["src"] for p in trigger["template"]["argoWorkflow"]["parameters"]}
        names = list(given)
        assert by_dest[f"spec.arguments.parameters.{names.index('source')}.value"]["dataTemplate"] == "resource"
        # not mapped: the `workspace` step computes them from the Workspace's instance type and preset
        assert not {"gpus", "cpu", "memory"} & set(given)
        assert template["gpus"]["value"] == template["cpu"]["value"] == template["memory"]["value"] == "auto"


def test_a_workspace_with_several_urls_labels_and_its_own_config(evaluate):
    body = yaml.safe_load(KAITO_PVC_EXAMPLE.split("---\n")[-1])
    body["resource"]["count"] = 1
    body["resource"]["labelSelector"]["matchLabels"] = {"b": "2", "a": "1"}
    body["tuning"] |= {"method": "LoRA", "config": "my-config",
                       "input": {"urls": ["https://e.com/1.parquet", "https://e.com/2.parquet"],
                                 "imagePullSecrets": ["first", "second"]}}
    params = evaluate(body, "UPDATE")
    assert params["dataset-urls"] == "https://e.com/1.parquet https://e.com/2.parquet"
    assert params["labels"] == "a=1,b=2"
    assert (params["method"], params["config"], params["count"]) == ("lora", "my-config", "1")
    assert params["pull-secret"] == "first"


def test_a_private_model_image_and_its_first_pull_secret_become_parameters(evaluate, examples):
    body = yaml.safe_load((examples / "tuning-phi-3.yaml").read_text())
    body["tuning"]["preset"] |= {"accessMode": "private", "presetOptions": {
        "image": "registry.example/kaito/phi-3:0.0.1", "imagePullSecrets": ["model-registry", "spare"]}}
    params = evaluate(body)
    assert (params["model-image"], params["model-pull-secret"]) == ("registry.example/kaito/phi-3:0.0.1",
                                                                    "model-registry")


def test_a_volume_workspace_leaves_the_dataset_parameters_empty(evaluate):
    params = evaluate(yaml.safe_load(KAITO_PVC_EXAMPLE.split("---\n")[-1]))
    assert (params["dataset-urls"], params["dataset-image"], params["output-image"]) == ("", "", "")
    assert (params["method"], params["config"]) == ("lora", "lora-params-template")


# -- inference Workspaces ------------------------------------------------------------------------------------


def test_the_inference_sensor_submits_kairo_inference_with_each_mapped_parameter_in_its_place(chart_full):
    template_params = [p["name"] for p in one(chart_full, "WorkflowTemplate", "kairo-inference")["spec"]["arguments"][
        "parameters"]]
    assert set(INFERENCE_MAPPING) <= set(template_params)
    serve = triggers(chart_full, "kairo-inference")
    assert [t["template"]["conditions"] for t in serve] == ["inference-added", "inference-updated"]
    for trigger in serve:
        workflow = submitted(trigger)
        assert workflow["spec"]["workflowTemplateRef"] == {"name": "kairo-inference"}
        assert workflow["metadata"]["namespace"] == NAMESPACE
        names = [p["name"] for p in workflow["spec"]["arguments"]["parameters"]]
        by_dest = {p["dest"]: p["src"] for p in trigger["template"]["argoWorkflow"]["parameters"]}
        for index, name in enumerate(names):
            assert by_dest[f"spec.arguments.parameters.{index}.value"]["dataTemplate"] == INFERENCE_MAPPING[name]


def test_an_inference_workspace_becomes_kairo_inference_parameters_its_adapters_as_json(evaluate, examples):
    body = yaml.safe_load((examples / "inference-quickstart.yaml").read_text())
    params = evaluate(body, mapping=INFERENCE_MAPPING)
    assert json.loads(params.pop("adapters")) == body["inference"]["adapters"]
    assert params == {"workspace": "quickstart-inference", "preset": "tiny-llama-test",
                      "instance-type": "Standard_NC6s_v3", "count": "", "labels": "app=quickstart-inference",
                      "model-access-secret": "", "model-image": "", "model-pull-secret": "", "ephemeral": "",
                      "source": "resource", "runtime": "transformers"}


def test_the_adapters_parameter_reads_back_as_deploy_reads_it(evaluate, examples, tmp_path):
    """The JSON the Sensor writes is what the pull task and deploy parse (steps' own parsers, no cluster)."""
    from kairo.steps import deploy

    body = yaml.safe_load((examples / "inference-quickstart.yaml").read_text())
    adapters = evaluate(body, mapping=INFERENCE_MAPPING)["adapters"]
    args = deploy.make_parser().parse_args(["--workspace", "w", "--preset", "tiny-llama-test", "--adapters-json",
                                            adapters, "--pinned", json.dumps({"quickstart": "r/a@sha256:" + "1" * 64})])
    served, problems = deploy._served_adapters(args)
    assert problems == []
    assert served == [{"name": "quickstart", "ref": "r/a@sha256:" + "1" * 64},
                      {"name": "on-volume", "volume": {"persistentVolumeClaim": {"claimName": "quickstart-adapters"}}}]
    assert args.strength == ["quickstart=0.7", "on-volume=0.3"]


# -- kaito.sh/runtime through the Sensor ----------------------------------------------------------------------


def task_args(chart, template: str, task: str, params: dict[str, str]) -> list[str]:
    """A task's container args in a generic template, its workflow parameters substituted as Argo would (what the
    Sensor gave, else the template's default); other references (task inputs, outputs) become '1'."""
    import re

    spec = one(chart, "WorkflowTemplate", template)["spec"]
    values = {p["name"]: p.get("value", "") for p in spec["arguments"]["parameters"]} | {
        k: v for k, v in params.items() if v}
    (found,) = [t for t in spec["templates"] if t["name"] == task]
    out = []
    for arg in found["container"]["args"]:
        for name, value in values.items():
            arg = arg.replace("{{workflow.parameters." + name + "}}", value)
        out.append(re.sub(r"\{\{[^}]*\}\}", "1", arg))
    return out


@pytest.mark.parametrize(("template", "example", "mapping"), [
    ("kairo-tuning", "tuning-phi-3.yaml", MAPPING), ("kairo-inference", "inference-quickstart.yaml", INFERENCE_MAPPING)])
def test_a_kubectl_applied_vllm_workspace_deploys_vllm_and_smoke_asks_the_openai_api_only(
        chart_full, evaluate, examples, template, example, mapping):
    from kairo.steps import deploy, smoke, workspace

    body = yaml.safe_load((examples / example).read_text())
    body["metadata"].setdefault("annotations", {})["kaito.sh/runtime"] = "vllm"
    params = evaluate(body, mapping=mapping)
    assert params["runtime"] == "vllm"
    args = deploy.make_parser().parse_args(task_args(chart_full, template, "deploy", params))
    assert args.runtime == "vllm"  # deploy builds vLLM's Deployment from it (test_deploy_vllm)
    assert smoke.make_parser().parse_args(task_args(chart_full, template, "smoke", params)).runtime == "vllm"
    assert workspace.make_parser().parse_args(task_args(chart_full, template, "workspace", params)).runtime == "vllm"


def test_a_workspace_without_the_annotation_keeps_kairos_server(chart_full, evaluate, examples):
    from kairo.steps import deploy

    params = evaluate(yaml.safe_load((examples / "tuning-phi-3.yaml").read_text()))
    args = deploy.make_parser().parse_args(task_args(chart_full, "kairo-tuning", "deploy", params))
    assert params["runtime"] == "" and args.runtime == ""


def test_the_generic_templates_workspace_step_refuses_an_unknown_runtime(tmp_path, capsys):
    from kairo.steps import workspace

    code = workspace.main(["--workspace", "w", "--preset", "tiny-llama-test", "--runtime", "tgi",
                           "--outputs", str(tmp_path / "out")])
    assert code == 2
    assert "runtime: 'tgi' — Kaito's runtimes are 'vllm' and 'transformers'" in capsys.readouterr().err
