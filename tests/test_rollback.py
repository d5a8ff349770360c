"""`kairo rollback`: the previous adapter served again, against KMock's emulator."""

from __future__ import annotations

import threading
import time

import pytest

from kairo.cli import main
from kairo.clients import kube as k
from kairo.manifests import inference as inf
from kairo.steps import deploy
from tests.fixtures.inference_pods import InferencePods

NS = "ml"
NAME = "phi3"
FIRST = "registry.example.com/team/phi3-adapter@sha256:" + "1" * 64
SECOND = "registry.example.com/team/phi3-adapter@sha256:" + "2" * 64
READY = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}


def controller(kube, stop: threading.Event) -> threading.Thread:
    """Reports every Deployment generation as rolled out, as a healthy cluster would; its pods serve what the
    adapters ConfigMap declares (tests.fixtures.inference_pods)."""
    if not hasattr(kube, "pods"):
        kube.pods = InferencePods(kube, NAME, NS)

    def run() -> None:
        while not stop.is_set():
            found = k.get(kube.api, "apps/v1", "Deployment", NAME, NS)
            if found is not None and not (found.get("status") or {}).get("availableReplicas"):
                k.merge_patch(kube.api, "apps/v1", "Deployment", NAME, {"status": READY}, NS, subresource="status")
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def deployed_adapter(kube) -> str:
    """The adapter the workspace's ConfigMap declares (what its pods serve)."""
    from kairo.manifests.adapters import configmap_name, declared_in

    (adapter,) = declared_in(k.get(kube.api, "v1", "ConfigMap", configmap_name(NAME), NS))
    return adapter.ref


def two_deploys(kube, kubeconfig, tmp_path) -> None:
    stop = threading.Event()
    controller(kube, stop)
    try:
        for ref, loss in ((FIRST, "1.40"), (SECOND, "1.10")):
            assert deploy.main(["--workspace", NAME, "--namespace", NS, "--preset", "tiny-llama-test",
                                "--adapter-ref", ref, "--eval-loss", loss, "--timeout", "10", "--gpus", "0",
                                "--kubeconfig", str(kubeconfig), "--outputs", str(tmp_path / "out")]) == 0
            # The emulator keeps the old status: a new generation starts unavailable, as after a real update.
            k.merge_patch(kube.api, "apps/v1", "Deployment", NAME, {"status": {"availableReplicas": 0}}, NS,
                          subresource="status")
    finally:
        stop.set()


def test_rollback_restores_the_previous_digest_in_the_deployment(kube, kubeconfig, tmp_path, capsys):
    two_deploys(kube, kubeconfig, tmp_path)
    assert deployed_adapter(kube) == SECOND
    stop = threading.Event()
    controller(kube, stop)
    try:
        code = main(["rollback", NAME, "-n", NS, "--to", "sha256:" + "1" * 12, "--kubeconfig", str(kubeconfig),
                     "--timeout", "10"])
    finally:
        stop.set()
    assert code == 0, capsys.readouterr().err
    assert deployed_adapter(kube) == FIRST
    assert "rolled back ml/phi3 to sha256:111111111111 (eval loss 1.40)" in capsys.readouterr().out
    current, history = inf.read_record(k.get(kube.api, "v1", "Service", NAME, NS)["metadata"]["annotations"])
    assert current.ref == FIRST and current.eval_loss == "1.40"
    assert current.note == "rollback from sha256:222222222222"
    assert [e.ref for e in history] == [FIRST, SECOND, FIRST]


def test_rollback_keeps_everything_but_the_adapter(kube, kubeconfig, tmp_path):
    two_deploys(kube, kubeconfig, tmp_path)
    before = k.get(kube.api, "apps/v1", "Deployment", NAME, NS)["spec"]["template"]["spec"]
    stop = threading.Event()
    controller(kube, stop)
    try:
        assert main(["rollback", NAME, "-n", NS, "--to", "1111111", "--kubeconfig", str(kubeconfig)]) == 0
    finally:
        stop.set()
    after = k.get(kube.api, "apps/v1", "Deployment", NAME, NS)["spec"]["template"]["spec"]
    assert after == before  # only the ConfigMap changed: the pods were not rolled
    assert deployed_adapter(kube) == FIRST and kube.pods.restarts == 0


