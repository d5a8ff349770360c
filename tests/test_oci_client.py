"""The OCI client's small rules: plain HTTP only when the cluster config says so, credentials from the secret."""

from __future__ import annotations

import base64
import json

import pytest

from kairo.clients import oci
from kairo.cluster import ClusterConfig
from kairo.oci.access import RegistryAccess, is_plain_http, registry_access


def test_plain_http_only_for_hosts_the_cluster_config_lists():
    cluster = ClusterConfig.model_validate({"registry": {"plainHttp": ["registry.internal:5000"]}})
    assert is_plain_http("registry.internal:5000", cluster)
    assert not is_plain_http("myregistry.azurecr.io", cluster)
    assert not is_plain_http("127.0.0.1:5000", cluster)  # loopback is not special in a cluster


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "localhost:5000", "[::1]:5000", "localhost"])
def test_in_local_mode_a_loopback_registry_is_plain_http(host):
    assert is_plain_http(host, ClusterConfig(local=True))
    assert is_plain_http(host, None, local=True)
    assert not is_plain_http("ghcr.io", None, local=True)


def test_one_function_decides_how_every_registry_is_reached():
    cluster = ClusterConfig.model_validate({"registry": {"plainHttp": ["registry.internal:5000"], "retries": 5}})
    assert registry_access("registry.internal:5000/team/a:1", cluster, auth_file="/etc/s/.dockerconfigjson") == \
        RegistryAccess("/etc/s/.dockerconfigjson", plain_http=True, retries=5)
    assert registry_access("ghcr.io/team/a:1", cluster) == RegistryAccess(None, plain_http=False, retries=5)
    # the loopback rule holds for every caller in a local run, and only there
    assert registry_access("127.0.0.1:5000/a:1", cluster, local=True).plain_http
    assert not registry_access("127.0.0.1:5000/a:1", cluster).plain_http
    # a step's --plain-http and --retries win; an OCI layout on disk has no host to judge
    assert registry_access("ghcr.io/a:1", cluster, plain_http=True, retries=0) == \
        RegistryAccess(None, plain_http=True, retries=0)
    assert registry_access("/runs/oci@sha256:" + "0" * 64, cluster) == RegistryAccess(None, False, 5)


def test_every_caller_reaches_a_registry_through_registry_access():
    # the plain-HTTP rule has one home: no module outside kairo.oci.access reads registry.plainHttp itself
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readers = [str(p.relative_to(root)) for folder in ("kairo", "steps", "pipelines") for p in
               sorted((root / folder).rglob("*.py")) if "is_plain_http(" in p.read_text() and p.name != "access.py"]
    assert readers == ["kairo/cluster.py"]  # where the config's own lookup is defined


def dockerconfig(tmp_path, auths: dict) -> str:
    path = tmp_path / ".dockerconfigjson"
    path.write_text(json.dumps({"auths": auths}))
    return str(path)


def test_credentials_come_from_the_dockerconfigjson_entry_of_the_registry(tmp_path):
    auth = base64.b64encode(b"robot:pa:ss").decode()
    path = dockerconfig(tmp_path, {"https://myacr.azurecr.io": {"auth": auth},
                                   "ghcr.io": {"username": "u", "password": "p"}})
    assert oci.read_credentials(path, "myacr.azurecr.io") == ("robot", "pa:ss")
    assert oci.read_credentials(path, "ghcr.io") == ("u", "p")
    assert oci.read_credentials(path, "quay.io") is None
    assert oci.read_credentials(tmp_path, "ghcr.io") == ("u", "p")  # the mounted folder works too


def test_docker_hub_and_loopback_names_are_aliases(tmp_path):
    auth = base64.b64encode(b"me:pw").decode()
    path = dockerconfig(tmp_path, {"https://index.docker.io/v1/": {"auth": auth}, "localhost:5000": {"auth": auth}})
    assert oci.read_credentials(path, "docker.io") == ("me", "pw")
    assert oci.read_credentials(path, "127.0.0.1:5000") == ("me", "pw")


def test_a_broken_secret_is_named_but_never_shown(tmp_path):
    path = tmp_path / ".dockerconfigjson"
    path.write_text('{"auths": {"ghcr.io": {"auth": "not-base64-!!-s3cret"}}}')
    with pytest.raises(oci.CredentialsMissing) as caught:
        oci.read_credentials(path, "ghcr.io")
    assert str(path) in str(caught.value) and "s3cret" not in str(caught.value)
    with pytest.raises(oci.CredentialsMissing, match="no such file — is the registry secret mounted"):
        oci.read_credentials(tmp_path / "missing", "ghcr.io")


def test_a_bad_reference_is_bad_input(adapter_folder):
    with pytest.raises(oci.BadReference, match="must be lowercase") as caught:
        oci.push_adapter(adapter_folder, "ghcr.io/Kairo/Adapter")
    assert caught.value.exit_code == 2
    with pytest.raises(oci.BadReference, match="not a digest"):
        oci.push_adapter(adapter_folder, f"ghcr.io/kairo/adapter@sha256:{'0' * 64}")
    with pytest.raises(oci.BadReference, match="by digest"):
        oci.tag("ghcr.io/kairo/adapter:v1", "stable")


def test_a_ref_with_a_digest_resolves_without_asking():
    digest = f"sha256:{'1' * 64}"
    assert oci.resolve(f"nowhere.invalid/kairo/adapter:v1@{digest}") == digest


def test_registry_answers_is_a_quick_probe(registry):
    assert oci.registry_answers(f"{registry.host}/any/repo", oci.RegistryAccess(plain_http=True))
    assert not oci.registry_answers("127.0.0.1:9/any/repo", oci.RegistryAccess(plain_http=True), timeout=0.5)
