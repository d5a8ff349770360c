"""What validate used to accept and a cluster, Argo or the download would trip on: each refused (or warned)
by name, before any node is provisioned."""

from __future__ import annotations

from pathlib import Path

import pytest

from kairo.cluster import ClusterConfig
from kairo.problems import InvalidInput
from kairo.spec import check_workspace
from kairo.spec.rules import URLS_MAX_CHARS
from tests.fixtures.workspaces import KAITO_QUICKSTART, changed


def ws(**changes) -> dict:
    return changed(KAITO_QUICKSTART, **changes)


def problems(data: dict, cluster: ClusterConfig | None = None, severity: str = "error") -> dict[str, str]:
    """Each path's messages of this severity, joined."""
    found: dict[str, str] = {}
    for p in check_workspace(data, cluster).problems:
        if p.severity == severity:
            found[p.path] = f"{found[p.path]} | {p.message}" if p.path in found else p.message
    return found


def with_urls(*urls: str) -> dict:
    return ws(tuning__input={"urls": list(urls)})


# -- $(VAR): Kubernetes expands it in container args ----------------------------------------------------


@pytest.mark.parametrize(("changes", "path"), [
    ({"tuning__output__image": "myacr.azurecr.io/x:$(HF_HOME)"}, "tuning.output.image"),
    ({"tuning__output__imagePushSecret": "$(PUSH_SECRET)"}, "tuning.output.imagePushSecret"),
    ({"resource__preferredNodes": ["$(NODE_NAME)"]}, "resource.preferredNodes[0]"),
    ({"tuning__input__urls": ["https://example.com/$(HOME)/train.jsonl"]}, "tuning.input.urls[0]"),
])
def test_a_kubernetes_variable_reference_is_refused_not_taken_for_a_placeholder(changes, path):
    found = problems(ws(**changes))
    assert path in found and "Kubernetes replaces" in found[path], found
    assert path not in problems(ws(**changes), severity="warning")


def test_preferred_nodes_must_be_node_names():
    found = problems(ws(resource__preferredNodes=["aks-gpu-1", "Node_2"]))
    assert "resource.preferredNodes[1]" in found and "node name" in found["resource.preferredNodes[1]"]
    assert "resource.preferredNodes[0]" not in found


# -- references: digests and ports --------------------------------------------------------------------------


@pytest.mark.parametrize(("digest", "said"), [
    ("sha256:" + "a" * 40, "64 hex digits, this one 40"),
    ("sha256:" + "a" * 65, "64 hex digits, this one 65"),
    ("md5:" + "a" * 32, "'md5' is not a digest algorithm"),
])
def test_a_digest_of_the_wrong_length_or_algorithm_is_refused(digest, said):
    found = problems(ws(tuning__input={"image": f"myacr.azurecr.io/data@{digest}"}))
    assert said in found["tuning.input.image"]


def test_sha256_and_sha512_digests_are_accepted():
    for digest in ("sha256:" + "a" * 64, "sha512:" + "b" * 128):
        assert "tuning.input.image" not in problems(ws(tuning__input={"image": f"myacr.azurecr.io/data@{digest}"}))


@pytest.mark.parametrize("port", ["99999", "0"])
def test_a_registry_port_outside_1_to_65535_is_refused(port):
    found = problems(ws(tuning__output__image=f"myacr.azurecr.io:{port}/adapters/x:1"))
    assert "1 to 65535" in found["tuning.output.image"]


@pytest.mark.parametrize("url", ["https://example.com:99999/a.jsonl", "https://example.com:-1/a.jsonl",
                                 "https://example.com:0/a.jsonl"])
def test_a_url_port_outside_1_to_65535_is_refused(url):
    assert "1 to 65535" in problems(with_urls(url))["tuning.input.urls[0]"]


# -- URLs as download reads them ----------------------------------------------------------------------------


def test_a_url_with_whitespace_is_refused_since_download_would_read_two():
    found = problems(with_urls("https://example.com/a.jsonl https://example.com/b.jsonl"))
    assert "whitespace" in found["tuning.input.urls[0]"]


@pytest.mark.parametrize("url", ["http://2130706433/train.jsonl", "http://0x7f.1/train.jsonl",
                                 "http://0177.0.0.1/train.jsonl", "http://10.1/train.jsonl"])
