"""What Argo's controller refuses only when a workflow runs, refused by kairo before it is sent.

Each case cites its source in argoproj/argo-workflows v4.1.2.
"""

from __future__ import annotations

from kairo.argo.validate import validate
from tests.fixtures.argo_objects import spec_of, task, template, workflow


def problems(obj) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in validate(obj)]


def test_a_when_that_govaluate_cannot_read_fails_the_task():
    # workflow/controller/steps.go:393 shouldExecute, after substitution
    obj = workflow()
    task(obj, "b")["when"] = "'{{tasks.a.outputs.parameters.digest}}' == "
    assert problems(obj) == [("spec.templates[0].dag.tasks[1].when",
                              "Invalid 'when' expression ''placeholder' == ': expected a value, found the end")]


def test_a_when_that_is_not_boolean_fails_the_task():
    # workflow/controller/steps.go:417
    obj = workflow()
    task(obj, "b")["when"] = "'{{tasks.a.outputs.parameters.digest}}'"
    assert problems(obj) == [("spec.templates[0].dag.tasks[1].when",
                              "Expected boolean evaluation for ''placeholder''. Got placeholder")]


def test_a_depends_expression_that_cannot_be_evaluated_fails_the_dag():
    # workflow/controller/dag.go:1024 evaluateDependsLogic (task names read with '-' as '_')
    obj = workflow()
    task(obj, "b")["depends"] = "a.Succeeded &&"
    assert ("spec.templates[0].dag.tasks[1].depends",
            "unable to evaluate expression 'a.Succeeded &&': expected a value, found the end") in problems(obj)


def test_a_retry_expression_must_be_a_boolean_expr_lang_reads():
    # workflow/controller/operator.go:1193 with util/expr/argoexpr/eval.go:16
    obj = workflow()
    template(obj, "bye")["retryStrategy"] = {"limit": "2", "expression": "asInt(lastRetry.exitCode) !="}
    assert problems(obj) == [("spec.templates[3].retryStrategy.expression",
                              "unable to evaluate expression 'asInt(lastRetry.exitCode) !=': expected a value, "
                              "found the end")]


def test_a_pod_spec_patch_must_be_a_pod_spec_once_substituted():
    # workflow/controller/workflowpod.go:299, workflow/util/util.go:1694
    obj = workflow()
    spec_of(obj)["arguments"]["parameters"].append({"name": "labels", "value": "gpu=a100"})
    patch = "{\"nodeSelector\": {{='\"' + workflow.parameters.labels + '\"'}} }"
    template(obj, "bye")["podSpecPatch"] = patch
    assert problems(obj) == [("spec.templates[3].podSpecPatch",
                              "invalid podSpecPatch \"{\\\"nodeSelector\\\": \\\"gpu=a100\\\" }\": json: cannot unmarshal "
                              "into Go struct field PodSpec.nodeSelector of type map[string]string")]


def test_the_generic_templates_node_selector_patch_reads_as_a_pod_spec():
    # workflow/util/util.go:1679 ApplyPodSpecPatch, with the labels a workspace gives
    obj = workflow()
    spec_of(obj)["arguments"]["parameters"].append({"name": "labels", "value": "apps=tuning,gpu=a100"})
    template(obj, "bye")["podSpecPatch"] = ("{\"nodeSelector\":{{='{\"' + replace(replace(workflow.parameters.labels, "
                                            "'=', '\":\"'), ',', '\",\"') + '\"}' }}}")
    assert problems(obj) == []


def test_the_node_selector_patch_with_empty_labels_makes_a_pod_the_api_server_refuses():
    # `-p labels=` gives {"nodeSelector":{""}}: Go reads it (util.go:1693), the pod is then refused
    obj = workflow()
    spec_of(obj)["arguments"]["parameters"].append({"name": "labels", "value": ""})
    template(obj, "bye")["podSpecPatch"] = ("{\"nodeSelector\":{{='{\"' + replace(replace(workflow.parameters.labels, "
                                            "'=', '\":\"'), ',', '\",\"') + '\"}' }}}")
    assert [m for _, m in problems(obj)] == [
        'invalid podSpecPatch "{\\"nodeSelector\\":{\\"\\"}}": spec.nodeSelector: Invalid value: "": name part must '
        "be non-empty"]


def test_a_pod_spec_patch_waiting_for_a_run_parameter_is_judged_when_it_runs():
    # the value is only known at submission (a parameter without a default): Argo's validation skips it too
    obj = workflow("WorkflowTemplate")
    spec_of(obj)["arguments"]["parameters"].append({"name": "labels"})
    template(obj, "bye")["podSpecPatch"] = "{\"nodeSelector\":{{='{\"' + workflow.parameters.labels + '\"}' }}}"
    assert problems(obj) == []


def test_a_volume_claim_template_needs_a_name():
    # workflow/controller/operator.go:1975
    obj = workflow()
    spec_of(obj)["volumeClaimTemplates"] = [{"metadata": {}, "spec": {"accessModes": ["ReadWriteOnce"]}}]
    assert problems(obj) == [("spec.volumeClaimTemplates[0].metadata.name",
                              "volumeClaimTemplates[0].metadata.name is required")]


def test_a_mutex_needs_a_name():
    # workflow/sync/lock_name.go:146
    obj = workflow()
    spec_of(obj)["synchronization"] = {"mutexes": [{"name": ""}]}
    assert problems(obj) == [("spec.synchronization.mutexes[0].name", "Invalid lock key: ResourceName is missing")]


def test_a_semaphore_says_where_its_count_lives():
    # workflow/sync/lock_name.go:69
    obj = workflow()
    template(obj, "bye")["synchronization"] = {"semaphores": [{}]}
    assert problems(obj) == [("spec.templates[3].synchronization.semaphores[0]",
                              "cannot get LockName for a Semaphore without a ConfigMapRef or Database")]
