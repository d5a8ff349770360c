"""The cleanup step (the workflow's onExit): it releases only kairo's own nodes of ephemeral workspaces,
never under a running inference Deployment, and stops the local server."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from kairo.clients import kube as k
from kairo.cluster import Taint
from kairo.manifests.nodes import NodeRequest, agent_pool_body, agent_pool_name
from kairo.steps import cleanup

REQUEST = NodeRequest("phi-3-tuning", "team-a", "Standard_NC24ads_A100_v4", 1, {"apps": "phi-3"})
POOL = agent_pool_name("team-a", "phi-3-tuning")


def run_cleanup(tmp_path, *flags: str, cluster: dict | None = None) -> tuple[int, str]:
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(cluster or {}))
    out = tmp_path / "outputs"
    code = cleanup.main(["--workspace", "phi-3-tuning", "--namespace", "team-a", "--workflow-status", "Succeeded",
                         "--cluster-config", str(config), "--outputs", str(out), *flags])
    return code, (out / "outcome").read_text()


@pytest.fixture
def azure(arm_identity, kubeconfig, tmp_path):
    def run(*flags: str) -> tuple[int, str]:
        return run_cleanup(tmp_path, *flags, cluster={"provisioner": {"kind": "azure",
                                                                      "azure": arm_identity.settings()}})
    return run


def inference_deployment(replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "phi-3-tuning", "namespace": "team-a", "labels": {"kairo.sh/workspace": "phi-3-tuning"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "x"}},
                     "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": []}}}}


# -- azure --------------------------------------------------------------------------------------------


def test_an_ephemeral_workspaces_pool_is_deleted(azure, arm_identity):
    arm_identity.add_pool(POOL, agent_pool_body(REQUEST, Taint())["properties"])
    code, outcome = azure("--ephemeral", "true")
    assert code == 0 and POOL not in arm_identity.pools
    assert outcome.startswith(f"released agent pool '{POOL}'")


def test_a_pool_of_a_workspace_that_is_not_ephemeral_is_kept(azure, arm_identity):
    arm_identity.add_pool(POOL, agent_pool_body(REQUEST, Taint())["properties"])
    code, outcome = azure("--ephemeral", "false")
    assert code == 0 and POOL in arm_identity.pools and arm_identity.requests("DELETE") == []
    assert "not ephemeral" in outcome


def test_a_pool_kairo_did_not_create_is_never_deleted(azure, arm_identity):
    props = agent_pool_body(REQUEST, Taint())["properties"]
    arm_identity.add_pool(POOL, props, tags={"team": "ml"})
    code, outcome = azure("--ephemeral", "true")
    assert code == 0 and POOL in arm_identity.pools and arm_identity.requests("DELETE") == []
    assert "kairo did not create it" in outcome


def test_the_pool_stays_while_the_workspaces_inference_runs(azure, arm_identity, kube):
    arm_identity.add_pool(POOL, agent_pool_body(REQUEST, Taint())["properties"])
    k.create(kube.api, inference_deployment(replicas=1))
    code, outcome = azure("--ephemeral", "true")
    assert code == 0 and POOL in arm_identity.pools
    assert outcome == "kept the GPU nodes: inference Deployment team-a/phi-3-tuning runs on them"


def test_an_inference_deployment_scaled_to_zero_does_not_hold_the_pool(azure, arm_identity, kube):
    arm_identity.add_pool(POOL, agent_pool_body(REQUEST, Taint())["properties"])
    k.create(kube.api, inference_deployment(replicas=0))
    code, _ = azure("--ephemeral", "true")
    assert code == 0 and POOL not in arm_identity.pools


def test_nothing_to_release_is_not_a_failure(azure):
    code, outcome = azure("--ephemeral", "true")
    assert code == 0 and outcome.startswith("nothing to release")


def test_a_delete_that_azure_refuses_for_now_is_transient(azure, arm_identity):
    arm_identity.add_pool(POOL, agent_pool_body(REQUEST, Taint())["properties"])
    arm_identity.fail_next("DELETE", 409, "OperationNotAllowed", "another operation is in progress")
    code, outcome = azure("--ephemeral", "true")
    assert code == 75 and "could not release" in outcome and "OperationNotAllowed" in outcome


# -- karpenter and existing -----------------------------------------------------------------------------


def nodeclaim(name: str, workspace: str = "phi-3-tuning", managed: bool = True) -> dict:
    labels = {"kairo.sh/workspace": workspace, "kairo.sh/workspace-namespace": "team-a"}
    if managed:
        labels["kairo.sh/managed"] = "true"
    return {"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "metadata": {"name": name, "labels": labels},
            "spec": {}}


def test_only_the_workspaces_own_nodeclaims_are_deleted(kube, kubeconfig, tmp_path):
    for claim in (nodeclaim("mine-0"), nodeclaim("mine-1"), nodeclaim("theirs", workspace="other"),
                  nodeclaim("hand-made", managed=False)):
        k.create(kube.api, claim)
    code, outcome = run_cleanup(tmp_path, "--ephemeral", "true", cluster={"provisioner": {"kind": "karpenter"}})
    assert code == 0
    assert sorted(c["metadata"]["name"] for c in kube.objects("karpenter.sh/v1/nodeclaims")) == ["hand-made", "theirs"]
    assert outcome == "released NodeClaims mine-0, mine-1; kept hand-made: kairo did not create it"


def test_existing_nodes_are_never_released(kube, kubeconfig, tmp_path):
    code, outcome = run_cleanup(tmp_path, "--ephemeral", "true", cluster={"provisioner": {"kind": "existing"}})
    assert code == 0 and "never creates nodes" in outcome


def test_the_failed_tasks_are_recorded(tmp_path, capsys):
    failures = json.dumps([{"displayName": "train", "message": "Error (exit code 2)", "templateName": "train",
                            "phase": "Failed", "podName": "wf-train-1"}])
    run_cleanup(tmp_path, "--workflow-status", "Failed", "--failures", failures)
    err = capsys.readouterr().err
    assert "cleanup: workflow Failed" in err and "train: Failed: Error (exit code 2)" in err


# -- this machine ---------------------------------------------------------------------------------------


def start_server(tmp_path, ignore_sigterm: bool = False) -> subprocess.Popen:
    """A stand-in for `kairo serve` as deploy --local starts it: its own session, a command line naming serve
    and the work folder, and its pid in state/serve.pid."""
    workdir = tmp_path / "work"
    code = "import signal, time\n"
    if ignore_sigterm:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('up', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--workdir", str(workdir.resolve())],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "up"
    (workdir / "state").mkdir(parents=True)
    (workdir / "state" / "serve.pid").write_text(f"{proc.pid}\n")
    return proc


def local(tmp_path, *flags: str) -> tuple[int, str]:
    return run_cleanup(tmp_path, "--local", "--workdir", str(tmp_path / "work"), *flags)


def test_locally_the_server_is_stopped_and_its_pid_file_removed(tmp_path):
    proc = start_server(tmp_path)
    code, outcome = local(tmp_path)
    assert code == 0 and proc.wait(5) is not None
    assert outcome == f"stopped the local inference server (pid {proc.pid})"
    assert not (tmp_path / "work" / "state" / "serve.pid").exists()


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    proc = start_server(tmp_path, ignore_sigterm=True)
    started = time.monotonic()
    code, outcome = local(tmp_path, "--grace-seconds", "0.5")
    proc.wait(5)  # gone (cleanup may have reaped it already: it polls with waitpid)
    assert code == 0 and outcome == f"stopped the local inference server (pid {proc.pid})"
    assert 0.5 <= time.monotonic() - started < 5


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_keep_serving_leaves_the_server_running(tmp_path, monkeypatch, how):
    proc = start_server(tmp_path)
    try:
        if how == "environment":
            monkeypatch.setenv("KAIRO_KEEP_SERVING", "1")
        code, outcome = local(tmp_path, *(["--keep-serving"] if how == "flag" else []))
        assert code == 0 and proc.poll() is None
        assert outcome.startswith(f"left the inference server running (pid {proc.pid}")
    finally:
        proc.kill()
        proc.wait()


def test_locally_with_no_server_there_is_nothing_to_clean(tmp_path):
    code, outcome = local(tmp_path)
    assert code == 0 and outcome == "nothing to clean: no local inference server was started"


def test_a_stale_pid_file_is_removed_without_signalling_anyone(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / "work" / "state").mkdir(parents=True)
    (tmp_path / "work" / "state" / "serve.pid").write_text(str(proc.pid))
    code, outcome = local(tmp_path)
    assert code == 0 and "was no longer running" in outcome
    assert not (tmp_path / "work" / "state" / "serve.pid").exists()
