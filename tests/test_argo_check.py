"""The one checker, in its three places: the test suite, `kairo render`/`submit`/`schedule`, `kairo run --local`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from kairo.argo import check
from kairo.cli import main
from kairo.cluster import ClusterConfig
from kairo.local.mounts import LocalObjects
from kairo.local.runner import LocalRunner
from kairo.pipelines import build_inference_workflow_template, build_workflow_template, render_objects
from kairo.problems import InvalidInput
from kairo.spec import load_workspace
from tests.conftest import EXAMPLES

GOLDEN = EXAMPLES / "golden"
FIXTURE = Path(__file__).parent / "fixtures" / "argo" / "refused-continueon-with-depends.yaml"
CONTINUE_ON = ("templates.tuning cannot use 'continueOn' when using 'depends'. Instead use "
               "'dep-task.Failed'/'dep-task.Errored'")


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_every_golden_passes_every_check_of_every_claimed_argo_version():
    checked = []
    for path in sorted(GOLDEN.glob("*.yaml")):
        for obj in documents(path):
            assert check(obj) == [], f"{path.name}: {obj['kind']}"
        checked.append(path.name)
    assert len(checked) == len(list(EXAMPLES.glob("*.yaml"))) + 3  # + the generic templates and the CronWorkflow


def test_every_example_renders_through_the_checker_in_each_kind():
    cluster, rendered, expected = ClusterConfig(local=True), 0, 0
    for path in sorted(EXAMPLES.glob("*.yaml")):
        workspace, wfile, _ = load_workspace(path, cluster)
        kinds = ("workflow",) if workspace.is_inference else ("workflow", "cronworkflow")  # nothing to retrain
        expected += len(kinds)
        for kind in kinds:
            objects = render_objects(wfile, workspace, cluster, kind, "0 3 * * 1")  # raises when Argo would refuse
            assert [p for obj in objects for p in check(obj)] == []
            rendered += 1
    assert check(build_workflow_template(cluster)) == []
    assert check(build_inference_workflow_template(cluster)) == []
    assert rendered == expected and rendered >= 9


def test_todays_dag_is_refused_in_argos_words():
    messages = [p.message for p in check(documents(FIXTURE)[-1])]
    assert CONTINUE_ON in messages
    assert "Invalid value: \"object\": cannot use 'continueOn' when using 'depends'" in messages  # the CRD's CEL rule
    assert any(m.startswith('unknown field "cap": Argo 3.6.19') for m in messages)  # backoff.cap, unknown to 3.6


@pytest.fixture
def broken_dag(monkeypatch):
    """Make the tuning DAG break one Argo rule: `change(dag_template)` is applied to every rendered object."""
    from kairo.pipelines import cron, tuning, workflows

    def install(change):
        def build(*args, **kwargs):
            manifest = tuning.build(*args, **kwargs)
            spec = manifest["spec"].get("workflowSpec", manifest["spec"])
            change(next(t for t in spec["templates"] if t["name"] == "tuning"))
            return manifest

        for module in (workflows, cron):  # each imported the builder by name
            monkeypatch.setattr(module, "build", build)

    return install


def _depend_on_a_missing_task(dag):
    next(t for t in dag["dag"]["tasks"] if t.get("depends"))["depends"] += " && nope"


def test_render_of_a_dag_depending_on_a_missing_task_exits_2_with_argos_message(broken_dag, examples, capsys):
    broken_dag(_depend_on_a_missing_task)
    assert main(["render", str(examples / "tuning-phi-3.yaml")]) == 2
    out = capsys.readouterr()
    assert out.out == ""  # nothing printed
    assert "templates.tuning sorting failed: invalid dependency nope" in out.err  # validate.go:1456 (v4.1.2)


def test_render_of_continue_on_in_a_depends_dag_exits_2_with_argos_message(broken_dag, examples, capsys):
    broken_dag(lambda dag: next(t for t in dag["dag"]["tasks"] if t.get("depends")).update(continueOn={"failed": True}))
    assert main(["render", str(examples / "tuning-phi-3.yaml")]) == 2
    assert CONTINUE_ON in capsys.readouterr().err  # validate.go:1477 (v4.1.2)


def test_the_generic_template_is_refused_too(broken_dag, capsys):
    broken_dag(_depend_on_a_missing_task)
    assert main(["render", "--kind", "workflowtemplate"]) == 2
    assert "invalid dependency nope" in capsys.readouterr().err


def test_submit_sends_nothing_argo_would_refuse(broken_dag, examples, capsys):
    broken_dag(_depend_on_a_missing_task)
    # no server listens there: a refusal before sending is exit 2, not a connection failure (exit 1)
    assert main(["submit", str(examples / "tuning-phi-3.yaml"), "--argo-server", "http://127.0.0.1:9"]) == 2
    assert "invalid dependency nope" in capsys.readouterr().err


def test_schedule_sends_nothing_argo_would_refuse(broken_dag, examples, capsys):
    broken_dag(_depend_on_a_missing_task)
    assert main(["schedule", str(examples / "tuning-phi-3.yaml"), "--cron", "0 3 * * 1",
                 "--argo-server", "http://127.0.0.1:9"]) == 2
    assert "invalid dependency nope" in capsys.readouterr().err


def test_the_local_runner_refuses_what_a_cluster_would(tmp_path):
    with pytest.raises(InvalidInput, match="cannot use 'continueOn' when using 'depends'"):
        LocalRunner(documents(FIXTURE)[-1], tmp_path / "run", LocalObjects({}, {}))
    assert not (tmp_path / "run").exists()


def test_a_check_takes_milliseconds_once_the_schemas_are_loaded():
    workflow = documents(GOLDEN / "quickstart.yaml")[-1]
    check(workflow)  # loads and caches the schemas and compiled rules
    start = time.perf_counter()
    check(workflow)
    assert time.perf_counter() - start < 0.5  # ≈25 ms on an idle machine; generous for a loaded one
