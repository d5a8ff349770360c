"""`kairo run --local` runs a resource template creating a JobSet: N local processes with JobSet's environment."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import yaml

from kairo.local import jobset
from kairo.local.mounts import LocalObjects, Unsupported
from kairo.local.runner import LocalRunner

# Each pod records what it sees on the shared work volume; pod 1 fails the first attempt (node lost).
POD = textwrap.dedent("""
    import json, os, pathlib, socket, sys, time
    work = pathlib.Path(os.environ['WORK'])  # a path under a mount: mapped as the kubelet would mount it
    index = os.environ['JOB_COMPLETION_INDEX']
    host, port = sys.argv[1].rsplit(':', 1)
    for _ in range(100 if index != '0' else 0):  # reach pod 0 by its name, as a rendezvous does
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
            break
        except OSError:
            time.sleep(0.1)
    attempt = os.environ['ATTEMPT']
    (work / f'pod-{index}-{attempt}.json').write_text(json.dumps({'argv': sys.argv[1:], 'env': {
        k: os.environ[k] for k in ('JOB_COMPLETION_INDEX', 'JOBSET_NAME', 'NODE')}}))
    if index == '1' and not (work / 'lost-once').exists():
        (work / 'lost-once').write_text('')
        sys.exit(3)
""")
# Pod 0 stands for the rendezvous host: it listens where the others connect, at its headless-service name.
SERVER = textwrap.dedent("""
    import socket, sys, time
    host, port = sys.argv[1].rsplit(':', 1)
    with socket.create_server((host, int(port))) as server:
        server.settimeout(20)
        server.accept()[0].close()
""")


def jobset_manifest(pods: int = 2, restarts: int = 1) -> dict:
    env = [{"name": "JOBSET_NAME", "valueFrom": {"fieldRef": {
               "fieldPath": "metadata.labels['jobset.sigs.k8s.io/jobset-name']"}}},
           {"name": "ATTEMPT", "valueFrom": {"fieldRef": {
               "fieldPath": "metadata.labels['jobset.sigs.k8s.io/restart-attempt']"}}},
           {"name": "NODE", "value": "node-$(JOB_COMPLETION_INDEX)"}, {"name": "WORK", "value": "/mnt/work"}]
    code = f"import os\nif os.environ['JOB_COMPLETION_INDEX'] == '0':\n    exec({SERVER!r})\nexec({POD!r})"
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"generateName": "run-"},
        "spec": {"network": {"enableDNSHostnames": True}, "failurePolicy": {"maxRestarts": restarts},
                 "replicatedJobs": [{"name": "node", "replicas": 1, "template": {"spec": {
                     "parallelism": pods, "completions": pods, "completionMode": "Indexed", "backoffLimit": 0,
                     "template": {"spec": {"restartPolicy": "Never", "volumes": [
                         {"name": "work", "persistentVolumeClaim": {"claimName": "{{workflow.name}}-work"}}],
                         "containers": [{"name": "node", "image": "python", "env": env,
                                         "command": [sys.executable, "-c", code],
                                         "args": ["$(JOBSET_NAME)-node-0-0.$(JOBSET_NAME):29500"],
                                         "volumeMounts": [{"name": "work", "mountPath": "/mnt/work"}]}]}},
                 }}}]},
    }


def workflow(manifest: dict) -> dict:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "wf"}, "spec": {
        "entrypoint": "main",
        "templates": [{"name": "main", "dag": {"tasks": [{"name": "train", "template": "train"}]}},
                      {"name": "train", "resource": {
                          "action": "create", "setOwnerReference": True, "manifest": yaml.safe_dump(manifest),
                          "successCondition": "status.terminalState == Completed",
                          "failureCondition": "status.terminalState == Failed"}}],
        "volumeClaimTemplates": [{"metadata": {"name": "work"}, "spec": {
            "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}]}}


def run(wf: dict, tmp_path):
    return LocalRunner(wf, tmp_path / "run", LocalObjects({}, {})).run()


def test_the_pods_run_with_their_index_their_jobset_name_and_the_headless_names_on_this_machine(tmp_path):
    result = run(workflow(jobset_manifest()), tmp_path)
    assert result.status == "Succeeded", [t.log_tail() for t in result.tasks.values()]
    work = tmp_path / "run" / "volumes" / "work"
    seen = {i: json.loads((work / f"pod-{i}-1.json").read_text()) for i in (0, 1)}
    name = seen[0]["env"]["JOBSET_NAME"]
    assert name.startswith("run-") and len(name) == len("run-") + 5
    assert seen[1]["env"] == {"JOB_COMPLETION_INDEX": "1", "JOBSET_NAME": name, "NODE": "node-1"}
    host, port = seen[1]["argv"][0].rsplit(":", 1)
    assert host == "127.0.0.1" and port != "29500"  # a free port here, the same one for every pod
    assert seen[0]["argv"] == seen[1]["argv"]


def test_a_failed_pod_restarts_the_whole_set_and_the_second_attempt_completes(tmp_path):
    result = run(workflow(jobset_manifest()), tmp_path)
    work = tmp_path / "run" / "volumes" / "work"
    assert result.status == "Succeeded"
    assert result.tasks["train"].attempts == 2
    assert {p.name for p in work.glob("pod-*.json")} == {"pod-0-0.json", "pod-1-0.json", "pod-0-1.json", "pod-1-1.json"}


def test_a_set_that_keeps_failing_fails_after_max_restarts(tmp_path):
    manifest = jobset_manifest(restarts=0)
    container = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]
    container["command"][2] = "import os, sys, time\nsys.exit(4) if os.environ['JOB_COMPLETION_INDEX'] == '1' " \
                              "else time.sleep(60)"
    result = run(workflow(manifest), tmp_path)
    task = result.tasks["train"]
    assert result.status == "Failed" and task.attempts == 1
    assert "pod run-" in task.message and "-node-0-1 failed (exit code 4" in task.message
    assert task.duration < 30  # pod 0 was stopped, not waited for


def test_a_trainjob_is_refused_locally_naming_the_engine_that_runs_here(tmp_path):
    trainjob = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "t"},
                "spec": {"runtimeRef": {"name": "torch-distributed"}}}
    with pytest.raises(Unsupported, match="training.engine: jobset"):
        run(workflow(trainjob), tmp_path)


def test_env_is_built_as_the_kubelet_builds_it():
    pod = jobset.LocalPod("js-node-0-1.js", {"jobset.sigs.k8s.io/jobset-name": "js"},
                          {jobset.COMPLETION_INDEX: "1"}, {"env": [
                              {"name": "A", "value": "x-$(JOB_COMPLETION_INDEX)-$(MISSING)-$$(A)"},
                              {"name": "N", "valueFrom": {"fieldRef": {
                                  "fieldPath": "metadata.labels['jobset.sigs.k8s.io/jobset-name']"}}}]})
    assert jobset.environment(pod) == {"JOB_COMPLETION_INDEX": "1", "A": "x-1-$(MISSING)-$(A)", "N": "js"}
    assert jobset.hosts_to_loopback("--rdzv-endpoint=js-node-0-0.js:29500", ["js-node-0-0.js"], {"29500": "4321"}) \
        == "--rdzv-endpoint=127.0.0.1:4321"
