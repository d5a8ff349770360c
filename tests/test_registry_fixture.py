"""The registry fixture is a real registry: it answers the OCI distribution API and enforces auth."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest


def test_anonymous_registry_answers(registry):
    with urllib.request.urlopen(f"{registry.url}/v2/", timeout=5) as response:
        assert response.status == 200
    assert registry.tags("nothing/here") == []


def test_auth_registry_refuses_anonymous_requests(auth_registry):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{auth_registry.url}/v2/", timeout=5)
    assert err.value.code == 401
