"""`kairo render`: the objects a workspace runs as, in the order kubectl needs, passing every strict check."""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml

from kairo.argo.refs import check_references
from kairo.cli import main
from tests.fixtures.workspaces import KAITO_PVC_EXAMPLE

SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash", "ash", "zsh"}


@pytest.fixture
def strict(argo_strict):
    """Assert an Argo object passes the CRD schema, Hera's models, kubernetes-validate, references and no-shell."""

    def check(obj: dict) -> None:
        argo_strict(obj)
        assert check_references(obj) == []
        spec = obj["spec"].get("workflowSpec", obj["spec"])
        for template in spec["templates"]:
            command = (template.get("container") or {}).get("command", [])
            if command and command[0] in SHELLS and "-c" in command:
                assert "{{" not in json.dumps(template["container"]), template["name"]

    return check


def render(capsys, *argv: str) -> list[dict]:
    code = main(["render", *map(str, argv)])
    out = capsys.readouterr()
    assert code == 0, out.err
    return [d for d in yaml.safe_load_all(out.out) if d]


def test_the_seed_workspace_renders_a_workflow_that_passes_every_strict_check(capsys, examples, strict):
    objects = render(capsys, examples / "tuning-phi-3.yaml")
    assert [o["kind"] for o in objects] == ["Workflow"]
    strict(objects[0])


def test_kaitos_pvc_example_renders_the_pvcs_first(capsys, tmp_path, strict):
    path = tmp_path / "pvc.yaml"
    path.write_text(KAITO_PVC_EXAMPLE)
    objects = render(capsys, path)
    assert [(o["kind"], o["metadata"].get("name")) for o in objects[:2]] == [
        ("PersistentVolumeClaim", "pvc-azurefile-input"), ("PersistentVolumeClaim", "pvc-azurefile-output")]
    workflow = objects[-1]
    assert workflow["kind"] == "Workflow" and len(objects) == 3
    # the PVCs land where the workflow runs, so its pods can mount them
    assert {o["metadata"]["namespace"] for o in objects} == {workflow["metadata"]["namespace"]}
    volumes = {v["name"]: v for v in workflow["spec"]["volumes"]}
    assert volumes["input"]["persistentVolumeClaim"] == {"claimName": "pvc-azurefile-input"}
    assert volumes["output"]["persistentVolumeClaim"] == {"claimName": "pvc-azurefile-output"}
    strict(workflow)


def test_the_cronworkflow_forbids_overlapping_runs_and_passes_the_strict_checks(capsys, examples, strict):
    objects = render(capsys, examples / "tuning-phi-3.yaml", "--kind", "cronworkflow", "--schedule", "0 3 * * 1",
                     "--timezone", "Europe/Paris")
    cron = objects[-1]
    assert cron["kind"] == "CronWorkflow" and cron["metadata"]["name"] == "workspace-tuning-phi-3"
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and spec["schedules"] == ["0 3 * * 1"]
    assert spec["timezone"] == "Europe/Paris" and spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] == spec["failedJobsHistoryLimit"] == 3
    assert spec["workflowMetadata"]["labels"]["kairo.sh/workspace"] == "workspace-tuning-phi-3"
    strict(cron)


def test_a_cronworkflow_needs_a_valid_schedule_and_time_zone(capsys, examples):
    assert main(["render", str(examples / "tuning-phi-3.yaml"), "--kind", "cronworkflow"]) == 2
    assert "--schedule" in capsys.readouterr().err
    assert main(["render", str(examples / "tuning-phi-3.yaml"), "--kind", "cronworkflow", "--schedule", "weekly",
                 "--timezone", "Mars/Olympus"]) == 2
    err = capsys.readouterr().err
    assert "schedule: 'weekly'" in err and "timezone: 'Mars/Olympus'" in err


def test_the_generic_template_renders_without_a_file_and_passes_the_strict_checks(capsys, strict):
    objects = render(capsys, "--kind", "workflowtemplate")
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [("WorkflowTemplate", "kairo-tuning")]
    strict(objects[0])


