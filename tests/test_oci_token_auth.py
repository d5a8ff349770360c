"""Token auth, as ACR, GHCR and Docker Hub do it: credentials buy a token per scope from a token service."""

from __future__ import annotations

import pytest

from kairo.clients import oci
from tests.fixtures.oci_images import files_in

pytestmark = pytest.mark.registry


def actions(scope: str, resource: str) -> set[str]:
    """The actions a token scope asks for on `resource` (`repository:NAME:ACTION,ACTION`), none if another."""
    named, _, wanted = scope.rpartition(":")
    return set(wanted.split(",")) if named == resource else set()


def test_push_and_pull_through_a_token_service(tmp_path, token_registry, adapter_folder):
    secret = token_registry.dockerconfig(tmp_path / "secret")
    repo = f"{token_registry.host}/token/adapter"
    result = oci.push_adapter(adapter_folder, repo, oci.RegistryAccess(auth_file=secret, plain_http=True))
    # A pull token is asked for first (HEAD), then a fresh one that may push (in the order the registry's
    # challenge names the actions: distribution's releases differ, "pull,push" or "push,pull").
    assert {"pull", "push"} in [actions(scope, "repository:token/adapter") for scope in token_registry.token_service.issued]
    oci.pull_adapter(f"{repo}:{result.tag}", tmp_path / "out", oci.RegistryAccess(auth_file=secret, plain_http=True))
    assert files_in(tmp_path / "out") == files_in(adapter_folder)
    assert oci.tags(repo, oci.RegistryAccess(auth_file=secret, plain_http=True)) == [result.tag]


def test_anonymous_pull_of_a_public_repository(tmp_path, token_registry, adapter_folder):
    secret = token_registry.dockerconfig(tmp_path / "secret")
    result = oci.push_adapter(adapter_folder, f"{token_registry.host}/token/public", oci.RegistryAccess(auth_file=secret, plain_http=True))
    oci.pull_adapter(result.ref, tmp_path / "out", oci.RegistryAccess(plain_http=True))
    assert files_in(tmp_path / "out") == files_in(adapter_folder)


def test_a_wrong_password_is_refused_before_anything_is_sent(tmp_path, token_registry, adapter_folder):
    secret = token_registry.dockerconfig(tmp_path / "secret", password="not-it")
    with pytest.raises(oci.CredentialsRefused, match="refused the credentials for user 'kairo'") as caught:
        oci.push_adapter(adapter_folder, f"{token_registry.host}/token/refused", oci.RegistryAccess(auth_file=secret, plain_http=True))
    assert caught.value.exit_code == 2 and "not-it" not in str(caught.value)
    good = token_registry.dockerconfig(tmp_path / "good")
    assert oci.tags(f"{token_registry.host}/token/refused", oci.RegistryAccess(auth_file=good, plain_http=True)) == []


def test_an_anonymous_push_is_refused_as_bad_input(token_registry, adapter_folder):
    with pytest.raises(oci.CredentialsRefused, match="access refused") as caught:
        oci.push_adapter(adapter_folder, f"{token_registry.host}/token/anonymous", oci.RegistryAccess(plain_http=True, retry_wait=0))
    assert caught.value.exit_code == 2
