"""The moving tag follows what is deployed: deploy points it at the adapter only after the rollout succeeded.

Against the real registry fixture (Debian's docker-registry) and KMock's emulator.
"""

from __future__ import annotations

import threading
import time

import pytest

from kairo import exitcodes
from kairo.clients import kube as k
from kairo.clients import oci
from kairo.steps import deploy
from tests.fixtures.inference_pods import InferencePods
from tests.fixtures.oci_images import write_adapter

NS = "ml"
NAME = "phi3"
READY = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}

pytestmark = pytest.mark.registry


def rolled_out_soon(kube) -> None:
    """Play the Deployment controller: report the rollout done once the Deployment exists; its pods serve
    what the adapters ConfigMap declares (deploy waits for that, tests.fixtures.inference_pods)."""
    if not hasattr(kube, "pods"):
        kube.pods = InferencePods(kube, NAME, NS)

    def run() -> None:
        deadline = time.monotonic() + 10
        while k.get(kube.api, "apps/v1", "Deployment", NAME, NS) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        k.merge_patch(kube.api, "apps/v1", "Deployment", NAME, {"status": READY}, NS, subresource="status")

    threading.Thread(target=run, daemon=True).start()


def pushed(registry, tmp_path, seed: int) -> oci.PushResult:
    folder = write_adapter(tmp_path / f"adapter-{seed}", seed=seed)
    return oci.push_adapter(folder, f"{registry.host}/team/phi3-adapter", oci.RegistryAccess(plain_http=True, retries=0))


def run_deploy(kubeconfig, tmp_path, registry, ref: str, *extra: str) -> int:
    config = tmp_path / "cluster.yaml"
    config.write_text(f"registry:\n  plainHttp: ['{registry.host}']\n")
    return deploy.main(["--workspace", NAME, "--namespace", NS, "--preset", "tiny-llama-test", "--adapter-ref", ref,
                        "--moving-tag", "0.0.1", "--gpus", "0", "--kubeconfig", str(kubeconfig),
                        "--cluster-config", str(config), "--outputs", str(tmp_path / "out"), *extra])


def test_the_moving_tag_points_at_the_deployed_adapter(kube, kubeconfig, tmp_path, registry):
    first, second = pushed(registry, tmp_path, 1), pushed(registry, tmp_path, 2)
    repository = f"{registry.host}/team/phi3-adapter"
    rolled_out_soon(kube)
    assert run_deploy(kubeconfig, tmp_path, registry, first.ref, "--timeout", "10") == exitcodes.OK
    assert oci.resolve(f"{repository}:0.0.1", oci.RegistryAccess(plain_http=True)) == first.digest
    k.merge_patch(kube.api, "apps/v1", "Deployment", NAME, {"status": {"availableReplicas": 0}}, NS,
                  subresource="status")
    rolled_out_soon(kube)
    assert run_deploy(kubeconfig, tmp_path, registry, second.ref, "--timeout", "10") == exitcodes.OK
    assert oci.resolve(f"{repository}:0.0.1", oci.RegistryAccess(plain_http=True)) == second.digest


def test_a_failed_rollout_leaves_the_moving_tag_where_it_was(kube, kubeconfig, tmp_path, registry):
    first, second = pushed(registry, tmp_path, 3), pushed(registry, tmp_path, 4)
    repository = f"{registry.host}/team/phi3-adapter"
    oci.tag(first.ref, "0.0.1", oci.RegistryAccess(plain_http=True))
    assert run_deploy(kubeconfig, tmp_path, registry, second.ref, "--timeout", "0.5") == exitcodes.FAILED
    assert oci.resolve(f"{repository}:0.0.1", oci.RegistryAccess(plain_http=True)) == first.digest


def test_the_mounted_push_secret_moves_the_tag_on_a_registry_that_wants_credentials(kube, kubeconfig, tmp_path,
                                                                                     auth_registry):
    secret = auth_registry.dockerconfig(tmp_path / "push-secret")
    folder = write_adapter(tmp_path / "adapter-5", seed=5)
    repository = f"{auth_registry.host}/team/phi3-adapter"
    first = oci.push_adapter(folder, repository, oci.RegistryAccess(auth_file=secret, plain_http=True, retries=0))
    rolled_out_soon(kube)
    assert run_deploy(kubeconfig, tmp_path, auth_registry, first.ref, "--timeout", "10",
                      "--push-secret-file", str(secret)) == exitcodes.OK
    assert oci.resolve(f"{repository}:0.0.1", oci.RegistryAccess(auth_file=secret, plain_http=True)) == first.digest


def test_a_push_secret_file_that_is_not_mounted_means_no_credentials(kube, kubeconfig, tmp_path, registry):
    # the generic template mounts an optional Secret: when it does not exist the file is missing
    first = pushed(registry, tmp_path, 6)
    rolled_out_soon(kube)
    assert run_deploy(kubeconfig, tmp_path, registry, first.ref, "--timeout", "10",
                      "--push-secret-file", str(tmp_path / "absent" / ".dockerconfigjson")) == exitcodes.OK
    assert oci.resolve(f"{registry.host}/team/phi3-adapter:0.0.1", oci.RegistryAccess(plain_http=True)) == first.digest
