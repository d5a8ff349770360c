"""The `workspace` step: a Workspace object read from KMock's emulator, validated, and the train pod sized from it."""

from __future__ import annotations

import pytest
import yaml

from kairo import exitcodes
from kairo.clients import kube as k
from kairo.manifests import conditions as c
from kairo.steps import workspace as step
from tests.fixtures.outputs import step_outputs
from tests.fixtures.workspaces import KAITO_QUICKSTART, changed

NS = "ml"
NAME = "workspace-tuning-phi-3"
SEED = changed(KAITO_QUICKSTART, apiVersion="kaito.sh/v1beta1",
               metadata={"name": NAME, "namespace": NS, "generation": 2})


def apply(kube, **changes) -> dict:
    """Create the seed Workspace in the emulator with `a__b=value` changes."""
    return k.create(kube.api, changed(SEED, **changes))


@pytest.fixture
def run(kubeconfig, tmp_path):
    """Run the step; (exit code, its outputs as a dict)."""
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({}))
    outputs = tmp_path / "outputs"

    def go(*flags: str) -> tuple[int, dict[str, str]]:
        code = step.main(["--workspace", NAME, "--namespace", NS, "--kubeconfig", str(kubeconfig),
                          "--cluster-config", str(config), "--outputs", str(outputs), "--workflow", "kairo-tuning-abc",
                          *flags])
        return code, step_outputs(outputs)

    return go


def status_of(kube) -> dict:
    return k.get(kube.api, "kaito.sh/v1beta1", "Workspace", NAME, NS).get("status") or {}


def succeeded(status: dict) -> dict:
    return next(x for x in status.get("conditions", []) if x["type"] == c.WORKSPACE_SUCCEEDED)


# -- a Workspace resource ---------------------------------------------------------------------------------


def test_a_valid_one_gpu_workspace_sizes_the_train_pod_from_its_instance_type_and_preset(kube, run):
    apply(kube)
    code, outputs = run("--source", "resource")
    assert code == exitcodes.OK
    assert outputs == {"gpus": "1", "cpu": "3", "memory": "20Gi"}  # Standard_NC6s_v3, phi-3-mini's requests
    assert status_of(kube) == {}  # a valid spec leaves the status to the workspace-status tasks


def test_a_multi_gpu_instance_type_gives_the_train_pod_every_gpu(kube, run):
    apply(kube, resource__instanceType="Standard_ND96asr_v4")  # 8× A100 40 GB
    code, outputs = run("--source", "resource")
    assert code == exitcodes.OK and outputs["gpus"] == "8"
    apply_parameters = run("--source", "resource", "--gpus", "2")  # an explicit value wins over auto
    assert apply_parameters == (exitcodes.OK, {"gpus": "2", "cpu": "3", "memory": "20Gi"})


def test_the_resource_wins_over_parameters_that_disagree(kube, run):
    apply(kube, resource__instanceType="Standard_NC48ads_A100_v4")  # 2× A100 80 GB
    code, outputs = run("--source", "resource", "--preset", "phi-4", "--instance-type", "Standard_NC6s_v3")
    assert code == exitcodes.OK and outputs["gpus"] == "2"


def test_an_invalid_workspace_gets_its_problems_in_its_status_and_stops_the_run(kube, run, capsys):
    apply(kube, tuning__method="sft", resource__instanceType="Standard_NC99_v9")
    code, outputs = run("--source", "resource")
    assert code == exitcodes.BAD_INPUT and outputs == {}
    status = status_of(kube)
    condition = succeeded(status)
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSpec")
    assert condition["observedGeneration"] == 2
    assert condition["message"].startswith("2 problems in the Workspace spec: ")
    assert "tuning.method: 'sft' — allowed: lora, qlora" in condition["message"]
    assert "resource.instanceType: unknown instance type 'Standard_NC99_v9'" in condition["message"]
    assert (status["state"], status["failedStep"], status["workflow"]) == ("Failed", "workspace", "kairo-tuning-abc")
    assert "tuning.method" in capsys.readouterr().err  # the log says it too


