"""Dataset URLs cannot reach inside the cluster or the cloud, unless the operator or a local run allows it."""

from __future__ import annotations

import pytest

from kairo.data.netguard import Refused, address_kind, check_literal, check_resolved, resolve_checked


def resolver_to(*addresses: str):
    """A DNS stub: every name resolves to `addresses` (what a rebinding or split-horizon DNS would answer)."""
    return lambda host: list(addresses)


def test_the_metadata_address_is_refused():
    refusal = check_literal("http://169.254.169.254/latest/meta-data/")
    assert refusal is not None and refusal.kind == "cloud metadata"
    assert "network.allow in the cluster config" in refusal.message()


def test_a_private_address_is_refused_and_the_allowlist_opens_it():
    assert check_literal("http://10.0.0.5/data.jsonl").kind == "private"
    assert check_literal("http://10.0.0.5/data.jsonl", allow=["10.0.0.0/8"]) is None
    assert check_literal("http://10.0.0.5/data.jsonl", allow=["10.0.0.5"]) is None


def test_metadata_names_are_refused_without_dns():
    assert check_literal("http://metadata.google.internal/computeMetadata/v1/").kind == "cloud metadata"


def test_a_public_looking_name_that_resolves_to_loopback_is_refused():
    with pytest.raises(Refused) as caught:
        resolve_checked("http://datasets.example.com/a.jsonl", resolver=resolver_to("127.0.0.1"))
    message = str(caught.value)
    assert "'http://datasets.example.com/a.jsonl' resolves to 127.0.0.1, a loopback address" in message
    assert "network.allow" in message and "--local" in message


def test_a_name_resolving_to_loopback_is_allowed_by_name_by_network_or_in_local_runs():
    url = "http://datasets.example.com/a.jsonl"
    stub = resolver_to("127.0.0.1")
    assert resolve_checked(url, allow=["datasets.example.com"], resolver=stub) == ["127.0.0.1"]
    assert resolve_checked(url, allow=["127.0.0.0/8"], resolver=stub) == ["127.0.0.1"]
    assert resolve_checked(url, local=True, resolver=stub) == ["127.0.0.1"]


def test_local_runs_open_loopback_only():
    assert check_resolved("http://files.example.com/x", local=True, resolver=resolver_to("10.1.2.3")).kind == "private"


def test_one_private_address_among_public_ones_is_enough_to_refuse():
    refusal = check_resolved("http://files.example.com/x", resolver=resolver_to("93.184.216.34", "10.0.0.5"))
    assert refusal is not None and refusal.address == "10.0.0.5"


def test_a_public_address_passes_and_is_what_the_download_connects_to():
    assert resolve_checked("https://files.example.com/x", resolver=resolver_to("93.184.216.34")) == ["93.184.216.34"]


def test_ipv4_hidden_in_ipv6_is_seen_through():
    assert address_kind("::ffff:10.0.0.5") == "private"
    assert address_kind("64:ff9b::a9fe:a9fe") == "cloud metadata"  # NAT64 of 169.254.169.254
    assert address_kind("2002:a00:5::1") == "private"  # 6to4 of 10.0.0.5
    assert address_kind("fd00::1") == "private"
    assert address_kind("fe80::1%eth0") == "link-local"


def test_a_name_that_does_not_resolve_is_left_to_the_download_to_report():
    def fails(host):
        raise OSError("Name or service not known")

    assert check_resolved("http://nowhere.example/x", resolver=fails) is None
    with pytest.raises(OSError):
        resolve_checked("http://nowhere.example/x", resolver=fails)


@pytest.mark.parametrize("host", ["metadata.google.internal", "metadata", "instance-data.ec2.internal"])
def test_metadata_names_are_refused_in_local_runs_too_without_a_traceback(host):
    refusal = check_literal(f"http://{host}/computeMetadata/v1/", local=True)
    assert refusal is not None and refusal.kind == "cloud metadata"
    with pytest.raises(Refused):
        resolve_checked(f"http://{host}/x", local=True, resolver=resolver_to("169.254.169.254"))
