"""kairo.clients.azure: the real azure-mgmt-containerservice client against the local ARM server."""

from __future__ import annotations

import time

import pytest

from kairo.clients.azure import AgentPools, ArmError
from kairo.cluster import AzureSettings
from tests.fixtures.arm import API_VERSION

BODY = {"properties": {"vmSize": "Standard_NC6s_v3", "count": 1, "mode": "User", "osType": "Linux",
                       "tags": {"kairo.sh_managed": "true"}}}


def pools_of(arm, retries: int = 3, **settings) -> AgentPools:
    return AgentPools(AzureSettings(**arm.settings(**settings)), retries=retries)


def test_get_of_a_missing_pool_is_none(arm_identity):
    assert pools_of(arm_identity).get("kairoabc") is None


def test_put_follows_the_async_operation_until_the_pool_succeeded(arm_identity):
    arm_identity.operations_take = 3
    pool = pools_of(arm_identity).put("kairoabc", BODY)
    assert pool["properties"]["provisioningState"] == "Succeeded"
    assert pool["properties"]["vmSize"] == "Standard_NC6s_v3"
    polls = [s for s in arm_identity.seen if "/operations/" in s.path]
    assert len(polls) == 4  # three InProgress answers, then Succeeded


def test_requests_use_the_sdks_api_version_and_the_credentials_token(arm_identity):
    pools_of(arm_identity).put("kairoabc", BODY)
    assert {s.api_version for s in arm_identity.requests()} == {API_VERSION}
    assert all(s.authorized for s in arm_identity.seen)
    assert arm_identity.tokens_issued >= 1


def test_a_rejected_token_is_explained_as_missing_access(arm):
    class WrongToken:
        def get_token(self, *scopes, **kwargs):
            from azure.core.credentials import AccessToken

            return AccessToken("not-the-servers-token", int(time.time()) + 3600)

    pools = AgentPools(AzureSettings(**arm.settings()), credential=WrongToken())
    with pytest.raises(ArmError, match="may not manage agent pools.*AuthenticationFailed") as caught:
        pools.get("kairoabc")
    assert not caught.value.transient


def test_quota_error_names_the_arm_code_and_what_to_do(arm_identity):
    arm_identity.fail_next("PUT", 400, "QuotaExceeded",
                           "Operation results in exceeding approved standardNCSv3Family Cores quota. Current Limit: 0")
    with pytest.raises(ArmError) as caught:
        pools_of(arm_identity).put("kairoabc", BODY)
    err = caught.value
    assert err.code == "QuotaExceeded" and not err.transient
    assert "vCPU quota is too small" in str(err) and "Current Limit: 0" in str(err) and "request" in str(err)


def test_vm_size_not_offered_in_the_region_is_the_users_choice_to_change(arm_identity):
    arm_identity.fail_next("PUT", 400, "SkuNotAvailable",
                           "The requested VM size Standard_NC6s_v3 is not available in location 'westeurope'.")
    with pytest.raises(ArmError, match="not offered where the cluster runs.*SkuNotAvailable") as caught:
        pools_of(arm_identity).put("kairoabc", BODY)
    assert not caught.value.transient


def test_throttling_is_retried_after_the_time_arm_asks(arm_identity):
    arm_identity.fail_next("PUT", 429, "TooManyRequests", "slow down", Retry_After="1")
    started = time.monotonic()
    pools_of(arm_identity).put("kairoabc", BODY)
    assert time.monotonic() - started >= 1
    assert len(arm_identity.requests("PUT")) == 2


def test_a_long_retry_after_fails_at_once_as_transient_with_the_wait_in_words(arm_identity):
    arm_identity.fail_next("PUT", 429, "SubscriptionRequestsThrottled", "Number of write requests exceeded",
                           Retry_After="120")
    with pytest.raises(ArmError, match="throttling.*asked to wait 120 s") as caught:
        pools_of(arm_identity).put("kairoabc", BODY)
    assert caught.value.transient and caught.value.retry_after == 120
    assert len(arm_identity.requests("PUT")) == 1


def test_a_failed_operation_reports_its_own_error(arm_identity):
    arm_identity.operations_finish = "Failed"
    arm_identity.operation_error = {"code": "ZonalAllocationFailed", "message": "no capacity in zone 2"}
    with pytest.raises(ArmError, match="no capacity for this VM size.*ZonalAllocationFailed.*zone 2") as caught:
        pools_of(arm_identity).put("kairoabc", BODY)
    assert caught.value.transient


def test_an_operation_that_never_finishes_times_out(arm_identity):
    arm_identity.operations_finish = "never"
    started = time.monotonic()
    with pytest.raises(ArmError, match="did not finish within 1 s") as caught:
        pools_of(arm_identity, operationTimeoutSeconds=1).put("kairoabc", BODY)
    assert caught.value.transient and time.monotonic() - started < 5


def test_delete_waits_until_the_pool_is_gone(arm_identity):
    arm_identity.add_pool("kairoabc", {"vmSize": "Standard_NC6s_v3", "count": 1})
    pools = pools_of(arm_identity)
    assert pools.delete("kairoabc") is True
    assert "kairoabc" not in arm_identity.pools
    assert pools.delete("kairoabc") is False


def test_an_unreachable_endpoint_is_transient(arm_identity):
    pools = pools_of(arm_identity, retries=0, armEndpoint="http://127.0.0.1:9")
    with pytest.raises(ArmError, match="cannot reach Azure Resource Manager") as caught:
        pools.get("kairoabc")
    assert caught.value.transient


def test_plain_http_is_refused_unless_the_endpoint_is_loopback():
    with pytest.raises(ArmError, match="armEndpoint 'http://arm.example.com' — only https"):
        AgentPools(AzureSettings(subscriptionId="s", resourceGroup="g", clusterName="c",
                                 armEndpoint="http://arm.example.com"), credential=object())


def test_missing_cluster_coordinates_are_named():
    with pytest.raises(ArmError, match="provisioner.azure.subscriptionId is empty"):
        AgentPools(AzureSettings(), credential=object())