def test_a_workspace_on_several_nodes_is_refused_by_the_one_node_template_pointing_at_kairo_submit(kube, run):
    apply(kube, resource__count=2)
    code, _ = run("--source", "resource")
    assert code == exitcodes.BAD_INPUT
    assert "resource.count: 2 — a run on several nodes is rendered for its workspace (`kairo submit FILE`" in \
        succeeded(status_of(kube))["message"]


def test_urls_from_a_secret_are_refused_by_the_generic_template_pointing_at_kairo_submit(kube, run):
    apply(kube, tuning__input={"urlsSecret": "signed-urls"})
    code, _ = run("--source", "resource")
    assert code == exitcodes.BAD_INPUT
    assert "tuning.input.urlsSecret: read by the workflow `kairo submit FILE` renders" in \
        succeeded(status_of(kube))["message"]


def test_a_missing_tuning_configmap_is_a_problem_of_the_workspace(kube, run):
    apply(kube, tuning__config="my-tuning")
    code, _ = run("--source", "resource")
    assert code == exitcodes.BAD_INPUT
    assert "tuning.config: ConfigMap 'my-tuning' does not exist in namespace ml" in succeeded(status_of(kube))["message"]


def test_the_tuning_configmap_it_names_is_read_and_validated(kube, run):
    apply(kube, tuning__config="my-tuning")
    k.create(kube.api, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "my-tuning", "namespace": NS},
                        "data": {"training_config.yaml": "training_config:\n  LoraConfig:\n    r: 0\n"}})
    code, _ = run("--source", "resource")
    assert code == exitcodes.BAD_INPUT
    assert "LoraConfig.r" in succeeded(status_of(kube))["message"]
    k.merge_patch(kube.api, "v1", "ConfigMap", "my-tuning", {"data": {
        "training_config.yaml": "training_config:\n  QuantizationConfig:\n    load_in_4bit: true\n"
                                "  LoraConfig:\n    r: 16\n"}}, NS)
    assert run("--source", "resource")[0] == exitcodes.OK


def test_a_workspace_deleted_before_the_run_started_stops_it(kube, run, capsys):
    code, _ = run("--source", "resource")
    assert code == exitcodes.BAD_INPUT
    assert f"no Workspace object {NS}/{NAME}" in capsys.readouterr().err


def test_an_api_that_does_not_answer_is_transient(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {}}], "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}]}))
    code = step.main(["--workspace", NAME, "--namespace", NS, "--source", "resource", "--kubeconfig", str(kubeconfig),
                      "--outputs", str(tmp_path / "out")])
    assert code == exitcodes.TRANSIENT


def test_a_failed_run_after_an_invalid_spec_keeps_the_problems_in_the_status(kube, kubeconfig, run):
    from kairo.steps import workspace_status

    apply(kube, tuning__method="sft")
    run("--source", "resource")
    failures = '[{"displayName": "workspace", "message": "Error (exit code 2)", "templateName": "workspace", ' \
               '"phase": "Failed", "podName": "kairo-tuning-abc-workspace-1"}]'
    assert workspace_status.main(["--workspace", NAME, "--namespace", NS, "--event", "finished",
                                  "--workflow-status", "Failed", "--failures", failures, "--workflow", "kairo-tuning-abc",
                                  "--kubeconfig", str(kubeconfig)]) == exitcodes.OK
    condition = succeeded(status_of(kube))
    assert condition["reason"] == "InvalidSpec" and "tuning.method: 'sft'" in condition["message"]
    assert status_of(kube)["state"] == "Failed"


# -- parameters (argo submit -p …) ----------------------------------------------------------------------------


def test_parameters_auto_size_from_the_instance_type_and_preset_without_reading_anything(tmp_path):
    outputs = tmp_path / "out"
    code = step.main(["--workspace", "ws", "--source", "parameters", "--preset", "phi-3-mini-4k-instruct",
                      "--method", "lora", "--instance-type", "Standard_NC48ads_A100_v4", "--outputs", str(outputs),
                      "--kubeconfig", str(tmp_path / "no-such-kubeconfig")])
    assert code == exitcodes.OK
    assert step_outputs(outputs) == {"gpus": "2", "cpu": "3", "memory": "20Gi"}


