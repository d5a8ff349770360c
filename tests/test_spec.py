"""The Workspace spec: Kaito files accepted as written, every rule with a good and a bad case."""

from __future__ import annotations

import pytest

from kairo.cluster import ClusterConfig
from kairo.problems import InvalidInput
from kairo.spec import check_workspace, load_workspace, parse_workspace_text, read_workspace_file
from tests.fixtures.workspaces import KAITO_PVC_EXAMPLE, KAITO_QUICKSTART, changed


def ws(**changes) -> dict:
    """The seed workspace with dotted-path changes applied (value None deletes the key)."""
    return changed(KAITO_QUICKSTART, **changes)


def errors(data: dict, cluster: ClusterConfig | None = None) -> dict[str, str]:
    checked = check_workspace(data, cluster)
    return {p.path: p.message for p in checked.errors}


def test_the_seed_quickstart_validates_exactly_as_written(examples):
    workspace, wfile, checked = load_workspace(examples / "tuning-phi-3.yaml")
    assert workspace.name == "workspace-tuning-phi-3"
    assert workspace.preset.name == "phi-3-mini-128k-instruct"
    assert workspace.method == "qlora"
    assert workspace.instance_type is not None and workspace.instance_type.gpu.model == "V100"
    # the placeholders are pointed out, not refused
    assert {w.path for w in checked.warnings} == {"tuning.output.image", "tuning.output.imagePushSecret"}


def test_a_clean_workspace_has_no_problems():
    checked = check_workspace(KAITO_QUICKSTART)
    assert checked.ok and checked.problems == []


@pytest.mark.parametrize("version", ["kaito.sh/v1alpha1", "kaito.sh/v1beta1"])
def test_both_kaito_api_versions_are_accepted(version):
    assert errors(ws(apiVersion=version)) == {}


def test_an_unknown_api_version_is_refused_listing_the_allowed_ones():
    assert "kaito.sh/v1beta1" in errors(ws(apiVersion="kaito.sh/v2"))["apiVersion"]


def test_kind_must_be_workspace():
    assert "kind" in errors(ws(kind="Deployment"))


@pytest.mark.parametrize("name", ["a", "tuning-1", "x" * 63])
def test_dns1123_names_are_accepted(name):
    assert errors(ws(metadata__name=name)) == {}


@pytest.mark.parametrize("name", ["Tuning", "tuning_1", "-a", "x" * 64, "a."])
def test_names_that_are_not_dns1123_labels_are_refused(name):
    message = errors(ws(metadata__name=name))["metadata.name"]
    assert repr(name) in message or name in message
    assert "DNS-1123" in message


def test_a_missing_name_is_reported():
    assert "is required" in errors(ws(metadata__name=None))["metadata.name"]


def test_count_one_is_fine_and_zero_is_not():
    assert errors(ws(resource__count=1)) == {}
    assert "at least 1" in errors(ws(resource__count=0))["resource.count"]


def test_tuning_on_several_nodes_needs_a_read_write_many_class_for_the_shared_work_volume():
    message = errors(ws(resource__count=2))["resource.count"]
    assert "ReadWriteMany" in message and "storage.readWriteManyClassName" in message
    shared = ClusterConfig.model_validate({"storage": {"readWriteManyClassName": "azurefile-csi"}})
    assert errors(ws(resource__count=2), shared) == {}
    assert errors(ws(resource__count=2), ClusterConfig(local=True)) == {}  # one machine: one folder
    assert "at most 64" in errors(ws(resource__count=65), shared)["resource.count"]


def test_label_selector_is_required():
    assert "labelSelector" in "".join(errors(ws(resource__labelSelector=None)))


def test_bad_label_values_are_refused():
    bad = ws(resource__labelSelector={"matchLabels": {"app": "has space"}})
    assert "label value" in errors(bad)["resource.labelSelector.matchLabels[app]"]


def test_preferred_nodes_are_accepted_with_a_warning():
    checked = check_workspace(ws(resource__preferredNodes=["node-1"]))
    assert checked.ok
    assert [w.path for w in checked.warnings] == ["resource.preferredNodes"]


def test_an_unknown_preset_gets_close_names():
    message = errors(ws(tuning__preset={"name": "phi-3-mini-128k"}))["tuning.preset.name"]
    assert "phi-3-mini-128k-instruct" in message