def test_the_generic_inference_template_renders_without_a_file_and_passes_the_strict_checks(capsys, strict):
    objects = render(capsys, "--kind", "workflowtemplate", "--template", "inference")
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [("WorkflowTemplate", "kairo-inference")]
    strict(objects[0])


def test_an_inference_workspace_renders_its_workflow_and_refuses_a_cron_workflow(capsys, examples):
    objects = render(capsys, str(examples / "inference-quickstart.yaml"), "--local")
    assert objects[-1]["spec"]["entrypoint"] == "inference"
    assert main(["render", str(examples / "inference-quickstart.yaml"), "--local", "--kind", "cronworkflow",
                 "--schedule", "0 3 * * 1"]) == 2
    assert "--kind: cronworkflow retrains on a schedule" in capsys.readouterr().err


def test_json_output_is_one_object_or_a_list_kubectl_reads(capsys, examples, tmp_path):
    assert main(["render", str(examples / "tuning-phi-3.yaml"), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "Workflow"
    path = tmp_path / "pvc.yaml"
    path.write_text(KAITO_PVC_EXAMPLE)
    assert main(["render", str(path), "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "List" and [i["kind"] for i in data["items"]][-1] == "Workflow"


def test_a_training_config_file_ships_as_a_configmap_the_workflow_mounts(capsys, examples, tmp_path, strict):
    config = tmp_path / "training_config.yaml"
    config.write_text(textwrap.dedent("""\
        training_config:
          QuantizationConfig:
            load_in_4bit: true
          TrainingArguments:
            num_train_epochs: 2
        """))
    objects = render(capsys, examples / "tuning-phi-3.yaml", "--config", config)
    configmap, workflow = objects
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["name"] == "kairo-workspace-tuning-phi-3-training"
    assert yaml.safe_load(configmap["data"]["training_config.yaml"])["training_config"]["TrainingArguments"] == {
        "num_train_epochs": 2}
    volumes = {v["name"]: v for v in workflow["spec"]["volumes"]}
    assert volumes["training-config"]["configMap"]["name"] == configmap["metadata"]["name"]
    strict(workflow)


def test_a_thousand_urls_render_a_configmap_and_a_workflow_under_256_kib(capsys, examples, tmp_path, strict):
    data = yaml.safe_load((examples / "tuning-phi-3.yaml").read_text())
    data["tuning"]["input"]["urls"] = [f"https://data.example.com/dolly/train-{i:05d}-of-01000.parquet?download=true"
                                       for i in range(1000)]
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["render", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    configmap, workflow = [d for d in yaml.safe_load_all(out) if d]
    assert configmap["kind"] == "ConfigMap" and configmap["data"]["urls.txt"].count("\n") == 1000
    workflow_text = out.split("\n---\n")[-1]
    assert len(workflow_text.encode()) < 256 * 1024
    assert "train-00042" not in workflow_text
    strict(workflow)


def test_an_invalid_workspace_renders_nothing_and_says_why(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(KAITO_PVC_EXAMPLE.replace("method: lora", "method: full"))
    assert main(["render", str(path)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "tuning.method: 'full' — allowed: lora, qlora" in out.err


def test_no_secret_value_from_the_environment_reaches_the_rendered_objects(capsys, examples, monkeypatch):
    values = {"ARGO_TOKEN": "argo-tok-51d0c", "HF_TOKEN": "hf_val_9c2e7", "AZURE_CLIENT_SECRET": "az-secret-3b8f",
              "REGISTRY_PASSWORD": "reg-pass-77aa"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for argv in ([examples / "tuning-phi-3.yaml"], ["--kind", "workflowtemplate"],
                 [examples / "tuning-phi-3.yaml", "--kind", "cronworkflow", "--schedule", "@weekly"]):
        assert main(["render", *map(str, argv)]) == 0
        out = capsys.readouterr().out
        assert not [name for name, value in values.items() if value in out]


def test_a_file_with_kind_workflowtemplate_is_refused_rather_than_ignored(capsys, examples):
    assert main(["render", str(examples / "tuning-phi-3.yaml"), "--kind", "workflowtemplate"]) == 2
    err = capsys.readouterr().err
    assert "tuning-phi-3.yaml" in err and "generic template" in err and "leave FILE out" in err
