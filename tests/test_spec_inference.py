"""Inference Workspaces: Kaito's rules (api/v1beta1/workspace_validation.go), in both API versions, each refused
case naming its field; the docs' `source.volume` read as `volumeSource`; Kaito's inference ConfigMap read or refused."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from kairo.spec import check_workspace

INFERENCE = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "phi-3-adapters", "annotations": {"kaito.sh/runtime": "transformers"}},
    "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"app": "phi-3"}}},
    "inference": {
        "preset": {"name": "phi-3-mini-4k-instruct"},
        "adapters": [
            {"source": {"name": "pycoder", "image": "myregistry.azurecr.io/adapters/pycoder:1"}, "strength": "0.7"},
            {"source": {"name": "on-volume", "volumeSource": {"persistentVolumeClaim": {"claimName": "adapters"}}}},
        ],
    },
}


def inference(version: str = "kaito.sh/v1beta1", **edits) -> dict:
    data = copy.deepcopy(INFERENCE)
    data["apiVersion"] = version
    data["inference"].update(edits)
    return data


def problems(data: dict, severity: str = "error") -> dict[str, str]:
    return {p.path: p.message for p in check_workspace(data).problems if p.severity == severity}


def adapter(name: str, **more) -> dict:
    return {"source": {"name": name, "image": f"myregistry.azurecr.io/adapters/{name}:1", **more}}


@pytest.mark.parametrize("version", ["kaito.sh/v1alpha1", "kaito.sh/v1beta1"])
def test_an_inference_workspace_with_an_image_and_a_volume_adapter_is_valid(version):
    checked = check_workspace(inference(version))
    assert checked.ok, checked.problems
    assert checked.workspace is not None and checked.workspace.is_inference
    assert checked.workspace.preset.name == "phi-3-mini-4k-instruct"


@pytest.mark.parametrize("version", ["kaito.sh/v1alpha1", "kaito.sh/v1beta1"])
def test_eleven_adapters_are_refused_ten_are_not(version):
    assert "inference.adapters" not in problems(inference(version, adapters=[adapter(f"a{i}") for i in range(10)]))
    message = problems(inference(version, adapters=[adapter(f"a{i}") for i in range(11)]))["inference.adapters"]
    assert "11 adapters" in message and "at most 10" in message


@pytest.mark.parametrize("version", ["kaito.sh/v1alpha1", "kaito.sh/v1beta1"])
def test_a_duplicate_adapter_name_is_refused_naming_the_second(version):
    found = problems(inference(version, adapters=[adapter("same"), adapter("other"), adapter("same")]))
    assert "inference.adapters[0]" not in str(found.keys())
    assert "inference.adapters[0]" in found["inference.adapters[2].source.name"]


@pytest.mark.parametrize("name", ["Upper", "under_score", "-dash"])
def test_an_adapter_name_must_be_a_dns_subdomain(name):
    assert "DNS-1123" in problems(inference(adapters=[adapter(name)]))["inference.adapters[0].source.name"]


def test_an_adapter_name_may_hold_dots_as_a_dns_subdomain_does():
    assert problems(inference(adapters=[adapter("v1.2-coder")])) == {}


@pytest.mark.parametrize("version", ["kaito.sh/v1alpha1", "kaito.sh/v1beta1"])
def test_a_url_source_is_refused(version):
    url_adapter = {"source": {"name": "web", "urls": ["https://example.com/adapter.safetensors"]}}
    found = problems(inference(version, adapters=[url_adapter]))
    assert "URLs are not supported" in found["inference.adapters[0].source.urls"]
    assert "image or volumeSource" in found["inference.adapters[0].source"]


def test_an_adapter_needs_exactly_one_of_image_and_volume():
    both = adapter("both", volumeSource={"persistentVolumeClaim": {"claimName": "x"}})
    assert "both" in problems(inference(adapters=[both]))["inference.adapters[0].source"]
    assert "is required" in problems(inference(adapters=[{"strength": "1"}]))["inference.adapters[0].source"]


@pytest.mark.parametrize("version", ["kaito.sh/v1alpha1", "kaito.sh/v1beta1"])
@pytest.mark.parametrize(("strength", "words"), [("1.5", "between 0 and 1"), ("-0.1", "between 0 and 1"),
                                                 ("strong", "a number"), ("nan", "a number")])
def test_a_strength_outside_zero_to_one_or_not_a_number_is_refused(version, strength, words):
    found = problems(inference(version, adapters=[{**adapter("a"), "strength": strength}]))
    assert words in found["inference.adapters[0].strength"]


@pytest.mark.parametrize("strength", ["0", "0.25", "1", "1.0"])
def test_strengths_from_zero_to_one_are_accepted(strength):
    assert problems(inference(adapters=[{**adapter("a"), "strength": strength}])) == {}


def test_a_bare_yaml_number_as_strength_is_refused_as_the_api_server_refuses_it():
    assert "quotes" in problems(inference(adapters=[{**adapter("a"), "strength": 0.5}]))["inference.adapters[0].strength"]


def test_a_strength_without_the_transformers_runtime_is_pointed_out():
    data = inference()
    data["metadata"]["annotations"] = {}
    assert "vLLM, refuses strength" in problems(data, "warning")["inference.adapters[0].strength"]


def test_the_docs_spelling_source_volume_is_read_as_volume_source_with_a_warning():
    data = inference(adapters=[{"source": {"name": "v", "volume": {"persistentVolumeClaim": {"claimName": "x"}}}}])
    checked = check_workspace(data)
    assert checked.ok, checked.problems
    assert "volumeSource" in problems(data, "warning")["inference.adapters[0].source.volume"]
    assert checked.workspace.inference.adapters[0].source.volumeSource == {"persistentVolumeClaim": {"claimName": "x"}}


@pytest.mark.parametrize("version", ["kaito.sh/v1alpha1", "kaito.sh/v1beta1"])
def test_inference_and_tuning_together_are_refused(version):
    data = inference(version)
    data["tuning"] = {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora",
                      "input": {"urls": ["https://example.com/d.parquet"]},
                      "output": {"image": "myregistry.azurecr.io/a:1", "imagePushSecret": "push"}}
    assert "not both" in problems(data)["inference"]


def test_a_custom_pod_template_is_refused_by_name():
    assert "kairo serves presets" in problems(inference(template={"spec": {"containers": []}}))["inference.template"]


def test_any_preset_may_be_served_even_one_that_cannot_be_tuned():
    assert problems(inference(preset={"name": "no-such-model"}))["inference.preset.name"]


def test_the_base_model_name_and_the_combined_adapter_name_are_not_adapter_names():
    found = problems(inference(adapters=[adapter("phi-3-mini-4k-instruct")]))
    assert "base model" in found["inference.adapters[0].source.name"]


def _with_config(text: str) -> tuple[dict, list[dict]]:
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "serve-params"},
                 "data": {"inference_config.yaml": text}}
    return inference(config="serve-params"), [configmap]


def _config_problems(text: str) -> dict[str, str]:
    data, others = _with_config(text)
    return {p.path: p.message for p in check_workspace(data, others=others).problems}


def test_kaitos_default_inference_config_passes_with_what_kairo_does_not_read_pointed_out():
    found = _config_problems("kv_cache_cpu_memory_utilization: 0.5\nvllm:\n  cpu-offload-gb: 0\n")
    assert set(found) == {"ConfigMap serve-params: inference_config.yaml: kv_cache_cpu_memory_utilization",
                          "ConfigMap serve-params: inference_config.yaml: vllm.cpu-offload-gb"}


def test_max_model_len_is_read_and_a_vllm_only_setting_is_refused_by_name():
    found = _config_problems("vllm:\n  max-model-len: 2048\n  gpu-memory-utilization: 0.95\n")
    assert list(found) == ["ConfigMap serve-params: inference_config.yaml: vllm.gpu-memory-utilization"]
    assert "cannot honour" in next(iter(found.values()))


def test_max_model_len_above_the_models_context_is_refused():
    assert "context length" in _config_problems("vllm:\n  max-model-len: 999999\n")[
        "ConfigMap serve-params: inference_config.yaml: vllm.max-model-len"]


def test_a_named_config_not_in_the_file_is_refused():
    assert "not in this file" in problems(inference(config="elsewhere"))["inference.config"]


@pytest.mark.parametrize(("edit", "field"), [
    ({"adapters": [adapter(f"a{i}") for i in range(11)]}, "inference.adapters"),
    ({"adapters": [adapter("same"), adapter("same")]}, "inference.adapters[1].source.name"),
    ({"adapters": [{"source": {"name": "web", "urls": ["https://example.com/a"]}}]}, "inference.adapters[0].source.urls"),
    ({"adapters": [{**adapter("a"), "strength": "1.5"}]}, "inference.adapters[0].strength"),
    ({"tuning": True}, "inference"),
])
def test_kairo_validate_exits_2_naming_the_field(tmp_path, edit, field):
    data = inference(**{k: v for k, v in edit.items() if k != "tuning"})
    if "tuning" in edit:
        data["tuning"] = {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora"}
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(data))
    done = subprocess.run([sys.executable, "-m", "kairo.cli", "validate", str(path)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert f"{field}:" in done.stderr