def test_rolling_back_to_what_is_deployed_does_nothing(kube, kubeconfig, tmp_path, capsys):
    two_deploys(kube, kubeconfig, tmp_path)
    assert main(["rollback", NAME, "-n", NS, "--to", "2222222", "--kubeconfig", str(kubeconfig)]) == 0
    assert "already serves" in capsys.readouterr().out
    assert deployed_adapter(kube) == SECOND


def test_rollback_to_an_unknown_tag_fails_and_changes_nothing(kube, kubeconfig, tmp_path, capsys):
    two_deploys(kube, kubeconfig, tmp_path)
    assert main(["rollback", NAME, "-n", NS, "--to", "release-9", "--kubeconfig", str(kubeconfig)]) == 2
    assert "'release-9' names no deployed adapter" in capsys.readouterr().err
    assert deployed_adapter(kube) == SECOND


def test_rollback_without_a_deployment_says_so(kube, kubeconfig, capsys):
    assert main(["rollback", NAME, "-n", NS, "--to", "release-1", "--kubeconfig", str(kubeconfig)]) == 1
    assert "no inference Deployment made by kairo for ml/phi3" in capsys.readouterr().err


@pytest.mark.registry
@pytest.mark.parametrize("layout", ["kairo", "kaito-pusher", "earlier-kairo"])
def test_rollback_can_move_the_moving_tag_back(kube, kubeconfig, tmp_path, registry, layout):
    """The adapter rolled back to was pushed by kairo, by Kaito's own pusher, or by an earlier kairo version."""
    from types import SimpleNamespace

    from kairo.clients import oci
    from tests.fixtures.oci_images import kaito_push, push_old_layout, write_adapter

    repository = f"{registry.host}/team/rollback-{layout}"
    older = write_adapter(tmp_path / "a1", seed=11)
    if layout == "kairo":
        first = oci.push_adapter(older, repository, oci.RegistryAccess(plain_http=True))
    else:
        made = kaito_push(older, f"{repository}:latest", tmp_path) if layout == "kaito-pusher" else \
            push_old_layout(older, repository, tmp_path)
        first = SimpleNamespace(ref=made, digest=made.split("@", 1)[1])
    second = oci.push_adapter(write_adapter(tmp_path / "a2", seed=12), repository, oci.RegistryAccess(plain_http=True))
    config = tmp_path / "cluster.yaml"
    config.write_text(f"registry:\n  plainHttp: ['{registry.host}']\n")
    stop = threading.Event()
    controller(kube, stop)
    try:
        for pushed in (first, second):
            assert deploy.main(["--workspace", NAME, "--namespace", NS, "--preset", "tiny-llama-test",
                                "--adapter-ref", pushed.ref, "--moving-tag", "stable", "--gpus", "0",
                                "--timeout", "10", "--cluster-config", str(config), "--kubeconfig", str(kubeconfig),
                                "--outputs", str(tmp_path / "out")]) == 0
            k.merge_patch(kube.api, "apps/v1", "Deployment", NAME, {"status": {"availableReplicas": 0}}, NS,
                          subresource="status")
        assert oci.resolve(f"{repository}:stable", oci.RegistryAccess(plain_http=True)) == second.digest
        assert main(["rollback", NAME, "-n", NS, "--to", first.digest, "--moving-tag", "stable",
                     "--cluster-config", str(config), "--kubeconfig", str(kubeconfig)]) == 0
    finally:
        stop.set()
    assert oci.resolve(f"{repository}:stable", oci.RegistryAccess(plain_http=True)) == first.digest
    assert deployed_adapter(kube) == first.ref