def test_a_gated_preset_needs_a_model_access_secret():
    gated = ws(tuning__preset={"name": "llama-3.1-8b-instruct"}, resource__instanceType="Standard_NC24ads_A100_v4")
    assert "modelAccessSecret" in "".join(errors(gated))
    gated["tuning"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    assert errors(gated) == {}


@pytest.mark.parametrize("method", ["lora", "qlora", "QLoRA"])
def test_known_methods_are_accepted_in_any_case(method):
    assert errors(ws(tuning__method=method, resource__instanceType="Standard_NC24ads_A100_v4")) == {}


def test_an_unknown_method_is_refused():
    assert "lora, qlora" in errors(ws(tuning__method="dora"))["tuning.method"]


def test_exactly_one_input_source():
    both = ws(tuning__input={"urls": ["https://example.com/a.jsonl"], "image": "example.com/data:1"})
    assert "exactly one" in errors(both)["tuning.input"]
    assert "exactly one" in errors(ws(tuning__input={}))["tuning.input"]


@pytest.mark.parametrize("url", ["ftp://example.com/a.csv", "https://", "example.com/a.csv", "file:///etc/passwd"])
def test_only_http_urls_with_a_host(url):
    message = errors(ws(tuning__input={"urls": ["https://example.com/ok.csv", url]}))["tuning.input.urls[1]"]
    assert "http(s)" in message


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://10.0.0.5/d.csv",
                                 "http://localhost:8080/d.csv", "http://metadata.google.internal/x",
                                 "http://[fd00::1]/d.csv", "http://127.0.0.1/d.csv"])
def test_urls_inside_the_cluster_or_cloud_are_refused(url):
    message = errors(ws(tuning__input={"urls": [url]}))["tuning.input.urls[0]"]
    assert "network.allow" in message


def test_the_allowlist_and_local_runs_open_what_they_name():
    cluster = ClusterConfig.model_validate({"network": {"allow": ["10.0.0.0/8"]}})
    assert errors(ws(tuning__input={"urls": ["http://10.0.0.5/d.csv"]}), cluster) == {}
    local = ClusterConfig(local=True)
    assert errors(ws(tuning__input={"urls": ["http://127.0.0.1:8000/d.csv"]}), local) == {}
    assert "tuning.input.urls[0]" in errors(ws(tuning__input={"urls": ["http://10.0.0.5/d"]}), local)


def test_volume_is_refused_naming_volume_source():
    message = errors(ws(tuning__input={"volume": {"emptyDir": {}}}))["tuning.input.volume"]
    assert "volumeSource" in message


def test_volume_source_is_validated_as_a_kubernetes_volume_source():
    good = ws(tuning__input={"volumeSource": {"persistentVolumeClaim": {"claimName": "data"}}})
    assert errors(good) == {}
    bad = ws(tuning__input={"volumeSource": {"persistentVolumeClaim": {"claimNam": "data"}}})
    assert "VolumeSource" in errors(bad)["tuning.input.volumeSource.persistentVolumeClaim"]
    assert "tuning.input.volumeSource" in errors(ws(tuning__input={"volumeSource": {"nfsx": {}}}))


def test_exactly_one_output_target():
    both = ws(tuning__output={"image": "r.io/a:1", "imagePushSecret": "s", "volumeSource": {"emptyDir": {}}})
    assert "exactly one" in errors(both)["tuning.output"]


def test_output_image_needs_a_push_secret_unless_the_registry_is_anonymous():
    no_secret = ws(tuning__output={"image": "registry.local:5000/adapters/phi:1"})
    assert "is required" in errors(no_secret)["tuning.output.imagePushSecret"]
    cluster = ClusterConfig.model_validate({"registry": {"anonymous": ["registry.local:5000"]}})
    assert errors(no_secret, cluster) == {}


def test_a_malformed_output_image_is_refused():
    bad = ws(tuning__output={"image": "registry.io/Bad Image", "imagePushSecret": "s"})
    assert "not an OCI reference" in errors(bad)["tuning.output.image"]


def test_the_instance_type_must_hold_the_preset():
    big = ws(tuning__preset={"name": "phi-3-medium-4k-instruct"}, tuning__method="lora")
    message = errors(big)["resource.instanceType"]
    assert "44 GiB" in message and "16 GiB" in message  # both numbers
    assert "Standard_NC24ads_A100_v4" in message  # a type that fits


def test_multi_gpu_instance_types_add_their_memory():
    fits = ws(tuning__preset={"name": "phi-3-medium-4k-instruct"}, tuning__method="lora",
              resource__instanceType="Standard_NC96ads_A100_v4")
    assert errors(fits) == {}


