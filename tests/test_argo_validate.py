"""Argo's validate.go rules, ported: each case breaks one rule of a valid workflow and expects Argo's own words.

Every case cites the Go file and line it follows, in argoproj/argo-workflows v4.1.2 (validate.go is
`workflow/validate/validate.go`). The path says which field; the message is Argo's, as `argo lint` prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kairo.argo import check
from kairo.argo.validate import validate
from tests.fixtures.argo_objects import container, spec_of, task, template, workflow

Break = Callable[[dict[str, Any]], None]


def broken(change: Break, kind: str = "Workflow") -> list[tuple[str, str]]:
    obj = workflow(kind)
    change(obj)
    return [(p.path, p.message) for p in validate(obj)]


def test_the_valid_workflow_passes_every_rule_in_every_kind():
    for kind in ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow"):
        assert check(workflow(kind)) == [], kind


def _set(path: Callable[[dict[str, Any]], dict[str, Any]], **fields: Any) -> Break:
    return lambda obj: path(obj).update(fields)


def _spec(**fields: Any) -> Break:
    return _set(spec_of, **fields)


def _tmpl(which: str, **fields: Any) -> Break:
    return _set(lambda obj: template(obj, which), **fields)


def _task(which: str, **fields: Any) -> Break:
    return _set(lambda obj: task(obj, which), **fields)


def _add_task(**fields: Any) -> Break:
    return lambda obj: template(obj, "main")["dag"]["tasks"].append({"template": "produce", **fields})


def _add_template(tmpl: dict[str, Any]) -> Break:
    return lambda obj: spec_of(obj)["templates"].append(tmpl)


T = "spec.templates"
CASES = [
    # validate.go:162
    (lambda o: o["metadata"].update(name="w" * 64), "metadata.name",
     f'workflow name "{"w" * 64}" must not be more than 63 characters long (currently 64)'),
    # validate.go:187, 196 (validateWorkflowFieldNames, validate.go:1387)
    (_tmpl("produce", name="produce_step"), f"{T}[1].name",
     "spec.templates[1].name: 'produce_step' is invalid: name must consist of alpha-numeric characters or '-', and "
     "must start with an alpha-numeric character (e.g. My-name1-2, 123-NAME)"),
    # validate.go:1377
    (_tmpl("bye", name=""), f"{T}[3].name", "spec.templates[3].name is required"),
    # validate.go:1391
    (_tmpl("bye", name="consume"), f"{T}[3].name", "spec.templates[3].name 'consume' is not unique"),
    # validate.go:1021 (a Workflow's parameters need values; a template's may wait for the workflow's)
    (lambda o: spec_of(o)["arguments"]["parameters"][0].pop("value"), "spec.arguments.parameters[0]",
     "spec.arguments.preset.value or spec.arguments.preset.valueFrom is required"),
    # validate.go:1028
    (lambda o: spec_of(o)["arguments"]["parameters"][0].update(valueFrom={"path": "/x"}),
     "spec.arguments.parameters[0].valueFrom",
     "spec.arguments.preset.valueFrom only allows: default, configMapKeyRef and supplied"),
    # validate.go:1038
    (lambda o: spec_of(o)["arguments"]["parameters"][0].update(enum=[]), "spec.arguments.parameters[0].enum",
     "spec.arguments.preset.enum should contain at least one value"),
    # validate.go:1047
    (lambda o: spec_of(o)["arguments"]["parameters"][0].update(enum=["llama"]), "spec.arguments.parameters[0].value",
     "spec.arguments.preset.value should be present in spec.arguments.preset.enum list"),
    # validate.go:1053
    (_spec(arguments={"artifacts": [{"name": "data"}]}), "spec.arguments.artifacts[0]",
     "spec.arguments.data.from, artifact location, or key is required"),
    # validate.go:1003 (validateArgumentsFieldNames with isValidParamOrArtifactName, validate.go:1702)
    (_spec(arguments={"parameters": [{"name": "pre set", "value": "x"}]}), "spec.arguments.parameters[0].name",
     "spec.arguments.parameters[0].name: 'pre set' is invalid: Parameter/Artifact name must consist of alpha-numeric "
     "characters, '_' or '-' e.g. my_param_1, MY-PARAM-1"),
    # validate.go:260
    (lambda o: spec_of(o).pop("entrypoint"), "spec.entrypoint", "spec.entrypoint is required"),
    # validate.go:664 (the entrypoint and onExit are template holders, validate.go:273 and 329)
    (_spec(onExit="goodbye"), "spec.onExit", "template name 'goodbye' undefined"),
    # validate.go:384
    (_spec(workflowTemplateRef={"name": "kairo-tuning"}), "spec.templates",
     "Templates is invalid field in spec if workflow referred WorkflowTemplate reference"),
    # validate.go:146
    (_spec(hooks={"running": {"template": "bye"}}), "spec.hooks.running", "hooks.running Expression required"),
    # validate.go:340
    (_spec(podGC={"strategy": "OnSuccess"}), "spec.podGC.strategy", "podGC.strategy unknown strategy 'OnSuccess'"),
    # validate.go:730
    (_add_template({"name": "empty"}), f"{T}[4]",
     "templates.empty template type unspecified. choose one of: container, containerSet, steps, script, resource, "
     "dag, suspend, template, template ref"),
    # validate.go:734
    (_tmpl("bye", suspend={}), f"{T}[3]",
     "templates.bye multiple template types specified. choose one of: container, containerSet, steps, script, "
     "resource, dag, suspend, template, template ref"),
    # validate.go:742
    (_tmpl("consume", inputs={"parameters": [{"name": "digest"}, {"name": "digest"}]}),
     f"{T}[2].inputs.parameters[1].name", "templates.consume.inputs.parameters[1].name 'digest' is not unique"),
    # validate.go:762 (Artifact.CleanPath, workflow_types.go:1214)
    (_tmpl("bye", inputs={"artifacts": [{"name": "log", "raw": {"data": "x"}}]}), f"{T}[3].inputs.artifacts[0].path",
     "error in templates.bye.inputs.artifacts.log: Artifact 'log' did not specify a path"),
    # validate.go:766
    (_tmpl("main", inputs={"artifacts": [{"name": "log", "path": "/tmp/log"}]}), f"{T}[0].inputs.artifacts[0].path",
     "templates.main.inputs.artifacts.log.path only valid in container/script templates"),
    # validate.go:483
    (_tmpl("bye", initContainers=[{"image": "busybox"}]), f"{T}[3].initContainers[0].name",
     "initContainers must all have container name"),
    # validate.go:693
    (_tmpl("bye", retryStrategy={"retryPolicy": "Sometimes"}), f"{T}[3].retryStrategy.retryPolicy",
     "Sometimes is not a valid RetryPolicy"),
    # validate.go:564
    (_tmpl("main", timeout="1h"), f"{T}[0].timeout", "DAG template doesn't support timeout field"),
    # validate.go:569
    (_tmpl("bye", timeout="300"), f"{T}[3].timeout", "bye has invalid duration format in timeout"),
    # workflow/controller/operator.go parses it with time.ParseDuration when the node starts
    (_tmpl("bye", timeout="5 minutes"), f"{T}[3].timeout", 'time: invalid duration "5 minutes"'),
    # validate.go:574
    (_tmpl("main", pendingTimeout="10m"), f"{T}[0].pendingTimeout", "DAG template doesn't support pendingTimeout field"),
    # validate.go:850
    (_tmpl("main", activeDeadlineSeconds=60), f"{T}[0].activeDeadlineSeconds",
     "templates.main.activeDeadlineSeconds is only valid for leaf templates"),
    # validate.go:984
    (_tmpl("bye", activeDeadlineSeconds=-1), f"{T}[3].activeDeadlineSeconds",
     "templates.bye.activeDeadlineSeconds must be a positive integer > 0 or an argo variable"),
    # validate.go:988
    (_tmpl("bye", parallelism=2), f"{T}[3].parallelism",
     "templates.bye.parallelism is only valid for steps and dag templates"),
    # validate.go:869
    (lambda o: template(o, "bye")["container"].update(volumeMounts=[{"name": "a", "mountPath": "/w"},
                                                                   {"name": "b", "mountPath": "/w"}]),
     f"{T}[3].container.volumeMounts[1].mountPath",
     "templates.bye.container.volumeMounts[1].mountPath '/w' already mounted in container.volumeMounts.a"),
    # validate.go:883
    (lambda o: template(o, "bye")["container"].pop("image"), f"{T}[3].container.image",
     "templates.bye.container.image may not be empty"),
    # validate.go:916
    (_tmpl("bye", sidecars=[{"name": "wait", "image": "x"}]), f"{T}[3].sidecars[0].name",
     'templates.bye.sidecars: "wait" is a reserved Argo container name'),
    # validate.go:925
    (_add_template({"name": "job", "resource": {"action": "launch", "manifest": "kind: JobSet"}}),
     f"{T}[4].resource.action",
     "templates.job.resource.action must be one of: get, create, apply, delete, replace, patch"),
    # validate.go:930
    (_add_template({"name": "job", "resource": {"action": "create"}}), f"{T}[4].resource",
     "either templates.job.resource.manifest or templates.job.resource.manifestFrom must be specified"),
    # validate.go:957
    (_add_template({"name": "job", "resource": {"action": "create", "manifest": "kind: [JobSet"}}),
     f"{T}[4].resource.manifest", "templates.job.resource.manifest must be a valid yaml"),
    # validate.go:1318
    (lambda o: template(o, "produce")["outputs"]["parameters"][0].update(value="x"),
     f"{T}[1].outputs.parameters[0]",
     "templates.produce.outputs.parameters.digest has both valueFrom and value specified, choose one"),
    # validate.go:1324
    (lambda o: template(o, "produce")["outputs"]["parameters"][0].pop("valueFrom"), f"{T}[1].outputs.parameters[0]",
     "templates.produce.outputs.parameters.digest does not have valueFrom or value specified"),
    # validate.go:1337
    (lambda o: template(o, "produce")["outputs"]["parameters"][0].update(valueFrom={}),
     f"{T}[1].outputs.parameters[0].valueFrom",
     "valueFrom type unspecified. choose one of: path, jqFilter, jsonPath, parameter, raw, expression"),
    # validate.go:1340
    (lambda o: template(o, "produce")["outputs"]["parameters"][0]["valueFrom"].update(jsonPath="{.x}"),
     f"{T}[1].outputs.parameters[0].valueFrom",
     "multiple valueFrom types specified. choose one of: path, jqFilter, jsonPath, parameter, raw"),
    # validate.go:1290
    (lambda o: template(o, "produce")["outputs"]["parameters"][0].update(valueFrom={"jsonPath": "{.x}"}),
     f"{T}[1].outputs.parameters[0].valueFrom",
     "templates.produce.outputs.parameters.digest.path must be specified for Container templates"),
    # validate.go:1298
    (_tmpl("main", outputs={"parameters": [{"name": "d", "valueFrom": {"path": "/tmp/d"}}]}),
     f"{T}[0].outputs.parameters[0].valueFrom",
     "templates.main.outputs.parameters.d.parameter or expression must be specified for DAG templates"),
    # validate.go:1308
    (lambda o: template(o, "produce")["outputs"]["parameters"][0].update(globalName="the digest"),
     f"{T}[1].outputs.parameters[0].globalName",
     "templates.produce.outputs.parameters.digest.globalName: Parameter/Artifact name must consist of alpha-numeric "
     "characters, '_' or '-' e.g. my_param_1, MY-PARAM-1"),
    # validate.go:1270
    (_tmpl("main", outputs={"artifacts": [{"name": "loss", "path": "/tmp/loss.png"}]}),
     f"{T}[0].outputs.artifacts[0].path", "templates.main.outputs.artifacts.loss.path only valid in container/script "
                                          "templates"),
]


@pytest.mark.parametrize(("change", "path", "message"), CASES, ids=[c[2][:60] for c in CASES])
def test_each_workflow_and_template_rule_refuses_with_argos_words(change, path, message):
    assert (path, message) in broken(change)


def test_a_workflow_template_may_leave_its_parameters_to_the_workflows_made_from_it():
    # validate.go:205: allowEmptyValues for a WorkflowTemplate that is not being submitted
    assert broken(lambda o: spec_of(o)["arguments"]["parameters"][0].pop("value"), "WorkflowTemplate") == []


def test_a_template_without_entrypoint_is_allowed():
    # validate.go:412 WorkflowTemplate: IgnoreEntrypoint when the entrypoint is empty
    assert broken(lambda o: spec_of(o).pop("entrypoint"), "WorkflowTemplate") == []


def test_a_container_may_take_its_image_from_the_template_defaults():
    # validate.go:879-891: templateDefaults.container.image stands in
    def change(obj):
        template(obj, "bye")["container"].pop("image")
        spec_of(obj)["templateDefaults"] = {"container": {"image": "step"}}
    assert broken(change) == []


# -- CronWorkflow (validate.go:436) --------------------------------------------------------------------


CRON_CASES = [
    # validate.go:441
    (lambda o: o["metadata"].update(name="c" * 53), "metadata.name",
     f'cron workflow name "{"c" * 53}" must not be more than 52 characters long (currently 53)'),
    # validate.go:445
    (lambda o: o["spec"].update(schedules=[]), "spec.schedules", "cron workflow must have at least one schedule"),
    # validate.go:450 (robfig/cron ParseStandard)
    (lambda o: o["spec"].update(schedules=["0 3 * *"]), "spec.schedules[0]",
     "cron schedule 0 3 * * is malformed: expected exactly 5 fields, found 4: [0 3 * *]"),
    # validate.go:456
    (lambda o: o["spec"].update(timezone="Mars/Olympus"), "spec.timezone",
     'invalid timezone "Mars/Olympus": unknown time zone Mars/Olympus'),
    # validate.go:464
    (lambda o: o["spec"].update(concurrencyPolicy="Never"), "spec.concurrencyPolicy",
     "'Never' is not a valid concurrencyPolicy"),
    # validate.go:468
    (lambda o: o["spec"].update(startingDeadlineSeconds=-5), "spec.startingDeadlineSeconds",
     "startingDeadlineSeconds must be positive"),
    # validate.go:475: the workflow's own problems come wrapped
    (lambda o: o["spec"]["workflowSpec"].update(onExit="goodbye"), "spec.workflowSpec.onExit",
     "cannot validate Workflow: template name 'goodbye' undefined"),
]


@pytest.mark.parametrize(("change", "path", "message"), CRON_CASES, ids=[c[2][:60] for c in CRON_CASES])
def test_each_cron_workflow_rule_refuses_with_argos_words(change, path, message):
    assert (path, message) in broken(change, "CronWorkflow")


def test_cron_descriptors_and_every_are_schedules_argo_reads():
    for schedule in ("@daily", "@every 12h", "0 3 * * 1", "*/15 * * * MON-FRI"):
        assert broken(lambda o, s=schedule: o["spec"].update(schedules=[s]), "CronWorkflow") == [], schedule


# -- DAG (validate.go:1433 validateDAG, workflow/common/ancestry.go) -------------------------------------------


M = "spec.templates[0].dag.tasks"
DAG_CASES = [
    # validate.go:1439
    (lambda o: template(o, "main")["dag"].update(tasks=[]), M, "templates.main must have at least one task"),
    # validate.go:1456 (util/sorting/topological_sorting.go:26): a missing task is found while sorting
    (_task("b", depends="a && nope"), M, "templates.main sorting failed: invalid dependency nope"),
    # validate.go:1456 (topological_sorting.go:18)
    (_add_task(name="a"), M, "templates.main sorting failed: duplicated nodeName a"),
    # validate.go:1456 (topological_sorting.go:44)
    (_task("a", depends="b"), M, "templates.main sorting failed: graph with cycle"),
    # validate.go:1461 (validateWorkflowFieldNames)
    (_add_task(name="c_d"), f"{M}[2].name",
     "templates.main.tasks[2].name: 'c_d' is invalid: name must consist of alpha-numeric characters or '-', and must "
     "start with an alpha-numeric character (e.g. My-name1-2, 123-NAME)"),
    # validate.go:1469
    (_add_task(name="2nd", depends="a"), f"{M}[2].name",
     "templates.main.tasks.2nd name cannot begin with a digit when using either 'depends' or 'dependencies'"),
    # validate.go:1473
    (_add_task(name="c", dependencies=["a"]), f"{M}[2].dependencies",
     "templates.main cannot use both 'depends' and 'dependencies' in the same DAG template"),
    # validate.go:1477
    (_task("a", continueOn={"failed": True}), f"{M}[0].continueOn",
     "templates.main cannot use 'continueOn' when using 'depends'. Instead use 'dep-task.Failed'/'dep-task.Errored'"),
    # validate.go:1483 wrapping validate.go:664
    (_task("a", template="prodcue"), f"{M}[0].template", "templates.main.tasks.a template name 'prodcue' undefined"),
    # validate.go:647
    (_task("a", templateRef={"name": "kairo-tuning", "template": "push"}), f"{M}[0].template",
     "templates.main.tasks.a template name cannot be specified with templateRef"),
    # validate.go:1493 (ancestry.go:104)
    (_task("b", depends="a.Succeded"), f"{M}[1].depends",
     "templates.main.tasks.b task result 'Succeded' for task 'a' is invalid"),
    # validate.go:1503
    (_task("b", depends="a.AnySucceeded"), f"{M}[1].depends",
     "templates.main.tasks.b dependency 'a' uses an items-based condition such as .AnySucceeded or .AllFailed but "
     "does not contain any items"),
    # validate.go:1151 (addItemsToScope)
    (_task("a", withItems=["x"], withParam="[]"), f"{M}[0]",
     "templates.main.tasks.a only one of withItems, withParam, withSequence can be specified"),
    # validate.go:1179
    (_task("a", withSequence={"count": "2", "end": "3"}), f"{M}[0].withSequence",
     "templates.main.tasks.a only one of count or end can be defined in withSequence"),
    # validate.go:1557 (validateArguments for a task, validate.go:1021)
    (lambda o: task(o, "b")["arguments"]["parameters"][0].pop("value"), f"{M}[1].arguments.parameters[0]",
     "templates.main.tasks.b.arguments.digest.value or templates.main.tasks.b.arguments.digest.valueFrom is "
     "required"),
    # validate.go:1590
    (_task("b", depends=""), f"{M}[1].arguments.parameters[0].value",
     "templates.main.tasks.b missing dependency 'a' for parameter 'digest'"),
    # validate.go:1618
    (lambda o: template(o, "main")["dag"].update(target="a c"), "spec.templates[0].dag.target",
     "templates.main.targets: target 'c' is not defined"),
]


@pytest.mark.parametrize(("change", "path", "message"), DAG_CASES, ids=[c[2][:60] for c in DAG_CASES])
def test_each_dag_rule_refuses_with_argos_words(change, path, message):
    assert (path, message) in broken(change)


def test_depends_on_task_results_of_known_tasks_is_accepted():
    # ancestry.go:90: Succeeded, Failed, Errored, Skipped, Omitted, Daemoned are results Argo knows
    assert broken(_task("b", depends="a.Succeeded || a.Skipped || (a.Failed && !a.Errored)")) == []


def test_a_status_report_in_its_own_dag_keeps_continue_on_without_breaking_the_rule():
    # validate.go:1477 applies to a DAG that uses depends: a one-task DAG without depends may keep continueOn
    def change(obj):
        spec_of(obj)["templates"].append({"name": "report", "dag": {"tasks": [
            {"name": "write", "template": "bye", "continueOn": {"failed": True, "error": True}}]}})
        template(obj, "main")["dag"]["tasks"].append({"name": "c", "template": "report", "depends": "b"})
    assert broken(change) == []


def test_an_unused_input_of_a_container_is_a_problem_only_when_a_task_leaves_it_unset():
    # workflow/common/util.go:289 (SubstituteParams) via validate.go:547 and 1570, reported by the reference check
    obj = workflow()
    spec_of(obj)["templates"].append(container("extra", inputs=("mode",)))
    template(obj, "main")["dag"]["tasks"].append({"name": "c", "template": "extra", "depends": "b"})
    assert [p.message for p in check(obj)] == [
        "templates.main.tasks.c templates.extra inputs.parameters.mode had no value"]