def test_parameters_given_are_kept_and_checked(tmp_path, capsys):
    outputs = tmp_path / "out"
    base = ["--workspace", "ws", "--preset", "phi-3-mini-4k-instruct", "--outputs", str(outputs)]
    assert step.main([*base, "--gpus", "4", "--cpu", "500m", "--memory", "64Gi"]) == exitcodes.OK
    assert step_outputs(outputs) == {"gpus": "4", "cpu": "500m", "memory": "64Gi"}
    assert step.main([*base, "--gpus", "two", "--memory", "lots"]) == exitcodes.BAD_INPUT
    err = capsys.readouterr().err
    assert "gpus: 'two'" in err and "memory: 'lots' is not a memory quantity" in err


def test_an_unknown_preset_stops_the_run_before_any_node_is_asked_for(tmp_path, capsys):
    code = step.main(["--workspace", "ws", "--preset", "phi-3-mini", "--outputs", str(tmp_path / "out")])
    assert code == exitcodes.BAD_INPUT
    assert "phi-3-mini" in capsys.readouterr().err


def test_an_instance_type_kairo_does_not_know_sizes_one_gpu_and_says_so(tmp_path, capsys):
    outputs = tmp_path / "out"
    code = step.main(["--workspace", "ws", "--preset", "tiny-llama-test", "--instance-type", "Standard_NC999",
                      "--outputs", str(outputs)])
    assert code == exitcodes.OK and (outputs / "gpus").read_text() == "1"
    assert "not in kairo's catalogue" in capsys.readouterr().err


# -- as the Sensor's workflow runs it ----------------------------------------------------------------------------


def test_the_sensors_workflow_sizes_the_train_pod_of_a_multi_gpu_workspace_from_the_object(kube, kubeconfig, tmp_path):
    """kairo-tuning with source=resource: the `workspace` task's outputs reach train's podSpecPatch."""
    import json
    import re

    from kairo.cluster import ClusterConfig
    from kairo.pipelines import build_workflow_template

    apply(kube, resource__instanceType="Standard_ND96asr_v4")  # 8 GPUs; the Sensor does not pass gpus/cpu/memory
    template = build_workflow_template(ClusterConfig())
    spec = template["spec"]
    parameters = {p["name"]: str(p.get("value", "")) for p in spec["arguments"]["parameters"]}
    parameters |= {"workspace": NAME, "source": "resource", "preset": "phi-3-mini-128k-instruct",
                   "labels": "app=tuning-phi-3", "output-image": "myregistry.azurecr.io/adapters/phi-3:0.0.1"}
    scope = {f"workflow.parameters.{k}": v for k, v in parameters.items()}
    scope |= {"workflow.namespace": NS, "workflow.name": "kairo-tuning-x7k2p"}

    def substitute(text: str, names: dict[str, str]) -> str:
        return re.sub(r"\{\{([^=}][^}]*)\}\}", lambda m: names[m.group(1).strip()], text)

    templates = {t["name"]: t for t in spec["templates"]}
    args = [substitute(a, scope) for a in templates["workspace"]["container"]["args"]]
    outputs = tmp_path / "workspace-outputs"
    assert step.main([*args, "--outputs", str(outputs), "--kubeconfig", str(kubeconfig)]) == exitcodes.OK
    scope |= {f"tasks.workspace.outputs.parameters.{p.name}": p.read_text() for p in outputs.iterdir()}

    train_task = next(t for t in templates["tuning"]["dag"]["tasks"] if t["name"] == "train")
    inputs = {f"inputs.parameters.{p['name']}": substitute(p["value"], scope)
              for p in train_task["arguments"]["parameters"]}
    patch = re.sub(r"\{\{=.*?\}\}(?=,)", '{"app":"tuning-phi-3"}', templates["train"]["podSpecPatch"])
    resources = json.loads(substitute(patch, inputs))["containers"][0]["resources"]
    assert resources == {"requests": {"nvidia.com/gpu": "8", "cpu": "3", "memory": "20Gi"},
                         "limits": {"nvidia.com/gpu": "8"}}
