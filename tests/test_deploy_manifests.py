"""The inference Deployment and Service as plain data: what kairo.manifests.inference builds, checked by value."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from kairo.cluster import ClusterConfig
from kairo.manifests import inference as inf
from kairo.manifests.adapters import declared_in

DIGEST = "sha256:" + "ab" * 32
REF = f"registry.example.com/team/phi3-adapter@{DIGEST}"


BASE = dict(workspace="workspace-tuning-phi-3", namespace="ml", preset="phi-3-mini-128k-instruct",
            adapter_ref=REF, gpus=1, node_labels={"app": "tuning-phi-3"}, instance_type="Standard_NC6s_v3")


def spec(**changes) -> inf.InferenceSpec:
    return inf.InferenceSpec(**{**BASE, **changes})


def pod_of(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


@pytest.mark.parametrize("changes", [
    {},
    {"gpus": 0, "node_labels": {}},
    {"pull_secret": "acr-pull", "api_key_secret": "inference-key", "replicas": 3, "plain_http": True},
])
def test_manifests_pass_kubernetes_validate_strict(changes):
    owner = inf.owner_reference({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                                 "metadata": {"name": "workspace-tuning-phi-3", "uid": "1234-5678"}})
    for manifest in (inf.build_deployment(spec(**changes), owner), inf.build_adapters(spec(**changes), owner),
                     inf.build_service(spec(**changes), owner, {inf.ADAPTER_REF: REF})):
        kubernetes_validate.validate(manifest, "1.33", strict=True)


def test_service_is_named_after_the_workspace_and_listens_on_port_80():
    service = inf.build_service(spec())
    assert service["metadata"]["name"] == "workspace-tuning-phi-3"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": inf.SERVE_PORT, "protocol": "TCP"}]
    container = pod_of(inf.build_deployment(spec()))["containers"][0]
    assert container["ports"][0]["containerPort"] == inf.SERVE_PORT
    assert service["spec"]["selector"].items() <= inf.build_deployment(spec())["spec"]["template"]["metadata"][
        "labels"].items()


def test_serve_container_serves_what_the_adapters_configmap_declares():
    pod = pod_of(inf.build_deployment(spec()))
    container = pod["containers"][0]
    assert container["image"].split("/")[-1].startswith("kairo-serve:")
    assert container["command"] + container["args"] == [
        "kairo-step", "serve", "--preset", "phi-3-mini-128k-instruct",
        "--adapters-file", "/etc/kairo/adapters/adapters.json", "--host", "0.0.0.0", "--port", "5000",
    ]
    # the whole volume, mounted by name (a subPath mount would never see the kubelet's update)
    assert {"name": "adapters", "configMap": {"name": "workspace-tuning-phi-3-adapters"}} in pod["volumes"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "adapters")
    assert mount == {"name": "adapters", "mountPath": "/etc/kairo/adapters", "readOnly": True}
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"


def test_the_configmap_declares_the_adapter_by_digest():
    from kairo.manifests.adapters import read_adapters_document

    configmap = inf.build_adapters(spec())
    assert configmap["metadata"]["name"] == "workspace-tuning-phi-3-adapters"
    (declared,) = read_adapters_document(configmap["data"]["adapters.json"])
    assert (declared.name, declared.ref, declared.digest) == ("workspace-tuning-phi-3", REF, DIGEST)


def test_the_server_pulls_the_adapter_with_the_mounted_secret():
    pod = pod_of(inf.build_deployment(spec(pull_secret="acr-pull", plain_http=True)))
    serve = pod["containers"][0]
    assert serve["args"][-7:-4] == ["--pull-secret-file", "/etc/kairo/secrets/pull/.dockerconfigjson", "--plain-http"]
    secret = next(v for v in pod["volumes"] if v["name"] == "pull-secret")
    assert secret["secret"]["secretName"] == "acr-pull"
    assert {"name": "pull-secret", "mountPath": "/etc/kairo/secrets/pull", "readOnly": True} in serve["volumeMounts"]
    assert "initContainers" not in pod


@pytest.mark.parametrize(("changes", "rolls"), [
    ({"adapter_ref": f"registry.example.com/team/phi3-adapter@sha256:{'cd' * 32}"}, False),
    ({"preset": "phi-3-mini-4k-instruct"}, True),
    ({"gpus": 2}, True),
    ({"serve_image": "mirror.example.com/kairo/kairo-serve:9.9.9"}, True),
    ({"replicas": 2}, True),
])
def test_only_the_base_model_image_or_resources_roll_the_pods(changes, rolls):
    assert inf.pod_template_changes(inf.build_deployment(spec()), inf.build_deployment(spec(**changes))) is rolls


def test_gpus_node_affinity_and_the_gpu_taint_come_from_the_workspace_and_cluster():
    cluster = ClusterConfig.model_validate({"provisioner": {"gpuTaint": {"key": "gpu", "value": "yes"}}})
    pod = pod_of(inf.build_deployment(inf.InferenceSpec.for_cluster(cluster, **{**BASE, "gpus": 2})))
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 2 and resources["requests"]["nvidia.com/gpu"] == 2
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "app", "operator": "In", "values": ["tuning-phi-3"]}]}]
    assert {"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"} in pod["tolerations"]


def test_cpu_only_inference_requests_no_gpu_and_tolerates_no_taint():
    pod = pod_of(inf.build_deployment(spec(gpus=0, node_labels={})))
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in pod and "affinity" not in pod


def test_pods_run_as_non_root_without_privileges():
    pod = pod_of(inf.build_deployment(spec()))
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_bearer_token_comes_from_the_named_secret_as_env():
    env = pod_of(inf.build_deployment(spec(api_key_secret="inference-key")))["containers"][0]["env"]
    assert {"name": "KAIRO_API_KEY", "valueFrom": {"secretKeyRef": {"name": "inference-key", "key": "api-key"}}} in env
    plain = pod_of(inf.build_deployment(spec()))["containers"][0]["env"]
    assert all(e["name"] != "KAIRO_API_KEY" for e in plain)


def test_labels_tie_the_objects_to_the_workspace():
    deployment = inf.build_deployment(spec(replicas=3))
    labels = deployment["metadata"]["labels"]
    assert labels["kairo.sh/workspace"] == "workspace-tuning-phi-3"
    assert labels["kairo.sh/preset"] == "phi-3-mini-128k-instruct"
    assert labels["app.kubernetes.io/instance"] == "workspace-tuning-phi-3"
    assert deployment["spec"]["replicas"] == 3
    assert "annotations" not in deployment["spec"]["template"]["metadata"]  # the adapter is not in the template


def test_the_deployment_remembers_its_inputs_for_rollback():
    deployment = inf.build_deployment(spec(pull_secret="acr-pull"))
    stored = inf.InferenceSpec.from_json(deployment["metadata"]["annotations"][inf.DEPLOY_SPEC])
    assert stored == spec(pull_secret="acr-pull")
    other = f"registry.example.com/team/phi3-adapter@sha256:{'cd' * 32}"
    assert inf.build_deployment(stored.with_adapter(other)) == inf.build_deployment(spec(pull_secret="acr-pull",
                                                                                         adapter_ref=other))


def test_owner_reference_needs_a_workspace_with_a_uid():
    assert inf.owner_reference(None) is None
    assert inf.owner_reference({"apiVersion": "kaito.sh/v1alpha1", "metadata": {"name": "w"}}) is None
    owner = inf.owner_reference({"apiVersion": "kaito.sh/v1alpha1", "metadata": {"name": "w", "uid": "u-1"}})
    assert owner["kind"] == "Workspace" and owner["uid"] == "u-1" and owner["apiVersion"] == "kaito.sh/v1alpha1"


@pytest.mark.parametrize(("status", "done", "failed", "says"), [
    ({}, False, False, "0 of 2 replicas updated"),
    ({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, False, False,
     "controller"),
    ({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}, False, False,
     "old replicas"),
    ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}, False, False,
     "1 of 2 updated replicas available"),
    ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, True, False, "2 of 2"),
    ({"observedGeneration": 2, "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded",
                                               "message": "ReplicaSet has timed out"}]}, False, True, "timed out"),
])
def test_rollout_state_reads_the_status_like_kubectl(status, done, failed, says):
    deployment = {"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": status}
    if not status:
        deployment["metadata"] = {}
    state = inf.rollout_state(deployment)
    assert (state.done, state.failed) == (done, failed)
    assert says in state.message


def test_images_and_taint_are_kept_in_the_spec_so_a_rollback_rebuilds_the_same_pods():
    cluster = ClusterConfig.model_validate({"images": {"repository": "mirror.example.com/kairo", "tag": "1.2.3"},
                                            "provisioner": {"gpuTaint": {"key": "gpu", "value": "yes"}}})
    deployed = inf.build_deployment(inf.InferenceSpec.for_cluster(cluster, **BASE))
    stored = inf.InferenceSpec.from_json(deployed["metadata"]["annotations"][inf.DEPLOY_SPEC])
    rebuilt = pod_of(inf.build_deployment(stored.with_adapter(REF)))
    assert rebuilt["containers"][0]["image"] == "mirror.example.com/kairo/kairo-serve:1.2.3"
    assert rebuilt["tolerations"][0]["key"] == "gpu"


def test_pods_run_as_the_user_the_images_create():
    dockerfile = (Path(__file__).resolve().parent.parent / "images" / "serve.Dockerfile").read_text()
    uid = inf.build_deployment(spec())["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert f"USER {uid}:{uid}" in dockerfile


INFERENCE_ADAPTERS = [
    {"name": "pycoder", "ref": "myacr.azurecr.io/adapters/pycoder@sha256:" + "c" * 64, "pull_secret": "acr-pull"},
    {"name": "on-volume", "volume": {"persistentVolumeClaim": {"claimName": "adapters"}}},
]


def test_an_inference_workspace_gets_a_puller_per_image_adapter_and_its_volumes_mounted_by_name():
    # two pull secrets: the server pulls with one credentials file, so these adapters are pulled at start
    other = {"name": "writer", "ref": "other.example.com/writer@sha256:" + "d" * 64, "pull_secret": "other-pull"}
    deployment = inf.build_deployment(spec(adapters=[*INFERENCE_ADAPTERS, other], strengths={"pycoder": "0.7"},
                                           max_model_len=2048))
    kubernetes_validate.validate(deployment, "1.33", strict=True)
    pod = pod_of(deployment)
    puller, _ = pod["initContainers"]
    assert puller["args"][:2] == [INFERENCE_ADAPTERS[0]["ref"], "/adapters/pycoder"]
    assert {"name": "pull-secret-0", "mountPath": "/etc/kairo/secrets/pull", "readOnly": True} in puller["volumeMounts"]
    serve = pod["containers"][0]
    assert serve["args"][:10] == ["--preset", "phi-3-mini-128k-instruct", "--adapter", "pycoder=/adapters/pycoder",
                                  "--adapter", "on-volume=/adapters/on-volume", "--adapter", "writer=/adapters/writer",
                                  "--strength", "pycoder=0.7"]
    assert serve["args"][10:12] == ["--max-model-len", "2048"]
    assert {"name": "adapter-1", "mountPath": "/adapters/on-volume", "readOnly": True} in serve["volumeMounts"]
    assert {"name": "adapter-1", "persistentVolumeClaim": {"claimName": "adapters"}} in pod["volumes"]


def test_with_strengths_an_inference_workspace_declares_them_in_its_configmap_not_its_pods():
    deployment = inf.build_deployment(spec(adapters=INFERENCE_ADAPTERS, strengths={"pycoder": "0.7"}))
    kubernetes_validate.validate(deployment, "1.33", strict=True)
    pod = pod_of(deployment)
    assert not pod.get("initContainers") and "--strength" not in pod["containers"][0]["args"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--combination-type") + 1] == "svd"
    configmap = inf.build_adapters(spec(adapters=INFERENCE_ADAPTERS, strengths={"pycoder": "0.7"}))
    assert {a.name: a.strength for a in declared_in(configmap)} == {"pycoder": 0.7, "on-volume": None}


def test_the_inference_spec_with_adapters_survives_its_json_round_trip():
    original = spec(adapters=INFERENCE_ADAPTERS, strengths={"pycoder": "0.7"})
    assert inf.InferenceSpec.from_json(original.to_json()) == original
