"""The `{{…}}` reference checker: what resolves, what does not, and where each name may be used."""

from __future__ import annotations

import copy

from kairo.argo.refs import check_references, expression_names, tags_in
from kairo.cluster import ClusterConfig
from kairo.pipelines import build_workflow_template


def workflow(tasks: list[dict], templates: list[dict], parameters=(), on_exit=None) -> dict:
    spec = {"entrypoint": "main", "arguments": {"parameters": [{"name": p, "value": "x"} for p in parameters]},
            "templates": [{"name": "main", "dag": {"tasks": tasks}}, *copy.deepcopy(templates)]}
    if on_exit:
        spec["onExit"] = on_exit
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "w-"}, "spec": spec}


def container(name: str, args: list[str], inputs=(), outputs=()) -> dict:
    template = {"name": name, "container": {"image": "step", "command": ["kairo-step", name], "args": args}}
    if inputs:
        template["inputs"] = {"parameters": [{"name": i} for i in inputs]}
    if outputs:
        template["outputs"] = {"parameters": [{"name": o, "valueFrom": {"path": f"/tmp/outputs/{o}"}} for o in outputs]}
    return template


PRODUCE = container("produce", ["--preset", "{{workflow.parameters.preset}}"], outputs=["digest"])
CONSUME = container("consume", ["--digest", "{{inputs.parameters.digest}}", "--pod", "{{pod.name}}"], inputs=["digest"])


def pipeline(value: str = "{{tasks.a.outputs.parameters.digest}}", depends: str = "a") -> dict:
    return workflow([{"name": "a", "template": "produce"},
                     {"name": "b", "template": "consume", "depends": depends,
                      "arguments": {"parameters": [{"name": "digest", "value": value}]}}],
                    [PRODUCE, CONSUME], parameters=["preset"])


def test_parameters_inputs_task_outputs_and_argo_variables_resolve():
    assert check_references(pipeline()) == []


def test_an_undeclared_workflow_parameter_is_reported_with_its_path():
    wf = pipeline()
    wf["spec"]["templates"][1]["container"]["args"][1] = "{{workflow.parameters.presett}}"
    assert check_references(wf) == [
        "spec.templates[1].container.args[1]: failed to resolve {{workflow.parameters.presett}} — no workflow "
        "parameter 'presett' is declared"]


def test_an_input_the_template_does_not_declare_is_reported():
    wf = pipeline()
    wf["spec"]["templates"][2]["container"]["args"][1] = "{{inputs.parameters.digets}}"
    assert "the template declares no input parameter 'digets'" in check_references(wf)[0]


def test_a_task_output_must_exist_and_come_from_a_task_this_one_depends_on():
    assert "task 'a' has no output parameter 'digst'" in check_references(
        pipeline("{{tasks.a.outputs.parameters.digst}}"))[0]
    assert "task 'a' is not one this task depends on" in check_references(pipeline(depends=""))[0]


def test_dependencies_of_dependencies_are_visible():
    wf = workflow([{"name": "a", "template": "produce"}, {"name": "m", "template": "produce", "depends": "a"},
                   {"name": "b", "template": "consume", "depends": "m.Succeeded",
                    "arguments": {"parameters": [{"name": "digest", "value": "{{tasks.a.outputs.parameters.digest}}"}]}}],
                  [PRODUCE, CONSUME], parameters=["preset"])
    assert check_references(wf) == []


def test_a_missing_argument_is_reported_as_argo_words_it():
    wf = workflow([{"name": "a", "template": "produce"}, {"name": "b", "template": "consume", "depends": "a"}],
                  [PRODUCE, CONSUME], parameters=["preset"])
    # workflow/common/util.go:289 (v4.1.2), wrapped by validate.go:547 and 1570
    assert check_references(wf) == [
        "spec.templates[0].dag.tasks[1](b).arguments: templates.main.tasks.b templates.consume "
        "inputs.parameters.digest had no value"]


def test_workflow_status_and_failures_are_only_known_to_the_exit_handler():
    report = container("report", ["--status", "{{workflow.status}}", "--failures", "{{workflow.failures}}"])
    as_exit = workflow([{"name": "a", "template": "produce"}], [PRODUCE, report], parameters=["preset"],
                       on_exit="report")
    assert check_references(as_exit) == []
    as_task = workflow([{"name": "a", "template": "produce"}, {"name": "r", "template": "report"}],
                       [PRODUCE, report], parameters=["preset"])
    assert len(check_references(as_task)) == 2


def test_names_inside_expression_tags_are_checked():
    wf = pipeline()
    wf["spec"]["templates"][1]["podSpecPatch"] = "{{=asInt(workflow.parameters['pre-set']) + 1}}"
    problems = check_references(wf)
    assert len(problems) == 1 and "workflow.parameters.pre-set is missing" in problems[0]
    assert expression_names("sprig.trim(inputs.parameters.x) + replace(workflow.parameters.labels, '=', 'a.b')") == [
        "inputs.parameters.x", "workflow.parameters.labels"]


def test_retry_expressions_may_read_last_retry_but_not_made_up_names():
    wf = pipeline()
    wf["spec"]["templates"][1]["retryStrategy"] = {"expression": "asInt(lastRetry.exitCode) != 2 && lastRetry.stat == 'x'"}
    problems = check_references(wf)
    assert len(problems) == 1 and "lastRetry.stat" in problems[0]


def test_a_tag_without_its_end_is_reported():
    wf = pipeline()
    wf["spec"]["templates"][1]["container"]["args"][1] = "{{workflow.parameters.preset"
    assert "'{{' without '}}'" in check_references(wf)[0]
    assert tags_in("a {{ x }} b {{=y}}") == ["x", "=y"]


def test_a_deliberately_broken_reference_in_the_generic_template_fails_the_check():
    template = build_workflow_template(ClusterConfig())
    assert check_references(template) == []
    broken = copy.deepcopy(template)
    dag = next(t for t in broken["spec"]["templates"] if t["name"] == "tuning")
    smoke = next(t for t in dag["dag"]["tasks"] if t["name"] == "smoke")
    smoke["arguments"]["parameters"][0]["value"] = "{{tasks.deploy.outputs.parameters.service_url}}"
    index = dag["dag"]["tasks"].index(smoke)
    assert check_references(broken) == [
        f"spec.templates[0].dag.tasks[{index}](smoke).arguments.parameters[0].value: "
        "failed to resolve {{tasks.deploy.outputs.parameters.service_url}} — task 'deploy' has no output parameter "
        "'service_url'"]
