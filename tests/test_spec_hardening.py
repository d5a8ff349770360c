"""What validate used to accept and a cluster, Argo or the download would trip on: each refused (or warned)
by name, before any node is provisioned."""

from __future__ import annotations

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
    assert "credentials" in message and "Secret" in message and "imagePullSecrets" in message
    assert "s3cret" not in message and "alice" not in message


def test_a_signed_url_is_warned_about_loudly():
    warned = problems(with_urls("https://acct.blob.core.windows.net/d/train.jsonl?sv=2022&sig=abc%3D"),
                      severity="warning")
    message = warned["tuning.input.urls[0]"]
    assert "sig" in message and "STORED in the Workflow" in message and "Secret" in message


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