def test_alternate_ip_spellings_are_refused_at_validate_as_download_refuses_them(url):
    message = problems(with_urls(url))["tuning.input.urls[0]"]
    assert "loopback" in message or "private" in message
    assert "resolves to 127.0.0.1" in message or "resolves to 10.0.0.1" in message


def test_a_numeric_host_that_is_public_is_accepted():
    assert problems(with_urls("http://16843009/train.jsonl")) == {}  # 1.1.1.1


def test_validate_and_render_refuse_the_same_url_list():
    from kairo.pipelines import render_objects
    from kairo.spec import Workspace, WorkspaceFile

    urls = [f"https://example.com/{i:05d}/" + "x" * 5000 for i in range(URLS_MAX_CHARS // 5000 + 2)]
    data = with_urls(*urls)
    found = problems(data)
    assert "more than a ConfigMap holds" in found["tuning.input.urls"]
    fitting = urls[: URLS_MAX_CHARS // 5100]
    assert problems(with_urls(*fitting)) == {}
    workspace = Workspace.model_validate(with_urls(*fitting))
    objects = render_objects(WorkspaceFile("<test>", with_urls(*fitting)), workspace, ClusterConfig())
    assert any(o.get("kind") == "ConfigMap" for o in objects)
    with pytest.raises(InvalidInput):
        render_objects(WorkspaceFile("<test>", data), Workspace.model_validate(data), ClusterConfig())


# -- credentials in URLs ------------------------------------------------------------------------------------


def test_credentials_in_a_url_are_refused_with_the_fix_and_never_echoed():
    found = problems(with_urls("https://alice:s3cret@example.com/train.jsonl"))
    message = found["tuning.input.urls[0]"]
    assert "credentials" in message and "tuning.input.urlsSecret" in message
    assert "s3cret" not in message and "alice" not in message


def test_a_signed_url_is_warned_about_loudly():
    warned = problems(with_urls("https://acct.blob.core.windows.net/d/train.jsonl?sv=2022&sig=abc%3D"),
                      severity="warning")
    message = warned["tuning.input.urls[0]"]
    assert "sig" in message and "STORED in the Workflow" in message and "tuning.input.urlsSecret" in message


# -- metadata and selectors ---------------------------------------------------------------------------------


def test_an_empty_label_selector_is_refused_saying_it_matches_every_node():
    message = problems(ws(resource__labelSelector={}))["resource.labelSelector"]
    assert "matches every node" in message


def test_annotations_over_256_kib_in_all_are_refused():
    big = ws(metadata__annotations={"example.com/a": "x" * (200 * 1024), "example.com/b": "y" * (100 * 1024)})
    assert "256 KiB" in problems(big)["metadata.annotations"]
    assert "metadata.annotations" not in problems(ws(metadata__annotations={"example.com/a": "x" * 1024}))


# -- one rule for placeholders ------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "path"), [
    ({"resource__instanceType": "<your-vm-sku>"}, "resource.instanceType"),
    ({"tuning__output__image": "<YOUR_ACR>.azurecr.io/adapters/x:1"}, "tuning.output.image"),
    ({"tuning__output__imagePushSecret": "<your-push-secret>"}, "tuning.output.imagePushSecret"),
    ({"resource__instanceType": "YOUR_VM_SKU_HERE"}, "resource.instanceType"),
])
def test_every_placeholder_is_a_warning_naming_its_field(changes, path):
    data = ws(**changes)
    assert path not in problems(data)
    assert "looks like a placeholder" in problems(data, severity="warning")[path]


# -- LoraConfig.target_modules against the preset -------------------------------------------------------------

KAITO_PHI3_CONFIGMAP = Path(__file__).parent / "kaito_files" / "configmap-phi-3-qlora-tuned.yaml"


def test_kaitos_phi3_target_modules_with_the_falcon_preset_are_refused_naming_the_presets_layers():
    data = ws(tuning__preset={"name": "falcon-7b"})
    found = {p.path: p.message for p in check_workspace(data, config_file=KAITO_PHI3_CONFIGMAP).errors}
    message = found["training_config.LoraConfig.target_modules"]
    assert "'qkv_proj', 'o_proj' are not a linear layer of preset 'falcon-7b'" in message
    assert "query_key_value, dense, dense_h_to_4h, dense_4h_to_h" in message


def test_the_same_configmap_with_a_phi3_preset_is_fine():
    checked = check_workspace(ws(tuning__preset={"name": "phi-3-mini-4k-instruct"}), config_file=KAITO_PHI3_CONFIGMAP)
    assert "training_config.LoraConfig.target_modules" not in {p.path for p in checked.problems}


def test_the_linear_layers_kairo_knows_are_those_of_transformers_models():
    import transformers
    from accelerate import init_empty_weights
    from torch import nn

    from kairo.presets import LINEAR_MODULES, all_presets

    assert {p.architecture for p in all_presets().values()} <= set(LINEAR_MODULES)
    for architecture, names in LINEAR_MODULES.items():
        cls = getattr(transformers, architecture)
        config = cls.config_class(num_hidden_layers=1, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                  num_key_value_heads=4, vocab_size=128, pad_token_id=0, bos_token_id=1,
                                  eos_token_id=2)
        with init_empty_weights():
            model = cls(config)
        linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        assert linear == set(names), architecture


KAITO_HELM_CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: qlora-params-template
  namespace: {{ .Release.Namespace }}
data:
  training_config.yaml: |
    training_config:
      LoraConfig:
        r: 8
"""


def test_a_helm_templated_configmap_is_named_as_such_with_how_to_render_it(tmp_path):
    config = tmp_path / "qlora-params.yaml"
    config.write_text(KAITO_HELM_CONFIGMAP)
    messages = [p.message for p in check_workspace(ws(), config_file=config).errors]
    assert len(messages) == 1, messages
    assert "Helm template" in messages[0] and "line 5" in messages[0] and "helm template" in messages[0]
    assert "unhashable" not in messages[0]


def test_the_readme_names_the_namespace_a_workspace_without_one_renders_into():
    from kairo.pipelines import build_workflow
    from kairo.spec import Workspace

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `metadata.namespace` |"))
    rendered = build_workflow(Workspace.model_validate(ws()), ClusterConfig())["metadata"]["namespace"]
    assert row.split("|")[2].strip().startswith(f"`{rendered}`")


# -- duplicate keys --------------------------------------------------------------------------------------------

DUPLICATE_METHOD = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: twice
resource:
  instanceType: Standard_NC6s_v3
  labelSelector:
    matchLabels: {app: tuning}
tuning:
  preset:
    name: phi-3-mini-4k-instruct
  method: lora
  input:
    urls: ["https://example.com/train.jsonl"]
  method: qlora
  output:
    image: myacr.azurecr.io/adapters/x:1
    imagePushSecret: acr-push
"""


def test_a_key_given_twice_in_a_workspace_is_refused_naming_the_key_and_both_lines():
    from kairo.spec import parse_workspace_text

    with pytest.raises(InvalidInput) as caught:
        parse_workspace_text(DUPLICATE_METHOD)
    message = " ".join(p.message for p in caught.value.problems)
    assert "'method' is given twice" in message and "lines 12 and 15" in message


def test_a_helm_templated_workspace_file_is_named_as_such():
    from kairo.spec import parse_workspace_text

    with pytest.raises(InvalidInput) as caught:
        parse_workspace_text(DUPLICATE_METHOD.replace("  method: qlora\n", "").replace(
            "name: twice", "name: twice\n  namespace: {{ .Release.Namespace }}"))
    assert "Helm template" in caught.value.problems[0].message



# -- tuning.input.urlsSecret ----------------------------------------------------------------------------------


def test_urls_from_a_secret_are_mounted_and_never_written_in_the_workflow():
    from kairo.pipelines import build_workflow
    from kairo.spec import Workspace

    data = ws(tuning__input={"urlsSecret": "signed-dataset-urls"})
    assert problems(data) == {}
    wf = build_workflow(Workspace.model_validate(data), ClusterConfig())
    volumes = {v["name"]: v for v in wf["spec"]["volumes"]}
    assert volumes["dataset-urls"]["secret"]["secretName"] == "signed-dataset-urls"
    download = next(t for t in wf["spec"]["templates"] if t["name"] == "download")
    args = download["container"]["args"]
    assert args[args.index("--urls-file") + 1] == "/etc/kairo/dataset/urls.txt"
    assert "--url" not in args


def test_urls_and_a_urls_secret_together_are_refused():
    found = problems(ws(tuning__input={"urls": ["https://example.com/a.jsonl"], "urlsSecret": "s"}))
    assert "exactly one of urls, urlsSecret, image, volumeSource" in found["tuning.input"]
    assert "DNS-1123" in problems(ws(tuning__input={"urlsSecret": "Not_A_Name"}))["tuning.input.urlsSecret"]
