"""kairo.clients.kube against the Kubernetes API emulator: apply, get, patch, delete."""

from __future__ import annotations

from kairo.clients import kube as k


def deployment(replicas: int = 1) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "demo", "namespace": "default", "labels": {"kairo.sh/workspace": "demo"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "demo"}},
                 "template": {"metadata": {"labels": {"app": "demo"}},
                              "spec": {"containers": [{"name": "serve", "image": "serve:1"}]}}},
    }


def test_apply_creates_then_updates(kube):
    k.apply(kube.api, deployment(1))
    k.apply(kube.api, deployment(3))
    stored = kube.objects("apps/v1/deployments", "default")
    assert [d["spec"]["replicas"] for d in stored] == [3]


def test_applying_twice_changes_nothing(kube):
    first = k.apply(kube.api, deployment())
    second = k.apply(kube.api, deployment())
    assert first["spec"] == second["spec"]
    assert len(kube.objects("apps/v1/deployments", "default")) == 1


def test_get_missing_is_none_and_delete_missing_is_false(kube):
    assert k.get(kube.api, "apps/v1", "Deployment", "nope", "default") is None
    assert k.delete(kube.api, "apps/v1", "Deployment", "nope", "default") is False


def test_cluster_scoped_custom_objects(kube):
    claim = {"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "metadata": {"name": "gpu-1"}, "spec": {}}
    assert k.create_if_missing(kube.api, claim) is True
    assert k.create_if_missing(kube.api, claim) is False
    assert [c["metadata"]["name"] for c in k.list_objects(kube.api, "karpenter.sh/v1", "NodeClaim")] == ["gpu-1"]


def test_merge_patch_on_status(kube):
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "w", "namespace": "default"}}
    k.create(kube.api, ws)
    k.merge_patch(kube.api, "kaito.sh/v1beta1", "Workspace", "w", {"status": {"state": "Running"}}, "default",
                  subresource="status")
    assert k.get(kube.api, "kaito.sh/v1beta1", "Workspace", "w", "default")["status"]["state"] == "Running"


def test_unreachable_api_is_a_transient_error():
    api = k.api_client(host="http://127.0.0.1:9")
    try:
        k.get(api, "v1", "Service", "x", "default")
    except k.KubeError as err:
        assert err.transient
    else:
        raise AssertionError("expected KubeError")