def test_an_unknown_instance_type_gets_close_names():
    assert "Standard_NC6s_v3" in errors(ws(resource__instanceType="Standard_NC6s_v4"))["resource.instanceType"]


def test_unknown_fields_are_refused_by_name_with_the_allowed_ones():
    message = errors(ws(tuning__outptu={"image": "x"}))["tuning.outptu"]
    assert "unknown field" in message and "output" in message


def test_unknown_kairo_annotations_are_refused_and_known_ones_checked():
    assert errors(ws(metadata__annotations={"kairo.sh/ephemeral-node": "true"})) == {}
    assert "kairo.sh/ephemeral-node" in errors(ws(metadata__annotations={"kairo.sh/ephemeral": "true"})).popitem()[1]
    assert "'true' or 'false'" in errors(ws(metadata__annotations={"kairo.sh/ephemeral-node": "yes"})).popitem()[1]


def test_inference_beside_tuning_is_refused():
    assert "tuning" in errors(ws(inference={"preset": {"name": "phi-3-mini-4k-instruct"}}))["inference"]


def test_a_file_with_several_mistakes_gets_all_of_them_at_once():
    bad = ws(
        metadata__name="Bad_Name",
        resource__count=0,
        resource__colour="blue",
        tuning__preset={"name": "phi-3-mini"},
        tuning__method="dora",
        tuning__input={"urls": ["ftp://example.com/a.csv", 5]},
        tuning__output={"image": "r.io/a:1"},
    )
    found = errors(bad)
    assert set(found) >= {
        "metadata.name", "resource.count", "resource.colour", "tuning.preset.name", "tuning.method",
        "tuning.input.urls[0]", "tuning.input.urls[1]", "tuning.output.imagePushSecret",
    }


def test_method_and_quantization_must_agree_in_a_custom_config(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("training_config:\n  QuantizationConfig:\n    load_in_4bit: true\n")
    checked = check_workspace(ws(tuning__method="lora", resource__instanceType="Standard_NC24ads_A100_v4"),
                              config_file=config)
    assert any("lora" in p.message and "load_in_4bit" in p.path for p in checked.errors)
    config.write_text("training_config:\n  LoraConfig:\n    r: 16\n")
    checked = check_workspace(ws(tuning__method="qlora"), config_file=config)
    assert any("quantizes nothing" in p.message for p in checked.errors)


def test_an_unknown_config_section_is_refused(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("training_config:\n  Optimizer:\n    lr: 1\n")
    checked = check_workspace(KAITO_QUICKSTART, config_file=config)
    assert any("Optimizer" in p.path and "unrecognised section" in p.message for p in checked.errors)


def test_kaitos_pvc_example_with_several_documents_validates():
    wfile = parse_workspace_text(KAITO_PVC_EXAMPLE, "pvc.yaml")
    assert [d["metadata"]["name"] for d in wfile.others] == ["pvc-azurefile-input", "pvc-azurefile-output"]
    assert check_workspace(wfile.workspace, others=wfile.others).ok


def test_a_file_with_two_workspaces_or_none_is_refused_with_the_count():
    two = KAITO_PVC_EXAMPLE + "---\n" + KAITO_PVC_EXAMPLE.split("---\n")[-1]
    with pytest.raises(InvalidInput, match="found 2"):
        parse_workspace_text(two)
    with pytest.raises(InvalidInput, match="found 0"):
        parse_workspace_text(KAITO_PVC_EXAMPLE.split("---\n")[0])


def test_other_documents_must_be_valid_kubernetes_objects():
    broken = KAITO_PVC_EXAMPLE.replace("accessModes: [ReadWriteMany]", "accessMode: [ReadWriteMany]", 1)
    with pytest.raises(InvalidInput, match="pvc-azurefile-input"):
        parse_workspace_text(broken)


def test_every_example_validates(examples):
    files = sorted(examples.glob("*.yaml"))
    assert len(files) >= 1
    for path in files:
        wfile = read_workspace_file(path)
        checked = check_workspace(wfile.workspace, ClusterConfig(local=True), others=wfile.others)
        assert checked.ok, (path, checked.errors)


def test_values_argo_would_substitute_are_refused():
    message = errors(ws(tuning__input={"urls": ["https://example.com/{{workflow.name}}.csv"]}))["tuning.input.urls[0]"]
    assert "%7B%7B" in message
