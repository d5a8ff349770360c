"""The local runner executes an Argo Workflow's DAG as Argo would: order, parameters, outputs, retries, onExit."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from kairo.local.mounts import LocalObjects, Unsupported
from kairo.local.runner import LocalRunner
from kairo.problems import InvalidInput

PY = sys.executable


def python_template(name: str, code: str, *, inputs=(), outputs=(), retry=None, mounts=(), **extra) -> dict:
    """A container template running a Python snippet; inputs arrive as argv[1:]."""
    template = {
        "name": name,
        "container": {
            "image": "python",
            "command": [PY, "-c", textwrap.dedent(code)],
            "args": [f"{{{{inputs.parameters.{i}}}}}" for i in inputs],
            "volumeMounts": [{"name": m, "mountPath": f"/mnt/{m}"} for m in mounts],
        },
        **extra,
    }
    if inputs:
        template["inputs"] = {"parameters": [{"name": i} for i in inputs]}
    if outputs:
        template["outputs"] = {"parameters": [{"name": o, "valueFrom": {"path": f"/tmp/outputs/{o}"}}
                                              for o in outputs]}
    if retry:
        template["retryStrategy"] = retry
    return template


def workflow(tasks: list[dict], templates: list[dict], *, on_exit=None, parameters=None, claims=()) -> dict:
    spec = {
        "entrypoint": "main",
        "arguments": {"parameters": [{"name": k, "value": v} for k, v in (parameters or {}).items()]},
        "templates": [{"name": "main", "dag": {"tasks": tasks}}, *templates],
        "volumeClaimTemplates": [{"metadata": {"name": c}, "spec": {"accessModes": ["ReadWriteOnce"],
                                  "resources": {"requests": {"storage": "1Gi"}}}} for c in claims],
    }
    if on_exit:
        spec["onExit"] = on_exit
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "wf"}, "spec": spec}


def run(wf: dict, tmp_path, **kwargs):
    return LocalRunner(wf, tmp_path / "run", LocalObjects({}, {}), **kwargs).run()


WRITE = """
import sys, pathlib
pathlib.Path('/tmp/outputs').mkdir(parents=True, exist_ok=True)
"""


def test_outputs_flow_into_dependent_tasks_through_parameters(tmp_path):
    produce = python_template("produce", """
        import sys
        open(sys.argv[1], 'w').write('hello')
    """, outputs=["word"])
    produce["container"]["args"] = ["/tmp/outputs/word"]
    consume = python_template("consume", """
        import sys
        assert sys.argv[1] == 'hello world', sys.argv
    """, inputs=["text"])
    wf = workflow([
        {"name": "a", "template": "produce"},
        {"name": "b", "template": "consume", "depends": "a",
         "arguments": {"parameters": [{"name": "text", "value": "{{tasks.a.outputs.parameters.word}} world"}]}},
    ], [produce, consume])
    result = run(wf, tmp_path)
    assert result.status == "Succeeded", {t.name: (t.state, t.log_tail()) for t in result.tasks.values()}
    assert result.tasks["a"].outputs == {"word": "hello"}


def test_independent_tasks_run_in_parallel(tmp_path):
    sleep = python_template("sleep", "import time; time.sleep(1)")
    wf = workflow([{"name": n, "template": "sleep"} for n in ("a", "b", "c")], [sleep])
    result = run(wf, tmp_path, parallelism=3)
    starts = sorted(t.started for t in result.tasks.values())
    assert starts[-1] - starts[0] < 0.8  # all started before the first finished


def test_a_failed_task_stops_its_dependents_and_on_exit_still_runs(tmp_path):
    fail = python_template("fail", "import sys; print('boom: bad data'); sys.exit(3)")
    ok = python_template("ok", "pass")
    record = python_template("record", """
        import sys
        open(sys.argv[1], 'w').write(sys.argv[2])
    """, inputs=["status"])
    record["container"]["args"] = [str(tmp_path / "exit-status"), "{{workflow.status}}"]
    record.pop("inputs")
    wf = workflow([
        {"name": "first", "template": "fail"},
        {"name": "second", "template": "ok", "depends": "first"},
        {"name": "aside", "template": "ok"},
    ], [fail, ok, record], on_exit="record")
    result = run(wf, tmp_path)
    assert result.status == "Failed"
    assert result.tasks["first"].state == "Failed" and "boom: bad data" in result.tasks["first"].message
    assert result.tasks["second"].state == "Omitted"
    assert result.tasks["aside"].state == "Succeeded"
    assert result.exit_task.state == "Succeeded"
    assert (tmp_path / "exit-status").read_text() == "Failed"


def test_when_false_skips_and_skipped_dependencies_still_let_dependents_run(tmp_path):
    ok = python_template("ok", "pass")
    wf = workflow([
        {"name": "maybe", "template": "ok", "when": "'{{workflow.parameters.go}}' == 'yes'"},
        {"name": "after", "template": "ok", "depends": "maybe"},
    ], [ok], parameters={"go": "no"})
    result = run(wf, tmp_path)
    assert result.tasks["maybe"].state == "Skipped"
    assert result.tasks["after"].state == "Succeeded"


def test_depends_on_a_specific_result(tmp_path):
    fail = python_template("fail", "import sys; sys.exit(1)")
    ok = python_template("ok", "pass")
    wf = workflow([
        {"name": "a", "template": "fail"},
        {"name": "on-failure", "template": "ok", "depends": "a.Failed"},
        {"name": "on-success", "template": "ok", "depends": "a.Succeeded"},
    ], [fail, ok])
    result = run(wf, tmp_path)
    assert result.tasks["on-failure"].state == "Succeeded"
    assert result.tasks["on-success"].state == "Omitted"


def test_retries_until_success_within_the_limit(tmp_path):
    flaky = python_template("flaky", f"""
        import pathlib, sys
        counter = pathlib.Path({str(tmp_path / 'count')!r})
        n = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(n + 1))
        sys.exit(0 if n >= 2 else 75)
    """, retry={"limit": 3, "retryPolicy": "Always", "backoff": {"duration": "0.01s"}})
    result = run(workflow([{"name": "f", "template": "flaky"}], [flaky]), tmp_path)
    assert result.status == "Succeeded" and result.tasks["f"].attempts == 3


def test_a_retry_expression_refuses_to_retry_bad_input(tmp_path):
    bad = python_template("bad", "import sys; print('config: unknown key'); sys.exit(2)", retry={
        "limit": 5, "retryPolicy": "Always", "expression": "asInt(lastRetry.exitCode) != 2",
        "backoff": {"duration": "0.01s"}})
    result = run(workflow([{"name": "b", "template": "bad"}], [bad]), tmp_path)
    assert result.tasks["b"].attempts == 1 and result.tasks["b"].state == "Failed"


def test_a_task_killed_by_a_signal_is_an_error_retried_under_on_error(tmp_path):
    killed = python_template("killed", f"""
        import os, pathlib, signal
        marker = pathlib.Path({str(tmp_path / 'once')!r})
        if not marker.exists():
            marker.write_text('x')
            os.kill(os.getpid(), signal.SIGKILL)
    """, retry={"limit": 2, "retryPolicy": "OnError", "backoff": {"duration": "0.01s"}})
    result = run(workflow([{"name": "k", "template": "killed"}], [killed]), tmp_path)
    assert result.status == "Succeeded" and result.tasks["k"].attempts == 2


def test_volume_claims_are_folders_shared_by_tasks_and_paths_are_mapped(tmp_path):
    write = python_template("write", "open('/mnt/work/file.txt', 'w').write('shared')", mounts=["work"])
    write["container"]["command"] = [PY, "-c", "import sys; open(sys.argv[1], 'w').write('shared')"]
    write["container"]["args"] = ["/mnt/work/file.txt"]
    read = python_template("read", "import sys; assert open(sys.argv[1]).read() == 'shared'", mounts=["work"])
    read["container"]["args"] = ["--path=/mnt/work/file.txt"]
    read["container"]["command"] = [PY, "-c", "import sys; assert open(sys.argv[1].split('=')[1]).read() == 'shared'"]
    wf = workflow([{"name": "w", "template": "write"}, {"name": "r", "template": "read", "depends": "w"}],
                  [write, read], claims=["work"])
    result = run(wf, tmp_path)
    assert result.status == "Succeeded", result.tasks["r"].log_tail()
    assert (tmp_path / "run" / "volumes" / "work" / "file.txt").read_text() == "shared"


def test_a_broken_reference_is_refused_before_it_runs(tmp_path):
    ok = python_template("ok", "pass", inputs=["x"])
    wf = workflow([{"name": "a", "template": "ok",
                    "arguments": {"parameters": [{"name": "x", "value": "{{workflow.parameters.nope}}"}]}}], [ok])
    with pytest.raises(InvalidInput, match="failed to resolve {{workflow.parameters.nope}}"):
        run(wf, tmp_path)


@pytest.mark.parametrize("feature", [
    {"script": {"image": "x", "source": "echo"}},
    {"resource": {"action": "create", "manifest": "{}"}},
    {"container": {"image": "x", "command": ["true"], "envFrom": [{"secretRef": {"name": "s"}}]}},
])
def test_unsupported_features_are_refused_not_ignored(tmp_path, feature):
    template = {"name": "odd", **feature}
    wf = workflow([{"name": "a", "template": "odd"}], [template])
    with pytest.raises(Unsupported):
        run(wf, tmp_path)


def test_a_deadline_stops_a_task(tmp_path):
    slow = python_template("slow", "import time; time.sleep(30)", activeDeadlineSeconds=1)
    result = run(workflow([{"name": "s", "template": "slow"}], [slow]), tmp_path)
    assert result.tasks["s"].state == "Failed" and "deadline" in result.tasks["s"].message


def test_a_skipped_tasks_outputs_take_their_defaults(tmp_path):
    produce = python_template("produce", "pass", outputs=["word"])
    produce["outputs"]["parameters"][0]["valueFrom"]["default"] = "none"
    consume = python_template("consume", "import sys; assert sys.argv[1] == 'none', sys.argv", inputs=["text"])
    wf = workflow([
        {"name": "a", "template": "produce", "when": "'x' == 'y'"},
        {"name": "b", "template": "consume", "depends": "a",
         "arguments": {"parameters": [{"name": "text", "value": "{{tasks.a.outputs.parameters.word}}"}]}},
    ], [produce, consume])
    result = run(wf, tmp_path)
    assert result.tasks["a"].state == "Skipped"
    assert result.tasks["b"].state == "Succeeded", result.tasks["b"].log_tail()


def test_an_exit_dag_runs_its_tasks_with_the_workflow_status_and_failures(tmp_path):
    fail = python_template("fail", "import sys; print('no GPU'); sys.exit(1)")
    record = python_template("record", """
        import sys
        open(sys.argv[1], 'w').write(sys.argv[2] + ' ' + sys.argv[3])
    """, inputs=["status", "failures"])
    record["container"]["args"] = [str(tmp_path / "{{inputs.parameters.status}}"), "{{inputs.parameters.status}}",
                                   "{{inputs.parameters.failures}}"]
    ended = {"parameters": [{"name": "status", "value": "{{workflow.status}}"},
                            {"name": "failures", "value": "{{workflow.failures}}"}]}
    wf = workflow([{"name": "train", "template": "fail"}], [fail, record], on_exit="exit")
    wf["spec"]["templates"].append({"name": "exit", "dag": {"tasks": [
        {"name": "cleanup", "template": "record", "arguments": ended},
        {"name": "report", "template": "fail", "continueOn": {"failed": True}},
    ]}})
    result = run(wf, tmp_path)
    assert result.status == "Failed"
    assert set(result.exit_tasks) == {"cleanup", "report"}
    assert result.exit_tasks["report"].state == "Failed"
    status, failures = (tmp_path / "Failed").read_text().split(" ", 1)
    assert status == "Failed" and json.loads(failures)[0]["displayName"] == "train"
    # the failed report carries continueOn: the exit handler as a whole succeeded
    assert result.exit_task.state == "Succeeded"


def test_continue_on_keeps_a_failed_task_from_failing_the_run(tmp_path):
    fail = python_template("fail", "import sys; sys.exit(1)")
    ok = python_template("ok", "pass")
    wf = workflow([
        {"name": "report", "template": "fail", "continueOn": {"failed": True, "error": True}},
        {"name": "work", "template": "ok"},
    ], [fail, ok])
    result = run(wf, tmp_path)
    assert result.tasks["report"].state == "Failed"
    assert result.status == "Succeeded"


def nested(tasks: list[dict], inputs=()) -> dict:
    """A DAG template other DAGs call, with `inputs` of its own."""
    template = {"name": "nested", "dag": {"tasks": tasks}}
    if inputs:
        template["inputs"] = {"parameters": [{"name": i} for i in inputs]}
    return template


def test_a_dag_called_from_a_dag_runs_with_its_inputs(tmp_path):
    record = python_template("record", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", inputs=["path", "what"])
    wf = workflow([{"name": "outer", "template": "nested", "arguments": {"parameters": [
        {"name": "path", "value": str(tmp_path / "said")}, {"name": "what", "value": "hello"}]}}], [record])
    wf["spec"]["templates"].append(nested([{"name": "write", "template": "record", "arguments": {"parameters": [
        {"name": "path", "value": "{{inputs.parameters.path}}"},
        {"name": "what", "value": "{{inputs.parameters.what}} from {{inputs.parameters.what}}"}]}}],
        inputs=["path", "what"]))
    result = run(wf, tmp_path)
    assert result.status == "Succeeded" and result.tasks["outer"].state == "Succeeded"
    assert (tmp_path / "said").read_text() == "hello from hello"
    assert (tmp_path / "run" / "tasks" / "outer.write" / "log.txt").is_file()  # Argo's node name: outer.write


def test_a_nested_dag_whose_failed_task_continues_succeeds(tmp_path):
    # dag.go assessDAGPhase: a failed leaf whose continueOn covers it does not fail its DAG
    fail = python_template("fail", "import sys; print('cannot write the status'); sys.exit(1)")
    wf = workflow([{"name": "report", "template": "nested"}], [fail])
    wf["spec"]["templates"].append(nested([{"name": "write", "template": "fail",
                                            "continueOn": {"failed": True, "error": True}}]))
    result = run(wf, tmp_path)
    assert result.status == "Succeeded"
    assert result.tasks["report"].state == "Succeeded"
    assert "write failed (continueOn)" in result.tasks["report"].message


def test_a_nested_dag_whose_task_fails_fails_the_run(tmp_path):
    fail = python_template("fail", "import sys; sys.exit(1)")
    wf = workflow([{"name": "step", "template": "nested"}], [fail])
    wf["spec"]["templates"].append(nested([{"name": "inner", "template": "fail"}]))
    result = run(wf, tmp_path)
    assert result.status == "Failed" and result.tasks["step"].state == "Failed"
    assert result.tasks["step"].log_path.name == "log.txt"


def test_a_dag_that_calls_itself_is_refused(tmp_path):
    wf = workflow([{"name": "outer", "template": "nested"}], [])
    wf["spec"]["templates"].append(nested([{"name": "again", "template": "nested"}]))
    with pytest.raises(Unsupported, match="calls itself"):
        run(wf, tmp_path)


def test_local_retry_waits_are_capped_but_keep_their_shape(monkeypatch):
    from kairo.local.policy import backoff_seconds

    retry = {"backoff": {"duration": "1s", "factor": 2, "cap": "5m"}}
    monkeypatch.setenv("KAIRO_LOCAL_MAX_BACKOFF", "3")
    assert [backoff_seconds(retry, n) for n in (1, 2, 3)] == [1.0, 2.0, 3.0]
    monkeypatch.setenv("KAIRO_LOCAL_MAX_BACKOFF", "600")
    assert backoff_seconds({"backoff": {"duration": "1m", "factor": 10, "cap": "5m"}}, 3) == 300.0


def test_a_pods_scratch_tmp_is_this_machines_tmp_and_host_paths_under_it_pass_unchanged(tmp_path):
    record = python_template("record", "import sys; open(sys.argv[1], 'w').write('seen')", inputs=["path"])
    record["container"]["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    record["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    target = tmp_path / "written-here"
    assert str(target).startswith("/tmp/")  # pytest's folders are under /tmp: the case that must not be rewritten
    wf = workflow([{"name": "write", "template": "record",
                    "arguments": {"parameters": [{"name": "path", "value": str(target)}]}}], [record])
    assert run(wf, tmp_path).status == "Succeeded"
    assert target.read_text() == "seen"
